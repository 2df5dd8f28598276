"""``appliance backup``, ``drill``, ``restore`` and ``upgrade-check``.

``backup`` and ``drill`` queue a job exactly as the schedule does and run it in this process,
so they wait for a job running on the same repository instead of competing with it, and leave
the same records and alerts as a scheduled run. ``upgrade-check`` is the gate the upgrade
script asks before it touches anything: an upgrade is only as safe as the last backup that is
known to restore.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import asyncpg
import click
import msgspec

from appliance.cli import Context, database
from appliance.config import Settings
from appliance.logs import configure_logging

__all__ = ["backup", "drill", "restore", "upgrade_check"]


def _with_password_file(settings: Settings, password_file: str | None) -> Settings:
    if not password_file:
        return settings
    backups = msgspec.structs.replace(settings.backups, password_file=password_file)
    return msgspec.structs.replace(settings, backups=backups)


def _run_backup_job(settings: Settings, kind: str, repository: str) -> tuple[str, str]:
    """Queue a job the way the schedule does and run it here; (state, error or summary)."""
    from appliance.backups import jobs, repositories
    from appliance.backups.service import run_job, worker_name
    from appliance.backups.tables import BackupJob
    from appliance.clock import utcnow
    from appliance.db.engine import configure
    from appliance.storage import open_store

    async def run() -> tuple[str, str]:
        configure(settings.database.url)
        store = open_store(settings)
        await store.ensure_ready()
        found = await repositories.targets(settings)
        name = repository or repositories.primary(found).name
        slot = f"{kind}:cli:{utcnow():%Y%m%dT%H%M%S.%f}"
        # Due only in a year: the worker's loop never takes it before this process does.
        later = utcnow() + dt.timedelta(days=365)
        await jobs.enqueue(kind, slot, utcnow(), repository=name, not_before=later)
        row = await BackupJob.select(BackupJob.id).where(BackupJob.slot == slot).first().run()
        assert row is not None
        worker = worker_name()
        job = await jobs.claim_job(row["id"], worker, utcnow())
        if job is None:
            await BackupJob.delete().where(BackupJob.id == row["id"]).run()
            raise click.ClickException(
                f"another backup job is running on {name}; try again when it has finished"
            )
        state = await run_job(settings, store, job, utcnow, worker)
        done = (
            await BackupJob.select(BackupJob.error, BackupJob.result)
            .where(BackupJob.id == job.id)
            .first()
            .run()
        )
        assert done is not None
        return state, done["error"] or str(done["result"])

    return asyncio.run(run())


@click.command()
@click.option("--password-file", default=None, help="Repository password file (default: set-up's).")
@click.pass_obj
def backup(obj: Context, password_file: str | None) -> None:
    """Make a recovery point now (database, photos, manifest) in the primary repository."""
    configure_logging(obj.settings.logging.level)
    with database(_with_password_file(obj.settings, password_file)) as (settings, _):
        state, detail = _run_backup_job(settings, "backup", "")
    if state != "done":
        raise click.ClickException(f"backup failed: {detail}")
    click.echo(f"recovery point made: {detail}")


@click.command()
@click.option("--repository", default="", help="Repository to drill (default: the primary).")
@click.option("--password-file", default=None, help="Repository password file (default: set-up's).")
@click.pass_obj
def drill(obj: Context, repository: str, password_file: str | None) -> None:
    """Restore the newest recovery point into scratch space and verify it (a restore drill)."""
    configure_logging(obj.settings.logging.level)
    with database(_with_password_file(obj.settings, password_file)) as (settings, _):
        state, detail = _run_backup_job(settings, "drill", repository)
    if state != "done":
        raise click.ClickException(f"drill failed: {detail}")
    click.echo(f"drill passed: {detail}")


@click.command()
@click.option("--recovery-point", "point_id", default=None, help="Point id (default: newest).")
@click.option("--repository", default="", help="Repository to restore from (default: primary).")
@click.option("--into-scratch", is_flag=True, help="Restore beside the live data, for inspection.")
@click.option("--password-file", default=None, help="Repository password file (default: set-up's).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def restore(
    obj: Context,
    point_id: str | None,
    repository: str,
    into_scratch: bool,
    password_file: str | None,
    yes: bool,
) -> None:
    """Bring the appliance back from a recovery point (stop the appliance first)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from appliance.backups import repositories
    from appliance.backups import restore as restoring
    from appliance.backups.drill import DrillFailed
    from appliance.backups.restic import ResticError
    from appliance.clock import utcnow
    from appliance.storage import StorageError, open_store

    configure_logging(obj.settings.logging.level)
    with database(_with_password_file(obj.settings, password_file)) as (settings, _):

        async def pick() -> tuple[repositories.Target, Any]:
            found = repositories.configured(settings)
            target = repositories.named(found, repository) if repository else None
            if repository and target is None:
                raise click.ClickException(f"no repository named {repository!r}")
            target = target or repositories.primary(found)
            return target, await restoring.choose_point(settings, target, point_id)

        try:
            target, point = asyncio.run(pick())
        except (ResticError, DrillFailed) as exc:
            raise click.ClickException(str(exc)) from None
        age = restoring.describe_age(point, utcnow())
        click.echo(
            f"Recovery point {point.point_id} from {target.name}, taken "
            f"{point.taken_at:%Y-%m-%d %H:%M} UTC ({age} ago)."
        )
        if not into_scratch:
            click.echo("This REPLACES the database and writes the photos back into the store.")
        if not yes and not click.confirm("Go on?", default=False):
            raise click.ClickException("nothing was changed")
        store = open_store(settings)
        with Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), transient=False
        ) as bars:
            tasks: dict[str, Any] = {}

            def progress(stage: str, done: float, total: float) -> None:
                if stage not in tasks:
                    tasks[stage] = bars.add_task(stage, total=total or None)
                bars.update(tasks[stage], completed=done, total=total or None)

            async def run() -> restoring.RestoreOutcome:
                await store.ensure_ready()
                return await restoring.restore(
                    settings, store, target, point, into_scratch=into_scratch, progress=progress
                )

            try:
                outcome = asyncio.run(run())
            except (ResticError, DrillFailed, StorageError, asyncpg.PostgresError, OSError) as exc:
                raise click.ClickException(
                    f"restore failed: {exc} (the recovery point is unharmed: fix the cause and "
                    "run the command again)"
                ) from None
    if outcome.mismatched:
        raise click.ClickException(
            f"{len(outcome.mismatched)} objects did not match their SHA-256, e.g. "
            f"{outcome.mismatched[0]}; try another recovery point or repository"
        )
    click.echo(
        f"restored {point.point_id}: database {outcome.database}, {outcome.objects} objects "
        f"({outcome.object_bytes / 1e6:.1f} MB)"
        + (f"; files in {outcome.folder}" if outcome.folder else "")
    )


async def _upgrade_gate(settings: Settings, now: dt.datetime) -> dict[str, Any]:
    """The last finished backup and the last restore drill, and why they do not allow an
    upgrade (no reasons: ready). Read from the tables, like the probes: no repository is asked.
    """
    from appliance.backups.tables import BackupJob, DrillReport
    from appliance.db.engine import configure, connection_pool
    from appliance.localtime import format_duration, format_utc

    configure(settings.database.url)
    async with connection_pool():
        backup = (
            await BackupJob.select(BackupJob.state, BackupJob.finished_at, BackupJob.error)
            .where((BackupJob.kind == "backup") & BackupJob.state.is_in(["done", "failed"]))
            .order_by(BackupJob.finished_at, ascending=False)
            .first()
            .run()
        )
        drill = (
            await DrillReport.select(
                DrillReport.finished_at, DrillReport.passed, DrillReport.point_id
            )
            .order_by(DrillReport.finished_at, ascending=False)
            .first()
            .run()
        )
    limit_hours = settings.monitoring.backup_max_age_hours
    drill_days = settings.backups.drill_overdue_days
    age = "" if backup is None else format_duration((now - backup["finished_at"]).total_seconds())
    reasons = []
    if not settings.backups.enabled:
        reasons.append("backups are switched off (backups.enabled = false)")
    if backup is None:
        reasons.append("no recovery point has been made yet: run `appliance backup`")
    elif backup["state"] == "failed":
        error = (backup["error"] or "no reason recorded").splitlines()[0]
        reasons.append(
            f"the last backup failed at {format_utc(backup['finished_at'])} ({error}): "
            "fix the cause and run `appliance backup`"
        )
    elif now - backup["finished_at"] > dt.timedelta(hours=limit_hours):
        reasons.append(
            f"the last recovery point is {age} old, older than "
            f"monitoring.backup_max_age_hours ({limit_hours} h): run `appliance backup`"
        )
    if drill is None:
        reasons.append("no restore drill has run yet: run `appliance drill`")
    elif not drill["passed"]:
        reasons.append(
            f"the last restore drill failed at {format_utc(drill['finished_at'])}: "
            "see Admin → Backups, then run `appliance drill`"
        )
    elif now - drill["finished_at"] > dt.timedelta(days=drill_days):
        # A drill proves the backups of its day; the setting that makes a drill overdue for
        # the alerts also says when its proof is too old to upgrade on.
        reasons.append(
            f"the last restore drill passed at {format_utc(drill['finished_at'])}, more than "
            f"backups.drill_overdue_days ({drill_days} days) ago: run `appliance drill`"
        )
    summary = ""
    if not reasons and drill is not None:
        summary = (
            f"the last recovery point is {age} old and the last restore drill passed at "
            f"{format_utc(drill['finished_at'])}"
        )
    return {
        "ready": not reasons,
        "reasons": reasons,
        "summary": summary,
        "checked_at": now.isoformat(),
        "backup_max_age_hours": limit_hours,
        "drill_overdue_days": drill_days,
        "last_backup": None
        if backup is None
        else {
            "state": backup["state"],
            "finished_at": backup["finished_at"].isoformat(),
            "error": backup["error"],
        },
        "last_drill": None
        if drill is None
        else {
            "passed": drill["passed"],
            "finished_at": drill["finished_at"].isoformat(),
            "point_id": drill["point_id"],
        },
    }


@click.command("upgrade-check")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@click.pass_obj
def upgrade_check(obj: Context, as_json: bool) -> None:
    """Exit 0 only when the last backup worked and is recent, and the last restore drill
    passed within backups.drill_overdue_days."""
    from appliance.clock import utcnow

    with database(obj.settings) as (settings, _):
        verdict = asyncio.run(_upgrade_gate(settings, utcnow()))
    if as_json:
        click.echo(json.dumps(verdict, indent=2))
    elif verdict["ready"]:
        click.echo(f"ready to upgrade: {verdict['summary']}")
    else:
        click.echo("not ready to upgrade:")
        for reason in verdict["reasons"]:
            click.echo(f"  - {reason}")
    if not verdict["ready"]:
        raise SystemExit(1)
