"""The worker's probe rounds: probe, record, alert, beat, ping, every ``probe_interval_seconds``.

One round:

1. run every probe at once (:mod:`appliance.monitoring.probes`);
2. when the database is down, keep its state here in memory and, once confirmed, alert
   directly (the outbox is in that database); nothing else can be recorded this round;
3. otherwise claim the round by beating the worker's heartbeat (a second worker that probed
   at the same moment records nothing), mark an unwatched gap since the previous beat, record
   a database outage that just ended, record every result (states, spans, incidents, alerts),
   forget components no longer probed, prune old results;
4. ping the outside heartbeat URL, if set.

The loop never dies of an outage: every step that fails is logged and tried next round.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import threading
import time

import httpx

from appliance import __version__
from appliance.clock import Clock, utcnow
from appliance.config import Settings
from appliance.db.engine import DATABASE_UNAVAILABLE, engine
from appliance.localtime import format_utc
from appliance.monitoring import probes, states, watcher
from appliance.monitoring.components import label
from appliance.notify.delivery import alert_urls
from appliance.notify.messages import config_channel_key
from appliance.storage import open_store

__all__ = ["DatabaseOutage", "MonitorLoop"]

log = logging.getLogger(__name__)

PING_TIMEOUT = 10.0
# The database's own probe and each write get this long before the database counts as down.
WRITE_TIMEOUT = 20.0


class DatabaseOutage:
    """The database's state while it cannot hold it: damped like every component, alerted
    directly once confirmed, written down when the database is back."""

    def __init__(self, now: dt.datetime) -> None:
        self.status = states.Status(state="up", since=now)
        self.started: dt.datetime | None = None
        self.detail = ""
        self.alerted_at: dt.datetime | None = None
        self.sent: dict[str, str] = {}
        self.title = ""
        self.body = ""

    def failed(self, now: dt.datetime, detail: str, threshold: int) -> bool:
        """Count one failed result; True when it confirms the outage (alert now)."""
        if self.started is None:
            self.started = now
        self.detail = detail
        self.status, change = states.damp(self.status, "down", detail, now, threshold)
        return change is not None and self.alerted_at is None


class MonitorLoop(threading.Thread):
    """Runs a probe round every ``probe_interval_seconds`` (or ``interval``) until stopped."""

    def __init__(
        self, settings: Settings, *, clock: Clock = utcnow, interval: float | None = None
    ) -> None:
        super().__init__(name="monitor", daemon=True)
        self.settings = settings
        self.clock = clock
        self.interval = interval or float(settings.monitoring.probe_interval_seconds)
        self.stopping = threading.Event()
        self.rounds = 0  # rounds finished, recorded or not (tests wait on it)
        self.started_at = clock()
        self.last_round: dt.datetime | None = None
        self.channels: list[watcher.AlertTarget] = []  # cached at the last good read
        self.config_urls: list[str] = list(settings.notify.alert_urls)  # likewise
        self.outage = DatabaseOutage(self.started_at)
        self.context = probes.ProbeContext(settings=settings, store=open_store(settings))
        self.hostname = socket.gethostname()

    def run(self) -> None:
        from appliance.worker import close_thread_loop, run_async

        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                try:
                    run_async(self.round())
                except Exception:  # the loop must survive anything a round meets
                    log.exception("monitoring round failed; trying again next round")
                self.rounds += 1
                # Rounds start an interval apart, however long one took.
                self.stopping.wait(max(1.0, self.interval - (time.monotonic() - started)))
        finally:
            self.context.abandon()
            close_thread_loop()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(timeout)

    async def round(self) -> list[states.Transition]:
        """One round (see the module's steps); the changes it confirmed."""
        now = self.clock()
        planned, complete = await probes.plan_probes(self.context, now)
        limit = min(10.0, self.interval / 2)
        results = await probes.run_probes(
            planned, limit=limit, now=now, inflight=self.context.inflight
        )
        database = next(r for r in results if r.component == "database")
        try:
            if database.state == "down":
                await self.database_down(now, database.detail)
                return []
            try:
                async with asyncio.timeout(WRITE_TIMEOUT):
                    changes = await self.record(results, planned, complete=complete, now=now)
            except DATABASE_UNAVAILABLE as exc:
                await self.database_down(now, _describe(exc))
                return []
        finally:
            self.last_round = now
        await self.ping()
        return changes

    async def record(
        self,
        results: list[states.Observation],
        planned: dict[str, probes.Probe],
        *,
        complete: bool,
        now: dt.datetime,
    ) -> list[states.Transition]:
        monitoring = self.settings.monitoring
        claimed, previous_beat = await self.beat(now)
        if not claimed:
            return []  # another worker recorded this round
        gap = states.unwatched_gap(previous_beat, self.last_round, now, self.interval)
        if gap is not None:
            marked = await states.record_gap(*gap)
            log.info("monitoring: %d components not watched from %s", marked, gap[0])
        # Read while the database answers, and kept: the backups' alert URLs live in it.
        self.config_urls = config_urls = await alert_urls(self.settings)
        self.channels = await watcher.alert_targets(config_urls)
        if self.outage.started is not None:
            await self.database_back(now)
        changes = await states.record_round(
            results, threshold=monitoring.flap_threshold, config_urls=config_urls
        )
        if complete:
            await states.retire(planned, now)
        await states.prune_results(now, monitoring.results_kept_days)
        for change in changes:
            log.info(
                "monitoring: %s is %s (was %s): %s",
                label(change.component),
                change.current,
                change.previous,
                change.detail,
            )
        return changes

    async def beat(self, now: dt.datetime) -> tuple[bool, dt.datetime | None]:
        """Write the worker's heartbeat unless another worker wrote it within half an interval
        (then it is probing too, and records); whether we did, and the previous beat."""
        half = dt.timedelta(seconds=self.interval / 2)
        async with engine().transaction() as transaction:
            connection = transaction.connection
            previous = await connection.fetchrow(
                "SELECT beat_at, pid, hostname FROM process_heartbeat WHERE name = 'worker' "
                "FOR UPDATE"
            )
            mine = previous is not None and (
                previous["pid"] == os.getpid() and previous["hostname"] == self.hostname
            )
            if previous is not None and not mine and now - previous["beat_at"] < half:
                return False, previous["beat_at"]
            await connection.execute(
                "INSERT INTO process_heartbeat (name, beat_at, started_at, hostname, pid, "
                "version) VALUES ('worker', $1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE "
                "SET beat_at = $1, started_at = $2, hostname = $3, pid = $4, version = $5",
                now,
                self.started_at,
                self.hostname,
                os.getpid(),
                __version__,
            )
        return True, previous["beat_at"] if previous is not None else None

    async def database_down(self, now: dt.datetime, detail: str) -> None:
        """A round that could not reach the database: damp, and alert directly once."""
        outage = self.outage
        if not outage.failed(now, detail, self.settings.monitoring.flap_threshold):
            log.warning("monitoring: the database is unreachable: %s", detail)
            return
        assert outage.started is not None
        outage.alerted_at = now
        outage.title = f"{label('database')} is down"
        outage.body = (
            f"The appliance cannot reach its database since "
            f"{format_utc(outage.started)}: {detail}\nThe website, galleries and "
            "every background job depend on it. This alert was sent directly: the outbox is "
            "kept in that database."
        )
        # The channels admins added were read at the last good round: the database that
        # holds them is the one that went away.
        targets = [
            *self._config_targets(),
            *(t for t in self.channels if t.channel.startswith("db:")),
        ]
        outage.sent = await watcher.send_direct(
            targets,
            outage.title,
            outage.body,
            "failure",
            wait=self.settings.notify.timeout_seconds,
        )
        log.error("monitoring: the database is down since %s: %s", outage.started, detail)

    def _config_targets(self) -> list[watcher.AlertTarget]:
        return [
            watcher.AlertTarget(config_channel_key(url), url)
            for url in self.config_urls
            if url.strip()
        ]

    async def database_back(self, now: dt.datetime) -> None:
        """The database answers again: record the outage it could not hold, if confirmed."""
        outage = self.outage
        if outage.alerted_at is not None and outage.started is not None:
            # One transaction: recorded whole or not at all, and then again next round.
            async with engine().transaction():
                await states.record_database_outage(
                    outage.started, now, outage.detail, await alert_urls(self.settings)
                )
                await watcher.record_direct(
                    outage.sent,
                    title=outage.title,
                    body=outage.body,
                    severity="failure",
                    sent_at=outage.alerted_at,
                    now=now,
                    dedupe_key=states.dedupe_key("database", "down", outage.started),
                )
            log.warning("monitoring: the database is back; it was down since %s", outage.started)
        self.outage = DatabaseOutage(now)

    async def ping(self) -> None:
        """POST to the outside heartbeat URL; failures are logged without the URL."""
        url = self.settings.monitoring.heartbeat_url
        if not url:
            return
        try:
            async with httpx.AsyncClient(timeout=PING_TIMEOUT) as client:
                response = await client.post(url, content=b"ok")
        except httpx.HTTPError as exc:
            log.warning("monitoring: heartbeat ping not sent: %s", type(exc).__name__)
            return
        if not 200 <= response.status_code < 300:
            log.warning("monitoring: heartbeat ping refused: HTTP %d", response.status_code)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
