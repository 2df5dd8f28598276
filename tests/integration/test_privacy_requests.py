"""Clients' privacy requests against PostgreSQL and over HTTP: from the share-link page to the
admin queue and its answer, the Art. 12(3) deadline with a moved clock, the alerts, expired
links, the rate limit, merged duplicates and hostile input."""

from __future__ import annotations

import datetime as dt
import json
import re

import httpx
import msgspec
import pytest
from litestar import Litestar

from appliance.audit.service import Actor, list_entries
from appliance.config import Settings
from appliance.galleries.tables import ShareLink
from appliance.notify.tables import OutboxMessage
from appliance.privacy import erasure
from appliance.privacy_requests import service
from appliance.privacy_requests.tables import PrivacyRequest, PrivacyRequestSubmission
from tests.conftest import FakeClock
from tests.integration.erasure_flows import fresh_ledger as fresh_ledger  # autouse
from tests.integration.flows import Admin, csrf_of, submit
from tests.integration.sharing_flows import published_gallery, share, visitor
from tests.integration.test_clients import ANNA, BEN, signed_in_owner

OWNER = Actor(id=None, name="owner")
QUEUE = "/admin/privacy-requests"


async def anna_link(
    client: httpx.AsyncClient, app: Litestar, clock: FakeClock, admin: Admin
) -> str:
    await signed_in_owner(client, admin, clock)
    gallery, _ = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    return await share(client, gallery)


async def ask(
    browser: httpx.AsyncClient, path: str, kind: str, details: str = ""
) -> httpx.Response:
    page = await browser.get(f"{path}/privacy")
    assert page.status_code == 200, page.text[-2000:]
    return await browser.post(
        f"{path}/privacy", data={"kind": kind, "details": details, "_csrf": csrf_of(page.text)}
    )


async def outbox(source: str = "privacy_requests") -> list[dict[str, object]]:
    return (
        await OutboxMessage.select()
        .where(OutboxMessage.source == source)
        .order_by(OutboxMessage.id)
        .run()
    )


async def test_a_correction_goes_from_the_link_page_to_the_queue_and_is_answered(
    client: httpx.AsyncClient, app: Litestar, clock: FakeClock, admin: Admin
) -> None:
    """The gallery links to "Your privacy"; the request lands in the admin queue, the admins and
    the client are told, and the answer after editing the client is audited without values."""
    path = await anna_link(client, app, clock, admin)
    async with visitor(app) as browser:
        gallery = await browser.get(path)
        assert f'href="{path}/privacy"' in gallery.text
        sent = await ask(browser, path, "correction", "My e-mail is anna.berg@example.org now.")
        assert sent.status_code == 303, sent.text[-2000:]
        confirmation = await browser.get(sent.headers["location"])
    assert confirmation.status_code == 200
    assert 'id="privacy-request-received"' in confirmation.text
    (row,) = await PrivacyRequest.select().run()
    assert row["kind"] == "correction" and row["status"] == "open"
    (submission,) = await PrivacyRequestSubmission.select().run()
    assert submission["details"] == "My e-mail is anna.berg@example.org now."
    messages = await outbox()
    recipients = sorted(str(m["recipient"]) for m in messages)
    assert recipients == ["anna@example.org", "owner@lumen.example"]
    staff_mail = next(m for m in messages if m["recipient"] == "owner@lumen.example")
    # What leaves the appliance for staff names the request, not the client or their text.
    assert "Anna" not in str(staff_mail["body_text"]) and "anna" not in str(staff_mail["body_text"])
    assert f"#{row['id']}" in str(staff_mail["subject"])

    queue = await client.get(QUEUE)
    assert queue.status_code == 200 and "Anna Berg" in queue.text and "A correction" in queue.text
    detail = await client.get(f"{QUEUE}/{row['id']}")
    assert "anna.berg@example.org now." in detail.text
    assert f"/clients/{row['client']}/edit" in detail.text

    edited = await submit(
        client,
        f"/clients/{row['client']}/edit",
        {**ANNA, "email": "anna.berg@example.org"},
    )
    assert edited.status_code == 303
    done = await submit(
        client,
        f"{QUEUE}/{row['id']}",
        {"note": "E-mail address changed."},
        action=f"{QUEUE}/{row['id']}/done",
    )
    assert done.status_code == 303 and done.headers["location"].endswith("?done=done")
    answered = await service.get_request(row["id"])
    assert answered.status == "done" and answered.answered_by == "owner"
    entries = {entry.action: entry for entry in await list_entries()}
    assert entries["client.update"].details == {"fields": ["email"]}
    assert "anna.berg" not in json.dumps([e.details for e in entries.values()])
    assert entries["privacy_request.receive"].details["kind"] == "correction"
    assert entries["privacy_request.answer"].details["in_time"] is True
    client_mails = [m for m in await outbox() if str(m["recipient"]).startswith("anna")]
    assert [m["subject"] for m in client_mails][
        -1
    ] == "Your request for a correction of your data was carried out"


@pytest.mark.parametrize(
    ("received", "zone", "due"),
    [
        (dt.datetime(2026, 1, 31, 12, 0, tzinfo=dt.UTC), "UTC", dt.date(2026, 2, 28)),
        (dt.datetime(2028, 1, 31, 12, 0, tzinfo=dt.UTC), "UTC", dt.date(2028, 2, 29)),
        (dt.datetime(2026, 3, 15, 9, 0, tzinfo=dt.UTC), "UTC", dt.date(2026, 4, 15)),
        # 23:30 UTC on 31 January is already 1 February in Berlin: due 1 March, not February.
        (dt.datetime(2026, 1, 31, 23, 30, tzinfo=dt.UTC), "Europe/Berlin", dt.date(2026, 3, 1)),
        # 29 March has no midnight in the Azores (00:00 becomes 01:00): still due 28 March.
        (dt.datetime(2026, 2, 28, 12, 0, tzinfo=dt.UTC), "Atlantic/Azores", dt.date(2026, 3, 28)),
        (dt.datetime(2026, 8, 5, 15, 0, tzinfo=dt.UTC), "America/Santiago", dt.date(2026, 9, 5)),
    ],
)
async def test_deadline_is_one_calendar_month_in_the_studio_zone(
    clean_db: None, settings: Settings, received: dt.datetime, zone: str, due: dt.date
) -> None:
    """Month ends shorten to the month's last day; the day counts in the studio's zone."""
    local = msgspec.structs.replace(
        settings, backups=msgspec.structs.replace(settings.backups, timezone=zone)
    )
    client_id = await _client(local, received)
    got = await service.receive_request(
        local, client_id=client_id, link_id=1, kind="copy", details="", address="x", now=received
    )
    assert got.request.due_on == due
    assert got.request.deadline_at.astimezone(dt.UTC) > received


async def _client(settings: Settings, now: dt.datetime, person: dict[str, str] = ANNA) -> int:
    from appliance.clients import service as clients
    from appliance.clients.service import ClientDetails

    record = await clients.create_client(ClientDetails(**person), actor=OWNER, address="x", now=now)
    return record.id


async def test_alerts_go_out_once_before_the_deadline_and_once_after(
    clean_db: None, alerting: Settings
) -> None:
    """request_alert_days before the deadline one warning, after it one failure; reruns add
    nothing; an extension starts the alerts over for the new deadline."""
    received = dt.datetime(2026, 1, 10, 10, 0, tzinfo=dt.UTC)
    client_id = await _client(alerting, received)
    got = await service.receive_request(
        alerting,
        client_id=client_id,
        link_id=1,
        kind="deletion",
        details="",
        address="x",
        now=received,
    )
    deadline = got.request.deadline_at
    assert deadline == dt.datetime(2026, 2, 11, 0, 0, tzinfo=dt.UTC)  # end of 10 February
    before = len(await outbox())
    assert await service.check_deadlines(alerting, deadline - dt.timedelta(days=7, minutes=1)) == 0
    assert await service.check_deadlines(alerting, deadline - dt.timedelta(days=7)) == 1
    assert await service.check_deadlines(alerting, deadline - dt.timedelta(days=3)) == 0
    assert await service.check_deadlines(alerting, deadline) == 1
    assert await service.check_deadlines(alerting, deadline + dt.timedelta(days=5)) == 0
    alerts = [m for m in await outbox() if m["kind"] == "alert"][before - 1 :]
    assert [m["severity"] for m in alerts if "due" in str(m["subject"])][-2:] == [
        "warning",
        "failure",
    ]


async def test_no_alert_asks_to_answer_a_request_of_a_client_being_erased(
    clean_db: None, alerting: Settings
) -> None:
    """Erased three days before the deadline, the client's request has left the queue: no
    alert asks for it; once the erasure is cancelled, the overdue alert comes."""
    received = dt.datetime(2026, 1, 10, 10, 0, tzinfo=dt.UTC)
    client_id = await _client(alerting, received)
    got = await service.receive_request(
        alerting, client_id=client_id, link_id=1, kind="copy", details="", address="x", now=received
    )
    deadline = got.request.deadline_at
    made = await erasure.request_erasure(
        alerting,
        kind="client",
        subject_id=client_id,
        actor="owner",
        source="staff",
        now=deadline - dt.timedelta(days=3),
    )
    assert await service.check_deadlines(alerting, deadline - dt.timedelta(days=2)) == 0
    assert await service.check_deadlines(alerting, deadline + dt.timedelta(hours=1)) == 0
    assert not [m for m in await outbox() if m["kind"] == "alert" and "due" in str(m["subject"])]

    await erasure.cancel_erasure(
        alerting, made.id, actor=OWNER, now=deadline + dt.timedelta(hours=2)
    )
    assert await service.check_deadlines(alerting, deadline + dt.timedelta(hours=3)) == 1
    (overdue,) = [m for m in await outbox() if m["kind"] == "alert"][-1:]
    assert overdue["severity"] == "failure" and "overdue" in str(overdue["subject"])


async def test_extension_moves_the_deadline_two_months_once_and_restarts_alerts(
    clean_db: None, alerting: Settings
) -> None:
    """Extended with a reason the client is told; a second extension is refused."""
    received = dt.datetime(2026, 1, 31, 10, 0, tzinfo=dt.UTC)
    client_id = await _client(alerting, received)
    got = await service.receive_request(
        alerting, client_id=client_id, link_id=1, kind="copy", details="", address="x", now=received
    )
    first = got.request.deadline_at
    assert await service.check_deadlines(alerting, first - dt.timedelta(days=2)) == 1
    with pytest.raises(Exception, match="reason"):
        await service.extend_request(
            alerting, got.request.id, "  ", actor=OWNER, address="x", now=received
        )
    extended = await service.extend_request(
        alerting,
        got.request.id,
        "Twelve years of galleries to collect.",
        actor=OWNER,
        address="x",
        now=first - dt.timedelta(days=1),
    )
    assert extended.due_on == dt.date(2026, 4, 28)
    assert extended.alerted == 0
    from appliance.errors import Conflict

    with pytest.raises(Conflict):
        await service.extend_request(
            alerting, got.request.id, "Again", actor=OWNER, address="x", now=first
        )
    assert await service.check_deadlines(alerting, first + dt.timedelta(days=1)) == 0
    assert await service.check_deadlines(alerting, extended.deadline_at - dt.timedelta(days=7)) == 1
    mail = [m for m in await outbox() if m["recipient"] == "anna@example.org"][-1]
    assert "Twelve years of galleries" in str(mail["body_text"])
    assert "28 April 2026" in str(mail["body_text"])


async def test_the_worker_task_alerts_an_overdue_request_once(
    clean_db: None, alerting: Settings, tmp_path: object
) -> None:
    """The periodic task is registered and, run twice, queues the overdue alert once."""
    from tests.integration.conftest import run_periodic_twice

    received = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    client_id = await _client(alerting, received)
    got = await service.receive_request(
        alerting, client_id=client_id, link_id=1, kind="copy", details="", address="x", now=received
    )
    before = len([m for m in await outbox() if m["kind"] == "alert"])
    await run_periodic_twice(alerting, "privacy_requests.check_deadlines", tmp_path)  # type: ignore[arg-type]
    alerts = [m for m in await outbox() if m["kind"] == "alert"]
    assert len(alerts) == before + 1 and "overdue" in str(alerts[-1]["subject"])
    assert (await service.get_request(got.request.id)).alerted == 2


async def test_expired_or_withdrawn_links_say_to_contact_the_studio_and_record_nothing(
    client: httpx.AsyncClient, app: Litestar, clock: FakeClock, admin: Admin
) -> None:
    """No request goes through a link that no longer works; the page names the studio."""
    path = await anna_link(client, app, clock, admin)
    async with visitor(app) as browser:
        page = await browser.get(f"{path}/privacy")
        token = csrf_of(page.text)
        await ShareLink.update(
            {ShareLink.expires_at: clock() - dt.timedelta(minutes=1)}, force=True
        ).run()
        for answer in (
            await browser.get(f"{path}/privacy"),
            await browser.post(f"{path}/privacy", data={"kind": "deletion", "_csrf": token}),
        ):
            assert answer.status_code == 404
            assert 'id="contact-the-studio"' in answer.text and "hello@lumen.example" in answer.text
            assert "expired" in answer.text
        await ShareLink.update(
            {ShareLink.expires_at: None, ShareLink.revoked_at: clock()}, force=True
        ).run()
        withdrawn = await browser.post(f"{path}/privacy", data={"kind": "deletion", "_csrf": token})
        assert withdrawn.status_code == 404 and "withdrawn" in withdrawn.text
    assert await PrivacyRequest.count().run() == 0


async def test_requests_per_link_are_limited_to_five_a_day(
    client: httpx.AsyncClient, app: Litestar, clock: FakeClock, admin: Admin
) -> None:
    """The sixth request in a day is refused with Retry-After; the next day works again."""
    path = await anna_link(client, app, clock, admin)
    async with visitor(app) as browser:
        for kind in ("copy", "deletion", "copy", "correction", "copy"):
            sent = await ask(browser, path, kind, "Wrong phone" if kind == "correction" else "")
            assert sent.status_code == 303
        refused = await ask(browser, path, "deletion")
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert "try again tomorrow" in refused.text
        clock.advance(days=1, seconds=1)
        assert (await ask(browser, path, "deletion")).status_code == 303
    assert await PrivacyRequestSubmission.count().run() == 6


async def test_the_same_request_twice_is_merged_into_the_open_one(
    client: httpx.AsyncClient, app: Litestar, clock: FakeClock, admin: Admin
) -> None:
    """A second deletion request while one is open joins it: one request, two submissions,
    one deadline, one acknowledgement and one staff notice."""
    path = await anna_link(client, app, clock, admin)
    async with visitor(app) as browser:
        first = await ask(browser, path, "deletion")
        clock.advance(days=3)
        second = await ask(browser, path, "deletion", "Please hurry.")
        merged = await browser.get(second.headers["location"])
    assert first.headers["location"].endswith("merged=0") and second.headers["location"].endswith(
        "merged=1"
    )
    assert 'id="privacy-request-merged"' in merged.text
    (row,) = await PrivacyRequest.select().run()
    assert (
        await PrivacyRequestSubmission.count()
        .where(PrivacyRequestSubmission.request == row["id"])
        .run()
        == 2
    )
    assert len(await outbox()) == 2  # the client's acknowledgement and the owner's notice
    actions = [e.action for e in await list_entries() if e.action.startswith("privacy_request")]
    assert sorted(actions) == ["privacy_request.merge", "privacy_request.receive"]


async def test_hostile_input_is_refused_and_records_nothing(
    client: httpx.AsyncClient, app: Litestar, clock: FakeClock, admin: Admin
) -> None:
    """Oversized text, control characters, an unknown kind, a missing CSRF token, and a look
    at another client's request through one's own link."""
    path = await anna_link(client, app, clock, admin)
    gallery, _ = await published_gallery(client, app, clock, BEN, ["b.jpg"], title="Portraits")
    ben_path = await share(client, gallery, recipient="Ben")
    async with visitor(app) as browser:
        too_long = await ask(browser, path, "correction", "x" * (service.MAX_TEXT + 1))
        assert too_long.status_code == 400 and "at most 5,000" in too_long.text
        control = await ask(browser, path, "correction", "name\x00\x1b[31m")
        assert control.status_code == 400 and "control characters" in control.text
        unknown = await ask(browser, path, "everything")
        assert unknown.status_code == 400
        empty = await ask(browser, path, "correction", "   ")
        assert empty.status_code == 400
        no_csrf = await browser.post(f"{path}/privacy", data={"kind": "deletion"})
        assert no_csrf.status_code == 403
        assert await PrivacyRequest.count().run() == 0
        bens = await ask(browser, ben_path, "copy")
        ben_request = re.search(r"request=(\d+)", bens.headers["location"])
        assert ben_request
        peek = await browser.get(f"{path}/privacy/sent?request={ben_request.group(1)}")
        assert peek.status_code == 404 and "Ben" not in peek.text


async def test_a_password_link_asks_for_the_password_first(
    client: httpx.AsyncClient, app: Litestar, clock: FakeClock, admin: Admin
) -> None:
    """Without the gallery's password the privacy page sends the browser to the password form."""
    await signed_in_owner(client, admin, clock)
    gallery, _ = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    path = await share(client, gallery, password="secret-garden")
    async with visitor(app) as browser:
        opened = await browser.get(f"{path}/privacy")
        assert opened.status_code == 303 and opened.headers["location"] == path


async def test_refusing_needs_a_reason_that_the_client_is_told(
    client: httpx.AsyncClient, app: Litestar, clock: FakeClock, admin: Admin
) -> None:
    """An empty reason is refused on the page; a reason closes the request and is mailed."""
    path = await anna_link(client, app, clock, admin)
    async with visitor(app) as browser:
        await ask(browser, path, "copy")
    (row,) = await PrivacyRequest.select().run()
    page = f"{QUEUE}/{row['id']}"
    empty = await submit(client, page, {"refusal": ""}, action=f"{page}/refuse")
    assert empty.status_code == 400 and "Give the reason" in empty.text
    refused = await submit(
        client, page, {"refusal": "We hold no data beyond this gallery."}, action=f"{page}/refuse"
    )
    assert refused.status_code == 303
    assert (await service.get_request(row["id"])).status == "refused"
    mail = (await outbox())[-1]
    assert mail["recipient"] == "anna@example.org"
    assert "We hold no data beyond this gallery." in str(mail["body_text"])
    assert "supervisory authority" in str(mail["body_text"])
    again = await submit(client, page, {"refusal": "again"}, action=f"{page}/refuse")
    assert again.status_code == 404 or again.status_code == 409


async def test_the_queue_is_for_admins_only(
    client: httpx.AsyncClient, app: Litestar, clock: FakeClock, admin: Admin
) -> None:
    """Signed out, the queue redirects to the sign-in page."""
    answer = await client.get(QUEUE)
    assert answer.status_code in (302, 303) and answer.headers["location"] == "/login"


async def test_a_deletion_request_is_answered_with_a_real_erasure(
    client: httpx.AsyncClient, app: Litestar, clock: FakeClock, admin: Admin
) -> None:
    """Answering a deletion calls the erasure service: the client's link stops working."""
    path = await anna_link(client, app, clock, admin)
    async with visitor(app) as browser:
        await ask(browser, path, "deletion")
        (row,) = await PrivacyRequest.select().run()
        page = f"{QUEUE}/{row['id']}"
        answered = await submit(client, page, {}, action=f"{page}/fulfil")
        assert answered.status_code == 303, answered.text[-2000:]
        found = await service.get_request(row["id"])
        assert found.status == "done" and found.erasure_id is not None
        shown = await client.get(answered.headers["location"])
        assert "The request is answered; the client is told by e-mail" in shown.text
        assert (await browser.get(path)).status_code == 404


async def test_a_copy_request_is_in_progress_until_its_export_link_is_made(
    client: httpx.AsyncClient, app: Litestar, clock: FakeClock, admin: Admin
) -> None:
    """Answering a copy request queues a real export; the request stays in progress (the
    deadline still running) until a download link is made, and is answered then."""
    from appliance.audit.service import Actor
    from appliance.exports import service as exports

    path = await anna_link(client, app, clock, admin)
    async with visitor(app) as browser:
        await ask(browser, path, "copy")
    (row,) = await PrivacyRequest.select().run()
    page = f"{QUEUE}/{row['id']}"
    answered = await submit(client, page, {}, action=f"{page}/fulfil")
    assert answered.status_code == 303, answered.text[-2000:]
    found = await service.get_request(row["id"])
    assert found.status == "in_progress" and found.export_id is not None
    assert found.answered_at is None and found.is_open
    assert [r.id for r in await service.list_requests(open_only=True)] == [row["id"]]
    shown = await client.get(answered.headers["location"])
    assert "In progress" in shown.text and f'href="/exports/{found.export_id}"' in shown.text
    assert "The export is started." in shown.text and "The request is answered" not in shown.text

    assert await exports.run_pending(app.state.settings, app.state.store, clock()) == 1
    assert (await service.get_request(row["id"])).status == "in_progress"  # built, not given
    await exports.issue_link(found.export_id, actor=Actor(id=None, name="owner"), now=clock())
    await client.get(QUEUE)  # the queue settles copies as it is shown
    done = await service.get_request(row["id"])
    assert done.status == "done" and done.answered_at == clock()


async def test_a_failed_export_reopens_its_copy_request_and_the_deadline_watch_continues(
    client: httpx.AsyncClient, app: Litestar, clock: FakeClock, admin: Admin
) -> None:
    """When the export of a copy request fails, the request is open again with the reason, its
    deadline alerts still go out, and it can be answered with a new export."""
    from appliance.exports.tables import ExportJob

    path = await anna_link(client, app, clock, admin)
    async with visitor(app) as browser:
        await ask(browser, path, "copy")
    (row,) = await PrivacyRequest.select().run()
    page = f"{QUEUE}/{row['id']}"
    await submit(client, page, {}, action=f"{page}/fulfil")
    first = await service.get_request(row["id"])
    assert first.status == "in_progress" and first.export_id is not None
    # What the worker leaves when a build fails.
    await ExportJob.update(
        {ExportJob.state: "failed", ExportJob.error: "The file store failed; try again."}
    ).where(ExportJob.id == first.export_id)
    clock.advance(days=40)  # past the deadline: the overdue alert is due as well
    settings = app.state.settings
    assert await service.check_deadlines(settings, clock()) >= 1
    reopened = await service.get_request(row["id"])
    assert reopened.status == "open" and "file store failed" in reopened.answer_note
    assert reopened.alerted == service.OVERDUE
    second = await service.fulfil_request(settings, row["id"], actor=OWNER, address="", now=clock())
    assert second.status == "in_progress" and second.export_id not in (None, first.export_id)


async def test_the_request_page_names_the_link_warns_about_identity_and_is_an_access(
    client: httpx.AsyncClient, app: Litestar, clock: FakeClock, admin: Admin
) -> None:
    """The admin sees which link a request came through and to whom it was given, is warned
    that a link may be held by someone else, and the view is in the client's access log."""
    from appliance.audit.tables import AuditEntry

    await signed_in_owner(client, admin, clock)
    gallery, _ = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    path = await share(client, gallery, recipient="Anna's aunt", email="aunt@example.net")
    async with visitor(app) as browser:
        await ask(browser, path, "deletion")
    (row,) = await PrivacyRequest.select().run()
    (submission,) = await PrivacyRequestSubmission.select().run()
    assert submission["link_recipient"] == "Anna's aunt"
    assert submission["link_email"] == "aunt@example.net"
    shown = await client.get(f"{QUEUE}/{row['id']}")
    assert shown.status_code == 200
    assert f"through link #{submission['link_id']}" in shown.text
    assert "Anna&#39;s aunt &lt;aunt@example.net&gt;" in shown.text
    assert 'id="identity-warning"' in shown.text
    views = (
        await AuditEntry.select(AuditEntry.target, AuditEntry.actor_id)
        .where(AuditEntry.action == "privacy_request.view")
        .run()
    )
    assert views == [{"target": f"client:{row['client']}", "actor_id": views[0]["actor_id"]}]
    assert views[0]["actor_id"] is not None


async def test_a_failed_answer_to_a_deletion_leaves_no_ledger_line_without_its_erasure(
    client: httpx.AsyncClient,
    app: Litestar,
    clock: FakeClock,
    admin: Admin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When telling the client fails after the erasure started, every line of the erasure
    ledger still has its erasure (a restore would otherwise erase the client); the request
    stays open, and answering again answers it with that same erasure."""
    from appliance.privacy import ledger
    from appliance.privacy.tables import ErasureRequest
    from appliance.privacy_requests import messages

    settings = app.state.settings
    path = await anna_link(client, app, clock, admin)
    async with visitor(app) as browser:
        await ask(browser, path, "deletion")
    (row,) = await PrivacyRequest.select().run()
    tell_client = messages.tell_client
    earlier = len(ledger.entries(settings))  # the ledger outlives the tables between tests

    def requested() -> list[int]:
        return [e["request_id"] for e in ledger.entries(settings)[earlier:]]

    async def mail_fails(*args: object, **kwargs: object) -> bool:
        raise RuntimeError("the outbox is unreachable")

    monkeypatch.setattr(messages, "tell_client", mail_fails)
    with pytest.raises(RuntimeError, match="outbox"):
        await service.fulfil_request(settings, row["id"], actor=OWNER, address="", now=clock())
    erasures = await ErasureRequest.select(ErasureRequest.id).run()
    assert requested() == [r["id"] for r in erasures]
    assert (await service.get_request(row["id"])).status == "open"

    monkeypatch.setattr(messages, "tell_client", tell_client)
    answered = await service.fulfil_request(
        settings, row["id"], actor=OWNER, address="", now=clock()
    )
    assert answered.status == "done" and answered.erasure_id == erasures[0]["id"]
    assert requested() == [answered.erasure_id]


async def test_a_copy_request_stays_answered_when_its_handed_over_export_expires(
    client: httpx.AsyncClient, app: Litestar, clock: FakeClock, admin: Admin
) -> None:
    """The link was made, then the export expired before the queue settled the request: the
    expired export still has its link, so the request is answered, not reopened."""
    from appliance.exports import service as exports
    from appliance.exports.tables import ExportJob

    path = await anna_link(client, app, clock, admin)
    async with visitor(app) as browser:
        await ask(browser, path, "copy")
    (row,) = await PrivacyRequest.select().run()
    settings = app.state.settings
    started = await service.fulfil_request(
        settings, row["id"], actor=OWNER, address="", now=clock()
    )
    assert started.export_id is not None
    assert await exports.run_pending(settings, app.state.store, clock()) == 1
    await exports.issue_link(started.export_id, actor=OWNER, now=clock())
    job = await ExportJob.select().where(ExportJob.id == started.export_id).first()
    clock.now = job["expires_at"] + dt.timedelta(minutes=1)
    assert await exports.expire_exports(app.state.store, clock()) == 1
    assert await service.settle_copies(settings, clock()) == 1
    answered = await service.get_request(row["id"])
    assert answered.status == "done" and answered.answered_at == clock()
    assert "download link was made" in answered.answer_note
    assert not [e for e in await list_entries() if e.action == "privacy_request.reopen"]


async def test_a_deletion_tells_the_purge_day_and_a_cancelled_erasure_reopens_the_request(
    client: httpx.AsyncClient, app: Litestar, clock: FakeClock, admin: Admin
) -> None:
    """The client's e-mail names the day the erasure purges (its grace period counts from the
    answer); when an admin cancels that erasure, the request is open again, and answering it
    again tells the client the new day, in their language."""
    from appliance.clients.tables import Client
    from appliance.localtime import format_day, zone
    from appliance.privacy import erasure

    settings = app.state.settings
    path = await anna_link(client, app, clock, admin)
    async with visitor(app) as browser:
        await ask(browser, path, "deletion")
    (row,) = await PrivacyRequest.select().run()
    clock.advance(days=20)
    first = await service.fulfil_request(settings, row["id"], actor=OWNER, address="", now=clock())
    assert first.erasure_id is not None
    purge = (await erasure.get_request(first.erasure_id)).purge_after
    day = purge.astimezone(zone(settings.studio_zone)).date()
    assert day > first.received_on + dt.timedelta(days=20)
    mail = str((await outbox())[-1]["body_text"])
    assert f"deleted for good on {format_day(day)} or shortly after" in mail
    assert "30 days" not in mail

    clock.advance(days=1)
    await erasure.cancel_erasure(settings, first.erasure_id, actor=OWNER, now=clock())
    await service.check_deadlines(settings, clock())  # settles the requests first
    reopened = await service.get_request(row["id"])
    assert reopened.status == "open" and reopened.answered_at is None
    assert f"erasure (#{first.erasure_id}) was cancelled" in reopened.answer_note
    (entry,) = [e for e in await list_entries() if e.action == "privacy_request.reopen"]
    assert entry.details["erasure"] == first.erasure_id
    assert await service.settle_requests(settings, clock()) == 0  # once

    await Client.update({Client.language: "de"}).where(Client.id == row["client"])
    again = await service.fulfil_request(settings, row["id"], actor=OWNER, address="", now=clock())
    assert again.status == "done" and again.erasure_id not in (None, first.erasure_id)
    assert again.erasure_id is not None
    later = (await erasure.get_request(again.erasure_id)).purge_after
    german = str((await outbox())[-1]["body_text"])
    new_day = format_day(later.astimezone(zone(settings.studio_zone)).date(), "de")
    assert f"am {new_day} oder kurz danach endgültig gelöscht" in german
