"""Who watches the watcher: the web process notices a silent worker, and alerts go out directly
when the part that normally delivers them is the part that failed.

The outbox is delivered by the worker and lives in the database, so neither a dead worker nor
an unreachable database could announce itself through it. Both alerts are sent straight
through apprise here (:func:`send_direct`) and recorded in the outbox afterwards, as sent, so
admins see them with the rest and the worker does not send them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Sequence

import anyio
import msgspec
from asyncpg.exceptions import UniqueViolationError

from appliance.clock import Clock
from appliance.config import Settings
from appliance.db.engine import DATABASE_UNAVAILABLE
from appliance.localtime import format_utc
from appliance.monitoring import states
from appliance.monitoring.components import label
from appliance.monitoring.tables import ProcessHeartbeat
from appliance.notify.delivery import alert_urls
from appliance.notify.messages import Severity, config_channel_key
from appliance.notify.tables import AlertChannel, OutboxMessage

__all__ = [
    "CHECK_SECONDS",
    "AlertTarget",
    "WorkerWatch",
    "alert_targets",
    "record_direct",
    "send_direct",
    "watch_worker",
]

log = logging.getLogger(__name__)

CHECK_SECONDS = 30.0
SOURCE = "monitoring"


class AlertTarget(msgspec.Struct, frozen=True):
    """An alert channel: its outbox key and its apprise URL (a secret: never logged)."""

    channel: str
    url: str


async def alert_targets(config_urls: Sequence[str]) -> list[AlertTarget]:
    """The settings file's alert URLs, then the enabled channels admins added."""
    found = [AlertTarget(config_channel_key(url), url) for url in config_urls if url.strip()]
    rows = (
        await AlertChannel.select(AlertChannel.id, AlertChannel.url)
        .where(AlertChannel.enabled.eq(True))
        .order_by(AlertChannel.id)
        .run()
    )
    found += [AlertTarget(f"db:{row['id']}", row["url"]) for row in rows]
    unique = {target.channel: target for target in found}
    return list(unique.values())


def _send_one(target: AlertTarget, title: str, body: str, severity: Severity, wait: float) -> str:
    """Send to one channel; "" when accepted, else why not (masked). Blocks."""
    from appliance.notify.channels import send_alert
    from appliance.notify.smtp import TransportError

    try:
        send_alert(target.url, title=title, body=body, severity=severity, timeout=wait)
    except TransportError as exc:
        return exc.message or "not accepted"
    except Exception as exc:  # noqa: BLE001 - a plugin may raise anything; never the caller
        return f"the channel raised {type(exc).__name__}"
    return ""


async def send_direct(
    targets: Sequence[AlertTarget], title: str, body: str, severity: Severity, *, wait: float
) -> dict[str, str]:
    """Send one alert to every target at once, without the outbox; ``{channel: error}``, the
    error "" where the channel accepted it. Never raises."""
    results: dict[str, str] = {}

    async def one(target: AlertTarget) -> None:
        # A channel that hangs is abandoned at the time-out: apprise cannot be interrupted,
        # and its own socket time-outs (the same value) end the thread soon after.
        with anyio.move_on_after(wait + 1) as scope:
            results[target.channel] = await anyio.to_thread.run_sync(
                _send_one, target, title, body, severity, wait, abandon_on_cancel=True
            )
        if scope.cancelled_caught:
            results[target.channel] = f"no answer within {wait:.0f} s"

    async with anyio.create_task_group() as group:
        for target in targets:
            group.start_soon(one, target)
    for channel, error in results.items():
        if error:
            log.warning("direct alert %r to channel %s not delivered: %s", title, channel, error)
    return results


async def record_direct(
    results: dict[str, str],
    *,
    title: str,
    body: str,
    severity: Severity,
    sent_at: dt.datetime,
    now: dt.datetime,
    dedupe_key: str,
) -> int:
    """Record a directly sent alert in the outbox, one row a channel: ``sent`` where it was
    accepted, ``pending`` where not, so the worker tries those again when it can. The rows
    made (a second call with the same key makes none)."""
    made = 0
    for channel, error in results.items():
        row = OutboxMessage(
            kind="alert",
            channel=channel,
            subject=title[:500],
            body_text=body,
            severity=severity,
            source=SOURCE,
            dedupe_key=f"{dedupe_key}@{channel}"[:200],
            state="pending" if error else "sent",
            attempts=1,
            last_error=error[:500],
            next_attempt_at=now,
            created_at=sent_at,
            sent_at=None if error else sent_at,
        )
        try:
            await row.save().run()
        except UniqueViolationError:
            continue
        made += 1
    return made


class WorkerWatch:
    """The web process's watch over the worker's heartbeat.

    A heartbeat counts as stale once it is ``worker_stale_seconds`` old, measured from no
    earlier than this watch's start and the database's last return: after a reboot, or once
    the database is back from an outage, the worker gets the same time to beat again.
    """

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.started_at = clock()
        self.database_back_at: dt.datetime | None = None
        self.database_failing = False

    async def check(self) -> bool:
        """Look once; True when this call marked the worker down (and alerted)."""
        now = self.clock()
        try:
            beat = (
                await ProcessHeartbeat.select(ProcessHeartbeat.beat_at)
                .where(ProcessHeartbeat.name == "worker")
                .first()
                .run()
            )
        except DATABASE_UNAVAILABLE:
            self.database_failing = True
            return False
        if self.database_failing:
            self.database_failing = False
            self.database_back_at = now
        if beat is None:
            return False  # no worker has ever run here: nothing to miss yet
        last_beat: dt.datetime = beat["beat_at"]
        seen = max(last_beat, self.started_at, self.database_back_at or last_beat)
        if now - seen < dt.timedelta(seconds=self.settings.monitoring.worker_stale_seconds):
            return False
        return await self.mark_down(last_beat, now)

    async def mark_down(self, last_beat: dt.datetime, now: dt.datetime) -> bool:
        """Mark the worker down (once, whoever else is watching) and alert directly."""
        detail = f"No heartbeat from the worker since {format_utc(last_beat)}."
        if await states.confirm_down("worker", detail, last_beat, now) == "already":
            return False
        name = label("worker")
        title = f"{name} is down"
        body = (
            f"{detail} Photos are not processed, e-mail and alerts wait in the outbox, and "
            "backups do not run until it is back. Check the worker container or service."
        )
        targets = await alert_targets(await alert_urls(self.settings))
        results = await send_direct(
            targets, title, body, "failure", wait=self.settings.notify.timeout_seconds
        )
        await record_direct(
            results,
            title=title,
            body=body,
            severity="failure",
            sent_at=now,
            now=now,
            dedupe_key=states.dedupe_key("worker", "down", last_beat),
        )
        log.warning("the worker is down: no heartbeat since %s", last_beat.isoformat())
        return True

    async def run(self, every: float = CHECK_SECONDS) -> None:
        """Check every ``every`` seconds until cancelled; a failed check is logged, never
        fatal."""
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("could not check the worker's heartbeat; trying again")
            await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def watch_worker(settings: Settings, clock: Clock) -> AsyncIterator[WorkerWatch]:
    """Run a :class:`WorkerWatch` in the background for the life of the web process."""
    watch = WorkerWatch(settings, clock)
    task = asyncio.create_task(watch.run(), name="worker-watch")
    try:
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
