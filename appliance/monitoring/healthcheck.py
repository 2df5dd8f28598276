"""``appliance healthcheck web|worker``: a container's health check, one line, exit 0 or 1.

``web`` asks this container's own web server for ``/healthz``; ``worker`` reads the heartbeat
the worker writes to the database after every probe round. Neither starts anything (no
embedded database, no connection pool, no logging set-up): Docker runs the check every few
seconds, so it must stay cheap and free of side effects.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import click
import msgspec

from appliance.cli import Context
from appliance.config import Settings
from appliance.localtime import format_duration

__all__ = ["Health", "healthcheck", "web_health", "worker_health"]

# Below the bundle's health-check time-out (10 s): a database that hangs is reported as
# such, rather than Docker killing the check without a word.
DATABASE_TIMEOUT = 5.0


class Health(msgspec.Struct, frozen=True):
    healthy: bool
    detail: str


async def web_health(settings: Settings) -> Health:
    """This container's own web server answers ``/healthz`` at server.host and server.port."""
    from appliance.monitoring.probes import probe_web

    # monitoring.web_url is how the worker reaches the web container; the check is about
    # the server in this one.
    own = msgspec.structs.replace(settings.monitoring, web_url="")
    outcome = await probe_web(msgspec.structs.replace(settings, monitoring=own))
    return Health(outcome.state == "up", outcome.detail)


async def worker_health(settings: Settings, now: dt.datetime) -> Health:
    """The worker's heartbeat is younger than ``monitoring.worker_stale_seconds``.

    Several workers share one heartbeat (whichever probed last wrote it), so this says that
    the appliance's background work is running, not which worker runs it.
    """
    import asyncpg

    from appliance.db.engine import DATABASE_UNAVAILABLE, configure
    from appliance.monitoring.tables import ProcessHeartbeat

    if not settings.database.url:
        return Health(False, "database.url is not set (the check never starts a database)")
    configure(settings.database.url)
    query = (
        ProcessHeartbeat.select(ProcessHeartbeat.beat_at)
        .where(ProcessHeartbeat.name == "worker")
        .first()
    )
    try:
        row = await asyncio.wait_for(query.run(), DATABASE_TIMEOUT)
    except (*DATABASE_UNAVAILABLE, asyncpg.PostgresError) as exc:
        return Health(False, f"cannot read the heartbeat from the database: {type(exc).__name__}")
    if row is None:
        return Health(False, "no heartbeat from the worker yet")
    limit = settings.monitoring.worker_stale_seconds
    age = (now - row["beat_at"]).total_seconds()
    last = f"last heartbeat {format_duration(age)} ago"
    if age >= limit:
        return Health(False, f"{last}, over the limit of {format_duration(limit)}")
    return Health(True, last)


@click.command()
@click.argument("part", type=click.Choice(["web", "worker"]))
@click.pass_obj
def healthcheck(obj: Context, part: str) -> None:
    """Exit 0 when PART (web or worker) is healthy, else 1; print one line saying why."""
    from appliance.clock import utcnow

    settings = obj.settings
    check = web_health(settings) if part == "web" else worker_health(settings, utcnow())
    health = asyncio.run(check)
    click.echo(f"{part}: {'healthy' if health.healthy else 'unhealthy'}: {health.detail}")
    if not health.healthy:
        raise SystemExit(1)
