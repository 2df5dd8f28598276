"""The security-incident register, continued: choosing and telling the people affected, the
reports, deadline reminders by e-mail, the decision not to notify, and what is refused or
kept safe (hostile ids, impossible times, stale edits, forms sent twice)."""

from __future__ import annotations

import datetime as dt
import re

import httpx
import msgspec
import pytest

from appliance.accounts.tables import StaffUser
from appliance.audit.service import list_entries
from appliance.clients import service as clients
from appliance.clients.service import ClientDetails
from appliance.config import Settings
from appliance.notify.delivery import deliver_due
from appliance.privacy import people, service
from appliance.privacy.authority import AuthoritySubmission
from appliance.privacy.tables import (
    AffectedPerson,
    SecurityIncident,
)
from tests.conftest import FakeClock
from tests.integration.flows import Admin, csrf_of, submit
from tests.integration.test_clients import signed_in_owner
from tests.integration.test_security_incidents import (
    OWNER,
    PAGE,
    actions,
    alerts,
    authority_form,
    create,
    emails,
    hidden,
    incident_form,
    on_the_minute,
    post,
    recorded,
)
from tests.smtp import SmtpServer


async def test_people_are_chosen_told_once_and_again_only_on_request(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Clients and staff found by name are added; the edited notice is queued for each with an
    address (text and HTML), once; "send again" sends a second; no address is listed as such."""
    await signed_in_owner(client, admin, clock)
    incident_id = await create(client, incident_form(clock() - dt.timedelta(hours=3)))
    base = f"{PAGE}/{incident_id}"
    anna = await clients.create_client(
        ClientDetails(name="Anna Berg", email="anna@example.org"),
        actor=OWNER,
        address="",
        now=clock(),
    )
    bert = await clients.create_client(
        ClientDetails(name="Bert Bergmann"), actor=OWNER, address="", now=clock()
    )
    await clients.create_client(
        ClientDetails(name="Carla Weiss", email="carla@example.org"),
        actor=OWNER,
        address="",
        now=clock(),
    )
    found = await client.get(f"{base}/people?q=berg")
    assert "Anna Berg" in found.text and "Bert Bergmann" in found.text
    assert "Carla" not in found.text
    owner = await client.get(f"{base}/people?q=owner@lumen")
    assert "Olivia Owner" in owner.text
    owner_key = re.search(r'value="(staff:\d+)"', owner.text)
    assert owner_key

    unknown = await post(
        client, base, f"{base}/people", {"people": [f"client:{anna.id}", "client:999999"]}
    )
    assert unknown.status_code == 400
    assert "There is no client #999999." in unknown.text
    garbage = await post(client, base, f"{base}/people", {"people": ["admin:1"]})
    assert garbage.status_code == 400
    assert await AffectedPerson.count().run() == 0

    people = [f"client:{anna.id}", f"client:{bert.id}", owner_key.group(1)]
    added = await post(client, base, f"{base}/people", {"people": people})
    assert added.status_code == 303
    again = await post(client, base, f"{base}/people", {"people": people[:1]})
    assert again.status_code == 303
    assert await AffectedPerson.count().run() == 3
    page = await client.get(base)
    assert "no e-mail address: tell them another way" in page.text

    notify = f"{base}/notify"
    form = await client.get(notify)
    assert "What happened" in form.text and "Whom to ask" in form.text
    assert "Phishing e-mails in the studio&#39;s name" in form.text
    rows = await AffectedPerson.select().order_by(AffectedPerson.id).run()
    ids = [str(row["id"]) for row in rows]
    body = "Dear client,\n\nour laptop was stolen. <Nothing> was misused so far.\n\nStudio Lumen"
    data = {"subject": "Security notice from Studio Lumen", "body": body, "people": ids}
    sent = await post(client, notify, notify, data)
    assert sent.status_code == 303
    shown = await client.get(sent.headers["location"])
    assert "2 notices queued" in shown.text
    assert "1 without an e-mail address" in shown.text
    mails = await emails()
    assert sorted(m["recipient"] for m in mails) == ["anna@example.org", "owner@lumen.example"]
    for mail in mails:
        assert mail["subject"] == "Security notice from Studio Lumen"
        assert mail["template"] == "security_notice"
        assert mail["body_text"].strip() == body
        assert "our laptop was stolen. &lt;Nothing&gt; was misused so far." in mail["body_html"]
        assert "<Nothing>" not in mail["body_html"]

    twice = await post(client, notify, notify, data)
    shown = await client.get(twice.headers["location"])
    assert "0 notices queued" in shown.text and "2 already told before" in shown.text
    assert len(await emails()) == 2

    anna_row = next(r for r in rows if r["kind"] == "client" and r["person_id"] == anna.id)
    resend = {**data, "people": [str(anna_row["id"])], "again": "1"}
    assert (await post(client, notify, notify, resend)).status_code == 303
    mails = await emails()
    assert [m["recipient"] for m in mails].count("anna@example.org") == 2
    told = await AffectedPerson.select().where(AffectedPerson.id == anna_row["id"]).first().run()
    assert told is not None and told["times_told"] == 2

    stranger = await post(client, notify, notify, {**data, "people": ["999999"]})
    assert stranger.status_code == 400
    assert "not on the list of this incident" in stranger.text
    empty_body = await post(client, notify, notify, {**data, "body": "  "})
    assert empty_body.status_code == 400
    assert len(await emails()) == 3

    # Someone who was told stays on the record, and so does the fact that data was involved.
    removed = await post(client, base, f"{base}/people/{anna_row['id']}/remove", {})
    assert removed.status_code == 409
    assert "already told" in removed.text
    edit = f"{base}/edit"
    detected = (await service.get_incident(incident_id)).detected_at
    undone = await post(client, edit, edit, incident_form(detected, personal_data=""))
    assert undone.status_code == 409
    assert "cannot be undone" in undone.text
    assert (await service.get_incident(incident_id)).personal_data is True
    bert_row = next(r for r in rows if r["kind"] == "client" and r["person_id"] == bert.id)
    gone = await post(client, base, f"{base}/people/{bert_row['id']}/remove", {})
    assert gone.status_code == 303
    assert await AffectedPerson.count().run() == 2
    notified = [e for e in await list_entries() if e.action == "security_incident.people_notify"]
    assert [e.details for e in reversed(notified)] == [
        {"people": [f"client:{anna.id}", owner_key.group(1)], "again": False},
        {"people": [f"client:{anna.id}"], "again": True},
    ]


async def test_the_notice_arrives_over_smtp_as_edited(
    clean_db: None, settings: Settings, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    """A German notice queued for a client reaches a real SMTP server once, with the subject
    and text as edited in the plain part and the same text, escaped, in the HTML part."""
    relayed = msgspec.structs.replace(
        settings,
        notify=msgspec.structs.replace(
            settings.notify,
            smtp_host=smtp_server.host,
            smtp_port=smtp_server.port,
            smtp_security="none",
            mail_from="studio@lumen.example",
        ),
    )
    incident = await recorded(clock(), hours_ago=2)
    anna = await clients.create_client(
        ClientDetails(name="Anna Berg", email="anna@example.org"),
        actor=OWNER,
        address="",
        now=clock(),
    )
    await people.add_people(
        incident.id, [f"client:{anna.id}"], actor=OWNER, address="", now=clock()
    )
    (row,) = await people.list_affected(incident.id)
    subject, body = people.default_notice(incident, None, "de")
    assert subject == "Sicherheitsvorfall bei Fotostudio: was passiert ist und was wir tun"
    assert "Was passiert ist" in body and "An wen Sie sich wenden können" in body
    edited = body.replace("(noch zu ergänzen)", "Passwörter <geändert>", 1)
    for _ in range(2):  # a double click queues one mail
        await people.notify_people(
            incident.id,
            [row.id],
            subject=subject,
            body=edited,
            again=False,
            form_key="5" * 32,
            language="de",
            studio="Studio Lumen",
            actor=OWNER,
            address="",
            now=clock(),
        )
    await deliver_due(relayed, clock())
    (mail,) = smtp_server.messages
    assert mail.recipients == ["anna@example.org"]
    assert mail.message["Subject"] == subject
    assert mail.part("plain").replace("\r\n", "\n").strip() == edited.strip()
    html = mail.part("html")
    assert "Passwörter &lt;geändert&gt;" in html and "<geändert>" not in html
    assert 'lang="de"' in html


# --- the report ----------------------------------------------------------------------------


async def test_reports_hold_everything_and_are_audited(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """The JSON report has every field, the history, the submissions and the people told as
    ids and times; the PDF is a PDF; both downloads are audited."""
    await signed_in_owner(client, admin, clock)
    on_the_minute(clock)
    incident_id = await create(client, incident_form(clock() - dt.timedelta(hours=5)))
    base = f"{PAGE}/{incident_id}"
    anna = await clients.create_client(
        ClientDetails(name="Anna Berg", email="anna@example.org"),
        actor=OWNER,
        address="",
        now=clock(),
    )
    await post(client, base, f"{base}/people", {"people": [f"client:{anna.id}"]})
    row = await AffectedPerson.select().first().run()
    assert row is not None
    await post(
        client,
        f"{base}/notify",
        f"{base}/notify",
        {"subject": "Notice", "body": "Text", "people": [str(row["id"])]},
    )
    await post(client, f"{base}/authority", f"{base}/authority", authority_form(clock()))

    response = await client.get(f"{base}/report.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert "attachment" in response.headers["content-disposition"]
    report = response.json()
    incident = report["incident"]
    assert set(incident) >= {
        "id", "kind", "title", "status", "detected_at", "occurred_at", "timezone",
        "description", "analysis", "measures", "personal_data", "data_categories",
        "people_count", "records_count", "consequences", "risk", "authority_deadline",
        "authority_notified_at", "closed_at", "created_at", "updated_at",
    }  # fmt: skip
    # Every field of the register is in the export, whoever adds one: the decision not to
    # notify as one object (None here), the submissions' author and time under their names.
    grouped = {"no_notice_at", "no_notice_by", "no_notice_reason"}
    assert set(service.Incident.__struct_fields__) - set(incident) == grouped
    assert incident["no_notice"] is None
    assert incident["detected_at"] == (clock() - dt.timedelta(hours=5)).isoformat()
    assert incident["created_at"] == clock().isoformat() and incident["alerted_hours"] == 0
    assert incident["records_count"] == 1340 and incident["people_count"] == 120
    assert incident["deadline_state"] == "met"
    assert [h["action"] for h in report["history"]] == [
        "created",
        "people_added",
        "people_told",
        "authority_notified",
    ]
    assert report["history"][0]["changes"]["title"] == "Laptop with the client list stolen"
    (submission,) = report["authority_submissions"]
    assert set(AuthoritySubmission.__struct_fields__) - set(submission) == {
        "created_by",
        "created_at",
    }
    assert submission["recorded_at"] == submission["notified_at"] == clock().isoformat()
    owner = await StaffUser.select(StaffUser.id).where(StaffUser.username == admin.username).first()
    assert owner is not None
    assert submission["recorded_by"] == owner["id"] and submission["phase"] == 1
    assert submission["reference"] == "BlnBDI-2026-4711"
    assert submission["contact_details"] == "privacy@lumen.example\n+49 30 1234567"
    assert report["affected_people"] == [
        {
            "kind": "client",
            "id": anna.id,
            "added_at": clock().isoformat(),
            "told_at": [clock().isoformat()],
        }
    ]
    assert "anna@example.org" not in response.text  # ids, not the people's details

    pdf = await client.get(f"{base}/report.pdf")
    assert pdf.status_code == 200
    assert pdf.content.startswith(b"%PDF")
    assert pdf.headers["content-type"] == "application/pdf"
    exports = [e for e in await list_entries() if e.action == "security_incident.export"]
    assert sorted(e.details["format"] for e in exports) == ["json", "pdf"]
    assert {e.target for e in exports} == {f"security_incident:{incident_id}"}
    missing = await client.get(f"{PAGE}/999999/report.json")
    assert missing.status_code == 404
    assert len([e for e in await list_entries() if e.action == "security_incident.export"]) == 2


# --- reminders, decisions, and input that is refused ---------------------------------------


async def test_without_an_alert_channel_the_admins_are_emailed_and_nobody_means_no_claim(
    client: httpx.AsyncClient, admin: Admin, settings: Settings, clock: FakeClock
) -> None:
    """With no alert channel (the default) the deadline reminder goes to each active admin by
    e-mail; with no admin address either, the page warns and the threshold stays unclaimed, so
    the reminder goes out once someone can receive it."""
    await signed_in_owner(client, admin, clock)
    on_the_minute(clock)
    incident = await recorded(clock(), hours_ago=25)
    await StaffUser.update({StaffUser.email: ""}, force=True).run()
    listing = await client.get(PAGE)
    assert 'id="no-deadline-recipients"' in listing.text
    assert 'id="no-deadline-recipients"' in (await client.get(f"{PAGE}/{incident.id}")).text
    assert await service.check_deadlines(settings, clock()) == 0
    row = await SecurityIncident.select().where(SecurityIncident.id == incident.id).first().run()
    assert row is not None and row["alerted_hours"] == 0
    assert await emails() == [] and await alerts() == []
    assert "security_incident.deadline_alert" not in await actions()

    await StaffUser.update({StaffUser.email: "owner@lumen.example"}, force=True).run()
    assert 'id="no-deadline-recipients"' not in (await client.get(PAGE)).text
    assert await service.check_deadlines(settings, clock()) == 1
    assert await service.check_deadlines(settings, clock() + dt.timedelta(minutes=5)) == 0
    mails = await emails()
    assert [(m["recipient"], m["template"]) for m in mails] == [
        ("owner@lumen.example", "security_deadline")
    ]
    assert mails[0]["subject"] == (
        f"Security incident #{incident.id}: 24 h since detection, authority not notified"
    )
    assert mails[0]["dedupe_key"].startswith(f"security-deadline:{incident.id}:24:admin:")
    assert "47 h 0 min left" in mails[0]["body_text"]
    assert "Anna Berg" not in mails[0]["subject"] + mails[0]["body_text"] + mails[0]["body_html"]
    assert await alerts() == []
    entries = [e for e in await list_entries() if e.action == "security_incident.deadline_alert"]
    assert [e.details for e in entries] == [{"hours": 24, "via": "email"}]


@pytest.mark.parametrize("digit", ["²", "\u0661", "1²"])
async def test_ids_with_digits_other_than_ascii_are_refused(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, digit: str
) -> None:
    """ "²".isdigit() is true; such ids get a 400 naming the problem, never a 500."""
    await signed_in_owner(client, admin, clock)
    incident_id = await create(client, incident_form(clock() - dt.timedelta(hours=1)))
    base = f"{PAGE}/{incident_id}"
    added = await post(client, base, f"{base}/people", {"people": [f"client:{digit}"]})
    assert added.status_code == 400
    assert "does not name a client or staff member" in added.text
    notify = f"{base}/notify"
    told = await post(client, notify, notify, {"subject": "s", "body": "b", "people": [digit]})
    assert told.status_code == 400
    assert "Choose people from the list." in told.text
    assert await AffectedPerson.count().run() == 0 and await emails() == []


@pytest.mark.parametrize("typed", ["0001-01-01T00:00", "9999-12-31T23:59", "0001-01-01T00:30"])
async def test_detection_times_at_the_ends_of_the_calendar_are_refused(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, typed: str
) -> None:
    """Year 1 and year 9999 get a 400 naming the years allowed, not an overflow between zones."""
    await signed_in_owner(client, admin, clock)
    form = incident_form(clock(), detected_at=typed, timezone="Pacific/Kiritimati")
    response = await submit(client, f"{PAGE}/new", form)
    assert response.status_code == 400
    assert "Enter a year between 2000 and 2200." in response.text
    assert await SecurityIncident.count().run() == 0


async def test_a_recorded_decision_not_to_notify_stops_the_deadline_until_withdrawn(
    client: httpx.AsyncClient, admin: Admin, alerting: Settings, clock: FakeClock
) -> None:
    """Risk "none": the decision is recorded with who, when and why, audited without the
    reasoning, shown and reported; it stops the countdown and the alerts, rules out a
    submission and a change of risk until it is withdrawn, and the deadline runs again."""
    await signed_in_owner(client, admin, clock)
    on_the_minute(clock)
    start = clock()
    incident_id = await create(client, incident_form(start, risk="none"))
    base = f"{PAGE}/{incident_id}"
    empty = await post(client, base, f"{base}/no-notice", {"reason": "  "})
    assert empty.status_code == 400 and "This field is required." in empty.text
    reason = "The stolen disk was encrypted (LUKS, strong passphrase); the key was not taken."
    decided = await post(client, base, f"{base}/no-notice", {"reason": reason})
    assert decided.status_code == 303
    incident = await service.get_incident(incident_id)
    assert (incident.no_notice_at, incident.no_notice_by) == (start, "owner")
    assert incident.no_notice_reason == reason
    timer = service.countdown(incident, start + dt.timedelta(hours=80))
    assert timer is not None and timer.state == "decided"
    page = await client.get(base)
    assert service.NO_NOTICE in page.text and reason in page.text
    assert 'data-state="decided"' in (await client.get(PAGE)).text
    again = await post(client, base, f"{base}/no-notice", {"reason": reason})
    assert again.status_code == 409

    for hours in (24, 48, 66, 80):
        await service.check_deadlines(alerting, start + dt.timedelta(hours=hours))
    assert await alerts() == []
    submission = await post(client, f"{base}/authority", f"{base}/authority", authority_form(start))
    assert submission.status_code == 409 and "Withdraw it first" in submission.text
    edit = f"{base}/edit"
    riskier = await post(client, edit, edit, incident_form(start, risk="low"))
    assert riskier.status_code == 409 and "Withdraw the decision first" in riskier.text
    report = (await client.get(f"{base}/report.json")).json()
    assert report["incident"]["no_notice"] == {
        "decision": service.NO_NOTICE,
        "decided_at": start.isoformat(),
        "decided_by": "owner",
        "reason": reason,
    }
    assert report["incident"]["deadline_state"] == "decided"
    assert (await client.get(f"{base}/report.pdf")).status_code == 200

    clock.advance(minutes=10)
    withdrawn = await post(client, base, f"{base}/no-notice/withdraw", {})
    assert withdrawn.status_code == 303
    incident = await service.get_incident(incident_id)
    assert incident.no_notice_at is None and incident.no_notice_reason == ""
    assert service.countdown(incident, clock()).state == "running"  # type: ignore[union-attr]
    assert await service.check_deadlines(alerting, start + dt.timedelta(hours=25)) == 1
    history = await service.list_changes(incident_id)
    assert [c.action for c in history][-2:] == ["no_notice_decided", "no_notice_withdrawn"]
    assert history[-1].changes["reason"] == reason
    entries = [e for e in await list_entries() if e.action.startswith("security_incident.no_")]
    assert sorted((e.action, e.details) for e in entries) == [
        ("security_incident.no_notice_decide", {}),
        ("security_incident.no_notice_withdraw", {}),
    ]
    nothing = await post(client, base, f"{base}/no-notice/withdraw", {})
    assert nothing.status_code == 409

    # Not with another risk, and not once the authority was told.
    high = await create(client, incident_form(start, risk="high"))
    refused = await post(client, f"{PAGE}/{high}", f"{PAGE}/{high}/no-notice", {"reason": "x"})
    assert refused.status_code == 409 and "not assessed as none" in refused.text
    await post(client, f"{base}/authority", f"{base}/authority", authority_form(clock()))
    late = await post(client, base, f"{base}/no-notice", {"reason": reason})
    assert late.status_code == 409 and "already notified" in late.text


async def test_many_matches_are_counted_and_can_be_added_at_once(
    client: httpx.AsyncClient,
    admin: Admin,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A search past the first page says how many match and adds all of them on request;
    "all clients" covers a leaked client list; both are bounded with a clear message."""
    await signed_in_owner(client, admin, clock)
    incident_id = await create(client, incident_form(clock() - dt.timedelta(hours=2)))
    base = f"{PAGE}/{incident_id}"
    for number in range(57):
        await clients.create_client(
            ClientDetails(name=f"Kunde {number:02d}", email=f"kunde{number}@example.org"),
            actor=OWNER,
            address="",
            now=clock(),
        )
    await clients.create_client(
        ClientDetails(name="Zora Other"), actor=OWNER, address="", now=clock()
    )
    found = await client.get(f"{base}/people?q=kunde")
    assert 'id="more-matches"' in found.text
    assert "57 people match" in found.text and "the first 50 are shown" in found.text
    assert found.text.count('name="people" value="client:') == 50

    monkeypatch.setattr(people, "MAX_PEOPLE_MATCHING", 20)
    page = f"{base}/people?q=kunde"
    bounded = await post(client, page, f"{base}/people/all", {"q": "kunde"})
    assert bounded.status_code == 400
    assert "57 people match; at most 20 can be added at once" in bounded.text
    monkeypatch.setattr(people, "MAX_PEOPLE_MATCHING", 5_000)

    added = await post(client, page, f"{base}/people/all", {"q": "kunde"})
    assert added.status_code == 303
    assert await AffectedPerson.count().run() == 57
    everyone = await post(client, f"{base}/people", f"{base}/people/all", {"everyone": "1"})
    assert everyone.status_code == 303
    assert await AffectedPerson.count().run() == 58
    adds = [e for e in await list_entries() if e.action == "security_incident.people_add"]
    assert sorted((e.details["all_clients"], e.details["added"]) for e in adds) == [
        (False, 57),
        (True, 1),
    ]
    nobody = await post(client, page, f"{base}/people/all", {"q": "nobody-at-all"})
    assert nobody.status_code == 400 and "Nobody matches this search." in nobody.text


async def test_high_risk_shows_a_second_countdown_for_telling_the_people(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Policy §6: with high risk, the people are to be told within 72 hours of detection;
    the page counts down while anyone on the list is untold."""
    await signed_in_owner(client, admin, clock)
    on_the_minute(clock)
    incident_id = await create(client, incident_form(clock() - dt.timedelta(hours=2)))
    base = f"{PAGE}/{incident_id}"
    shown = await client.get(base)
    assert 'id="people-deadline"' in shown.text and "Nobody is on the list yet" in shown.text
    assert "70 h 0 min left" in shown.text
    anna = await clients.create_client(
        ClientDetails(name="Anna Berg", email="anna@example.org"),
        actor=OWNER,
        address="",
        now=clock(),
    )
    await post(client, base, f"{base}/people", {"people": [f"client:{anna.id}"]})
    assert "1 of 1 on the list not told yet" in (await client.get(base)).text
    row = await AffectedPerson.select().first().run()
    assert row is not None
    notify = f"{base}/notify"
    await post(client, notify, notify, {"subject": "S", "body": "B", "people": [str(row["id"])]})
    assert "everyone on the list was told" in (await client.get(base)).text
    low = await create(client, incident_form(clock(), risk="low"))
    assert 'id="people-deadline"' not in (await client.get(f"{PAGE}/{low}")).text


async def test_the_detection_time_is_fixed_once_the_authority_was_notified(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """The 72 hours reported were counted from the detection time: it cannot move later."""
    await signed_in_owner(client, admin, clock)
    on_the_minute(clock)
    detected = clock() - dt.timedelta(hours=3)
    incident_id = await create(client, incident_form(detected))
    base = f"{PAGE}/{incident_id}"
    await post(client, f"{base}/authority", f"{base}/authority", authority_form(clock()))
    edit = f"{base}/edit"
    moved = await post(client, edit, edit, incident_form(detected + dt.timedelta(hours=1)))
    assert moved.status_code == 409
    assert "cannot be changed any more" in moved.text
    assert (await service.get_incident(incident_id)).detected_at == detected
    other = await post(client, edit, edit, incident_form(detected, analysis="Found the cause."))
    assert other.status_code == 303
    assert (await service.get_incident(incident_id)).analysis == "Found the cause."


async def test_an_edit_saved_meanwhile_is_not_overwritten(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Two admins open the form; the second to save is told, and the first one's edit stays."""
    await signed_in_owner(client, admin, clock)
    detected = clock() - dt.timedelta(hours=3)
    incident_id = await create(client, incident_form(detected))
    edit = f"{PAGE}/{incident_id}/edit"
    opened = await client.get(edit)
    version, token = hidden(opened.text, "version"), csrf_of(opened.text)
    assert version
    clock.advance(minutes=1)
    first = await post(client, edit, edit, incident_form(detected, analysis="First admin."))
    assert first.status_code == 303
    clock.advance(minutes=1)
    stale = incident_form(detected, measures="Second admin.")
    second = await client.post(edit, data={**stale, "version": version, "_csrf": token})
    assert second.status_code == 409
    assert "Someone else saved this incident after you opened the form" in second.text
    missing = await client.post(edit, data={**stale, "_csrf": token})
    assert missing.status_code == 409
    incident = await service.get_incident(incident_id)
    assert (incident.analysis, incident.measures) == ("First admin.", "")


async def test_a_form_sent_twice_queues_each_notice_once(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """A double click on "send again" sends one more e-mail per person, not two."""
    await signed_in_owner(client, admin, clock)
    incident_id = await create(client, incident_form(clock() - dt.timedelta(hours=3)))
    base = f"{PAGE}/{incident_id}"
    anna = await clients.create_client(
        ClientDetails(name="Anna Berg", email="anna@example.org"),
        actor=OWNER,
        address="",
        now=clock(),
    )
    await post(client, base, f"{base}/people", {"people": [f"client:{anna.id}"]})
    row = await AffectedPerson.select().first().run()
    assert row is not None
    notify = f"{base}/notify"
    data = {"subject": "S", "body": "B", "people": [str(row["id"])], "again": "1"}
    for _ in range(2):  # the first notice, then "send again", each clicked twice
        opened = await client.get(notify)
        key = hidden(opened.text, "form_key")
        form = {**data, "form_key": key, "_csrf": csrf_of(opened.text)}
        assert (await client.post(notify, data=form)).status_code == 303
        assert (await client.post(notify, data=form)).status_code == 303
    assert [m["recipient"] for m in await emails()] == ["anna@example.org"] * 2
    told = await AffectedPerson.select().first().run()
    assert told is not None and told["times_told"] == 2
    forged = await client.post(notify, data={**form, "form_key": "../x"})
    assert forged.status_code == 400 and "This form is out of date" in forged.text
    keyless = await client.post(notify, data={**form, "form_key": ""})
    assert keyless.status_code == 400 and "open it again" in keyless.text
    assert len(await emails()) == 2


async def test_the_new_incident_form_sent_twice_records_one_incident(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Two identical POSTs of the "new" form (one form key) record one incident, with one
    history entry and one audit entry, and both redirect to it; a forged key is refused."""
    await signed_in_owner(client, admin, clock)
    new = f"{PAGE}/new"
    opened = await client.get(new)
    key = hidden(opened.text, "form_key")
    assert key is not None and len(key) >= 16
    form = {
        **incident_form(clock() - dt.timedelta(hours=1)),
        "form_key": key,
        "_csrf": csrf_of(opened.text),
    }
    first = await client.post(new, data=form)
    second = await client.post(new, data=form)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    (row,) = await SecurityIncident.select().run()
    assert first.headers["location"] == f"{PAGE}/{row['id']}?done=created"
    assert row["form_key"] == key
    assert [c.action for c in await service.list_changes(row["id"])] == ["created"]
    assert (await actions()).count("security_incident.create") == 1
    another = await client.get(new)
    assert hidden(another.text, "form_key") not in (None, key)  # each form a key of its own
    forged = await client.post(new, data={**form, "form_key": "../x"})
    assert forged.status_code == 400 and "This form is out of date" in forged.text
    assert await SecurityIncident.count().run() == 1
