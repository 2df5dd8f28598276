"""Probe rounds against the real database, a real HTTP and TLS server, and the receiver."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import os
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from litestar import Litestar

from appliance.backups.tables import BackupJob, DrillReport
from appliance.config import RepositorySettings, Settings
from appliance.db.engine import engine
from appliance.monitoring import probes, states, uptime
from appliance.monitoring.loop import MonitorLoop
from appliance.monitoring.probes import Outcome
from appliance.monitoring.tables import (
    ComponentSpan,
    ComponentStatus,
    Incident,
    ProbeResult,
    ProcessHeartbeat,
)
from appliance.monitoring.watcher import WorkerWatch, watch_worker
from appliance.notify.messages import config_channel_key
from appliance.notify.tables import OutboxMessage
from appliance.storage import open_store
from tests.conftest import FakeClock
from tests.receiver import TOKEN, Receiver

CORE_ROUND = {"web", "database", "object-store", "worker", "queue", "disk:data"}


class Healthz:
    """A stand-in for the web process: answers ``GET /healthz`` with ``status``."""

    def __init__(self) -> None:
        self.status = 200
        self.hosts: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hosts.append(self.headers.get("Host", ""))
                code = owner.status if self.path == "/healthz" else 404
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def healthz() -> Iterator[Healthz]:
    server = Healthz()
    try:
        yield server
    finally:
        server.close()


def monitor_settings(settings: Settings, receiver: Receiver, healthz: Healthz) -> Settings:
    """Settings whose web server is ``healthz``, alerts go to ``receiver``, backups are off."""
    return msgspec.structs.replace(
        settings,
        server=msgspec.structs.replace(settings.server, host="0.0.0.0", port=healthz.port),  # noqa: S104 - only mapped to loopback by the probe
        notify=msgspec.structs.replace(settings.notify, alert_urls=[receiver.alert_url()]),
        monitoring=msgspec.structs.replace(
            settings.monitoring, flap_threshold=2, heartbeat_url=receiver.ping_url()
        ),
        backups=msgspec.structs.replace(settings.backups, enabled=False),
    )


@pytest.fixture
async def watched(
    settings: Settings, receiver: Receiver, healthz: Healthz, clean_db: None
) -> Settings:
    watched = monitor_settings(settings, receiver, healthz)
    await open_store(watched).ensure_ready()  # as the web process does when it starts
    return watched


async def statuses() -> dict[str, str]:
    rows = await ComponentStatus.select(ComponentStatus.component, ComponentStatus.state).run()
    return {row["component"]: row["state"] for row in rows}


async def alerts() -> list[dict[str, object]]:
    return list(
        await OutboxMessage.select(
            OutboxMessage.subject, OutboxMessage.severity, OutboxMessage.state
        )
        .where(OutboxMessage.kind == "alert")
        .order_by(OutboxMessage.id)
        .run()
    )


async def test_round_records_every_component_beats_and_pings(
    watched: Settings, clock: FakeClock, receiver: Receiver
) -> None:
    """A round stores a result for each component, all up, the heartbeat, and pings outside."""
    loop = MonitorLoop(watched, clock=clock)
    assert await loop.round() == []
    rows = await ProbeResult.select().run()
    assert {row["component"] for row in rows} == CORE_ROUND
    assert {row["state"] for row in rows} == {"up"}, [r["detail"] for r in rows]
    assert all(row["latency_ms"] is not None for row in rows)
    assert await statuses() == dict.fromkeys(CORE_ROUND, "up")
    beat = await ProcessHeartbeat.select().where(ProcessHeartbeat.name == "worker").first()
    assert beat is not None
    assert (beat["beat_at"], beat["pid"]) == (clock(), os.getpid())
    assert [r.path for r in receiver.requests] == [f"/ping/{TOKEN}"]
    assert await alerts() == []
    assert await ComponentSpan.count() == 0


async def test_web_down_alerts_once_then_recovers(
    watched: Settings, clock: FakeClock, healthz: Healthz
) -> None:
    """A failing /healthz is confirmed after two rounds: one alert, one incident, one span;
    its return resolves the incident and queues one recovery alert."""
    loop = MonitorLoop(watched, clock=clock)
    await loop.round()
    healthz.status = 503
    clock.advance(seconds=60)
    first_failure = clock()
    assert await loop.round() == []
    clock.advance(seconds=60)
    [change] = await loop.round()
    assert (change.component, change.previous, change.current) == ("web", "up", "down")
    clock.advance(seconds=60)
    assert await loop.round() == []  # still down: nothing new
    queued = await alerts()
    assert [(a["subject"], a["severity"]) for a in queued] == [
        ("Website and galleries is down", "failure")
    ]
    [incident] = await Incident.select().run()
    assert (incident["component"], incident["state"], incident["started_at"]) == (
        "web",
        "investigating",
        first_failure,
    )
    healthz.status = 200
    clock.advance(seconds=60)
    back = clock()
    await loop.round()
    clock.advance(seconds=60)
    [change] = await loop.round()
    assert (change.previous, change.current) == ("down", "up")
    queued = await alerts()
    assert [a["subject"] for a in queued] == [
        "Website and galleries is down",
        "Website and galleries is up again",
    ]
    [span] = await ComponentSpan.select().run()
    assert (span["component"], span["state"], span["started_at"], span["ended_at"]) == (
        "web",
        "down",
        first_failure,
        back,
    )
    [incident] = await Incident.select().run()
    assert (incident["state"], incident["resolved_at"]) == ("resolved", clock())
    status = await ComponentStatus.select().where(ComponentStatus.component == "web").first()
    assert status is not None and (status["state"], status["since"]) == ("up", back)


async def test_gap_while_the_worker_was_off_is_unknown(watched: Settings, clock: FakeClock) -> None:
    """A heartbeat an hour old marks the hour unknown; an open down span is cut around it."""
    loop = MonitorLoop(watched, clock=clock)
    await loop.round()
    hour_ago = clock() - dt.timedelta(hours=1)
    two_hours_ago = clock() - dt.timedelta(hours=2)
    await ProcessHeartbeat.update({ProcessHeartbeat.beat_at: hour_ago}, force=True).run()
    await (
        ComponentStatus.update(
            {ComponentStatus.state: "down", ComponentStatus.since: two_hours_ago}
        )
        .where(ComponentStatus.component == "object-store")
        .run()
    )
    await (
        ComponentSpan(component="object-store", state="down", started_at=two_hours_ago, detail="x")
        .save()
        .run()
    )
    fresh = MonitorLoop(watched, clock=clock)  # a worker that just started
    await fresh.round()
    spans = await ComponentSpan.select().order_by(ComponentSpan.started_at).run()
    unknown = [s for s in spans if s["state"] == "unknown"]
    assert {s["component"] for s in unknown} == CORE_ROUND
    assert {(s["started_at"], s["ended_at"]) for s in unknown} == {(hour_ago, clock())}
    store = [
        (s["state"], s["started_at"], s["ended_at"])
        for s in spans
        if s["component"] == "object-store"
    ]
    # Down until the gap, unknown through it, down again from now (until probes confirm up).
    assert store == [
        ("down", two_hours_ago, hour_ago),
        ("unknown", hour_ago, clock()),
        ("down", clock(), None),
    ]


async def test_components_no_longer_probed_are_retired(watched: Settings, clock: FakeClock) -> None:
    """A removed off-site repository's state goes, its open span and incident end."""
    earlier = clock() - dt.timedelta(hours=3)
    await (
        ComponentStatus(component="offsite:old", state="down", since=earlier, checked_at=earlier)
        .save()
        .run()
    )
    await ComponentSpan(component="offsite:old", state="down", started_at=earlier).save().run()
    await states.confirm_down("offsite:other", "gone", earlier, earlier)
    await MonitorLoop(watched, clock=clock).round()
    assert "offsite:old" not in await statuses()
    spans = await ComponentSpan.select(ComponentSpan.component, ComponentSpan.ended_at).run()
    assert {s["component"]: s["ended_at"] for s in spans} == {
        "offsite:old": clock(),
        "offsite:other": clock(),
    }
    [incident] = await Incident.select().run()
    assert incident["state"] == "resolved"


async def test_crashed_and_hanging_probes_are_their_component_down() -> None:
    """A probe that raises or hangs marks only its own component down, with the reason."""
    now = dt.datetime.now(dt.UTC)

    async def crash() -> Outcome:
        raise RuntimeError("boom")

    async def hang() -> Outcome:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    async def fine() -> Outcome:
        return Outcome("up", "fine")

    started = time.monotonic()
    results = await probes.run_probes({"a": crash, "b": hang, "c": fine}, limit=0.5, now=now)
    assert time.monotonic() - started < 5
    assert [(r.component, r.state) for r in results] == [("a", "down"), ("b", "down"), ("c", "up")]
    assert "RuntimeError: boom" in results[0].detail
    assert "no answer within" in results[1].detail


async def test_queue_backlog_thresholds(watched: Settings, clock: FakeClock) -> None:
    """Waiting backup jobs above queue_warn are degraded, above queue_down down; jobs not due
    yet do not count."""
    tight = msgspec.structs.replace(
        watched, monitoring=msgspec.structs.replace(watched.monitoring, queue_warn=2, queue_down=3)
    )
    context = probes.ProbeContext(settings=tight, store=open_store(tight))
    now = clock()
    for number in range(3):
        await (
            BackupJob(
                kind="check", repository="x", slot=f"check:{number}", not_before=now, created_at=now
            )
            .save()
            .run()
        )
    await (
        BackupJob(
            kind="check",
            repository="x",
            slot="later",
            not_before=now + dt.timedelta(hours=1),
            created_at=now,
        )
        .save()
        .run()
    )
    outcome = await probes.probe_queue(context, now)
    assert outcome.state == "degraded"
    assert "3 backup jobs" in outcome.detail
    await (
        BackupJob(kind="check", repository="x", slot="more", not_before=now, created_at=now)
        .save()
        .run()
    )
    outcome = await probes.probe_queue(context, now)
    assert outcome.state == "down"
    assert "4 backup jobs" in outcome.detail and "limit 3" in outcome.detail


async def test_backup_probes_read_what_the_backups_recorded(
    watched: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    """Last backup, drill and off-site copy come from the job tables; the local repository's
    disk is probed."""
    backups = msgspec.structs.replace(
        watched.backups,
        enabled=True,
        repositories=[
            RepositorySettings(name="local", url=str(tmp_path / "repo")),
            RepositorySettings(name="nas", url=str(tmp_path / "nas"), offsite=True),
        ],
    )
    enabled = msgspec.structs.replace(watched, backups=backups)
    now = clock()
    hours = dt.timedelta(hours=1)

    async def job(kind: str, repository: str, state: str, finished: dt.datetime, slot: str) -> None:
        await (
            BackupJob(
                kind=kind,
                repository=repository,
                slot=slot,
                state=state,
                not_before=finished,
                finished_at=finished,
                created_at=finished,
            )
            .save()
            .run()
        )

    await job("backup", "", "done", now - 40 * hours, "b1")
    await job("copy", "nas", "done", now - 39 * hours, "c1")
    await job("copy", "nas", "failed", now - 10 * hours, "c2")
    await (
        DrillReport(
            repository="local",
            started_at=now - 24 * hours,
            finished_at=now - 23 * hours,
            passed=True,
        )
        .save()
        .run()
    )
    context = probes.ProbeContext(settings=enabled, store=open_store(enabled))
    planned, complete = await probes.plan_probes(context, now)
    assert complete
    assert {"backup", "drill", "disk:backup", "offsite:nas"} <= set(planned)
    results = {r.component: r for r in await probes.run_probes(planned, limit=5, now=now)}
    assert results["backup"].state == "degraded"  # 40 h: past backup_max_age_hours (30)
    assert "40 h 0 min ago" in results["backup"].detail
    assert results["drill"].state == "up"
    assert results["offsite:nas"].state == "down"
    assert "copy failed" in results["offsite:nas"].detail
    assert results["disk:backup"].state in {"up", "degraded", "down"}
    assert "GB free" in results["disk:backup"].detail
    # Past twice the limit, a missing backup is down.
    assert (await probes.probe_backup(enabled, now + 30 * hours)).state == "down"
    await job("backup", "", "done", now - 2 * hours, "b2")
    await job("copy", "nas", "done", now - hours, "c3")
    results = {r.component: r for r in await probes.run_probes(planned, limit=5, now=now)}
    assert (results["backup"].state, results["offsite:nas"].state) == ("up", "up")


def make_certificate(folder: Path, not_after: dt.datetime) -> ssl.SSLContext:
    """A server context with a self-signed certificate for 127.0.0.1 valid until ``not_after``."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - dt.timedelta(days=365))
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context


async def tls_server(context: ssl.SSLContext) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)


@pytest.mark.parametrize(("days_left", "state"), [(60, "up"), (5, "degraded"), (-1, "down")])
async def test_tls_certificate_expiry_of_a_real_server(
    days_left: int, state: str, tmp_path: Path
) -> None:
    """The certificate of a real TLS server is read: far off up, near degraded, past down."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    expires = now + dt.timedelta(days=days_left)
    server = await tls_server(make_certificate(tmp_path, expires))
    port = server.sockets[0].getsockname()[1]
    try:
        outcome = await probes.probe_tls(f"https://127.0.0.1:{port}/", now, 14)
    finally:
        server.close()
        await server.wait_closed()
    assert outcome.state == state, outcome
    assert expires.strftime("%Y-%m-%d") in outcome.detail


async def test_tls_unreachable_is_down(tmp_path: Path) -> None:
    """Nobody listening on the TLS address is down, naming the address."""
    server = await tls_server(make_certificate(tmp_path, dt.datetime.now(dt.UTC)))
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    outcome = await probes.probe_tls(f"https://127.0.0.1:{port}/", dt.datetime.now(dt.UTC), 14)
    assert outcome.state == "down"
    assert f"127.0.0.1:{port}" in outcome.detail


async def test_monitor_thread_runs_rounds_and_stops(watched: Settings) -> None:
    """The worker's thread runs a round on its own loop, writes results, and stops when told."""
    db = engine()
    # The worker process has no connection pool; this test process's app may have one.
    pool, db.pool = db.pool, None
    loop = MonitorLoop(watched, interval=3600)
    try:
        loop.start()
        deadline = time.monotonic() + 30
        while loop.rounds < 1 and time.monotonic() < deadline:  # noqa: ASYNC110 - another thread
            await asyncio.sleep(0.1)
        loop.stop(timeout=15)
    finally:
        db.pool = pool
    assert loop.rounds == 1
    assert not loop.is_alive()
    components = {row["component"] for row in await ProbeResult.select(ProbeResult.component).run()}
    assert components == CORE_ROUND
    assert await ProcessHeartbeat.count() == 1


async def test_watcher_runs_for_the_life_of_the_context(
    settings: Settings, clock: FakeClock
) -> None:
    """The web process's watch starts with the lifespan and is cancelled when it ends."""
    before = {t for t in asyncio.all_tasks() if t.get_name() == "worker-watch"}  # the app's
    async with watch_worker(settings, clock) as watch:
        tasks = [t for t in asyncio.all_tasks() if t.get_name() == "worker-watch"]
        [task] = [t for t in tasks if t not in before]
        assert not task.done()
        assert watch.started_at == clock()
    await asyncio.sleep(0)
    assert task.done()


async def test_a_second_worker_probing_at_the_same_time_records_nothing(
    watched: Settings, clock: FakeClock
) -> None:
    """A heartbeat another worker wrote within half an interval means it records this round."""
    other_beat = clock() - dt.timedelta(seconds=10)
    await (
        ProcessHeartbeat(
            name="worker", beat_at=other_beat, started_at=other_beat, hostname="other", pid=1
        )
        .save()
        .run()
    )
    assert await MonitorLoop(watched, clock=clock).round() == []
    assert await ProbeResult.count() == 0
    beat = await ProcessHeartbeat.select().first()
    assert beat is not None and (beat["hostname"], beat["beat_at"]) == ("other", other_beat)
    clock.advance(seconds=30)  # half an interval later the other is late: this one takes over
    await MonitorLoop(watched, clock=clock).round()
    assert await ProbeResult.count() == len(CORE_ROUND)
    beat = await ProcessHeartbeat.select().first()
    assert beat is not None and (beat["pid"], beat["beat_at"]) == (os.getpid(), clock())


async def test_the_web_app_watches_the_worker_while_it_runs(app: Litestar) -> None:
    """The app's lifespan runs the worker watch in the background."""
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == "worker-watch"]
    assert tasks
    assert not any(t.done() for t in tasks)


@pytest.mark.parametrize(
    ("allowed", "host"),
    [
        (["photos.studio.test", "*.lan.test"], "photos.studio.test"),
        (["*.studio.test"], "monitor.studio.test"),
    ],
)
async def test_web_probe_sends_a_host_the_server_accepts(
    settings: Settings, healthz: Healthz, allowed: list[str], host: str
) -> None:
    """The web probe names a host from server.allowed_hosts, or the server would refuse it."""
    server = msgspec.structs.replace(
        settings.server, host="127.0.0.1", port=healthz.port, allowed_hosts=allowed
    )
    outcome = await probes.probe_web(msgspec.structs.replace(settings, server=server))
    assert outcome.state == "up"
    assert healthz.hosts == [host]
    healthz.status = 400
    outcome = await probes.probe_web(msgspec.structs.replace(settings, server=server))
    assert (outcome.state, outcome.detail) == ("down", "the web server answered HTTP 400")


async def test_backup_components_change_state_without_alerts_or_incidents(
    watched: Settings, clock: FakeClock
) -> None:
    """The backups domain alerts about its own failures: a backup component confirmed down
    keeps its state and span, but queues no second alert and opens no incident."""
    for _ in range(2):
        observation = states.Observation(
            component="backup",
            state="down",
            detail="no verified backup for 70 h 0 min",
            latency_ms=None,
            checked_at=clock(),
        )
        change = await states.record_observation(
            observation, threshold=2, config_urls=watched.notify.alert_urls
        )
        clock.advance(seconds=60)
    assert change is not None and change.current == "down"
    assert (await statuses())["backup"] == "down"
    [span] = await ComponentSpan.select().run()
    assert (span["component"], span["state"], span["ended_at"]) == ("backup", "down", None)
    assert await alerts() == []
    assert await Incident.count() == 0


async def test_web_url_names_where_the_worker_finds_the_web_process(
    watched: Settings, healthz: Healthz
) -> None:
    elsewhere = msgspec.structs.replace(
        watched,
        server=msgspec.structs.replace(watched.server, port=1),
        monitoring=msgspec.structs.replace(
            watched.monitoring, web_url=f"http://127.0.0.1:{healthz.port}/"
        ),
    )
    assert (await probes.probe_web(elsewhere)).state == "up"
    nowhere = msgspec.structs.replace(
        elsewhere, monitoring=msgspec.structs.replace(elsewhere.monitoring, web_url="")
    )
    assert (await probes.probe_web(nowhere)).state == "down"


async def test_uptime_counts_from_the_first_probe_after_results_are_pruned(
    watched: Settings, clock: FakeClock
) -> None:
    """Probe results are pruned after a few days; a component up for 60 days whose state
    changed yesterday is still measured over the 60 days, not from its last change."""
    first = clock()

    async def observe(state: str) -> None:
        observation = states.Observation(
            component="web",
            state=state,  # type: ignore[arg-type]
            detail="",
            latency_ms=None,
            checked_at=clock(),
        )
        await states.record_observation(
            observation, threshold=1, config_urls=watched.notify.alert_urls
        )

    await observe("up")
    clock.advance(days=59)
    await observe("down")
    clock.advance(hours=1)
    await observe("up")
    clock.advance(days=watched.monitoring.results_kept_days + 1)
    await states.prune_results(clock(), watched.monitoring.results_kept_days)
    assert await ProbeResult.count() == 0
    start = clock() - dt.timedelta(days=90)
    figures = (await uptime.load_record(clock(), start)).uptime("web", start, clock())
    assert figures.measured == (clock() - first).total_seconds()
    assert figures.not_measured == (first - start).total_seconds()
    assert figures.down == 3600


async def test_backups_switched_on_late_count_from_their_own_first_probe(
    watched: Settings, clock: FakeClock
) -> None:
    """An appliance watched for months before backups were switched on: the missing first
    backup and drill are judged from the backup and drill components' own first probe, not
    from the oldest state of any component."""
    enabled = msgspec.structs.replace(
        watched, backups=msgspec.structs.replace(watched.backups, enabled=True)
    )
    now = clock()
    months_ago = now - dt.timedelta(days=120)
    await (
        ComponentStatus(
            component="web",
            state="up",
            since=months_ago,
            checked_at=now,
            first_checked_at=months_ago,
        )
        .save()
        .run()
    )
    backup = await probes.probe_backup(enabled, now)
    drill = await probes.probe_drill(enabled, now)
    assert (backup.state, backup.detail) == (
        "up",
        "no backup has finished yet; the first is due at the next run",
    )
    assert (drill.state, drill.detail) == ("up", "no restore drill has run yet")

    first = [
        states.Observation(component=c, state="up", detail="", latency_ms=None, checked_at=now)
        for c in ("backup", "drill")
    ]
    await states.record_round(first, threshold=2, config_urls=[])
    rows = await ComponentStatus.select(
        ComponentStatus.component, ComponentStatus.first_checked_at
    ).where(ComponentStatus.component.is_in(["backup", "drill"]))
    assert {row["component"]: row["first_checked_at"] for row in rows} == {
        "backup": now,
        "drill": now,
    }
    limit = enabled.monitoring.backup_max_age_hours
    later = await probes.probe_backup(enabled, now + dt.timedelta(hours=limit - 1))
    assert later.state == "up"
    later = await probes.probe_backup(enabled, now + dt.timedelta(hours=limit + 1))
    assert (later.state, later.detail) == (
        "degraded",
        f"no backup has finished in the {limit + 1} h 0 min watched",
    )
    later = await probes.probe_backup(enabled, now + dt.timedelta(hours=2 * limit + 1))
    assert later.state == "down"
    overdue = dt.timedelta(days=enabled.backups.drill_overdue_days)
    assert (await probes.probe_drill(enabled, now + overdue - dt.timedelta(hours=1))).state == "up"
    late = await probes.probe_drill(enabled, now + overdue + dt.timedelta(hours=1))
    assert (late.state, late.detail) == ("degraded", "no restore drill has passed yet")


async def test_flapping_component_is_confirmed_down_from_the_start_of_its_run(
    watched: Settings, clock: FakeClock
) -> None:
    """Up, then down, degraded, down: the three results confirm down (the worst), with the
    down result's detail; the span starts at the run's first result; one alert, one incident."""
    start = clock()

    async def observe(state: str, detail: str) -> states.Transition | None:
        observation = states.Observation(
            component="web",
            state=state,  # type: ignore[arg-type]
            detail=detail,
            latency_ms=5,
            checked_at=clock(),
        )
        change = await states.record_observation(
            observation, threshold=3, config_urls=watched.notify.alert_urls
        )
        clock.advance(seconds=60)
        return change

    assert await observe("up", "fine") is None
    run_start = clock()
    assert await observe("down", "connection refused") is None
    assert await observe("degraded", "slow answer") is None
    change = await observe("degraded", "slow answer again")
    assert change is not None
    assert (change.previous, change.current, change.detail) == ("up", "down", "connection refused")
    [status] = await ComponentStatus.select().where(ComponentStatus.component == "web")
    assert (status["state"], status["since"], status["detail"]) == (
        "down",
        run_start,
        "connection refused",
    )
    assert status["first_checked_at"] == start
    [span] = await ComponentSpan.select().run()
    assert (span["state"], span["started_at"], span["ended_at"]) == ("down", run_start, None)
    [incident] = await Incident.select().run()
    assert incident["component"] == "web"
    assert [(a["subject"], a["severity"]) for a in await alerts()] == [
        ("Website and galleries is down", "failure")
    ]


async def test_component_alerts_reach_the_backups_alert_urls_too(
    watched: Settings, clock: FakeClock, healthz: Healthz, receiver: Receiver
) -> None:
    """A studio that set its alert URL only in the backups section still hears that the
    website is down: every producer of alerts uses the same list of channels."""
    only_backups = msgspec.structs.replace(
        watched,
        notify=msgspec.structs.replace(watched.notify, alert_urls=[]),
        backups=msgspec.structs.replace(watched.backups, alert_urls=[receiver.alert_url()]),
    )
    loop = MonitorLoop(only_backups, clock=clock)
    await loop.round()
    healthz.status = 503
    for _ in range(2):
        clock.advance(seconds=60)
        await loop.round()
    rows = await OutboxMessage.select(OutboxMessage.subject, OutboxMessage.channel).run()
    assert [row["subject"] for row in rows] == ["Website and galleries is down"]
    assert rows[0]["channel"] == config_channel_key(receiver.alert_url())


async def test_the_worker_down_alert_names_the_last_beat_in_utc(
    watched: Settings, receiver: Receiver, clock: FakeClock
) -> None:
    """A heartbeat read back with another offset (the database session's zone) is still
    written as UTC in the state's detail and in the alert, not its wall clock labelled UTC."""
    berlin = dt.timezone(dt.timedelta(hours=1))
    last_beat = dt.datetime(2026, 11, 29, 15, 4, 59, tzinfo=berlin)
    watch = WorkerWatch(watched, clock)
    assert await watch.mark_down(last_beat, clock())
    said = "No heartbeat from the worker since 2026-11-29 14:04 UTC."
    status = await ComponentStatus.select().where(ComponentStatus.component == "worker").first()
    assert status is not None and status["state"] == "down" and status["detail"] == said
    [alert] = receiver.messages()
    assert alert["title"] == "Background worker is down"
    assert alert["message"].startswith(said)
