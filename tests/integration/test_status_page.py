"""The public status page over HTTP: who may see it under each setting, what it shows (labels,
states, uptime computed from the recorded spans, incidents, maintenance, backups), and what it
never shows (probe details, addresses, paths)."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar

from appliance.backups.tables import BackupJob, DrillReport
from appliance.config import Settings
from appliance.monitoring.tables import (
    ComponentSpan,
    ComponentStatus,
    Incident,
    IncidentUpdate,
    MaintenanceWindow,
    ProcessHeartbeat,
)
from tests.conftest import FakeClock, make_client

SECRET_DETAIL = "connect ECONNREFUSED 10.20.30.40:9000 at /var/lib/appliance/objects"
QUEUE_DETAIL = "queue on db.internal.lan holds 250 jobs"
SVG_NS = "{http://www.w3.org/2000/svg}"


@contextlib.contextmanager
def monitoring(app: Litestar, **changes: Any) -> Iterator[Settings]:
    """The app's settings with ``changes`` in ``[monitoring]`` for the duration, no page cached."""
    original: Settings = app.state.settings
    changed = msgspec.structs.replace(
        original, monitoring=msgspec.structs.replace(original.monitoring, **changes)
    )
    app.state["settings"] = changed
    app.state.pop("status_page_cache", None)
    try:
        yield changed
    finally:
        app.state["settings"] = original
        app.state.pop("status_page_cache", None)


@pytest.fixture
async def status_app(app: Litestar, clean_db: None, clock: FakeClock) -> AsyncIterator[Litestar]:
    """The app with no status page cached from an earlier test, its clock at the last midday
    that has passed, so the seeded 43 minutes of downtime never straddle a day boundary."""
    midday = clock.now.replace(hour=12, minute=0, second=0, microsecond=0)
    clock.now = midday if midday <= clock.now else midday - dt.timedelta(days=1)
    app.state.pop("status_page_cache", None)
    yield app
    app.state.pop("status_page_cache", None)


async def seed(now: dt.datetime) -> None:
    """A watched appliance 100 days old with:

    - the website down 43 minutes two days ago (a probe detail naming an address and a path);
    - the database down 30 minutes inside an announced window three days ago;
    - the queue degraded for the last hour; an admin's open incident and an automatic one;
    - maintenance planned in three days; a backup 5 hours ago, a drill passed 2 days ago.
    """
    first = now - dt.timedelta(days=100)
    states = {
        "web": ("up", now - dt.timedelta(days=2) + dt.timedelta(minutes=43), SECRET_DETAIL),
        "database": ("up", now - dt.timedelta(days=3) + dt.timedelta(minutes=40), ""),
        "object-store": ("up", first, "bucket studio at http://10.20.30.40:9000"),
        "worker": ("up", first, "pid 4242 on host worker-7"),
        "queue": ("degraded", now - dt.timedelta(hours=1), QUEUE_DETAIL),
    }
    await ComponentStatus.insert(
        *[
            ComponentStatus(
                component=c,
                state=s,
                since=since,
                detail=d,
                checked_at=now,
                first_checked_at=first,
            )
            for c, (s, since, d) in states.items()
        ]
    ).run()
    web_down = now - dt.timedelta(days=2)
    db_down = now - dt.timedelta(days=3) + dt.timedelta(minutes=10)
    await ComponentSpan.insert(
        ComponentSpan(
            component="web",
            state="down",
            started_at=web_down,
            ended_at=web_down + dt.timedelta(minutes=43),
            detail=SECRET_DETAIL,
        ),
        ComponentSpan(
            component="database",
            state="down",
            started_at=db_down,
            ended_at=db_down + dt.timedelta(minutes=30),
            detail="FATAL: password authentication failed for user appliance",
        ),
        ComponentSpan(
            component="queue",
            state="degraded",
            started_at=now - dt.timedelta(hours=1),
            detail=QUEUE_DETAIL,
        ),
    ).run()
    await ProcessHeartbeat.insert(
        ProcessHeartbeat(name="worker", beat_at=now, started_at=first, hostname="worker-7")
    ).run()
    window_start = now - dt.timedelta(days=3)
    await MaintenanceWindow.insert(
        MaintenanceWindow(
            title="Database upgrade",
            components=["database"],
            starts_at=window_start,
            ends_at=window_start + dt.timedelta(hours=1),
            created_at=window_start - dt.timedelta(days=8),
            updated_at=window_start - dt.timedelta(days=8),
        ),
        MaintenanceWindow(
            title="New disks for photo storage",
            description="Galleries stay online; uploads pause.",
            components=["object-store"],
            starts_at=now + dt.timedelta(days=3),
            ends_at=now + dt.timedelta(days=3, hours=2),
            created_at=now,
            updated_at=now,
        ),
        MaintenanceWindow(
            title="Cancelled window",
            components=["web"],
            starts_at=web_down,
            ends_at=web_down + dt.timedelta(hours=1),
            cancelled_at=web_down - dt.timedelta(days=1),
            created_at=web_down - dt.timedelta(days=9),
            updated_at=web_down - dt.timedelta(days=1),
        ),
    ).run()
    slow = Incident(
        title="Slow gallery loading",
        impact="minor",
        state="identified",
        components=["web"],
        started_at=now - dt.timedelta(hours=2),
        created_by=1,
        created_at=now - dt.timedelta(hours=2),
        updated_at=now - dt.timedelta(minutes=30),
    )
    await slow.save().run()
    automatic = Incident(
        title="Job queue is down",
        impact="major",
        state="investigating",
        components=["queue"],
        automatic=True,
        component="queue",
        started_at=now - dt.timedelta(minutes=50),
        created_at=now - dt.timedelta(minutes=50),
        updated_at=now - dt.timedelta(minutes=50),
    )
    await automatic.save().run()
    await IncidentUpdate.insert(
        IncidentUpdate(
            incident=slow.id,
            state="investigating",
            message="Galleries open slowly for some clients.",
            created_at=now - dt.timedelta(hours=2),
            created_by=1,
        ),
        IncidentUpdate(
            incident=slow.id,
            state="identified",
            message="A thumbnail job was stuck; it is being restarted.",
            created_at=now - dt.timedelta(minutes=30),
            created_by=1,
        ),
        IncidentUpdate(
            incident=automatic.id,
            state="investigating",
            message=QUEUE_DETAIL,
            created_at=now - dt.timedelta(minutes=50),
        ),
    ).run()
    await BackupJob.insert(
        BackupJob(
            kind="backup",
            slot="backup:seed",
            state="done",
            not_before=now - dt.timedelta(hours=6),
            finished_at=now - dt.timedelta(hours=5),
            created_at=now - dt.timedelta(hours=6),
        )
    ).run()
    await DrillReport.insert(
        DrillReport(
            repository="local",
            started_at=now - dt.timedelta(days=2, minutes=10),
            finished_at=now - dt.timedelta(days=2),
            passed=True,
        )
    ).run()


def svgs(html: str) -> list[ET.Element]:
    found = re.findall(r"<svg\b.*?</svg>", html, flags=re.DOTALL)
    return [ET.fromstring(text) for text in found]  # noqa: S314 - made by the code under test


def component_block(html: str, component: str) -> str:
    match = re.search(
        rf'<li class="component" data-component="{re.escape(component)}">(.*?)</li>',
        html,
        flags=re.DOTALL,
    )
    assert match, f"no block for {component}"
    return match.group(1)


def figures_of(block: str) -> dict[str, str]:
    return dict(re.findall(r"<dt>(\w+)</dt><dd>([^<]+)</dd>", block))


# --- who may see it -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "address", "forwarded", "shown"),
    [
        ("public", "203.0.113.5", None, True),
        ("lan", "203.0.113.5", None, False),
        ("lan", "192.168.1.20", None, True),
        ("lan", "127.0.0.1", None, True),
        ("lan", "fd12:3456::7", None, True),
        ("lan", "192.0.2.10", None, False),  # a documentation range is not a LAN
        # Behind the trusted proxy, the forwarded client counts, not the proxy.
        ("lan", "10.9.9.9", "203.0.113.5", False),
        ("lan", "10.9.9.9", "192.168.1.7", True),
        ("off", "127.0.0.1", None, False),
        ("off", "203.0.113.5", None, False),
    ],
)
async def test_visibility_follows_the_setting_and_the_client_address(
    status_app: Litestar, setting: str, address: str, forwarded: str | None, shown: bool
) -> None:
    """public shows everyone, lan only loopback and private addresses (as resolved through the
    trusted proxies), off nobody; a refused visitor gets the plain 404 of a missing page."""
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    with monitoring(status_app, status_page=setting):
        async with make_client(status_app, address) as visitor:
            response = await visitor.get("/status", headers=headers)
            missing = await visitor.get("/no-such-page")
    if shown:
        assert response.status_code == 200
        assert "Status not known yet" in response.text
    else:
        assert response.status_code == 404
        assert response.text == missing.text
        assert "status" not in response.text.lower().replace("status_code", "")


@pytest.mark.parametrize(
    ("address", "headers", "shown"),
    [
        # A proxy on the same machine or a Docker bridge, not in server.trusted_proxies: its
        # own address is every visitor's, so a forwarded visitor is not taken for the LAN.
        ("127.0.0.1", {"X-Forwarded-For": "203.0.113.5"}, False),
        ("172.17.0.1", {"X-Forwarded-For": "203.0.113.5"}, False),
        ("172.17.0.1", {"X-Forwarded-For": "192.168.1.7"}, False),
        ("127.0.0.1", {"Forwarded": "for=203.0.113.5;proto=https"}, False),
        ("127.0.0.1", {"X-Real-IP": "203.0.113.5"}, False),
        # A forged list ending in a LAN address, sent past an untrusted proxy.
        ("127.0.0.1", {"X-Forwarded-For": "192.168.1.7, 203.0.113.5"}, False),
        # An untrusted proxy that passes on a list naming its own (loopback) address.
        ("127.0.0.1", {"X-Forwarded-For": "127.0.0.1"}, False),
        ("10.9.9.8", {"X-Forwarded-For": "10.9.9.8"}, False),
        # The trusted proxy forwarding with X-Real-IP alone names nobody the app resolves.
        ("10.9.9.9", {"X-Real-IP": "192.168.1.7"}, False),
        # The trusted proxy with X-Forwarded-For: the forwarded client counts, as before.
        ("10.9.9.9", {"X-Forwarded-For": "192.168.1.7", "X-Real-IP": "192.168.1.7"}, True),
        ("10.9.9.9", {"X-Forwarded-For": "203.0.113.5, 192.168.1.7"}, True),
        # Without any forwarding header the peer is the visitor.
        ("127.0.0.1", {}, True),
    ],
)
async def test_lan_page_fails_closed_behind_an_untrusted_proxy(
    status_app: Litestar, address: str, headers: dict[str, str], shown: bool
) -> None:
    """With "lan", a request naming a forwarded client whose peer is not a trusted proxy is
    treated as not on the LAN: the 404 of a missing page, not the status page."""
    with monitoring(status_app, status_page="lan"):
        async with make_client(status_app, address) as visitor:
            response = await visitor.get("/status", headers=headers)
            missing = await visitor.get("/no-such-page")
    if shown:
        assert response.status_code == 200
        assert "Status not known yet" in response.text
    else:
        assert response.status_code == 404
        assert response.text == missing.text


async def test_public_page_is_shown_whatever_the_proxy_headers(status_app: Litestar) -> None:
    """Failing closed concerns "lan" only: a public page is public through any proxy."""
    with monitoring(status_app, status_page="public"):
        async with make_client(status_app, "127.0.0.1") as visitor:
            response = await visitor.get("/status", headers={"X-Forwarded-For": "203.0.113.5"})
    assert response.status_code == 200


# --- what it shows --------------------------------------------------------------------------------


async def test_page_shows_states_uptime_incidents_maintenance_and_backups(
    status_app: Litestar, clock: FakeClock
) -> None:
    """Figures come from the spans: the website's 43 minutes are 99.90% over 30 days; the
    database's downtime inside announced maintenance is not counted; incidents show their
    updates; the planned window, the backup and the drill are listed."""
    now = clock()
    await seed(now)
    with monitoring(status_app, status_page="public"):
        async with make_client(status_app, "203.0.113.5") as visitor:
            response = await visitor.get("/status")
    html = response.text
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=10"
    assert "Some parts are degraded" in html

    web = component_block(html, "web")
    assert "Website and galleries" in web and "Operational" in web
    assert figures_of(web) == {"24h": "100.00%", "30d": "99.90%", "90d": "99.97%"}
    assert "1 day with downtime" in web
    database = component_block(html, "database")
    assert figures_of(database) == {"24h": "100.00%", "30d": "100.00%", "90d": "100.00%"}
    overall = component_block(html, "overall")
    assert figures_of(overall)["30d"] == "99.90%"
    assert "Degraded" in component_block(html, "queue")

    assert "Slow gallery loading" in html
    assert "A thumbnail job was stuck; it is being restarted." in html
    assert "Galleries open slowly for some clients." in html
    assert "Job queue is down" in html
    assert "Detected automatically. We are looking into it." in html
    assert "New disks for photo storage" in html
    assert "Galleries stay online; uploads pause." in html
    assert "Cancelled window" not in html
    backup_at = (now - dt.timedelta(hours=5)).strftime("%Y-%m-%d %H:%M")
    drill_at = (now - dt.timedelta(days=2)).strftime("%Y-%m-%d %H:%M")
    assert backup_at in re.search(r'id="last-backup">(.*?)</dd>', html).group(1)  # type: ignore[union-attr]
    assert drill_at in re.search(r'id="last-drill">(.*?)</dd>', html).group(1)  # type: ignore[union-attr]


async def test_page_leaks_no_internal_detail(status_app: Litestar, clock: FakeClock) -> None:
    """Probe details, addresses, host names, paths and process ids stay off the page, even
    where the appliance wrote them into an automatic incident."""
    await seed(clock())
    with monitoring(status_app, status_page="public"):
        async with make_client(status_app, "203.0.113.5") as visitor:
            html = (await visitor.get("/status")).text
    for secret in (
        SECRET_DETAIL,
        QUEUE_DETAIL,
        "10.20.30.40",
        "/var/lib",
        "db.internal.lan",
        "worker-7",
        "4242",
        "password authentication",
        "ECONNREFUSED",
    ):
        assert secret not in html, secret
    assert "<script" not in html
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html), "an external resource"


async def test_bars_are_well_formed_svg_with_90_days_each(
    status_app: Litestar, clock: FakeClock
) -> None:
    """Every chart parses as SVG, has 90 bars with a dated title each, the down day red and the
    days before the first probe grey."""
    now = clock()
    await seed(now)
    with monitoring(status_app, status_page="public"):
        async with make_client(status_app, "203.0.113.5") as visitor:
            html = (await visitor.get("/status")).text
    charts = svgs(html)
    assert len(charts) == 6  # overall and five components
    for chart in charts:
        rects = chart.findall(f"{SVG_NS}rect")
        assert len(rects) == 90
        dates = [rect.get("data-date") for rect in rects]
        assert dates[-1] == now.date().isoformat()
        assert all(
            (rect.findtext(f"{SVG_NS}title") or "").startswith(rect.get("data-date") or "?")
            for rect in rects
        )
    web = svgs(component_block(html, "web"))[0]
    by_date = {rect.get("data-date"): rect for rect in web.findall(f"{SVG_NS}rect")}
    down_day = (now - dt.timedelta(days=2)).date().isoformat()
    down_rect = by_date[down_day]
    title = down_rect.findtext(f"{SVG_NS}title") or ""
    assert title == f"{down_day}: 97.01% up, down 43 min"
    assert down_rect.get("data-state") == "down"
    assert all(rect.get("data-state") == "up" for d, rect in by_date.items() if d != down_day)


async def test_a_stale_worker_shows_down_and_its_checks_unknown(
    status_app: Litestar, clock: FakeClock
) -> None:
    """When the worker's heartbeat is older than worker_stale_seconds, the page says the
    worker is down and no longer vouches for the other states."""
    await seed(clock())
    clock.advance(seconds=600)
    with monitoring(status_app, status_page="public", worker_stale_seconds=180):
        async with make_client(status_app, "203.0.113.5") as visitor:
            html = (await visitor.get("/status")).text
    assert "Down" in component_block(html, "worker")
    assert "Not checked" in component_block(html, "web")
    assert "Some parts are degraded" in html


async def test_a_core_component_down_is_an_outage_unless_under_maintenance(
    status_app: Litestar, clock: FakeClock
) -> None:
    """The database down makes the banner an outage; inside a window that covers it, the
    banner says maintenance and the component shows maintenance."""
    now = clock()
    await seed(now)
    await (
        ComponentStatus.update({ComponentStatus.state: "down"})
        .where(ComponentStatus.component == "database")
        .run()
    )
    with monitoring(status_app, status_page="public"):
        async with make_client(status_app, "203.0.113.5") as visitor:
            assert "Outage: galleries may be unavailable" in (await visitor.get("/status")).text
            await MaintenanceWindow.insert(
                MaintenanceWindow(
                    title="Database move",
                    components=["database"],
                    starts_at=now - dt.timedelta(minutes=5),
                    ends_at=now + dt.timedelta(minutes=55),
                    created_at=now - dt.timedelta(days=7),
                    updated_at=now - dt.timedelta(days=7),
                )
            ).run()
            clock.advance(seconds=11)  # past the page's few seconds of caching
            html = (await visitor.get("/status")).text
    assert "Maintenance in progress" in html
    assert "Maintenance: Database move" in html
    assert "Maintenance" in component_block(html, "database")


async def test_one_visit_costs_a_handful_of_queries_and_repeats_are_cached(
    status_app: Litestar, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A visit runs at most eight queries; a second visit within the cache time runs none."""
    from piccolo.query.base import Query

    await seed(clock())
    counted: list[str] = []
    original = Query._run

    async def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        counted.append(type(self).__name__)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Query, "_run", counting)
    with monitoring(status_app, status_page="public"):
        async with make_client(status_app, "203.0.113.5") as visitor:
            first = await visitor.get("/status")
            used = len(counted)
            second = await visitor.get("/status")
    assert first.status_code == second.status_code == 200
    assert 0 < used <= 8, counted
    assert len(counted) == used
    assert first.text == second.text


async def test_status_page_works_with_an_http_client_without_javascript(
    status_app: Litestar,
) -> None:
    """An empty appliance answers with a complete page: no checks yet, nothing planned."""
    with monitoring(status_app, status_page="public"):
        async with make_client(status_app, "203.0.113.5") as visitor:
            response: httpx.Response = await visitor.get("/status")
    assert response.status_code == 200
    assert "No checks have run yet." in response.text
    assert "None planned." in response.text
    assert "none yet" in response.text
