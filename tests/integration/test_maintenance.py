"""Maintenance windows: scheduling with clear refusals and audit, the admin pages, the status
queries, and the banner while a window runs."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from litestar import Litestar

from appliance.audit.service import list_entries
from appliance.errors import InvalidInput
from appliance.localtime import format_local
from appliance.monitoring import maintenance, scheduling
from appliance.monitoring.tables import MaintenanceWindow
from appliance.web.pages import BANNER_STATE, load_maintenance_banner
from tests.conftest import FakeClock
from tests.integration.flows import Admin, csrf_of, submit
from tests.integration.maintenance_flows import (
    OWNER_EMAIL,
    PAGE,
    SYSTEM,
    add_staff,
    form_key_of,
    local,
    mails,
    minute,
    only_window,
    run_task,
    schedule,
)
from tests.integration.sharing_flows import published_gallery, share, visitor
from tests.integration.test_clients import ANNA, signed_in_owner


@pytest.fixture(autouse=True)
def fresh_banner(app: Litestar) -> Any:
    """Each test starts and ends with an empty banner cache (the app outlives the test)."""
    app.state.pop(BANNER_STATE, None)
    yield
    app.state.pop(BANNER_STATE, None)


@pytest.fixture
async def owner(client: httpx.AsyncClient, admin: Admin, clock: FakeClock) -> AsyncIterator[Admin]:
    await signed_in_owner(client, admin, clock)
    yield admin


async def test_admin_schedules_a_window_stored_in_utc_and_audited(
    client: httpx.AsyncClient, owner: Admin, clock: FakeClock
) -> None:
    """A window typed in the studio's zone is stored in UTC with its components, listed on the
    page with the zone shown, and the scheduling is audit-logged."""
    starts = minute(clock() + dt.timedelta(days=3))
    response = await schedule(
        client,
        title="Database upgrade",
        description="PostgreSQL 17.\nGalleries stay readable.",
        starts=local(starts),
        ends=local(starts + dt.timedelta(hours=2)),
        components="database",  # one checkbox arrives as a plain string
        notify_clients="on",
    )
    assert response.status_code == 303, response.text[-2000:]
    assert response.headers["location"] == f"{PAGE}?done=scheduled"
    row = await only_window()
    assert row["title"] == "Database upgrade"
    assert row["description"] == "PostgreSQL 17.\nGalleries stay readable."
    assert row["starts_at"] == starts
    assert row["ends_at"] == starts + dt.timedelta(hours=2)
    assert row["components"] == ["database"]
    assert row["notify_clients"] is True
    assert row["notice_sent_at"] is None and row["cancelled_at"] is None
    page = await client.get(PAGE)
    assert "Database upgrade" in page.text
    assert f"{starts:%Y-%m-%d %H:%M} UTC" in page.text
    entry = next(e for e in await list_entries() if e.action == "maintenance.scheduled")
    assert entry.actor == "owner"
    assert entry.target == f"maintenance:{row['id']}"
    assert entry.details["components"] == ["database"]


async def test_times_in_the_studio_zone_become_utc(clean_db: None, clock: FakeClock) -> None:
    """A Berlin wall-clock time is stored as the right UTC instant and shown with both zones;
    a time skipped by the daylight-saving change is refused."""
    year = clock().year + 1
    window = await scheduling.schedule_window(
        maintenance.MaintenanceInput(
            title="Move", starts=f"{year}-01-10T22:00", ends=f"{year}-01-11T02:00"
        ),
        zone="Europe/Berlin",
        actor=SYSTEM,
        address="",
        now=clock(),
    )
    assert window.starts_at == dt.datetime(year, 1, 10, 21, 0, tzinfo=dt.UTC)
    shown = format_local(window.starts_at, "Europe/Berlin")
    assert shown == f"{year}-01-10 22:00 CET (21:00 UTC)"
    last_of_march = dt.date(year, 3, 31)
    switch = last_of_march - dt.timedelta(days=(last_of_march.weekday() - 6) % 7)
    with pytest.raises(InvalidInput, match="does not exist"):
        await scheduling.schedule_window(
            maintenance.MaintenanceInput(
                title="Gap", starts=f"{switch}T02:30", ends=f"{switch}T05:00"
            ),
            zone="Europe/Berlin",
            actor=SYSTEM,
            address="",
            now=clock(),
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"title": "  "}, "Give the maintenance a title."),
        ({"starts": "past"}, "The start is in the past."),
        ({"ends": "before"}, "The end must come after the start."),
        ({"ends": "long"}, "at most 7 days"),
        ({"components": "mainframe"}, "Unknown component: &#39;mainframe&#39;"),
        ({"starts": "tomorrow at noon"}, "Enter the date and time as YYYY-MM-DD HH:MM"),
        # Years at the ends of the calendar once overflowed the time zone arithmetic (a 500).
        ({"starts": "0001-01-01T00:00"}, "Enter a year between 2000 and 2200."),
        ({"ends": "9999-12-31T23:59"}, "Enter a year between 2000 and 2200."),
        ({"starts": "2031-02-30T10:00"}, "This date does not exist."),
        ({"title": "Update\u202eevil"}, "Remove the invisible or control characters."),
        ({"title": "x" * 201}, "Use at most 200 characters."),
        ({"starts": "next-year"}, "at most a year ahead"),
    ],
)
async def test_bad_windows_are_refused_with_a_clear_message(
    client: httpx.AsyncClient,
    owner: Admin,
    clock: FakeClock,
    change: dict[str, str],
    message: str,
) -> None:
    """Each bad value gets a 400 naming the problem, the form keeps what was typed, and no
    window is stored."""
    starts = minute(clock() + dt.timedelta(days=2))
    special = {
        "past": local(clock() - dt.timedelta(hours=1)),
        "before": local(starts - dt.timedelta(minutes=30)),
        "long": local(starts + dt.timedelta(days=7, minutes=1)),
        "next-year": local(clock() + dt.timedelta(days=400)),
    }
    form = {
        "title": "Disk swap",
        "starts": local(starts),
        "ends": local(starts + dt.timedelta(hours=1)),
        **{key: special.get(value, value) for key, value in change.items()},
    }
    response = await schedule(client, **form)
    assert response.status_code == 400
    assert message in response.text
    assert 'aria-invalid="true"' in response.text or "field-error" in response.text
    assert await MaintenanceWindow.count().run() == 0


async def test_maintenance_pages_refuse_other_people(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """Signed out is sent to sign in; a form without its CSRF token is refused; an unknown
    window is a 404; nothing is stored."""
    signed_out = await client.get(PAGE)
    assert signed_out.status_code in (302, 303)
    await signed_in_owner(client, admin, clock)
    forged = await client.post(PAGE, data={"title": "x", "starts": "", "ends": ""})
    assert forged.status_code == 403
    missing = await client.get(f"{PAGE}/999999")
    assert missing.status_code == 404
    page = await client.get(PAGE)
    cancel = await client.post(f"{PAGE}/999999/cancel", data={"_csrf": csrf_of(page.text)})
    assert cancel.status_code == 404
    huge = await client.post(f"{PAGE}/99999999999/cancel", data={"_csrf": csrf_of(page.text)})
    assert huge.status_code in (400, 404)
    assert await MaintenanceWindow.count().run() == 0


async def test_banner_shows_during_the_window_only_on_staff_and_client_pages(
    client: httpx.AsyncClient, app: Litestar, owner: Admin, clock: FakeClock
) -> None:
    """Before the window no banner; during it staff pages and a client's link page say until
    when; after it, none again. Admins see the upcoming window on the home page."""
    gallery, _ = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    path = await share(client, gallery, recipient="Anna", password="blue harbour ledge 51")
    # Without a password the link opens the gallery page itself, which is served from a cache.
    open_path = await share(client, gallery, recipient="Ben")
    # Steps shorter than the staff session's 30 idle minutes, so the owner stays signed in.
    starts = minute(clock() + dt.timedelta(minutes=20))
    ends = starts + dt.timedelta(minutes=25)
    await schedule(
        client,
        title="Disk replacement",
        starts=local(starts),
        ends=local(ends),
        components="object-store",
    )
    banner = f"Planned maintenance until {ends:%Y-%m-%d %H:%M} UTC:"
    async with visitor(app) as anna:
        before = await client.get("/clients")
        assert "maintenance-banner" not in before.text
        assert "maintenance-banner" not in (await anna.get(path)).text
        assert "maintenance-banner" not in (await anna.get(open_path)).text
        home = await client.get("/")
        assert "maintenance-upcoming" in home.text and "Disk replacement" in home.text

        clock.now = starts
        during = await client.get("/clients")
        assert banner in during.text
        assert "Disk replacement (Photo storage)" in during.text
        client_page = await anna.get(path)
        assert client_page.status_code == 200
        assert banner in client_page.text
        gallery_page = await anna.get(open_path)
        assert gallery_page.status_code == 200 and "a.jpg" in gallery_page.text
        assert banner in gallery_page.text

        clock.now = ends
        assert "maintenance-banner" not in (await client.get("/clients")).text
        assert "maintenance-banner" not in (await anna.get(path)).text
        assert "maintenance-banner" not in (await anna.get(open_path)).text


async def test_a_cancelled_window_shows_no_banner(
    client: httpx.AsyncClient, owner: Admin, clock: FakeClock
) -> None:
    """Cancelling reloads the banner at once: during the cancelled window no page shows it."""
    starts = minute(clock() + dt.timedelta(hours=1))
    await schedule(
        client, title="Called off", starts=local(starts), ends=local(starts + dt.timedelta(hours=1))
    )
    row = await only_window()
    page = await client.get(PAGE)
    await client.post(f"{PAGE}/{row['id']}/cancel", data={"_csrf": csrf_of(page.text)})
    clock.now = starts + dt.timedelta(minutes=10)
    assert "maintenance-banner" not in (await client.get("/clients")).text


async def test_status_queries_return_complete_windows(clean_db: None, clock: FakeClock) -> None:
    """upcoming, active and between see only windows that are not cancelled, with their
    components, and ``between`` finds every window overlapping the period."""
    now = clock()

    async def add(title: str, start_hours: float, hours: float, **extra: Any) -> int:
        row = MaintenanceWindow(
            title=title,
            components=["database"],
            starts_at=now + dt.timedelta(hours=start_hours),
            ends_at=now + dt.timedelta(hours=start_hours + hours),
            created_at=now,
            updated_at=now,
            **extra,
        )
        await row.save().run()
        return int(row.id)

    past = await add("past", -10, 2)
    running = await add("running", -1, 2)
    soon = await add("soon", 3, 1)
    await add("cancelled", 5, 1, cancelled_at=now)
    assert [w.id for w in await maintenance.active_maintenance(now)] == [running]
    upcoming = await maintenance.upcoming_maintenance(now)
    assert [w.id for w in upcoming] == [soon]
    assert upcoming[0].components == ["database"]
    assert upcoming[0].component_labels == ["Database"]
    overlapping = await maintenance.maintenance_between(
        now - dt.timedelta(hours=9), now + dt.timedelta(hours=6)
    )
    assert [w.title for w in overlapping] == ["past", "running", "soon"]
    edge = await maintenance.maintenance_between(
        now - dt.timedelta(hours=8), now - dt.timedelta(hours=1)
    )
    assert [w.id for w in edge] == []  # [past start, past end) touches neither end
    assert past not in [w.id for w in await maintenance.active_maintenance(now)]


async def test_running_and_finished_windows_only_change_as_far_as_sensible(
    client: httpx.AsyncClient, owner: Admin, clock: FakeClock
) -> None:
    """A running window may be extended but its start stays; a finished or cancelled one
    cannot change; each refusal is a 4xx with the reason and changes nothing."""
    starts = minute(clock() + dt.timedelta(minutes=10))
    ends = starts + dt.timedelta(minutes=20)
    await schedule(client, title="Patch", starts=local(starts), ends=local(ends))
    edit = f"{PAGE}/{(await only_window())['id']}"
    clock.now = starts + dt.timedelta(minutes=5)
    moved = await submit(
        client,
        edit,
        {"title": "Patch", "starts": local(starts + dt.timedelta(minutes=10)), "ends": local(ends)},
    )
    assert moved.status_code == 400
    assert "has begun; its start can no longer change" in moved.text
    longer = await submit(
        client,
        edit,
        {"title": "Patch", "starts": local(starts), "ends": local(ends + dt.timedelta(minutes=10))},
    )
    assert longer.status_code == 303
    assert (await only_window())["ends_at"] == ends + dt.timedelta(minutes=10)

    # Within the staff session's 30 idle minutes of the last request.
    clock.now = ends + dt.timedelta(minutes=11)
    token = csrf_of((await client.get(PAGE)).text)
    late = await client.post(
        edit,
        data={"title": "Patch", "starts": local(starts), "ends": local(ends), "_csrf": token},
    )
    assert late.status_code == 409 and "is over" in late.text
    over = await client.post(f"{edit}/cancel", data={"_csrf": token})
    assert over.status_code == 409 and "nothing to cancel" in over.text
    assert (await only_window())["cancelled_at"] is None


async def test_a_window_made_in_another_process_shows_after_the_cache_reloads(
    client: httpx.AsyncClient, app: Litestar, owner: Admin, clock: FakeClock
) -> None:
    """A window this process did not write (another web process, the CLI) is picked up by
    the before-request hook once the cache is stale, and then bannered while it runs."""
    request = SimpleNamespace(app=app)
    await load_maintenance_banner(request)  # type: ignore[arg-type]  # before the window exists
    starts = minute(clock() + dt.timedelta(minutes=10))
    await scheduling.schedule_window(
        maintenance.MaintenanceInput(
            title="Elsewhere", starts=local(starts), ends=local(starts + dt.timedelta(minutes=10))
        ),
        zone="UTC",
        actor=SYSTEM,
        address="",
        now=clock(),
    )
    clock.now = starts
    await load_maintenance_banner(request)  # type: ignore[arg-type]
    assert "Elsewhere" not in (await client.get("/clients")).text  # fresh: not reloaded yet
    app.state[BANNER_STATE].ttl = 0
    await load_maintenance_banner(request)  # type: ignore[arg-type]
    assert "Planned maintenance until" in (await client.get("/clients")).text


async def test_the_same_schedule_form_sent_twice_schedules_one_window(
    client: httpx.AsyncClient, owner: Admin, clock: FakeClock
) -> None:
    """A double click sends the form twice: the second POST lands on the same result, and
    there is one window, one audit entry and one notice per person."""
    page = await client.get(PAGE)
    starts = minute(clock() + dt.timedelta(days=2))
    form = {
        "title": "Disk swap",
        "starts": local(starts),
        "ends": local(starts + dt.timedelta(hours=1)),
        "form_key": form_key_of(page.text),
        "_csrf": csrf_of(page.text),
    }
    first = await client.post(PAGE, data=form)
    second = await client.post(PAGE, data=form)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    window = await only_window()
    assert window["title"] == "Disk swap" and window["form_key"] == form["form_key"]
    actions = [e.action for e in await list_entries()]
    assert actions.count("maintenance.scheduled") == 1
    assert (await run_task(clock)).notices == 1
    assert [m["recipient"] for m in await mails("maintenance_notice")] == [OWNER_EMAIL]

    # A fresh page gives a fresh key: a second window on purpose is still possible.
    again = await client.get(PAGE)
    assert form_key_of(again.text) != form["form_key"]
    forged = await client.post(PAGE, data={**form, "form_key": "<script>"})
    assert forged.status_code == 400 and "Reload the page" in forged.text


async def test_cancelling_a_running_window_ends_it_now(
    client: httpx.AsyncClient, owner: Admin, clock: FakeClock
) -> None:
    """A running window is not cancelled but ended: the part that ran stays maintenance (not
    downtime), nobody is told it was cancelled, the banner goes, and the action is audited."""
    await add_staff("pia", "pia@lumen.example")
    starts = minute(clock() + dt.timedelta(minutes=15))
    planned_end = starts + dt.timedelta(hours=2)
    await schedule(client, title="Upgrade", starts=local(starts), ends=local(planned_end))
    assert (await run_task(clock)).notices == 2
    clock.now = starts + dt.timedelta(minutes=5)  # within the staff session's idle limit
    window_id = (await only_window())["id"]
    page = await client.get(PAGE)
    assert "End now" in page.text
    ended = await client.post(f"{PAGE}/{window_id}/cancel", data={"_csrf": csrf_of(page.text)})
    assert ended.status_code == 303 and ended.headers["location"].endswith("?done=ended")
    row = await only_window()
    assert row["cancelled_at"] is None and row["ends_at"] == clock() and row["told"] == []
    counted = await maintenance.maintenance_between(starts - dt.timedelta(hours=1), clock())
    assert [(w.starts_at, w.ends_at) for w in counted] == [(starts, clock())]
    assert await maintenance.active_maintenance(clock()) == []
    assert await mails("maintenance_cancelled") == []
    entry = next(e for e in await list_entries() if e.action == "maintenance.ended")
    assert entry.details == {"title": "Upgrade", "planned_end": planned_end.isoformat()}
    shown = await client.get(f"{PAGE}?done=ended")
    assert "Maintenance ended now" in shown.text
    assert "Planned maintenance until" not in (await client.get("/")).text
    again = await client.post(f"{PAGE}/{window_id}/cancel", data={"_csrf": csrf_of(page.text)})
    assert again.status_code == 409 and "nothing to cancel" in again.text


@pytest.mark.parametrize(
    ("zone", "starts", "ends"),
    [
        ("Europe/Berlin", "0001-01-01T00:30", "0001-01-01T02:00"),  # before year 1 in UTC
        ("America/New_York", "2026-12-30T10:00", "9999-12-31T23:30"),  # after year 9999 in UTC
    ],
)
async def test_years_at_the_ends_of_the_calendar_are_refused_not_a_crash(
    clean_db: None, clock: FakeClock, zone: str, starts: str, ends: str
) -> None:
    """A time whose UTC lies outside the calendar once raised OverflowError (a 500): now it is
    a clear refusal naming the field, and nothing is stored."""
    with pytest.raises(InvalidInput, match="Enter a year between 2000 and 2200") as refused:
        await scheduling.schedule_window(
            maintenance.MaintenanceInput(title="Typo", starts=starts, ends=ends),
            zone=zone,
            actor=SYSTEM,
            address="",
            now=clock(),
        )
    assert refused.value.field == ("starts" if starts.startswith("0001") else "ends")
    assert await MaintenanceWindow.count() == 0
