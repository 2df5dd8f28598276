"""``/metrics`` over HTTP: off without a token, a bare 401 for a wrong one, and with the right
one a Prometheus text exposition whose parsed values match the recorded data."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator

import pytest
from litestar import Litestar

from appliance import __version__
from appliance.monitoring.tables import ComponentStatus, ProbeResult
from appliance.notify.tables import OutboxMessage
from tests.conftest import FakeClock, make_client
from tests.integration.test_status_page import QUEUE_DETAIL, SECRET_DETAIL, monitoring, seed

TOKEN = "metrics-token-7c1e0b4a9d2f"
_LINE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"')

Sample = tuple[str, frozenset[tuple[str, str]]]


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse(text: str) -> dict[Sample, float]:
    """The samples of a text exposition, strictly: every line must be a comment or a sample,
    every family must have HELP and TYPE before its samples, and no sample may repeat."""
    samples: dict[Sample, float] = {}
    typed: set[str] = set()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"gauge", "counter"}
            typed.add(name)
            continue
        match = _LINE.fullmatch(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        assert name in typed, f"{name} has no TYPE"
        pairs: list[tuple[str, str]] = []
        if labels:
            rest = labels
            while rest:
                found = _LABEL.match(rest)
                assert found, f"bad labels in {line!r}"
                pairs.append((found.group(1), _unescape(found.group(2))))
                rest = rest[found.end() :].removeprefix(",")
        key = (name, frozenset(pairs))
        assert key not in samples, f"repeated sample {line!r}"
        samples[key] = float(value)
    return samples


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
async def metrics_app(app: Litestar, clean_db: None) -> AsyncIterator[Litestar]:
    yield app


async def test_no_token_configured_means_no_endpoint(metrics_app: Litestar) -> None:
    """Without monitoring.metrics_token, /metrics is a 404 whatever is sent."""
    with monitoring(metrics_app, metrics_token=""):
        async with make_client(metrics_app) as scraper:
            plain = await scraper.get("/metrics")
            bearer = await scraper.get("/metrics", headers={"Authorization": "Bearer "})
    assert plain.status_code == bearer.status_code == 404


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong-token",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer t\u00e9\u00e9",
    ],
)
async def test_a_missing_or_wrong_token_gets_a_bare_401(
    metrics_app: Litestar, clock: FakeClock, authorization: str | None
) -> None:
    """Anything but ``Bearer <token>`` gets 401 with no detail and no metric in it."""
    await seed(clock())
    headers: dict[str, bytes] = {}
    if authorization is not None:
        headers["Authorization"] = authorization.encode()
    with monitoring(metrics_app, metrics_token=TOKEN):
        async with make_client(metrics_app) as scraper:
            response = await scraper.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.text == "Unauthorized\n"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_metrics_match_the_recorded_data(metrics_app: Litestar, clock: FakeClock) -> None:
    """States, uptime ratios, open incidents, outbox counts, backup, drill and heartbeat ages
    read back from the exposition exactly as recorded; no probe detail appears in it."""
    now = clock()
    await seed(now)
    await ProbeResult.insert(
        ProbeResult(component="web", state="up", latency_ms=12, checked_at=now),
        ProbeResult(
            component="web", state="up", latency_ms=900, checked_at=now - dt.timedelta(minutes=1)
        ),
    ).run()
    await OutboxMessage.insert(
        *[
            OutboxMessage(kind=kind, state=state, next_attempt_at=now, created_at=now)
            for kind, state in [
                ("email", "pending"),
                ("email", "pending"),
                ("alert", "failed"),
                ("email", "sent"),
            ]
        ]
    ).run()
    with monitoring(metrics_app, metrics_token=TOKEN):
        async with make_client(metrics_app) as scraper:
            response = await scraper.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    for secret in (SECRET_DETAIL, QUEUE_DETAIL, "10.20.30.40", "worker-7", TOKEN):
        assert secret not in response.text
    samples = parse(response.text)

    assert value(samples, "appliance_info", version=__version__) == 1
    assert value(samples, "appliance_component_up", component="web") == 1
    assert value(samples, "appliance_component_up", component="queue") == 0.5
    assert value(
        samples, "appliance_component_state_since_timestamp_seconds", component="queue"
    ) == pytest.approx((now - dt.timedelta(hours=1)).timestamp())
    assert value(samples, "appliance_probe_latency_seconds", component="web") == 0.012
    thirty_days = 30 * 86400
    assert value(samples, "appliance_uptime_ratio", component="web", window="30d") == pytest.approx(
        (thirty_days - 43 * 60) / thirty_days
    )
    assert value(
        samples, "appliance_uptime_ratio", component="overall", window="30d"
    ) == pytest.approx((thirty_days - 43 * 60) / thirty_days)
    assert value(samples, "appliance_uptime_ratio", component="database", window="7d") == 1
    assert value(samples, "appliance_uptime_ratio", component="web", window="24h") == 1
    assert value(samples, "appliance_sla_target_ratio") == pytest.approx(0.999)
    assert value(samples, "appliance_incidents_open") == 2
    assert value(samples, "appliance_outbox_messages", kind="email", state="pending") == 2
    assert value(samples, "appliance_outbox_messages", kind="alert", state="failed") == 1
    assert value(samples, "appliance_outbox_messages", kind="email", state="sent") == 1
    assert value(samples, "appliance_last_verified_backup_age_seconds") == 5 * 3600
    assert value(samples, "appliance_last_passed_drill_age_seconds") == 2 * 86400
    assert value(samples, "appliance_worker_heartbeat_age_seconds") == 0


async def test_label_values_are_escaped(metrics_app: Litestar, clock: FakeClock) -> None:
    """A component key with a quote, a backslash and a newline survives the round trip."""
    now = clock()
    odd = 'offsite:nas "b"\\x\ny'
    await ComponentStatus.insert(
        ComponentStatus(component=odd, state="down", since=now, checked_at=now)
    ).run()
    with monitoring(metrics_app, metrics_token=TOKEN):
        async with make_client(metrics_app) as scraper:
            response = await scraper.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    samples = parse(response.text)
    assert value(samples, "appliance_component_up", component=odd) == 0
    assert 'component="offsite:nas \\"b\\"\\\\x\\ny"' in response.text


async def test_an_empty_appliance_leaves_out_what_it_does_not_know(
    metrics_app: Litestar,
) -> None:
    """With nothing recorded, the ages and ratios are absent rather than zero."""
    with monitoring(metrics_app, metrics_token=TOKEN):
        async with make_client(metrics_app) as scraper:
            response = await scraper.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    samples = parse(response.text)
    names = {name for name, _ in samples}
    assert "appliance_last_verified_backup_age_seconds" not in names
    assert "appliance_worker_heartbeat_age_seconds" not in names
    assert "appliance_uptime_ratio" not in names
    assert value(samples, "appliance_incidents_open") == 0
