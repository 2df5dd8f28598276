"""Clients' privacy requests in Chromium: a client asks through their share link for a copy of
their data and for its deletion, an admin sees both with their deadline and starts the export,
and a link that no longer works records nothing.

The deadline is checked against arithmetic done here, independently of the appliance: one
calendar month from the day of receipt in the studio's zone (Regulation 1182/71), ending at the
end of that day.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import re
import zoneinfo
from typing import Any

import asyncpg
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import Appliance, Tab
from tests.e2e.test_browser import CONTACT_EMAIL, STUDIO_NAME, USERNAME
from tests.e2e.test_staff_browser import FAILED_LOAD, _owner_signs_in

pytestmark = pytest.mark.e2e

QUEUE = "/admin/privacy-requests"
GALLERY = "Wedding at the lake"
ANNA_EMAIL = "anna@example.org"
ANNA_NOTE = "Please send it to my new address,\nanna.berg@example.org."
UNAVAILABLE = "This link does not work any more"


# --- the database, read beside the browser -------------------------------------------------


def _database_dsn(appliance: Appliance) -> str:
    """The embedded server listens on a Unix socket; postmaster.pid names its folder."""
    lines = (appliance.data_dir / "postgres" / "postmaster.pid").read_text().splitlines()
    return f"postgresql://postgres@/appliance?host={lines[4].strip()}"


def _sql(appliance: Appliance, query: str, *args: Any) -> list[dict[str, Any]]:
    """Rows of one statement against the appliance's database.

    Playwright's sync API keeps an event loop on this thread, so asyncpg runs on another one.
    """

    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(_database_dsn(appliance))
        try:
            return [dict(row) for row in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def _requests(appliance: Appliance) -> list[dict[str, Any]]:
    return _sql(appliance, "SELECT * FROM privacy_request ORDER BY id")


def _submissions(appliance: Appliance) -> list[dict[str, Any]]:
    return _sql(appliance, "SELECT * FROM privacy_request_submission ORDER BY id")


# --- the deadline, counted here ------------------------------------------------------------


def _one_month_after(day: dt.date) -> dt.date:
    """The same date a month later, or that month's last day when it has no such date."""
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    after = dt.date(year + 1, 1, 1) if month == 12 else dt.date(year, month + 1, 1)
    last = (after - dt.timedelta(days=1)).day  # 28 to 31
    return dt.date(year, month, min(day.day, last))


def test_one_month_after_counts_calendar_months() -> None:
    """The test's own month arithmetic: same date, else the month's last day; across a year."""
    assert _one_month_after(dt.date(2026, 3, 15)) == dt.date(2026, 4, 15)
    assert _one_month_after(dt.date(2026, 1, 31)) == dt.date(2026, 2, 28)
    assert _one_month_after(dt.date(2028, 1, 30)) == dt.date(2028, 2, 29)
    assert _one_month_after(dt.date(2026, 3, 31)) == dt.date(2026, 4, 30)
    assert _one_month_after(dt.date(2026, 12, 31)) == dt.date(2027, 1, 31)


def _due(row: dict[str, Any]) -> tuple[dt.date, dt.date]:
    """The day of receipt and the last day to answer, in the zone the request was received in."""
    received_on = row["received_at"].astimezone(zoneinfo.ZoneInfo(row["timezone"])).date()
    return received_on, _one_month_after(received_on)


def _long_date(day: dt.date) -> str:
    """As the client's confirmation writes it: "05 April 2026"."""
    months = [
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ]  # fmt: skip
    return f"{day.day:02d} {months[day.month - 1]} {day.year}"


# --- the studio prepares a link ------------------------------------------------------------


def _client_with_a_shared_gallery(tab: Tab, name: str, email: str, recipient: str) -> str:
    """Create the client and a published gallery, share it with ``recipient``; the link."""
    page = tab.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Clients").click()
    page.get_by_role("link", name="New client").click()
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("E-mail (optional)").fill(email)
    page.get_by_role("button", name="Create client").click()
    expect(page.locator("h1")).to_have_text(name)
    page.get_by_role("link", name="New gallery").click()
    page.get_by_label("Title").fill(GALLERY)
    page.get_by_role("button", name="Create gallery").click()
    page.get_by_role("button", name="Publish").click()
    expect(page.locator("h1")).to_contain_text("published")
    page.get_by_role("link", name="Share with someone").click()
    page.get_by_label("Recipient's name").fill(recipient)
    page.get_by_label("E-mail (optional)").fill(email)
    page.get_by_role("button", name="Create link").click()
    expect(page.locator("h1")).to_have_text(f"Link for {recipient}")
    return page.get_by_label("Link", exact=True).input_value()


# --- the client asks -----------------------------------------------------------------------


def _open_the_privacy_page(page: Page, url: str) -> None:
    """From the gallery, follow "Your privacy" in the page's header."""
    page.goto(url)
    expect(page.locator("h1")).to_have_text(GALLERY)
    page.get_by_role("navigation", name="Privacy").get_by_role("link", name="Your privacy").click()
    expect(page).to_have_url(f"{url}/privacy")
    expect(page.locator("h1")).to_have_text("Your privacy")


def _choose(page: Page, choice: str, note: str = "") -> None:
    """Click the choice and type the note, key by key, as a person does."""
    page.get_by_label(choice, exact=True).click()
    if note:
        details = page.get_by_label(re.compile(r"^For a correction: what is wrong"))
        details.click()
        details.press_sequentially(note)


def _ask(page: Page, choice: str, note: str = "") -> None:
    _choose(page, choice, note)
    page.get_by_role("button", name="Send to the studio").click()
    expect(page.locator("h1")).to_have_text("Your request has reached the studio")


# --- the tests -----------------------------------------------------------------------------


def test_client_asks_for_a_copy_and_deletion_and_the_admin_starts_the_export(
    appliance: Appliance, tab: Tab, second_tab: Tab
) -> None:
    """Both requests reach the queue with a deadline one calendar month from receipt in the
    studio's zone; exporting the client's data puts the copy request in progress."""
    base = appliance.base_url
    _owner_signs_in(appliance, tab)
    url = _client_with_a_shared_gallery(tab, "Anna Berg", ANNA_EMAIL, "Anna")
    (anna,) = _sql(appliance, "SELECT id FROM client WHERE name = 'Anna Berg'")

    # 1. The client asks for a copy, then for deletion.
    client = second_tab.page
    _open_the_privacy_page(client, url)
    second_tab.screenshot("privacy-form")
    _ask(client, "Send me a copy of my data", ANNA_NOTE)
    expect(client).to_have_url(
        re.compile(rf"^{re.escape(url)}/privacy/sent\?request=\d+&merged=0$")
    )
    (copy,) = _requests(appliance)
    received_on, due_on = _due(copy)
    confirmation = client.locator("#privacy-request-received")
    expect(confirmation).to_contain_text(
        f"{STUDIO_NAME} received your request (a copy of the data)"
    )
    expect(confirmation).to_contain_text(f"on {_long_date(received_on)}")
    expect(confirmation.locator("strong")).to_have_text(_long_date(due_on))
    second_tab.screenshot("copy-sent")

    client.get_by_role("link", name="Back to the gallery").click()
    expect(client).to_have_url(url)
    _open_the_privacy_page(client, url)
    _ask(client, "Delete my data")
    expect(client.locator("#privacy-request-received")).to_contain_text("(deletion)")
    second_tab.screenshot("deletion-sent")

    copy, deletion = _requests(appliance)
    assert [(r["kind"], r["status"], r["client"]) for r in (copy, deletion)] == [
        ("copy", "open", anna["id"]),
        ("deletion", "open", anna["id"]),
    ]
    # The e2e appliance runs without a configuration file: the studio's zone is the default.
    assert copy["timezone"] == deletion["timezone"] == "UTC"
    for row in (copy, deletion):
        # The deadline is stored as the instant the last day ends in the studio's zone.
        local_end = dt.datetime.combine(
            _due(row)[1] + dt.timedelta(days=1), dt.time(), zoneinfo.ZoneInfo(row["timezone"])
        )
        assert row["deadline_at"] == local_end, row
    submissions = _submissions(appliance)
    assert [(s["request"], s["details"], s["link_recipient"]) for s in submissions] == [
        (copy["id"], ANNA_NOTE, "Anna"),
        (deletion["id"], "", "Anna"),
    ]

    # 2. The admin answers in the queue.
    staff = tab.page
    staff.goto(f"{base}{QUEUE}")
    expect(staff.locator("h1")).to_have_text("Privacy requests")
    rows = staff.locator("#open-requests tbody tr")
    expect(rows).to_have_count(2)
    now = dt.datetime.now(dt.UTC)
    shown: dict[int, list[str]] = {}
    for line in rows.all():
        cells = [text.strip() for text in line.locator("td").all_inner_texts()]
        shown[int(cells[0])] = cells
    for request, label in ((copy, "A copy of the data"), (deletion, "Deletion")):
        received_on, due_on = _due(request)
        _, name, kind, received, due, left = shown[request["id"]]
        assert (name, kind, received, due) == (
            "Anna Berg",
            label,
            received_on.isoformat(),
            due_on.isoformat(),
        ), shown
        days = int((request["deadline_at"] - now).total_seconds() // 86_400)
        assert re.fullmatch(r"\d+ days \d+ h left", left), left
        assert int(left.split()[0]) in (days - 1, days), (left, days)
    tab.screenshot("queue")

    staff.get_by_role("link", name=str(copy["id"]), exact=True).click()
    expect(staff).to_have_url(f"{base}{QUEUE}/{copy['id']}")
    expect(staff.locator("h1")).to_have_text(f"Privacy request #{copy['id']}: a copy of the data")
    expect(staff.locator("#due")).to_contain_text(_due(copy)[1].isoformat())
    expect(staff.locator("#status")).to_have_text("Open")
    expect(staff.locator("main")).to_contain_text(f"Anna Berg ({ANNA_EMAIL})")
    expect(staff.locator("#identity-warning")).to_be_visible()
    submission = staff.locator("ul.submissions li")
    expect(submission).to_have_count(1)
    expect(submission.locator(".link-recipient")).to_have_text(f"Anna <{ANNA_EMAIL}>")
    expect(submission.locator("p.pre")).to_have_text(ANNA_NOTE)
    tab.screenshot("copy-request")

    staff.get_by_role("button", name="Export the client's data").click()
    expect(staff).to_have_url(f"{base}{QUEUE}/{copy['id']}?done=fulfilled")
    # A copy is not answered yet: the notice says what answers it.
    expect(staff.get_by_role("status")).to_have_text(
        "The export is started. The request counts as answered, and the client is told,"
        " once you make the export's download link."
    )
    expect(staff.locator("#status")).to_have_text("In progress")
    expect(staff.get_by_role("button", name="Export the client's data")).to_have_count(0)
    copy = _requests(appliance)[0]
    assert copy["status"] == "in_progress" and copy["export_id"] is not None, copy
    expect(staff.get_by_role("link", name=f"job #{copy['export_id']}")).to_have_attribute(
        "href", f"/exports/{copy['export_id']}"
    )
    (job,) = _sql(appliance, "SELECT * FROM export_job WHERE id = $1", copy["export_id"])
    assert (job["kind"], job["subject_id"]) == ("client", anna["id"]), job
    tab.screenshot("copy-in-progress")

    staff.get_by_role("link", name="← Privacy requests").click()
    copy_row = rows.filter(has=staff.get_by_role("link", name=str(copy["id"]), exact=True))
    expect(copy_row.locator(".badge")).to_have_text("in progress")
    expect(rows).to_have_count(2)  # still open: answered once the download link is made
    assert _requests(appliance)[1]["status"] == "open"  # the deletion waits for the admin

    actions = [
        (entry["actor"], entry["action"], entry["target"])
        for entry in _sql(
            appliance,
            "SELECT actor, action, target FROM audit_entry"
            " WHERE action LIKE 'privacy_request.%' ORDER BY seq",
        )
    ]
    assert actions == [
        ("client", "privacy_request.receive", f"privacy_request:{copy['id']}"),
        ("client", "privacy_request.receive", f"privacy_request:{deletion['id']}"),
        (USERNAME, "privacy_request.view", f"client:{anna['id']}"),
        (USERNAME, "privacy_request.start", f"privacy_request:{copy['id']}"),
        (USERNAME, "privacy_request.view", f"client:{anna['id']}"),
    ], actions
    assert tab.console_errors == []
    assert second_tab.console_errors == []


def test_a_link_that_expired_or_was_withdrawn_says_so_and_records_no_request(
    appliance: Appliance, tab: Tab, second_tab: Tab
) -> None:
    """A form sent after its link expired, and the page of a withdrawn link, name the reason
    and the studio's address; no request reaches the database or the queue."""
    base = appliance.base_url
    _owner_signs_in(appliance, tab)
    url = _client_with_a_shared_gallery(tab, "Ben Ode", "ben@example.org", "Ben")
    staff, client = tab.page, second_tab.page

    # The client fills the form; the link expires before they send it.
    _open_the_privacy_page(client, url)
    _choose(client, "Delete my data", "Everything, please.")
    expired = _sql(
        appliance,
        "UPDATE share_link SET expires_at = now() - interval '1 minute' RETURNING id",
    )
    assert len(expired) == 1
    client.get_by_role("button", name="Send to the studio").click()
    expect(client.locator("h1")).to_have_text(UNAVAILABLE)
    expect(client.locator("main")).to_contain_text("This link has expired.")
    contact = client.locator("#contact-the-studio")
    expect(contact).to_contain_text(f"please contact {STUDIO_NAME} directly")
    expect(contact.get_by_role("link", name=CONTACT_EMAIL)).to_have_attribute(
        "href", f"mailto:{CONTACT_EMAIL}"
    )
    expect(contact).to_contain_text("Nothing was sent through this page.")
    expect(client.get_by_label("Delete my data")).to_have_count(0)
    second_tab.screenshot("expired")
    assert _requests(appliance) == [] and _submissions(appliance) == []

    # A second link, withdrawn by the studio while the client has its privacy page open.
    staff.get_by_role("link", name="Back to the gallery").click()
    staff.get_by_role("link", name="Share with someone").click()
    staff.get_by_label("Recipient's name").fill("Ben at work")
    staff.get_by_role("button", name="Create link").click()
    second_url = staff.get_by_label("Link", exact=True).input_value()
    assert second_url != url
    _open_the_privacy_page(client, second_url)
    _choose(client, "Send me a copy of my data")
    staff.get_by_role("link", name="Back to the gallery").click()
    staff.once("dialog", lambda dialog: dialog.accept())
    staff.get_by_role("button", name="Withdraw the link of Ben at work", exact=True).click()
    expect(staff.locator("tr.link-revoked")).to_contain_text("Ben at work")
    client.get_by_role("button", name="Send to the studio").click()
    expect(client.locator("h1")).to_have_text(UNAVAILABLE)
    expect(client.locator("main")).to_contain_text("This link was withdrawn by the studio.")
    expect(client.locator("#contact-the-studio")).to_contain_text(CONTACT_EMAIL)
    client.goto(f"{second_url}/privacy")
    expect(client.locator("h1")).to_have_text(UNAVAILABLE)
    expect(client.get_by_role("button", name="Send to the studio")).to_have_count(0)
    second_tab.screenshot("withdrawn")

    assert _requests(appliance) == [] and _submissions(appliance) == []
    received = _sql(appliance, "SELECT 1 FROM audit_entry WHERE action = 'privacy_request.receive'")
    assert received == []
    staff.goto(f"{base}{QUEUE}")
    expect(staff.locator("#open-requests")).to_have_count(0)
    expect(staff.locator("main")).to_contain_text("No open privacy request.")
    expect(staff.locator("#answered-requests")).to_have_count(0)

    # Each refusal is a 404, which Chromium logs as a failed load; nothing else went wrong.
    refused = [
        f"{FAILED_LOAD} 404 (Not Found) ({url}/privacy)",
        f"{FAILED_LOAD} 404 (Not Found) ({second_url}/privacy)",
        f"{FAILED_LOAD} 404 (Not Found) ({second_url}/privacy)",
    ]
    assert sorted(second_tab.console_errors) == sorted(refused), second_tab.console_errors
    assert tab.console_errors == []
