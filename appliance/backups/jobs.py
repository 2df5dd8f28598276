"""The backup job queue: rows of ``backup_job``, claimed under a lock, kept alive by heartbeats.

- :func:`schedule_due` queues what the schedule says is due; each job's ``slot`` is unique, so
  a schedule seen by two workers, or again after a restart, queues it once.
- :func:`claim` takes the next due job, or one whose worker stopped sending heartbeats (it died:
  the job is taken again). Backup jobs run one at a time: restic's exclusive operations (prune)
  and the database dump should not compete, and two workers never run the same job.
- :func:`finish` records the outcome; a failure that may pass is queued again after a growing
  pause until ``backups.retries`` is spent; a permanent one fails at once (no retry storm).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import msgspec
from piccolo.engine.postgres import PostgresEngine

from appliance.backups.tables import BackupJob
from appliance.config import BackupSettings

__all__ = [
    "HEARTBEAT_SECONDS",
    "STALE_SECONDS",
    "Job",
    "claim",
    "enqueue",
    "finish",
    "give_up_dead",
    "heartbeat",
    "schedule_due",
]

HEARTBEAT_SECONDS = 20.0
STALE_SECONDS = 120.0  # a running job without a heartbeat this long has lost its worker
_CLAIM_LOCK = 0x6B61_6D01  # advisory lock id serialising claims
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class Job(msgspec.Struct, frozen=True):
    id: int
    kind: str
    repository: str
    slot: str
    attempts: int
    requested_by: int | None = None


def _engine() -> PostgresEngine:
    engine = BackupJob._meta.db
    assert isinstance(engine, PostgresEngine)
    return engine


async def enqueue(
    kind: str,
    slot: str,
    now: dt.datetime,
    *,
    repository: str = "",
    requested_by: int | None = None,
    not_before: dt.datetime | None = None,
) -> bool:
    """Queue a job unless its slot was queued before; True when queued now."""
    rows = await BackupJob.raw(
        "INSERT INTO backup_job (kind, repository, slot, state, attempts, not_before, "
        "claimed_by, requested_by, error, result, created_at) "
        "VALUES ({}, {}, {}, 'queued', 0, {}, '', {}, '', {}, {}) "
        "ON CONFLICT (slot) DO NOTHING RETURNING id",
        kind,
        repository,
        slot,
        not_before or now,
        requested_by,
        "{}",
        now,
    ).run()
    return bool(rows)


async def pending(kind: str) -> bool:
    """Whether a job of ``kind`` is queued or running."""
    return (
        await BackupJob.exists()
        .where((BackupJob.kind == kind) & BackupJob.state.is_in(["queued", "running"]))
        .run()
    )


async def claim(
    worker: str,
    now: dt.datetime,
    *,
    kinds: list[str] | None = None,
    primary: str = "",
) -> Job | None:
    """Take the next job that is due, or whose worker died; None if there is none whose
    repository is free.

    One job at a time per repository: a prune's exclusive lock, a backup and a drill should
    not compete. An off-site copy reads the ``primary`` under a shared lock for as long as it
    runs, which a backup tolerates (it runs beside it) but a check or a prune of the primary,
    needing an exclusive lock, does not: they wait for the copy, and a copy for them.
    """
    stale = now - dt.timedelta(seconds=STALE_SECONDS)
    engine = _engine()
    async with engine.transaction() as transaction:
        connection = transaction.connection
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _CLAIM_LOCK)
        row = await connection.fetchrow(
            "SELECT id FROM backup_job j WHERE ((state = 'queued' AND not_before <= $1) "
            "OR (state = 'running' AND heartbeat_at < $2)) "
            "AND ($3::text[] IS NULL OR kind = ANY($3)) "
            "AND NOT EXISTS (SELECT 1 FROM backup_job r WHERE r.state = 'running' "
            "AND r.heartbeat_at >= $2 AND r.id <> j.id AND (r.repository = j.repository "
            "OR (r.kind = 'copy' AND j.repository = $4 AND j.kind IN ('check', 'prune')) "
            "OR (j.kind = 'copy' AND r.repository = $4 AND r.kind IN ('check', 'prune')))) "
            "ORDER BY not_before, id LIMIT 1 FOR UPDATE SKIP LOCKED",
            now,
            stale,
            kinds,
            primary,
        )
        if row is None:
            return None
        claimed = await connection.fetchrow(
            "UPDATE backup_job SET state = 'running', claimed_by = $2, claimed_at = $3, "
            "heartbeat_at = $3, attempts = attempts + 1 WHERE id = $1 "
            "RETURNING id, kind, repository, slot, attempts, requested_by",
            row["id"],
            worker,
            now,
        )
    return Job(**dict(claimed))


async def claim_job(job_id: int, worker: str, now: dt.datetime) -> Job | None:
    """Claim one particular queued job (the CLI runs the job it queued)."""
    engine = _engine()
    async with engine.transaction() as transaction:
        connection = transaction.connection
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _CLAIM_LOCK)
        stale = now - dt.timedelta(seconds=STALE_SECONDS)
        busy = await connection.fetchval(
            "SELECT count(*) FROM backup_job j, backup_job r WHERE j.id = $1 "
            "AND r.state = 'running' AND r.heartbeat_at >= $2 AND r.repository = j.repository",
            job_id,
            stale,
        )
        if busy:
            return None
        claimed = await connection.fetchrow(
            "UPDATE backup_job SET state = 'running', claimed_by = $2, claimed_at = $3, "
            "heartbeat_at = $3, attempts = attempts + 1 WHERE id = $1 AND state = 'queued' "
            "RETURNING id, kind, repository, slot, attempts, requested_by",
            job_id,
            worker,
            now,
        )
    return Job(**dict(claimed)) if claimed else None


async def give_up_dead(now: dt.datetime, *, max_attempts: int) -> list[Job]:
    """Fail the running jobs whose worker died during each of ``max_attempts`` tries (a job
    that kills its worker, say by running out of memory, must not be taken again forever)."""
    stale = now - dt.timedelta(seconds=STALE_SECONDS)
    rows = await BackupJob.raw(
        "UPDATE backup_job SET state = 'failed', finished_at = {}, "
        "error = 'its worker stopped answering during each of ' || attempts || ' tries' "
        "WHERE state = 'running' AND heartbeat_at < {} AND attempts >= {} "
        "RETURNING id, kind, repository, slot, attempts, requested_by",
        now,
        stale,
        max_attempts,
    ).run()
    return [Job(**row) for row in rows]


async def heartbeat(job: Job, worker: str, now: dt.datetime) -> bool:
    """Keep the claim alive; False when the job is no longer this worker's."""
    rows = await (
        BackupJob.update({BackupJob.heartbeat_at: now})
        .where(
            (BackupJob.id == job.id)
            & (BackupJob.claimed_by == worker)
            & (BackupJob.attempts == job.attempts)  # a claim taken again is another claim
            & (BackupJob.state == "running")
        )
        .returning(BackupJob.id)
        .run()
    )
    return bool(rows)


async def finish(
    job: Job,
    worker: str,
    now: dt.datetime,
    *,
    ok: bool,
    error: str = "",
    retryable: bool = False,
    result: dict[str, Any] | None = None,
    settings: BackupSettings,
) -> str:
    """Record the outcome; return the job's new state ("done", "queued" again, or "failed"),
    or "lost" when the claim is no longer this run's (the job was taken over)."""
    state = "done" if ok else "failed"
    not_before = now
    if not ok and retryable and job.attempts <= settings.retries:
        state = "queued"
        not_before = now + dt.timedelta(minutes=5 * 2 ** (job.attempts - 1))
    rows = await (
        BackupJob.update(
            {
                BackupJob.state: state,
                BackupJob.finished_at: now if state != "queued" else None,
                BackupJob.not_before: not_before,
                BackupJob.error: error[:4000],
                BackupJob.result: msgspec.json.encode(result or {}).decode(),
            }
        )
        .where(
            (BackupJob.id == job.id)
            & (BackupJob.claimed_by == worker)
            & (BackupJob.attempts == job.attempts)
            & (BackupJob.state == "running")
        )
        .returning(BackupJob.id)
        .run()
    )
    return state if rows else "lost"


def _local(now: dt.datetime, settings: BackupSettings) -> dt.datetime:
    return now.astimezone(zoneinfo.ZoneInfo(settings.timezone))


def _passed(local: dt.datetime, clock: str) -> bool:
    hour, minute = (int(x) for x in clock.split(":"))
    return (local.hour, local.minute) >= (hour, minute)


def due_slots(
    now: dt.datetime, settings: BackupSettings, repositories: list[tuple[str, bool]]
) -> list[tuple[str, str, str]]:
    """(kind, repository, slot) of every scheduled job whose time has come today or this week.

    A time missed while the appliance was off is caught up when it runs again (same day for
    daily jobs, same ISO week for weekly ones). ``repositories`` is (name, offsite) pairs.
    """
    local = _local(now, settings)
    day = local.date().isoformat()
    year, week, weekday = local.isocalendar()
    week_id = f"{year}-W{week:02d}"
    names = [name for name, _ in repositories]
    first = next((name for name, offsite in repositories if not offsite), "")
    due: list[tuple[str, str, str]] = []
    if _passed(local, settings.daily_at):
        due.append(("backup", first, f"backup:{day}"))
    if _passed(local, settings.check_at):
        due += [("check", name, f"check:{name}:{day}") for name in names]
    if _WEEKDAYS.index(settings.prune_weekday) + 1 < weekday or (
        _WEEKDAYS.index(settings.prune_weekday) + 1 == weekday and _passed(local, settings.prune_at)
    ):
        due += [("prune", name, f"prune:{name}:{week_id}") for name in names]
    if names and (
        _WEEKDAYS.index(settings.drill_weekday) + 1 < weekday
        or (
            _WEEKDAYS.index(settings.drill_weekday) + 1 == weekday
            and _passed(local, settings.drill_at)
        )
    ):
        # Repositories take turns, one a week.
        name = names[week % len(names)]
        due.append(("drill", name, f"drill:{week_id}"))
    due.append(("watch", "", f"watch:{local:%Y-%m-%dT%H}"))
    return due


async def schedule_due(
    now: dt.datetime,
    settings: BackupSettings,
    repositories: list[tuple[str, bool]],
    seen: set[str] | None = None,
) -> list[str]:
    """Queue every due job not queued before; return their slots. Slots in ``seen`` (those
    this process already queued or found queued) are not tried again, and are added to it:
    the loop looks every 15 seconds and need not insert the day's slots each time."""
    if not settings.enabled:
        return []
    seen = set() if seen is None else seen
    due = due_slots(now, settings, repositories)
    seen.intersection_update(slot for _, _, slot in due)  # yesterday's slots are not due again
    queued = []
    for kind, repository, slot in due:
        if slot in seen:
            continue
        if await enqueue(kind, slot, now, repository=repository):
            queued.append(slot)
        seen.add(slot)
    return queued
