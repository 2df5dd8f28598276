"""What each backup job does, and the loop in the worker that runs them.

Jobs: ``backup`` (a recovery point in the primary, its retention, then a ``copy`` job per
off-site repository), ``copy``, ``check`` (a rotating read-data subset), ``prune``, ``drill``
and ``watch`` (the overdue-drill alert and repository sizes). Each reports to the alerts, which
speak only when something starts or stops failing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import asyncpg

from appliance.backups import alerts, jobs
from appliance.backups.drill import run_drill
from appliance.backups.points import Point, RetentionRules, complete_points, leftover_parts, to_keep
from appliance.backups.recovery import take_recovery_point
from appliance.backups.repositories import (
    TAG,
    Target,
    backup_dir,
    ensure_initialised,
    ensure_password,
    named,
    primary,
    restic_for,
    targets,
)
from appliance.backups.restic import (
    PermanentResticError,
    RepositoryLocked,
    RepositoryMissing,
    Restic,
    ResticError,
)
from appliance.backups.tables import BackupJob, DrillReport, RecoveryPointCopy, RepositorySample
from appliance.config import Settings
from appliance.storage.base import ObjectStore, StorageError

__all__ = ["BackupLoop", "JobFailed", "run_job"]

log = logging.getLogger(__name__)
Clock = Callable[[], dt.datetime]


class JobFailed(Exception):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def rules(settings: Settings) -> RetentionRules:
    b = settings.backups
    return RetentionRules(
        daily=b.keep_daily,
        weekly=b.keep_weekly,
        monthly=b.keep_monthly,
        max_age_days=b.max_age_days,
        timezone=b.timezone,
    )


def _named(found: list[Target], name: str) -> Target:
    target = named(found, name)
    if target is None:
        raise JobFailed(f"no repository named {name!r} is configured", retryable=False)
    return target


async def record_points(name: str, points: list[Point], now: dt.datetime) -> None:
    """Make ``recovery_point_copy`` match what the repository holds."""
    have = {
        row["copy_key"]
        for row in await RecoveryPointCopy.select(RecoveryPointCopy.copy_key)
        .where(RecoveryPointCopy.repository == name)
        .run()
    }
    wanted = {f"{p.point_id}@{name}": p for p in points}
    gone = have - wanted.keys()
    if gone:
        await RecoveryPointCopy.delete().where(RecoveryPointCopy.copy_key.is_in(list(gone))).run()
    new = [
        RecoveryPointCopy(
            point_id=p.point_id,
            repository=name,
            copy_key=key,
            taken_at=p.taken_at,
            db_snapshot=p.db_snapshot,
            files_snapshot=p.files_snapshot,
            seen_at=now,
        )
        for key, p in wanted.items()
        if key not in have
    ]
    if new:
        await RecoveryPointCopy.insert(*new).on_conflict(action="DO NOTHING").run()


async def apply_retention(settings: Settings, restic: Restic, now: dt.datetime) -> list[Point]:
    """Forget the points the rules drop and leftovers of failed points; return those kept."""
    snapshots = await restic.snapshots(tags=[TAG])
    points = complete_points(snapshots)
    keep = to_keep(points, rules(settings), now)
    drop = [s for p in points if p.point_id not in keep for s in (p.db_snapshot, p.files_snapshot)]
    grace = dt.timedelta(minutes=2 * settings.backups.timeout_minutes)
    drop += leftover_parts(snapshots, before=now - grace)
    if drop:
        try:
            await restic.forget(drop)
        except RepositoryLocked:
            # forget needs an exclusive lock, which a stale lock of a killed run (even a
            # backup's) blocks; restic removes the locks it judges stale, then one more try.
            await restic.unlock()
            try:
                await restic.forget(drop)
            except RepositoryLocked as exc:
                # A live lock: an off-site copy reading this repository. Nothing is lost by
                # waiting; the next backup or the day's check applies the rules again.
                log.warning("retention of %s postponed: %s", restic.repository.name, exc)
                keep = {p.point_id for p in points}
    kept = [p for p in points if p.point_id in keep]
    await record_points(restic.repository.name, kept, now)
    return kept


def _needed(found: list[Target], name: str = "") -> list[Target]:
    """The primary, and ``name`` when it is another: all a job on ``name`` touches. Other
    repositories are left alone, so an unreachable off-site one never holds up the primary."""
    first = primary(found)
    if not name or name == first.name:
        return [first]
    return [first, _named(found, name)]


async def do_backup(settings: Settings, store: ObjectStore, now: Clock) -> dict[str, Any]:
    found = await targets(settings)
    first = primary(found)
    ensure_password(settings)
    url = first.repository.url
    if url.startswith("/") and not await anyio.Path(url, "config").exists():
        # A local folder tells for free that it holds no repository yet (a new appliance).
        await ensure_initialised(settings, _needed(found))
    try:
        outcome = await take_recovery_point(settings, store, first, now=now())
    except RepositoryMissing:
        # Only a new appliance (or a lost repository) gets here: making sure it exists before
        # every point would cost a repository open (about half a second) each night.
        await ensure_initialised(settings, _needed(found))
        outcome = await take_recovery_point(settings, store, first, now=now())
    restic = restic_for(settings, first)
    kept = await apply_retention(settings, restic, now())
    await (
        RecoveryPointCopy.update(
            {
                RecoveryPointCopy.object_count: len(outcome.manifest.objects),
                RecoveryPointCopy.object_bytes: sum(o["size"] for o in outcome.manifest.objects),
            }
        )
        .where(RecoveryPointCopy.point_id == outcome.point_id)
        .run()
    )
    for target in found:
        if target.offsite:
            await jobs.enqueue(
                "copy", f"copy:{target.name}:{outcome.point_id}", now(), repository=target.name
            )
    missing = outcome.manifest.missing
    if missing:
        # The point is kept (its database is worth having), but a studio must hear of photos
        # its database names and its store does not hold: a lost disk, an unmounted share.
        raise JobFailed(
            f"recovery point {outcome.point_id} made, but {len(missing)} objects the database "
            f"refers to are not in the store (first: {missing[0]}); is the storage mounted?",
            retryable=False,
        )
    return {
        "point_id": outcome.point_id,
        "repository": first.name,
        "seconds": round(outcome.seconds, 2),
        "objects": len(outcome.manifest.objects),
        "fetched": outcome.mirror.fetched,
        "missing": outcome.manifest.missing[:50],
        "data_added": outcome.db_summary.data_added + outcome.files_summary.data_added,
        "kept": len(kept),
    }


async def do_copy(settings: Settings, name: str, now: Clock) -> dict[str, Any]:
    """Copy every point the primary keeps and ``name`` lacks; then ``name``'s own retention."""
    found = await targets(settings)
    source = restic_for(settings, primary(found))
    target = restic_for(settings, _named(found, name))
    await ensure_initialised(settings, _needed(found, name))
    wanted = complete_points(await source.snapshots(tags=[TAG]))
    wanted = [p for p in wanted if p.point_id in to_keep(wanted, rules(settings), now())]
    there = {p.point_id for p in complete_points(await target.snapshots(tags=[TAG]))}
    missing = [p for p in wanted if p.point_id not in there]
    if missing:
        await target.unlock()
        ids = [s for p in missing for s in (p.db_snapshot, p.files_snapshot)]
        await target.copy(source, ids)
    kept = await apply_retention(settings, target, now())
    return {"copied": [p.point_id for p in missing], "kept": len(kept)}


def check_subset(now: dt.datetime, subsets: int) -> str:
    """Today's part of the data: a different one each day, all of them every ``subsets`` days."""
    return f"{now.toordinal() % subsets + 1}/{subsets}"


async def do_check(settings: Settings, name: str, now: Clock) -> dict[str, Any]:
    found = await targets(settings)
    await ensure_initialised(settings, _needed(found, name))
    restic = restic_for(settings, _named(found, name))
    await restic.unlock()
    subset = check_subset(now(), settings.backups.check_subsets)
    try:
        summary = await restic.check(subset=subset)
    except ResticError as exc:
        # restic exits 1 when it found damage; trying again cannot repair it, and waiting for
        # the retries would only delay the alert.
        if "repository contains errors" in str(exc) + exc.stderr:
            raise JobFailed(f"check of {name} found damage: {exc}", retryable=False) from None
        raise
    if summary.get("num_errors") or summary.get("broken_packs"):
        raise JobFailed(f"check of {name} found damage: {summary}", retryable=False)
    size = await restic.stats()
    points = await apply_retention(settings, restic, now())
    await RepositorySample.insert(
        RepositorySample(repository=name, at=now(), stored_bytes=size, snapshots=len(points))
    ).run()
    return {"subset": subset, "stored_bytes": size}


async def do_prune(settings: Settings, name: str, now: Clock) -> dict[str, Any]:
    found = await targets(settings)
    await ensure_initialised(settings, _needed(found, name))
    restic = restic_for(settings, _named(found, name))
    await restic.unlock()
    await restic.prune()
    return {"pruned": name}


async def do_drill(settings: Settings, name: str, now: Clock) -> dict[str, Any]:
    found = await targets(settings)
    await sweep_drill_leftovers(settings, now())
    result = await run_drill(settings, _named(found, name), now=now)
    await DrillReport.insert(
        DrillReport(
            repository=result.repository,
            point_id=result.point_id,
            started_at=result.started_at,
            finished_at=result.finished_at,
            passed=result.passed,
            rto_seconds=result.rto_seconds,
            rpo_seconds=result.rpo_seconds,
            report=result.report(),
        )
    ).run()
    if not result.passed:
        raise JobFailed(f"restore drill of {name} failed: {result.failure}", retryable=False)
    return {"point_id": result.point_id, "rto_seconds": round(result.rto_seconds, 1)}


async def sweep_drill_leftovers(settings: Settings, now: dt.datetime) -> None:
    """Remove the scratch databases and folders of drills whose worker died mid-way (a full
    copy of the photos each), unless another drill is running right now."""
    stale = now - dt.timedelta(seconds=jobs.STALE_SECONDS)
    others = (
        await BackupJob.count()
        .where(
            (BackupJob.kind == "drill")
            & (BackupJob.state == "running")
            & (BackupJob.heartbeat_at >= stale)
        )
        .run()
    )
    if others > 1:  # the one running this sweep is one of them
        return
    conn = await asyncpg.connect(settings.database.url)
    try:
        names = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname ~ '^appliance_drill_[0-9a-f]{8}$'"
        )
        for row in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
    finally:
        await conn.close()
    scratch = backup_dir(settings) / "scratch"

    def remove_folders() -> None:
        for folder in scratch.glob("drill-*") if scratch.is_dir() else []:
            shutil.rmtree(folder, ignore_errors=True)

    await anyio.to_thread.run_sync(remove_folders)


async def do_watch(settings: Settings, notifier: alerts.Notifier, now: Clock) -> dict[str, Any]:
    await alerts.check_drill_overdue(
        now(), overdue_days=settings.backups.drill_overdue_days, notifier=notifier
    )
    return {}


_LABELS = {
    "backup": "Backup",
    "copy": "Off-site copy",
    "check": "Repository check",
    "prune": "Prune",
    "drill": "Restore drill",
}


async def _dispatch(
    settings: Settings, store: ObjectStore, job: jobs.Job, notifier: alerts.Notifier, now: Clock
) -> dict[str, Any]:
    if job.kind == "backup":
        return await do_backup(settings, store, now)
    if job.kind == "watch":
        return await do_watch(settings, notifier, now)
    steps = {"copy": do_copy, "check": do_check, "prune": do_prune, "drill": do_drill}
    step = steps.get(job.kind)
    if step is None:
        raise JobFailed(f"unknown job kind {job.kind!r}", retryable=False)
    return await step(settings, job.repository, now)


async def run_job(
    settings: Settings, store: ObjectStore, job: jobs.Job, now: Clock, worker: str
) -> str:
    """Run a claimed job with heartbeats, record it, report it; return its new state."""
    urls, ping_url = await alerts.effective_targets(settings)
    notifier = alerts.Notifier(urls, ping_url, settings=settings)
    if job.kind == "backup":
        await notifier.ping("start")
    work = asyncio.create_task(_dispatch(settings, store, job, notifier, now))
    beat = asyncio.create_task(_heartbeats(job, worker, now, work))
    ok, error, retryable, result = True, "", False, {}
    try:
        result = await work
    except asyncio.CancelledError:
        if not beat.done() or asyncio.current_task().cancelling():  # type: ignore[union-attr]
            raise  # the worker is stopping: the job is taken again after a restart
        # The claim was lost (another worker took the job over): the outcome is not ours.
        log.warning("backup job %s stopped: another worker runs it now", job.slot)
        return "lost"
    except JobFailed as exc:
        ok, error, retryable = False, str(exc), exc.retryable
    except PermanentResticError as exc:
        ok, error, retryable = False, str(exc), False
    except ResticError as exc:
        ok, error, retryable = False, str(exc), exc.retryable
    except StorageError as exc:
        ok, error, retryable = False, f"object store: {exc}", not exc.permanent
    except Exception as exc:  # a job must end recorded, whatever went wrong
        log.exception("backup job %s failed", job.slot)
        ok, error, retryable = False, f"{type(exc).__name__}: {exc}", True
    finally:
        beat.cancel()
    state = await jobs.finish(
        job,
        worker,
        now(),
        ok=ok,
        error=error,
        retryable=retryable,
        result=result,
        settings=settings.backups,
    )
    if job.kind == "watch" or state == "lost":
        return state
    await report_outcome(job, state, error, notifier, now())
    if job.kind == "backup" and state != "queued":
        await notifier.ping("success" if ok else "fail", str(result) if ok else error)
    return state


async def report_outcome(
    job: jobs.Job, state: str, error: str, notifier: alerts.Notifier, now: dt.datetime
) -> None:
    """Tell the alerts: a failure when the job has failed for good, a success when done."""
    if state not in {"done", "failed"}:
        return
    key = job.kind if not job.repository else f"{job.kind}:{job.repository}"
    label = _LABELS.get(job.kind, job.kind)
    where = f" ({job.repository})" if job.repository else ""
    if state == "done":
        message = f"{label}{where} works again."
    else:
        message = f"{label}{where} failed: {error}\nOpen Admin → Backups for details."
    await alerts.report(key, ok=state == "done", message=message, notifier=notifier, now=now)


async def _heartbeats(job: jobs.Job, worker: str, now: Clock, work: asyncio.Task[Any]) -> None:
    """Keep the claim alive; stop ``work`` once the claim is lost or can no longer be kept
    (the database away for most of STALE_SECONDS: another worker may take the job then), so
    two runs of one job never overlap."""
    kept = time.monotonic()
    while not work.done():
        await asyncio.sleep(jobs.HEARTBEAT_SECONDS)
        try:
            if not await jobs.heartbeat(job, worker, now()):
                log.warning("backup job %s was taken over by another worker", job.slot)
                work.cancel()
                return
            kept = time.monotonic()
        except Exception:  # the next beat tries again
            log.exception("could not record the heartbeat of %s", job.slot)
            if time.monotonic() - kept > jobs.STALE_SECONDS - 2 * jobs.HEARTBEAT_SECONDS:
                log.warning("backup job %s stopped: its claim could not be kept", job.slot)
                work.cancel()
                return


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class BackupLoop(threading.Thread):
    """Queues scheduled backup jobs and runs them until stopped: at most ``parallel`` at once
    and one per repository, so an off-site copy that takes hours never delays the backup."""

    def __init__(self, settings: Settings, *, interval: float = 15.0, parallel: int = 2) -> None:
        super().__init__(name="backup-jobs", daemon=True)
        self.settings = settings
        self.interval = interval
        self.parallel = parallel
        self.stopping = threading.Event()
        self.worker = worker_name()
        self.scheduled: set[str] = set()  # slots already queued, by anyone

    async def tick(self, store: ObjectStore, now: Clock, running: set[asyncio.Task[str]]) -> None:
        found = await targets(self.settings)
        await jobs.schedule_due(
            now(), self.settings.backups, [(t.name, t.offsite) for t in found], self.scheduled
        )
        dead = await jobs.give_up_dead(now(), max_attempts=self.settings.backups.retries + 1)
        if dead:
            notifier = await alerts.load_notifier(self.settings)
            for lost in dead:
                log.error("backup job %s failed: its worker kept dying", lost.slot)
                if lost.kind != "watch":
                    error = f"its worker stopped answering during each of {lost.attempts} tries"
                    await report_outcome(lost, "failed", error, notifier, now())
        while len(running) < self.parallel:
            job = await jobs.claim(self.worker, now(), primary=primary(found).name)
            if job is None:
                return
            log.info("backup job %s started", job.slot)
            task = asyncio.create_task(run_job(self.settings, store, job, now, self.worker))
            running.add(task)
            task.add_done_callback(running.discard)

    async def check_restic(self) -> None:
        """Say at start-up, in one line, when restic is missing or too old; the jobs then fail
        with the same message and alert."""
        try:
            found = await targets(self.settings)
            await restic_for(self.settings, primary(found), timeout=30).version()
        except ResticError as exc:
            log.error("backups cannot run: %s", exc)  # noqa: TRY400 - one line says it all
        except Exception:
            log.exception("backups: could not check the restic binary")

    async def main(self) -> None:
        from appliance.clock import utcnow
        from appliance.storage import open_store

        store = open_store(self.settings)
        running: set[asyncio.Task[str]] = set()
        await self.check_restic()
        while not self.stopping.is_set():
            try:
                await self.tick(store, utcnow, running)
            except Exception:  # the loop must survive a database outage
                log.exception("backup jobs: could not schedule or claim; trying again")
            for _ in range(int(self.interval * 10)):
                if self.stopping.is_set():
                    break
                await asyncio.sleep(0.1)
        for task in running:
            task.cancel()  # restic is stopped; the job is taken again after a restart
        await asyncio.gather(*running, return_exceptions=True)

    def run(self) -> None:
        from appliance.worker import close_thread_loop, run_async

        try:
            run_async(self.main())
        finally:
            close_thread_loop()

    def stop(self, timeout: float = 15.0) -> None:
        self.stopping.set()
        self.join(timeout)
