"""Admin → Monitoring over HTTP: only admins, details shown to them, uptime for every window and
the last 12 months, and the monthly SLA report as PDF and CSV with exact figures, refused
clearly for a bad month and audit-logged when downloaded."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import httpx
import pytest
from litestar import Litestar

from appliance.audit.service import list_entries
from appliance.monitoring.report import CSV_COLUMNS
from appliance.monitoring.tables import ComponentSpan, MaintenanceWindow
from appliance.monitoring.uptime import month_bounds, months_before
from tests.conftest import FakeClock, make_client
from tests.integration.flows import Admin, sign_in, submit
from tests.integration.test_clients import signed_in_owner
from tests.integration.test_sign_in import invite_photographer
from tests.integration.test_status_page import SECRET_DETAIL, seed, svgs

PAGE = "/admin/monitoring"
REPORT = f"{PAGE}/report"


def previous_month(now: dt.datetime) -> tuple[int, int]:
    return months_before(now, 2)[1]


async def seed_previous_month(now: dt.datetime) -> tuple[int, int]:
    """In last month: the website down 43 minutes on the 10th, the database down an hour on the
    12th of which 40 minutes fall in an announced window for it."""
    year, month = previous_month(now)
    tenth = dt.datetime(year, month, 10, 8, 0, tzinfo=dt.UTC)
    twelfth = dt.datetime(year, month, 12, 22, 0, tzinfo=dt.UTC)
    await ComponentSpan.insert(
        ComponentSpan(
            component="web",
            state="down",
            started_at=tenth,
            ended_at=tenth + dt.timedelta(minutes=43),
            detail=SECRET_DETAIL,
        ),
        ComponentSpan(
            component="database",
            state="down",
            started_at=twelfth,
            ended_at=twelfth + dt.timedelta(hours=1),
        ),
    ).run()
    await MaintenanceWindow.insert(
        MaintenanceWindow(
            title="Database upgrade",
            components=["database"],
            starts_at=twelfth + dt.timedelta(minutes=20),
            ends_at=twelfth + dt.timedelta(hours=2),
            created_at=twelfth - dt.timedelta(days=7),
            updated_at=twelfth - dt.timedelta(days=7),
        )
    ).run()
    return year, month


async def test_only_admins_open_the_page_and_the_report(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """A photographer gets 403 on the page and the report; a signed-out visitor is sent to the
    sign-in page; neither download is audit-logged."""
    path = await invite_photographer(client, admin, clock)
    month = clock().strftime("%Y-%m")
    async with make_client(app, "192.0.2.20") as pia:
        await submit(
            pia,
            path,
            {
                "username": "pia",
                "display_name": "Pia Photographer",
                "password": "velvet compass orchard 77 river",
                "confirm": "velvet compass orchard 77 river",
            },
        )
        await sign_in(pia, "pia", "velvet compass orchard 77 river")
        for target in (PAGE, f"{REPORT}?month={month}&format=csv"):
            refused = await pia.get(target)
            assert refused.status_code == 403, target
            assert "Only an admin" in refused.text
    async with make_client(app, "192.0.2.30") as stranger:
        for target in (PAGE, f"{REPORT}?month={month}&format=pdf"):
            sent = await stranger.get(target)
            assert sent.status_code == 303 and sent.headers["location"] == "/login"
    assert not [e for e in await list_entries() if e.action == "monitoring.sla_report"]


async def test_admin_sees_details_uptime_windows_months_and_bars(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """The page shows probe details (admins may see them), the uptime of every window from the
    spans, 12 calendar months, this month's budget and a 90-bar chart per component."""
    now = clock()
    await seed(now)
    await signed_in_owner(client, admin, clock)
    response = await client.get(PAGE)
    html = response.text
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert SECRET_DETAIL in html  # the admin sees what the probe saw
    windows = re.search(r'id="uptime-windows">(.*?)</table>', html, re.DOTALL).group(1)  # type: ignore[union-attr]
    web = re.search(r'<tr data-component="web">(.*?)</tr>', windows, re.DOTALL).group(1)  # type: ignore[union-attr]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", web)
    assert cells[1:5] == ["100.000%", "99.573%", "99.900%", "99.967%"]
    assert cells[5] == "43 min"
    database = re.search(r'<tr data-component="database">(.*?)</tr>', windows, re.DOTALL).group(1)  # type: ignore[union-attr]
    assert re.findall(r"<td[^>]*>([^<]*)</td>", database)[6] == "30 min"  # in maintenance
    months = re.search(r'id="uptime-months">(.*?)</table>', html, re.DOTALL).group(1)  # type: ignore[union-attr]
    assert months.count("<tr data-month=") == 12
    running = re.search(rf'<tr data-month="{now:%Y-%m}">(.*?)</tr>', months, re.DOTALL)
    assert running and "(so far)" in running.group(1)
    assert 'class="met"' not in running.group(1) and 'class="missed"' not in running.group(1)
    charts = svgs(html)
    assert len(charts) == 6
    assert all(len(chart.findall("{http://www.w3.org/2000/svg}rect")) == 90 for chart in charts)
    assert 'id="budget-left"' in html


async def test_csv_report_figures_match_the_spans(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Last month's CSV: the website's 43 minutes exact, the database's 20 counted minutes and
    40 in maintenance, overall the union, each against the 99.9% target; the download is
    audit-logged with the month and the format."""
    now = clock()
    await seed(now)  # watched for 100 days, so last month is measured in full
    year, month = await seed_previous_month(now)
    start, end = month_bounds(year, month)
    length = (end - start).total_seconds()
    await signed_in_owner(client, admin, clock)
    response = await client.get(f"{REPORT}?month={year:04d}-{month:02d}&format=csv")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="availability-{year:04d}-{month:02d}.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    by_key = {row["component"]: row for row in rows}
    web, database, overall = by_key["web"], by_key["database"], by_key["overall"]
    assert rows[0]["component"] == "overall"
    assert web["down_seconds"] == "2580" and web["measured_seconds"] == f"{length:.0f}"
    assert web["uptime_percent"] == f"{(length - 2580) / length * 100:.6f}"
    assert database["down_seconds"] == "1200" and database["maintenance_seconds"] == "2400"
    assert overall["down_seconds"] == str(2580 + 1200)
    assert overall["maintenance_seconds"] == "2400"
    expected_met = (length - 3780) / length * 100 >= 99.9
    assert overall["met"] == ("met" if expected_met else "missed")
    assert overall["target_percent"] == "99.9"
    assert SECRET_DETAIL not in response.text
    entries = [e for e in await list_entries() if e.action == "monitoring.sla_report"]
    assert len(entries) == 1
    assert entries[0].target == f"{year:04d}-{month:02d}"
    assert entries[0].details == {"format": "csv"}
    assert entries[0].actor == admin.username


async def test_pdf_report_is_a_pdf_and_is_audit_logged(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """The PDF of this month (so far) is a PDF file offered as a download."""
    now = clock()
    await seed(now)
    await signed_in_owner(client, admin, clock)
    response = await client.get(f"{REPORT}?month={now:%Y-%m}&format=pdf")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")
    assert response.content.rstrip().endswith(b"%%EOF")
    assert len(response.content) > 1000
    entries = [e for e in await list_entries() if e.action == "monitoring.sla_report"]
    assert [(e.target, e.details) for e in entries] == [(f"{now:%Y-%m}", {"format": "pdf"})]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("month=2026-13&format=pdf", "There is no such month"),
        ("month=2026-00&format=csv", "There is no such month"),
        ("month=..%2F..%2F&format=pdf", "Give the month as YYYY-MM"),
        ("month=%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "Give the month as YYYY-MM"),
        ("month=2999-01&format=pdf", "That month has not begun yet."),
        ("month=1999-12&format=csv", "Reports start in the year 2000."),
        ("month=&format=csv", "Choose a month."),
        ("format=csv", "Choose a month."),
        ("month=2026-11&format=exe", "Choose PDF or CSV."),
        ("month=2026-11%00&format=pdf", "Give the month as YYYY-MM"),
        ("month=" + "9" * 5000, "Give the month as YYYY-MM"),
    ],
)
async def test_a_bad_month_or_format_gets_a_clear_400(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, query: str, message: str
) -> None:
    """Hostile or mistaken parameters get a 400 saying what to fix, and nothing is logged as
    downloaded."""
    await signed_in_owner(client, admin, clock)
    response = await client.get(f"{REPORT}?{query}")
    assert response.status_code == 400
    assert message in response.text
    assert not [e for e in await list_entries() if e.action == "monitoring.sla_report"]


async def test_the_current_month_is_reported_so_far_and_not_yet_judged(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """This month's CSV measures up to now, counts the rest as not measured, and says "so far"
    instead of met or missed."""
    now = clock()
    await seed(now)
    start, end = month_bounds(now.year, now.month)
    await signed_in_owner(client, admin, clock)
    response = await client.get(f"{REPORT}?month={now:%Y-%m}&format=csv")
    overall = next(csv.DictReader(io.StringIO(response.text)))
    assert overall["component"] == "overall"
    assert overall["met"] in {"so far met", "so far below"}
    assert overall["measured_seconds"] == f"{(now - start).total_seconds():.0f}"
    assert overall["not_measured_seconds"] == f"{(end - now).total_seconds():.0f}"
