"""The security-incident register over HTTP and against PostgreSQL: the 72-hour countdown and
its escalating alerts with a moved clock, the authority's submissions, telling the affected
people through the outbox, the reports, the audit entries, and hostile input."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar

from appliance.audit.service import Actor, list_entries
from appliance.clients import service as clients
from appliance.clients.service import ClientDetails
from appliance.config import Settings
from appliance.notify.tables import OutboxMessage
from appliance.privacy import service
from appliance.privacy.service import IncidentInput
from appliance.privacy.tables import (
    AffectedPerson,
    AuthorityNotice,
    SecurityIncident,
    SecurityIncidentChange,
)
from tests.conftest import FakeClock, make_client
from tests.integration.conftest import run_periodic_twice
from tests.integration.flows import Admin, csrf_of, sign_in, submit
from tests.integration.test_clients import signed_in_owner
from tests.integration.test_sign_in import invite_photographer

PAGE = "/admin/security-incidents"
OWNER = Actor(id=None, name="owner")


# --- helpers -------------------------------------------------------------------------------


def on_the_minute(clock: FakeClock) -> None:
    """Move the clock forward to a whole minute: forms carry minutes, so texts come out even."""
    clock.now = clock.now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)


def incident_form(detected: dt.datetime, **changes: str) -> dict[str, str]:
    return {
        "kind": "leak",
        "title": "Laptop with the client list stolen",
        "detected_at": f"{detected.astimezone(dt.UTC):%Y-%m-%dT%H:%M}",
        "occurred_at": "",
        "timezone": "UTC",
        "description": "A studio laptop was stolen from the car.\nThe disk was not encrypted.",
        "analysis": "",
        "measures": "",
        "status": "open",
        "personal_data": "1",
        "data_categories": "Names, e-mail addresses, phone numbers of clients",
        "people_count": "120",
        "records_count": "1.340",
        "consequences": "Phishing e-mails in the studio's name",
        "risk": "high",
        **changes,
    }


def authority_form(notified: dt.datetime, **changes: str) -> dict[str, str]:
    return {
        "authority": "Berliner Beauftragte für Datenschutz",
        "notified_at": f"{notified.astimezone(dt.UTC):%Y-%m-%dT%H:%M}",
        "timezone": "UTC",
        "reference": "BlnBDI-2026-4711",
        "nature": "Theft of an unencrypted laptop holding the client list.",
        "data_categories": "Clients: names, e-mail addresses, phone numbers",
        "people_count": "120",
        "records_count": "1340",
        "contact_name": "Olivia Owner",
        "contact_details": "privacy@lumen.example\n+49 30 1234567",
        "consequences": "Phishing in the studio's name.",
        "measures": "Passwords changed; clients warned; disks encrypted from now on.",
        "delay_reasons": "",
        **changes,
    }


async def create(client: httpx.AsyncClient, form: dict[str, str]) -> int:
    """Record an incident through the "new" form, as a browser sends it (with its form key)."""
    response = await post(client, f"{PAGE}/new", f"{PAGE}/new", form)
    assert response.status_code == 303, response.text
    match = re.fullmatch(rf"{PAGE}/(\d+)\?done=created", response.headers["location"])
    assert match, response.headers["location"]
    return int(match.group(1))


def hidden(page: str, name: str) -> str | None:
    """The value of the hidden input ``name`` of a page, if it has one."""
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)">', page)
    return match.group(1) if match else None


async def post(client: httpx.AsyncClient, page: str, action: str, data: dict[str, Any]) -> Any:
    """Open ``page`` and send ``data`` to ``action`` as its form would: with the CSRF token and
    the form's version and one-time key, when it has them and ``data`` does not."""
    opened = await client.get(page)
    assert opened.status_code == 200, (page, opened.status_code)
    extra = {
        name: value
        for name in ("version", "form_key")
        if name not in data and (value := hidden(opened.text, name)) is not None
    }
    return await client.post(action, data={**data, **extra, "_csrf": csrf_of(opened.text)})


async def actions() -> list[str]:
    return [entry.action for entry in reversed(await list_entries(limit=500))]


async def alerts() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (
        await OutboxMessage.select()
        .where(OutboxMessage.kind == "alert")
        .order_by(OutboxMessage.id)
        .run()
    )
    return rows


async def emails() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (
        await OutboxMessage.select()
        .where(OutboxMessage.kind == "email")
        .order_by(OutboxMessage.id)
        .run()
    )
    return rows


async def recorded(
    now: dt.datetime, *, hours_ago: float = 0, personal_data: bool = True
) -> service.Incident:
    return await service.create_incident(
        IncidentInput(
            kind="unauthorised_access",
            title="Gallery links of Anna Berg forwarded",
            detected_at=f"{now - dt.timedelta(hours=hours_ago):%Y-%m-%dT%H:%M}",
            personal_data=personal_data,
        ),
        actor=OWNER,
        address="192.0.2.10",
        now=now,
    )


# --- the deadline and its alerts -------------------------------------------------------------


async def test_deadline_alerts_escalate_once_per_threshold(
    clean_db: None, alerting: Settings, clock: FakeClock
) -> None:
    """Alerts go out at 24 and 48 hours (warning) and at 66 hours (failure), each once however
    often the check runs, and name the incident by number only."""
    on_the_minute(clock)
    start = clock()
    incident = await recorded(start)

    async def run_at(hours: float, times: int = 3) -> None:
        for _ in range(times):
            await service.check_deadlines(alerting, start + dt.timedelta(hours=hours))

    await run_at(23.9)
    assert await alerts() == []
    await run_at(24)
    await run_at(30)
    await run_at(47.99)
    sent = await alerts()
    assert [row["severity"] for row in sent] == ["warning"]
    assert sent[0]["subject"] == (
        f"Security incident #{incident.id}: 24 h since detection, authority not notified"
    )
    assert "48 h 0 min left" in sent[0]["body_text"]
    assert "Anna Berg" not in sent[0]["subject"] + sent[0]["body_text"]
    assert sent[0]["source"] == "privacy"
    await run_at(48)
    await run_at(66)
    await run_at(71)
    await run_at(100)
    await run_at(500)
    sent = await alerts()
    assert [(row["severity"], row["dedupe_key"].split("@")[0]) for row in sent] == [
        ("warning", f"security-deadline:{incident.id}:24"),
        ("warning", f"security-deadline:{incident.id}:48"),
        ("failure", f"security-deadline:{incident.id}:66"),
    ]
    assert "6 h 0 min left" in sent[2]["body_text"]
    row = await SecurityIncident.select().where(SecurityIncident.id == incident.id).first().run()
    assert row is not None and row["alerted_hours"] == 66
    assert (await actions()).count("security_incident.deadline_alert") == 3


async def test_an_incident_recorded_late_alerts_once_for_the_latest_threshold(
    clean_db: None, alerting: Settings, clock: FakeClock
) -> None:
    """Recorded 67 hours after detection, the next check sends the 66-hour alert alone."""
    incident = await recorded(clock(), hours_ago=67)
    assert await service.check_deadlines(alerting, clock()) == 1
    assert await service.check_deadlines(alerting, clock() + dt.timedelta(hours=5)) == 0
    sent = await alerts()
    assert len(sent) == 1 and sent[0]["severity"] == "failure"
    assert f"#{incident.id}: 66 h" in sent[0]["subject"]


async def test_no_alerts_once_the_authority_was_notified(
    clean_db: None, alerting: Settings, clock: FakeClock
) -> None:
    """After the notification is recorded, the 48- and 66-hour alerts never go out."""
    from appliance.privacy import authority
    from appliance.privacy.authority import AuthorityInput

    on_the_minute(clock)
    start = clock()
    incident = await recorded(start)
    await service.check_deadlines(alerting, start + dt.timedelta(hours=25))
    assert len(await alerts()) == 1
    form = authority_form(start + dt.timedelta(hours=30))
    await authority.record_submission(
        incident.id,
        msgspec.convert(form, AuthorityInput),
        actor=OWNER,
        address="",
        now=start + dt.timedelta(hours=30),
    )
    for hours in (48, 66, 80):
        await service.check_deadlines(alerting, start + dt.timedelta(hours=hours))
    assert len(await alerts()) == 1
    after = await service.get_incident(incident.id)
    timer = service.countdown(after, start + dt.timedelta(hours=80))
    assert timer is not None and timer.text == "authority notified in time"


async def test_no_deadline_or_alerts_without_personal_data(
    clean_db: None, alerting: Settings, clock: FakeClock
) -> None:
    """An incident without personal data never raises a deadline alert."""
    incident = await recorded(clock(), personal_data=False)
    for hours in (24, 48, 66, 100):
        await service.check_deadlines(alerting, clock() + dt.timedelta(hours=hours))
    assert await alerts() == []
    assert service.countdown(incident, clock()) is None


async def test_the_periodic_task_alerts_once_through_huey(
    clean_db: None, alerting: Settings, tmp_path: Path
) -> None:
    """The worker's ``privacy.check_deadlines`` task, run twice as huey runs it on a loop of
    its own, queues the 24-hour alert once."""
    incident = await recorded(dt.datetime.now(dt.UTC), hours_ago=25)
    await run_periodic_twice(alerting, "privacy.check_deadlines", tmp_path)
    sent = await alerts()
    assert [row["subject"] for row in sent] == [
        f"Security incident #{incident.id}: 24 h since detection, authority not notified"
    ]


# --- pages ---------------------------------------------------------------------------------


async def test_countdown_is_on_the_list_and_the_page_without_script(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """The server writes "41 h 12 min left" into both pages, and "overdue by 3 h" for one past
    its deadline; the ticking script is served to admins."""
    await signed_in_owner(client, admin, clock)
    on_the_minute(clock)
    incident_id = await create(client, incident_form(clock() - dt.timedelta(hours=30, minutes=48)))
    listing = await client.get(PAGE)  # the link in the navigation has no trailing slash
    page = await client.get(f"{PAGE}/{incident_id}")
    for response in (listing, page):
        assert response.status_code == 200
        assert "41 h 12 min left" in response.text
        assert response.headers["cache-control"] == "no-store"
    assert "Laptop with the client list stolen" in listing.text
    assert "Incident recorded." in (await client.get(f"{PAGE}/{incident_id}?done=created")).text
    late_id = await create(client, incident_form(clock() - dt.timedelta(hours=75)))
    page = await client.get(f"{PAGE}/{late_id}")
    assert "overdue by 3 h 0 min" in page.text
    assert "reasons for the delay" in page.text
    script = await client.get("/static/countdown.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "overdue by" in script.text
    assert 'src="/static/countdown.js"' in page.text


async def test_times_are_shown_in_their_zone_with_utc(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """A time typed in Europe/Berlin is stored in UTC and shown with its zone and in UTC."""
    await signed_in_owner(client, admin, clock)
    form = incident_form(clock(), detected_at="2026-01-15T10:30", timezone="Europe/Berlin")
    incident_id = await create(client, form)
    incident = await service.get_incident(incident_id)
    assert incident.detected_at == dt.datetime(2026, 1, 15, 9, 30, tzinfo=dt.UTC)
    page = await client.get(f"{PAGE}/{incident_id}")
    assert "2026-01-15 10:30 CET (09:30 UTC)" in page.text
    assert "<dt>Time zone</dt><dd>Europe/Berlin</dd>" in page.text


async def test_edits_keep_a_history_and_are_audited_without_values(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Each edit records the fields with old and new values in the history; the audit entry
    names the fields only. Closing needs the analysis and the measures."""
    await signed_in_owner(client, admin, clock)
    form = incident_form(clock() - dt.timedelta(hours=2))
    incident_id = await create(client, form)
    edit = f"{PAGE}/{incident_id}/edit"
    refused = await post(client, edit, edit, {**form, "status": "closed"})
    assert refused.status_code == 400
    assert "An incident is closed only once the analysis is written down." in refused.text
    assert (await service.get_incident(incident_id)).status == "open"

    closed = {
        **form,
        "status": "closed",
        "analysis": "The laptop was left in the car overnight.",
        "measures": "Full-disk encryption on every studio machine.",
    }
    saved = await post(client, edit, edit, closed)
    assert saved.status_code == 303
    assert saved.headers["location"] == f"{PAGE}/{incident_id}?done=saved"
    incident = await service.get_incident(incident_id)
    assert incident.status == "closed" and incident.closed_at == clock()

    unchanged = await post(client, edit, edit, closed)
    assert unchanged.headers["location"] == f"{PAGE}/{incident_id}?done=unchanged"

    history = await service.list_changes(incident_id)
    assert [c.action for c in history] == ["created", "edited"]
    assert history[1].actor == "owner"
    assert history[1].changes == {
        "status": ["open", "closed"],
        "analysis": ["", "The laptop was left in the car overnight."],
        "measures": ["", "Full-disk encryption on every studio machine."],
    }
    page = await client.get(f"{PAGE}/{incident_id}")
    assert "Full-disk encryption on every studio machine." in page.text
    entries = [e for e in await list_entries() if e.action == "security_incident.update"]
    assert len(entries) == 1
    assert entries[0].details == {"fields": ["analysis", "measures", "status"]}
    assert entries[0].target == f"security_incident:{incident_id}"
    assert "laptop" not in json.dumps(entries[0].details).lower()
    assert "security_incident.create" in await actions()


# --- hostile input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"detected_at": "2099-01-01T10:00"}, "detected_at", "This time is in the future."),
        ({"detected_at": "last tuesday"}, "detected_at", "YYYY-MM-DD HH:MM"),
        ({"detected_at": ""}, "detected_at", "Enter the date and time."),
        ({"kind": "ransom"}, "kind", "Choose one of: Data leak"),
        ({"timezone": "Mars/Olympus"}, "timezone", "Unknown time zone"),
        ({"description": "x" * 10_001}, "description", "Use at most 10,000 characters."),
        ({"title": "t" * 201}, "title", "Use at most 200 characters."),
        ({"title": ""}, "title", "This field is required."),
        ({"people_count": "a lot"}, "people_count", "Enter a whole number"),
        ({"risk": "extreme"}, "risk", "Choose one of"),
        ({"status": "closed"}, "analysis", "closed only once the analysis"),
        ({"description": "evil\x00byte"}, "description", "control characters"),
    ],
)
async def test_bad_incidents_are_refused_and_nothing_is_saved(
    client: httpx.AsyncClient,
    admin: Admin,
    clock: FakeClock,
    changes: dict[str, str],
    field: str,
    message: str,
) -> None:
    """Each bad value gets a 400 naming the field, the form keeps what was typed, and no row,
    history or audit entry is written."""
    await signed_in_owner(client, admin, clock)
    form = incident_form(clock() - dt.timedelta(hours=1), **changes)
    response = await submit(client, f"{PAGE}/new", form)
    assert response.status_code == 400, response.text
    assert message in response.text
    assert f'id="f-{field}-error"' in response.text
    assert "Laptop with the client list stolen" in response.text or field == "title"
    assert await SecurityIncident.count().run() == 0
    assert await SecurityIncidentChange.count().run() == 0
    assert "security_incident.create" not in await actions()


async def test_an_enormous_request_is_refused_without_a_server_error(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """A multi-megabyte description is refused with a 4xx, never a 500."""
    await signed_in_owner(client, admin, clock)
    form = incident_form(clock(), description="y" * 3_000_000)
    response = await submit(client, f"{PAGE}/new", form)
    assert 400 <= response.status_code < 500
    assert await SecurityIncident.count().run() == 0


async def test_a_photographer_opens_none_of_it(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """Every page and action of the register answers a photographer with 403."""
    path = await invite_photographer(client, admin, clock)
    incident_id = await create(client, incident_form(clock()))
    async with make_client(app, "192.0.2.20") as pia:
        password = "velvet compass orchard 77 river"
        joined = await submit(
            pia,
            path,
            {"username": "pia", "display_name": "Pia", "password": password, "confirm": password},
        )
        assert joined.status_code == 200
        assert (await sign_in(pia, "pia", password)).headers["location"] == "/"
        token = csrf_of((await pia.get("/account")).text)
        base = f"{PAGE}/{incident_id}"
        for page in (
            f"{PAGE}/",
            f"{PAGE}/new",
            base,
            f"{base}/edit",
            f"{base}/authority",
            f"{base}/people?q=anna",
            f"{base}/notify",
            f"{base}/report.json",
            f"{base}/report.pdf",
        ):
            refused = await pia.get(page)
            assert refused.status_code == 403, page
            assert "Only an admin" in refused.text
        for action in (f"{PAGE}/new", f"{base}/edit", f"{base}/authority", f"{base}/notify"):
            refused = await pia.post(action, data={"_csrf": token, "title": "x"})
            assert refused.status_code == 403, action
    exports = [e for e in await list_entries() if e.action == "security_incident.export"]
    assert exports == []
    assert (await service.get_incident(incident_id)).title == "Laptop with the client list stolen"


# --- the authority -------------------------------------------------------------------------


async def test_authority_notification_needs_the_art_33_3_fields(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """A submission missing any Art. 33(3) field is refused by name; a complete one stops the
    countdown, is audited, and a second phase is kept beside the first."""
    await signed_in_owner(client, admin, clock)
    on_the_minute(clock)
    incident_id = await create(client, incident_form(clock() - dt.timedelta(hours=10)))
    page = f"{PAGE}/{incident_id}/authority"
    opened = await client.get(page)
    # The studio is the contact point until someone else is named.
    assert 'name="contact_name" type="text" value="Studio Lumen"' in opened.text
    assert "hello@lumen.example" in opened.text
    assert "Laptop with the client list stolen" in opened.text  # the nature, from the register
    for name, text in (
        ("nature", "the nature of the breach"),
        ("contact_details", "the contact details"),
        ("consequences", "the likely consequences"),
        ("measures", "the measures taken or proposed"),
        ("people_count", "approximate number of people"),
        ("authority", "This field is required."),
    ):
        refused = await post(client, page, page, authority_form(clock(), **{name: ""}))
        assert refused.status_code == 400, name
        assert text in refused.text, name
        assert f'id="f-{name}-error"' in refused.text
    early = await post(client, page, page, authority_form(clock() - dt.timedelta(hours=11)))
    assert early.status_code == 400
    assert "before the incident was detected" in early.text
    assert await AuthorityNotice.count().run() == 0

    done = await post(client, page, page, authority_form(clock()))
    assert done.status_code == 303
    incident = await service.get_incident(incident_id)
    assert incident.authority_notified_at == clock()
    shown = await client.get(f"{PAGE}/{incident_id}")
    assert "authority notified in time" in shown.text
    assert "BlnBDI-2026-4711" in shown.text

    clock.advance(minutes=20)
    follow_up = authority_form(clock(), measures="All clients told; no misuse seen so far.")
    assert (await post(client, page, page, follow_up)).status_code == 303
    rows = await AuthorityNotice.select().order_by(AuthorityNotice.phase).run()
    assert [(r["phase"], r["measures"][:16]) for r in rows] == [
        (1, "Passwords change"),
        (2, "All clients told"),
    ]
    # The first notification stops the clock; a later phase does not move it.
    assert (
        await service.get_incident(incident_id)
    ).authority_notified_at == incident.authority_notified_at
    notices = [e for e in await list_entries() if e.action == "security_incident.authority_notice"]
    assert sorted(e.details["phase"] for e in notices) == [1, 2]


async def test_a_late_notification_needs_the_reasons_for_the_delay(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Past 72 hours the submission is refused without reasons, and kept with them."""
    await signed_in_owner(client, admin, clock)
    on_the_minute(clock)
    incident_id = await create(client, incident_form(clock() - dt.timedelta(hours=80)))
    page = f"{PAGE}/{incident_id}/authority"
    refused = await post(client, page, page, authority_form(clock()))
    assert refused.status_code == 400
    assert "8 h 0 min after the 72 hours" in refused.text
    assert "reasons for the delay" in refused.text
    assert await AuthorityNotice.count().run() == 0
    reasons = "The theft was noticed only when the owner returned from holiday."
    done = await post(client, page, page, authority_form(clock(), delay_reasons=reasons))
    assert done.status_code == 303
    row = await AuthorityNotice.select().first().run()
    assert row is not None and row["delay_reasons"] == reasons
    page_text = (await client.get(f"{PAGE}/{incident_id}")).text
    assert "authority notified 8 h 0 min late" in page_text


async def test_no_authority_notification_or_people_without_personal_data(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """An incident without personal data takes no Art. 33 submission and nobody to tell."""
    await signed_in_owner(client, admin, clock)
    incident_id = await create(client, incident_form(clock(), personal_data=""))
    base = f"{PAGE}/{incident_id}"
    refused = await post(client, f"{base}/authority", f"{base}/authority", authority_form(clock()))
    assert refused.status_code == 409
    assert "not marked as involving personal data" in refused.text
    anna = await clients.create_client(
        ClientDetails(name="Anna Berg", email="anna@example.org"),
        actor=OWNER,
        address="",
        now=clock(),
    )
    added = await post(client, base, f"{base}/people", {"people": [f"client:{anna.id}"]})
    assert added.status_code == 409
    assert "nobody to tell" in added.text
    notify = await post(
        client, base, f"{base}/notify", {"subject": "s", "body": "b", "people": ["1"]}
    )
    assert notify.status_code == 409
    assert await AffectedPerson.count().run() == 0
    assert await AuthorityNotice.count().run() == 0
    assert await emails() == []


# --- affected people -----------------------------------------------------------------------
