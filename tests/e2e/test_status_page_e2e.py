"""The status page in a real Chromium with JavaScript switched off: the uptime bars are drawn
with a size, incidents are listed, nothing is logged as an error and nothing is loaded from
another origin."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from playwright.sync_api import Browser, ConsoleMessage, expect

from tests.e2e.conftest import ARTIFACTS, Appliance

pytestmark = pytest.mark.e2e


def _database_dsn(appliance: Appliance) -> str:
    """The embedded server listens on a Unix socket; postmaster.pid names its folder."""
    lines = (appliance.data_dir / "postgres" / "postmaster.pid").read_text().splitlines()
    return f"postgresql://postgres@/appliance?host={lines[4].strip()}"


async def _record_history(dsn: str) -> None:
    """Ten days watched, the website down 30 minutes two days ago, an incident with two
    updates written by staff, and maintenance planned for next week."""
    now = dt.datetime.now(dt.UTC)
    conn = await asyncpg.connect(dsn)
    try:
        # Watched for ten days: the running worker may have made the rows already.
        await conn.execute(
            "INSERT INTO component_status (component, state, since, detail, candidate_state,"
            " candidate_count, checked_at, first_checked_at)"
            " SELECT c, 'up', $1, '', '', 0, $1, $1 FROM unnest($2::text[]) AS c"
            " ON CONFLICT (component) DO UPDATE SET first_checked_at = $1",
            now - dt.timedelta(days=10),
            ["web", "database", "object-store"],
        )
        down = now - dt.timedelta(days=2)
        await conn.execute(
            "INSERT INTO component_span (component, state, started_at, ended_at, detail)"
            " VALUES ('web', 'down', $1, $2, 'connection refused by 10.1.2.3')",
            down,
            down + dt.timedelta(minutes=30),
        )
        incident = await conn.fetchval(
            "INSERT INTO service_incident (title, impact, state, components, automatic,"
            " component, started_at, created_by, created_at, updated_at)"
            " VALUES ('Slow gallery loading', 'minor', 'identified', '[\"web\"]', false, '',"
            " $1, 1, $1, $1) RETURNING id",
            now - dt.timedelta(hours=1),
        )
        for minutes, state, message in (
            (60, "investigating", "Galleries open slowly for some clients."),
            (20, "identified", "A stuck thumbnail job is being restarted."),
        ):
            await conn.execute(
                "INSERT INTO service_incident_update (incident, state, message, created_at,"
                " created_by) VALUES ($1, $2, $3, $4, 1)",
                incident,
                state,
                message,
                now - dt.timedelta(minutes=minutes),
            )
        await conn.execute(
            "INSERT INTO maintenance_window (title, description, components, starts_at,"
            " ends_at, notify_clients, revision, told, created_at, updated_at)"
            " VALUES ('Server upgrade', '', '[]', $1, $2, false, 0, '[]', $3, $3)",
            now + dt.timedelta(days=7),
            now + dt.timedelta(days=7, hours=1),
            now,
        )
    finally:
        await conn.close()


def test_status_page_draws_its_bars_and_incidents_without_javascript(
    appliance: Appliance, browser: Browser, request: pytest.FixtureRequest
) -> None:
    """With JavaScript off, the page shows the banner, 90 bars per chart with a real size, the
    incident and its updates and the planned maintenance; no console errors, no other origin."""
    # Playwright's loop runs in this thread: the inserts get a loop of their own.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _record_history(_database_dsn(appliance))).result()
    shots = ARTIFACTS / request.node.name
    shots.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1024, "height": 768}
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    requests: list[str] = []
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if (
            message.type == "error"
            and urlsplit(message.location.get("url", "")).path != "/favicon.ico"
        ):
            errors.append(message.text)

    page.on("request", lambda sent: requests.append(sent.url))
    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        response = page.goto(f"{appliance.base_url}/status")
        assert response is not None and response.status == 200
        page.screenshot(path=Path(shots) / "status.png", full_page=True)

        expect(page.locator("#overall-banner")).to_be_visible()
        expect(page.get_by_role("heading", name="Slow gallery loading")).to_be_visible()
        expect(page.get_by_text("A stuck thumbnail job is being restarted.")).to_be_visible()
        expect(page.get_by_text("Galleries open slowly for some clients.")).to_be_visible()
        expect(page.get_by_text("Server upgrade")).to_be_visible()

        charts = page.locator("svg.uptime-bars")
        assert charts.count() >= 1
        web = page.locator('li[data-component="web"] svg.uptime-bars')
        expect(web).to_be_visible()
        chart_box = web.bounding_box()
        assert chart_box is not None and chart_box["width"] > 300 and chart_box["height"] > 10
        bars = web.locator("rect")
        assert bars.count() == 90
        for index in (0, 45, 87, 89):
            box = bars.nth(index).bounding_box()
            assert box is not None and box["width"] > 0 and box["height"] > 0, index
        down_day = (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).date().isoformat()
        assert web.locator(f'rect[data-date="{down_day}"]').get_attribute("data-state") == "down"
        expect(page.locator('li[data-component="web"] .bars-summary')).to_contain_text(
            "with downtime"
        )
        assert "10.1.2.3" not in page.content()

        origin = urlsplit(appliance.base_url).netloc
        foreign = [url for url in requests if urlsplit(url).netloc not in {origin, ""}]
        assert not foreign, foreign
        assert not errors, errors
    finally:
        context.close()
