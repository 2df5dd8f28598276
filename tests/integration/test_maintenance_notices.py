"""Maintenance windows told ahead: e-mail notices, reminders and cancellations in the outbox
as the clock moves, to staff and to clients with active links, once each."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar

from appliance.accounts.tables import StaffUser
from appliance.audit.service import list_entries
from appliance.config import Settings
from appliance.db.engine import engine
from appliance.galleries.tables import ShareLink
from appliance.monitoring import announcements, maintenance, scheduling
from appliance.notify.messages import queue_email
from appliance.web.pages import BANNER_STATE
from tests.conftest import FakeClock
from tests.integration.conftest import run_periodic_twice
from tests.integration.flows import Admin, csrf_of, submit
from tests.integration.maintenance_flows import (
    OWNER_EMAIL,
    PAGE,
    SYSTEM,
    add_staff,
    local,
    mails,
    minute,
    only_window,
    run_task,
    schedule,
)
from tests.integration.sharing_flows import published_gallery, share
from tests.integration.test_clients import ANNA, BEN, signed_in_owner


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


async def test_staff_are_told_days_ahead_reminded_the_day_before_each_once(
    client: httpx.AsyncClient, owner: Admin, clock: FakeClock
) -> None:
    """Active staff with an address get the notice 7 days ahead and the reminder 24 h ahead,
    in text and HTML; running the task again queues nothing; disabled staff get nothing."""
    await add_staff("pia", "pia@lumen.example")
    await add_staff("gone", "gone@lumen.example", active=False)
    await add_staff("nomail", "")
    starts = minute(clock() + dt.timedelta(days=10))
    await schedule(
        client,
        title="Server move",
        description="New rack.",
        starts=local(starts),
        ends=local(starts + dt.timedelta(hours=3)),
        components="web",
    )
    assert (await run_task(clock)).notices == 0
    assert await mails() == []

    clock.now = starts - dt.timedelta(days=7, minutes=1)
    assert (await run_task(clock)).notices == 0  # a minute early

    clock.now = starts - dt.timedelta(days=7)
    report = await run_task(clock)
    assert report.notices == 2
    notices = await mails("maintenance_notice")
    assert sorted(m["recipient"] for m in notices) == [OWNER_EMAIL, "pia@lumen.example"]
    for mail in notices:
        assert mail["language"] == "en"
        assert mail["source"] == "monitoring"
        assert mail["subject"] == f"Planned maintenance {starts:%Y-%m-%d %H:%M} UTC: Server move"
        assert "Server move" in mail["body_text"] and "New rack." in mail["body_text"]
        assert f"To:   {starts + dt.timedelta(hours=3):%Y-%m-%d %H:%M} UTC" in mail["body_text"]
        assert "Website and galleries" in mail["body_text"]
        assert "reminder the day before" in mail["body_text"]
        assert "<strong>Server move</strong>" in mail["body_html"]
        assert "Website and galleries" in mail["body_html"]
    row = await only_window()
    assert row["notice_sent_at"] == clock() and row["reminder_sent_at"] is None
    assert sorted(item["email"] for item in row["told"]) == [OWNER_EMAIL, "pia@lumen.example"]

    clock.advance(minutes=5)
    assert await run_task(clock) == announcements.NoticeReport()  # the task ran again
    assert len(await mails()) == 2

    clock.now = starts - dt.timedelta(hours=24, minutes=1)
    assert (await run_task(clock)).reminders == 0
    clock.now = starts - dt.timedelta(hours=24)
    assert (await run_task(clock)).reminders == 2
    assert (await run_task(clock)).reminders == 0
    reminders = await mails("maintenance_reminder")
    assert sorted(m["recipient"] for m in reminders) == [OWNER_EMAIL, "pia@lumen.example"]
    assert reminders[0]["subject"].startswith("Reminder: maintenance ")
    assert "begins within a day" in reminders[0]["body_text"]
    assert "begins within a day" in reminders[0]["body_html"]

    clock.now = starts + dt.timedelta(hours=4)
    # Over: nothing more is sent, and who was told is forgotten.
    assert await run_task(clock) == announcements.NoticeReport(forgotten=1)
    assert (await only_window())["told"] == []
    assert await run_task(clock) == announcements.NoticeReport()
    assert len(await mails()) == 4


async def test_a_window_scheduled_late_is_announced_at_once_without_a_second_mail(
    client: httpx.AsyncClient, owner: Admin, clock: FakeClock
) -> None:
    """Scheduled 3 hours ahead: the notice goes at the next run and counts as the reminder,
    so nobody gets two mails for it."""
    starts = minute(clock() + dt.timedelta(hours=3))
    await schedule(
        client,
        title="Quick patch",
        starts=local(starts),
        ends=local(starts + dt.timedelta(hours=1)),
    )
    assert (await run_task(clock)).notices == 1
    clock.advance(hours=1)
    assert await run_task(clock) == announcements.NoticeReport()
    assert [m["template"] for m in await mails()] == ["maintenance_notice"]
    row = await only_window()
    assert row["reminder_sent_at"] is not None


async def test_the_notice_is_written_in_the_configured_language(
    client: httpx.AsyncClient, owner: Admin, clock: FakeClock
) -> None:
    """With ``notify.language = de`` the mails are German, text and HTML."""
    starts = minute(clock() + dt.timedelta(hours=5))
    await schedule(
        client, title="Umzug", starts=local(starts), ends=local(starts + dt.timedelta(hours=1))
    )
    await run_task(clock, language="de")
    (mail,) = await mails()
    assert mail["language"] == "de"
    assert mail["subject"] == f"Geplante Wartung {starts:%Y-%m-%d %H:%M} UTC: Umzug"
    assert "plant eine Wartung" in mail["body_text"]
    assert 'lang="de"' in mail["body_html"] and "Umzug" in mail["body_html"]


async def test_a_changed_window_is_announced_again_once(
    client: httpx.AsyncClient, owner: Admin, clock: FakeClock
) -> None:
    """Moving a window after its notice makes a new revision: everyone told gets one
    "Changed" notice with the new time; a description-only edit announces nothing."""
    starts = minute(clock() + dt.timedelta(days=2))
    await schedule(
        client, title="Upgrade", starts=local(starts), ends=local(starts + dt.timedelta(hours=1))
    )
    await run_task(clock)
    row = await only_window()
    edit = f"{PAGE}/{row['id']}"
    later = starts + dt.timedelta(days=1)
    moved = await submit(
        client,
        edit,
        {"title": "Upgrade", "starts": local(later), "ends": local(later + dt.timedelta(hours=2))},
    )
    assert moved.status_code == 303, moved.text[-2000:]
    row = await only_window()
    assert row["revision"] == 1 and row["notice_sent_at"] is None
    await run_task(clock)
    await run_task(clock)
    notices = await mails("maintenance_notice")
    assert len(notices) == 2
    assert (
        notices[1]["subject"] == f"Changed: planned maintenance {later:%Y-%m-%d %H:%M} UTC: Upgrade"
    )
    assert "has changed" in notices[1]["body_text"]

    same = await submit(
        client,
        edit,
        {
            "title": "Upgrade",
            "description": "Only words.",
            "starts": local(later),
            "ends": local(later + dt.timedelta(hours=2)),
        },
    )
    assert same.status_code == 303
    assert (await only_window())["revision"] == 1
    await run_task(clock)
    assert len(await mails("maintenance_notice")) == 2
    actions = [e.action for e in await list_entries()]
    assert actions.count("maintenance.changed") == 2


async def test_cancellation_goes_to_those_told_and_only_them(
    client: httpx.AsyncClient, owner: Admin, clock: FakeClock
) -> None:
    """Cancelling sends a cancellation to everyone the notice reached (not to staff who joined
    since), audit-logs it, removes the window from the status queries, and a second cancel is
    refused with a message."""
    await add_staff("pia", "pia@lumen.example")
    starts = minute(clock() + dt.timedelta(days=1, hours=6))
    await schedule(
        client, title="Rewiring", starts=local(starts), ends=local(starts + dt.timedelta(hours=1))
    )
    await run_task(clock)
    await add_staff("newbie", "newbie@lumen.example")
    row = await only_window()
    page = await client.get(PAGE)
    cancelled = await client.post(f"{PAGE}/{row['id']}/cancel", data={"_csrf": csrf_of(page.text)})
    assert cancelled.status_code == 303
    sent = await mails("maintenance_cancelled")
    assert sorted(m["recipient"] for m in sent) == [OWNER_EMAIL, "pia@lumen.example"]
    assert sent[0]["subject"] == f"Cancelled: maintenance {starts:%Y-%m-%d %H:%M} UTC: Rewiring"
    assert "is cancelled" in sent[0]["body_text"] and "is cancelled" in sent[0]["body_html"]
    assert (await only_window())["cancelled_at"] == clock()
    assert (await only_window())["told"] == []  # nothing more can be sent: forgotten
    assert await maintenance.upcoming_maintenance(clock()) == []
    entry = next(e for e in await list_entries() if e.action == "maintenance.cancelled")
    assert entry.details == {"title": "Rewiring", "cancellations": 2}

    again = await client.post(f"{PAGE}/{row['id']}/cancel", data={"_csrf": csrf_of(page.text)})
    assert again.status_code == 409
    assert "already cancelled" in again.text
    clock.now = starts - dt.timedelta(hours=2)
    await run_task(clock)
    assert len(await mails()) == 4  # two notices, two cancellations, no reminder


async def test_a_window_cancelled_before_its_notice_mails_nobody(
    client: httpx.AsyncClient, owner: Admin, clock: FakeClock
) -> None:
    """Nobody was told, so nobody gets a cancellation, and the notice never goes out."""
    starts = minute(clock() + dt.timedelta(days=20))
    await schedule(
        client, title="Far off", starts=local(starts), ends=local(starts + dt.timedelta(hours=1))
    )
    row = await only_window()
    page = await client.get(PAGE)
    await client.post(f"{PAGE}/{row['id']}/cancel", data={"_csrf": csrf_of(page.text)})
    clock.now = starts - dt.timedelta(days=3)
    await run_task(clock)
    assert await mails() == []


async def test_clients_with_active_links_are_told_when_chosen(
    client: httpx.AsyncClient, app: Litestar, owner: Admin, clock: FakeClock
) -> None:
    """With "also tell clients", the addresses of active links are told (a link without an
    address reaches its client's); revoked and expired links are not; each address once."""
    gallery, _ = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    await share(client, gallery, recipient="Anna", email="anna.links@example.org")
    await share(client, gallery, recipient="Anna again")  # no address: the client's
    await share(client, gallery, recipient="Old", email="old@example.org")
    await share(client, gallery, recipient="Later", email="later@example.org")
    await (
        ShareLink.update({ShareLink.revoked_at: clock()})
        .where(ShareLink.email == "old@example.org")
        .run()
    )
    await (
        ShareLink.update({ShareLink.expires_at: clock() - dt.timedelta(minutes=1)})
        .where(ShareLink.email == "later@example.org")
        .run()
    )
    other, _ = await published_gallery(client, app, clock, BEN, ["b.jpg"], title="Portraits")
    await share(client, other, recipient="Ben", email=OWNER_EMAIL.upper())  # staff already

    starts = minute(clock() + dt.timedelta(hours=6))
    await schedule(
        client,
        title="Storage swap",
        starts=local(starts),
        ends=local(starts + dt.timedelta(hours=1)),
        notify_clients="on",
    )
    await run_task(clock)
    by_address = {m["recipient"]: m for m in await mails("maintenance_notice")}
    assert sorted(by_address) == sorted([OWNER_EMAIL, "anna.links@example.org", ANNA["email"]])
    client_mail = by_address["anna.links@example.org"]
    assert "Your gallery links may be slow" in client_mail["body_text"]
    assert "Your gallery links may be slow" in client_mail["body_html"]
    assert "A banner shows" not in client_mail["body_text"]
    assert "A banner shows" in by_address[OWNER_EMAIL]["body_text"]


async def test_clients_are_not_told_unless_chosen(
    client: httpx.AsyncClient, app: Litestar, owner: Admin, clock: FakeClock
) -> None:
    """Without the choice only staff hear of the maintenance."""
    gallery, _ = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    await share(client, gallery, recipient="Anna", email="anna.links@example.org")
    starts = minute(clock() + dt.timedelta(hours=6))
    await schedule(
        client, title="Quiet", starts=local(starts), ends=local(starts + dt.timedelta(hours=1))
    )
    await run_task(clock)
    assert [m["recipient"] for m in await mails()] == [OWNER_EMAIL]


async def test_the_periodic_task_sends_due_notices_once_through_huey(
    clean_db: None, settings: Settings, tmp_path: Path
) -> None:
    """The worker's ``monitoring.maintenance_notices`` task, run twice as huey runs it on a
    loop of its own, queues the due notice once."""
    await add_staff("pia", "pia@lumen.example")
    now = dt.datetime.now(dt.UTC)
    await scheduling.schedule_window(
        maintenance.MaintenanceInput(
            title="Night work",
            starts=local(now + dt.timedelta(hours=2)),
            ends=local(now + dt.timedelta(hours=3)),
        ),
        zone="UTC",
        actor=SYSTEM,
        address="",
        now=now,
    )
    await run_periodic_twice(settings, "monitoring.maintenance_notices", tmp_path)
    sent = await mails("maintenance_notice")
    assert [m["recipient"] for m in sent] == ["pia@lumen.example"]
    assert sent[0]["subject"].endswith("UTC: Night work")


async def test_the_reminder_follows_who_is_on_staff_the_day_before(
    client: httpx.AsyncClient, owner: Admin, clock: FakeClock
) -> None:
    """Staff disabled after the notice get no reminder; staff who joined after it get the
    reminder and, later, the cancellation."""
    await add_staff("pia", "pia@lumen.example")
    starts = minute(clock() + dt.timedelta(days=3))
    await schedule(
        client, title="Swap", starts=local(starts), ends=local(starts + dt.timedelta(hours=1))
    )
    await run_task(clock)
    await StaffUser.update({StaffUser.is_active: False}).where(StaffUser.username == "pia").run()
    await add_staff("noah", "noah@lumen.example")
    clock.now = starts - dt.timedelta(hours=20)
    assert (await run_task(clock)).reminders == 2
    reminded = sorted(m["recipient"] for m in await mails("maintenance_reminder"))
    assert reminded == ["noah@lumen.example", OWNER_EMAIL]
    told = sorted(item["email"] for item in (await only_window())["told"])
    assert told == ["noah@lumen.example", OWNER_EMAIL, "pia@lumen.example"]


async def test_clients_switched_on_after_the_notice_are_told_on_the_next_run(
    client: httpx.AsyncClient, app: Litestar, owner: Admin, clock: FakeClock
) -> None:
    """ "Tell clients" chosen after the notice went out: the next run sends that notice to the
    clients only, at the same revision, and the reminder later reaches everyone once."""
    gallery, _ = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    await share(client, gallery, recipient="Anna", email="anna.links@example.org")
    starts = minute(clock() + dt.timedelta(days=3))
    ends = starts + dt.timedelta(hours=1)
    await schedule(client, title="Storage swap", starts=local(starts), ends=local(ends))
    assert (await run_task(clock)).notices == 1
    edit = f"{PAGE}/{(await only_window())['id']}"
    switched = await submit(
        client,
        edit,
        {
            "title": "Storage swap",
            "starts": local(starts),
            "ends": local(ends),
            "notify_clients": "on",
        },
    )
    assert switched.status_code == 303
    assert (await only_window())["revision"] == 0
    assert (await run_task(clock)).notices == 1
    assert (await run_task(clock)).notices == 0
    notices = await mails("maintenance_notice")
    assert [m["recipient"] for m in notices] == [OWNER_EMAIL, "anna.links@example.org"]
    assert "Your gallery links may be slow" in notices[1]["body_text"]
    told = {item["email"]: item["audience"] for item in (await only_window())["told"]}
    assert told == {OWNER_EMAIL: "staff", "anna.links@example.org": "client"}

    clock.now = starts - dt.timedelta(hours=2)
    assert (await run_task(clock)).reminders == 2
    assert len(await mails()) == 4


async def test_a_mail_queued_twice_inside_a_transaction_leaves_it_usable(
    clean_db: None, clock: FakeClock
) -> None:
    """The outbox refuses a second mail with the same key without an error, so the caller's
    transaction (a cancellation under a row lock) goes on and commits."""
    async with engine().transaction():
        first = await queue_email(
            to="a@lumen.example",
            template="test_message",
            context={"studio": "Lumen", "sender": "owner", "relay": "mail.lumen.example"},
            language="en",
            source="test",
            now=clock(),
            dedupe_key="twice",
        )
        second = await queue_email(
            to="a@lumen.example",
            template="test_message",
            context={"studio": "Lumen", "sender": "owner", "relay": "mail.lumen.example"},
            language="en",
            source="test",
            now=clock(),
            dedupe_key="twice",
        )
        await add_staff("pia", "pia@lumen.example")  # another statement, after the refusal
    assert first is not None and second is None
    assert [m["dedupe_key"] for m in await mails()] == ["twice"]
    assert await StaffUser.exists().where(StaffUser.username == "pia")
