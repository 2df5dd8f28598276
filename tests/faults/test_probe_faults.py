"""Really stopped services: the right component turns down, one alert goes out, recovery is
announced, and the record (spans, incidents, outbox) says what happened."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import pytest

from appliance.config import Settings
from appliance.db.engine import _with_database, configure, engine
from appliance.monitoring.loop import MonitorLoop
from appliance.monitoring.tables import ComponentSpan, ComponentStatus, Incident, ProbeResult
from appliance.monitoring.watcher import WorkerWatch
from appliance.notify.delivery import deliver_due
from appliance.notify.tables import OutboxMessage
from appliance.storage import open_store
from tests.conftest import FakeClock
from tests.integration.test_probes import Healthz, monitor_settings
from tests.receiver import Receiver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alerts_received(receiver: Receiver) -> list[tuple[str, str]]:
    """(title, type) of every apprise json:// alert the receiver got, pings left out."""
    return [
        (message["title"], message["type"])
        for request, message in (
            (r, r.json()) for r in receiver.requests if not r.path.startswith("/ping")
        )
        if request.method == "POST"
    ]


class MotoServer:
    """A moto S3 server process of this test's own, stopped and started on one port."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.log = folder / "moto.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        executable = Path(sys.executable).with_name("moto_server")
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [str(executable), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=sink,
                stderr=sink,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto_server did not start:\n{self.log.read_text()}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def healthz() -> Iterator[Healthz]:
    server = Healthz()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def watched(
    settings: Settings, receiver: Receiver, healthz: Healthz, clean_db: None
) -> Settings:
    base = monitor_settings(settings, receiver, healthz)
    await open_store(base).ensure_ready()
    return base


async def test_stopped_object_store_is_down_alerted_once_and_recovers(
    watched: Settings, clock: FakeClock, receiver: Receiver, moto: MotoServer
) -> None:
    """Stopping the S3 server turns photo storage down after two rounds: one alert, one
    incident; starting it again sends one recovery alert and closes span and incident."""
    storage = msgspec.structs.replace(
        watched.storage,
        backend="s3",
        endpoint=moto.endpoint,
        access_key="testing-access",
        secret_key="testing-secret-key",
        bucket="probe-test",
    )
    s3 = msgspec.structs.replace(watched, storage=storage)
    await open_store(s3).ensure_ready()
    loop = MonitorLoop(s3, clock=clock)

    async def round_and_deliver() -> list[tuple[str, str, str]]:
        changes = await loop.round()
        await deliver_due(s3, clock())
        clock.advance(seconds=60)
        return [(c.component, c.previous, c.current) for c in changes]

    assert await round_and_deliver() == []
    moto.stop()
    stopped_at = clock()
    assert await round_and_deliver() == []  # one failed result: not yet confirmed
    assert await round_and_deliver() == [("object-store", "up", "down")]
    assert await round_and_deliver() == []
    assert alerts_received(receiver) == [("Photo storage is down", "failure")]
    [incident] = await Incident.select().run()
    assert (incident["component"], incident["state"]) == ("object-store", "investigating")
    status = await ComponentStatus.select().where(ComponentStatus.component == "object-store")
    assert status[0]["state"] == "down"
    assert "photo storage failed" in status[0]["detail"]

    moto.start()
    # moto keeps buckets in memory; a real S3 server keeps them across a restart.
    await open_store(s3).ensure_ready()
    back_at = clock()
    assert await round_and_deliver() == []
    assert await round_and_deliver() == [("object-store", "down", "up")]
    assert await round_and_deliver() == []
    assert alerts_received(receiver) == [
        ("Photo storage is down", "failure"),
        ("Photo storage is up again", "success"),
    ]
    [incident] = await Incident.select().run()
    assert incident["state"] == "resolved"
    [span] = await ComponentSpan.select().run()
    assert (span["component"], span["state"], span["started_at"], span["ended_at"]) == (
        "object-store",
        "down",
        stopped_at,
        back_at,
    )
    sent = await OutboxMessage.select(OutboxMessage.state).where(OutboxMessage.kind == "alert")
    assert [row["state"] for row in sent] == ["sent", "sent"]


async def test_hung_disk_keeps_one_call_in_flight_across_rounds(
    watched: Settings, clock: FakeClock
) -> None:
    """A disk whose statvfs blocks (a hung NAS mount): the first round gives up on it, the
    next reports it still waiting instead of starting a second blocked thread; once the call
    returns, the disk is checked again."""
    release = threading.Event()
    calls: list[str] = []

    def hung_statvfs(path: str) -> os.statvfs_result:
        calls.append(threading.current_thread().name)
        release.wait(60)
        return os.statvfs(path)

    loop = MonitorLoop(watched, clock=clock, interval=2.0)  # each probe gets 1 s
    loop.context.statvfs = hung_statvfs
    try:
        await loop.round()
        clock.advance(seconds=2)
        await loop.round()
        clock.advance(seconds=2)
        assert len(calls) == 1, "a second call was started beside the hung one"
        rows = (
            await ProbeResult.select(ProbeResult.state, ProbeResult.detail, ProbeResult.latency_ms)
            .where(ProbeResult.component == "disk:data")
            .order_by(ProbeResult.checked_at)
        )
        assert [row["state"] for row in rows] == ["down", "down"]
        assert rows[0]["detail"] == "no answer within 1 s"
        assert re.fullmatch(
            r"still waiting for the last check, started [0-9]+ s ago", rows[1]["detail"]
        )
        assert rows[1]["latency_ms"] is None
        [status] = await ComponentStatus.select().where(ComponentStatus.component == "disk:data")
        assert status["state"] == "down"
    finally:
        release.set()
    running = loop.context.inflight["disk:data"].task
    await asyncio.wait_for(asyncio.shield(running), 10)
    await loop.round()
    assert len(calls) == 2
    latest = (
        await ProbeResult.select(ProbeResult.state, ProbeResult.detail)
        .where(ProbeResult.component == "disk:data")
        .order_by(ProbeResult.checked_at, ascending=False)
        .first()
    )
    assert latest is not None
    assert latest["state"] != "down" or "below" in latest["detail"]
    assert "GB free" in latest["detail"]
    assert "disk:data" not in loop.context.inflight


class DatabaseProxy:
    """A TCP proxy in front of the real PostgreSQL that the test closes and opens again:
    closed, it refuses new connections and cuts the ones it carries."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.links):
            writer.transport.abort()
        await self.server.wait_closed()
        self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.links.update({writer, upstream_writer})

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self.links.difference_update({writer, upstream_writer})


@pytest.fixture
async def proxied(
    watched: Settings, database_url: str
) -> AsyncIterator[tuple[Settings, DatabaseProxy]]:
    """``watched`` with its database behind a proxy; the engine points there meanwhile
    (without the pool of this process's app, as in the worker process)."""
    parts = urlsplit(database_url)
    proxy = DatabaseProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.open()
    server_dsn = f"postgresql://{parts.username or 'postgres'}@127.0.0.1:{proxy.port}/postgres"
    url = _with_database(server_dsn, parts.path.lstrip("/"))
    db = engine()
    pool, db.pool = db.pool, None
    configure(url)
    try:
        yield (
            msgspec.structs.replace(
                watched, database=msgspec.structs.replace(watched.database, url=url)
            ),
            proxy,
        )
    finally:
        configure(database_url)
        db.pool = pool
        if proxy.server is not None:
            await proxy.close()


async def test_unreachable_database_is_alerted_directly_and_recorded_when_back(
    proxied: tuple[Settings, DatabaseProxy], clock: FakeClock, receiver: Receiver
) -> None:
    """The monitor's own database going away: the loop survives, alerts directly once
    confirmed, and when the database is back records the span from the first failure, the
    incident, the direct alert as sent, and queues the recovery alert."""
    settings, proxy = proxied
    loop = MonitorLoop(settings, clock=clock)
    await loop.round()
    assert (await ComponentStatus.select().where(ComponentStatus.component == "database"))[0][
        "state"
    ] == "up"

    await proxy.close()
    clock.advance(seconds=60)
    first_failure = clock()
    assert await loop.round() == []
    assert alerts_received(receiver) == []  # one failure is not yet confirmed
    clock.advance(seconds=60)
    await loop.round()
    assert alerts_received(receiver) == [("Database is down", "failure")]
    clock.advance(seconds=60)
    await loop.round()
    assert alerts_received(receiver) == [("Database is down", "failure")]

    await proxy.open()
    clock.advance(seconds=60)
    back_at = clock()
    await loop.round()
    [span] = await ComponentSpan.select().where(ComponentSpan.component == "database")
    assert (span["state"], span["started_at"], span["ended_at"]) == (
        "down",
        first_failure,
        back_at,
    )
    [incident] = await Incident.select().run()
    assert (incident["component"], incident["started_at"], incident["state"]) == (
        "database",
        first_failure,
        "resolved",
    )
    rows = await OutboxMessage.select(OutboxMessage.subject, OutboxMessage.state).order_by(
        OutboxMessage.id
    )
    assert [(r["subject"], r["state"]) for r in rows] == [
        ("Database is up again", "pending"),
        ("Database is down", "sent"),
    ]
    await deliver_due(settings, clock())
    assert alerts_received(receiver) == [
        ("Database is down", "failure"),
        ("Database is up again", "success"),
    ]
    status = await ComponentStatus.select().where(ComponentStatus.component == "database")
    assert (status[0]["state"], status[0]["since"]) == ("up", back_at)
    # The loop was running throughout: the outage is no unwatched gap.
    assert await ComponentSpan.count().where(ComponentSpan.state == "unknown") == 0


async def test_stale_worker_is_marked_down_once_by_the_web_processes_and_recovers(
    watched: Settings, clock: FakeClock, receiver: Receiver
) -> None:
    """Two web processes see a stale heartbeat: exactly one marks the worker down and alerts
    directly (recorded as sent); the worker's return is confirmed by its own probe."""
    loop = MonitorLoop(watched, clock=clock)
    await loop.round()
    last_beat = clock()
    first, second = WorkerWatch(watched, clock), WorkerWatch(watched, clock)
    clock.advance(seconds=watched.monitoring.worker_stale_seconds - 10)
    assert list(await asyncio.gather(first.check(), second.check())) == [False, False]
    clock.advance(seconds=20)
    assert sorted(await asyncio.gather(first.check(), second.check())) == [False, True]
    assert await first.check() is False
    assert alerts_received(receiver) == [("Background worker is down", "failure")]
    rows = await OutboxMessage.select(OutboxMessage.subject, OutboxMessage.state)
    assert [(r["subject"], r["state"]) for r in rows] == [("Background worker is down", "sent")]
    status = await ComponentStatus.select().where(ComponentStatus.component == "worker")
    assert (status[0]["state"], status[0]["since"]) == ("down", last_beat)
    [incident] = await Incident.select().run()
    assert (incident["component"], incident["state"]) == ("worker", "investigating")

    clock.advance(seconds=60)
    back_at = clock()
    await loop.round()
    clock.advance(seconds=60)
    changes = await loop.round()
    assert [(c.component, c.current) for c in changes] == [("worker", "up")]
    await deliver_due(watched, clock())
    assert alerts_received(receiver) == [
        ("Background worker is down", "failure"),
        ("Background worker is up again", "success"),
    ]
    [span] = await ComponentSpan.select().where(ComponentSpan.component == "worker")
    assert (span["state"], span["started_at"], span["ended_at"]) == ("down", last_beat, back_at)
    [incident] = await Incident.select().run()
    assert incident["state"] == "resolved"
    # The others were not watched while the worker was away.
    unknown = await ComponentSpan.select().where(ComponentSpan.state == "unknown")
    assert {s["component"] for s in unknown} == {
        "web",
        "database",
        "object-store",
        "queue",
        "disk:data",
    }
    assert all((s["started_at"], s["ended_at"]) == (last_beat, back_at) for s in unknown)


async def test_watcher_gives_a_rebooted_worker_time_to_beat(
    watched: Settings, clock: FakeClock, receiver: Receiver
) -> None:
    """A web process that just started does not call an old heartbeat stale at once."""
    await MonitorLoop(watched, clock=clock).round()
    clock.advance(hours=5)  # the machine was off
    watch = WorkerWatch(watched, clock)
    assert await watch.check() is False
    clock.advance(seconds=watched.monitoring.worker_stale_seconds + 1)
    assert await watch.check() is True
    assert alerts_received(receiver) == [("Background worker is down", "failure")]
