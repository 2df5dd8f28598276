"""How far an erasure reaches, and no further: the studio's new clients after its own erasure,
a staff account and a client during the grace period, a guest's link to a couple's gallery,
and a staff member's address typed with capitals (real PostgreSQL, over HTTP)."""

from __future__ import annotations

import httpx
from litestar import Litestar

from appliance.accounts import invitations
from appliance.accounts import service as accounts
from appliance.accounts.tables import StaffInvitation, StaffUser
from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.audit.tables import AuditEntry
from appliance.clients import service as clients
from appliance.clients.service import ClientDetails
from appliance.privacy import erasure, purge
from appliance.privacy_requests import service as requests
from appliance.privacy_requests.tables import PrivacyRequest
from tests.conftest import FakeClock, make_client
from tests.integration.erasure_flows import CARLA_PASSWORD, anna_and_ben, carla, count
from tests.integration.erasure_flows import fresh_ledger as fresh_ledger  # autouse
from tests.integration.flows import Admin, csrf_of, sign_in, submit
from tests.integration.sharing_flows import published_gallery, share, visitor
from tests.integration.test_clients import ANNA, signed_in_owner

PASSWORD = CARLA_PASSWORD
QUEUE = "/admin/privacy-requests"
USERS = "/admin/users"


async def _owner() -> accounts.StaffMember:
    member = await accounts.find_member("owner")
    assert member is not None
    return member


async def _carla(app: Litestar, clock: FakeClock, email: str = "carla@studio.example") -> int:
    return (await carla(app.state.settings, clock(), email)).id


async def _erase(
    app: Litestar, clock: FakeClock, kind: erasure.Kind, subject_id: int | None
) -> erasure.ErasureRequest:
    """The owner asks for the erasure of ``kind`` #``subject_id`` (None: the whole studio)."""
    owner = await _owner()
    return await erasure.request_erasure(
        app.state.settings,
        kind=kind,
        subject_id=subject_id,
        actor=owner.username,
        actor_id=owner.id,
        source="staff",
        now=clock(),
    )


async def _ask(browser: httpx.AsyncClient, path: str, kind: str) -> int:
    """Send a privacy request through the link ``path``; the id of the request it made or
    joined."""
    page = await browser.get(f"{path}/privacy")
    assert page.status_code == 200, page.text[-2000:]
    sent = await browser.post(
        f"{path}/privacy", data={"kind": kind, "details": "", "_csrf": csrf_of(page.text)}
    )
    assert sent.status_code == 303, sent.text[-2000:]
    return int(sent.headers["location"].split("request=")[1].split("&")[0])


async def test_clients_created_after_the_whole_studio_was_erased_are_not_hidden(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """Once the studio's erasure is carried out, a client created afterwards is listed, opens
    and is not counted as erased: only an open studio erasure hides everyone."""
    settings = app.state.settings
    await anna_and_ben(client, app, admin, clock)
    owner = await _owner()
    await _erase(app, clock, "studio", None)
    during = await clients.create_client(
        ClientDetails(name="Carl Early", email="carl@example.org"),
        actor=owner.actor,
        address="test",
        now=clock(),
    )
    assert await erasure.is_erased("client", during.id)  # still open: everyone is hidden
    clock.advance(days=settings.privacy.erasure_grace_days, seconds=1)
    assert await purge.purge_due(settings, app.state.store, clock()) == 1

    dora = await clients.create_client(
        ClientDetails(name="Dora Lind", email="dora@example.org"),
        actor=owner.actor,
        address="test",
        now=clock(),
    )
    assert not await erasure.is_erased("client", dora.id)
    assert dora.id not in await erasure.erased_client_ids()
    client.cookies.clear()  # the session ran out during the grace period
    await signed_in_owner(client, admin, clock)
    listed = await client.get("/clients")
    assert listed.status_code == 200 and "Dora Lind" in listed.text
    page = await client.get(f"/clients/{dora.id}")
    assert page.status_code == 200 and "dora@example.org" in page.text


async def test_a_staff_account_being_erased_cannot_be_switched_back_on(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """During the grace period an admin cannot enable the account, change its role or make a
    reset link (409 with the reason); Admin → Users marks it and points to Admin → Erasure,
    and the person still cannot sign in."""
    await signed_in_owner(client, admin, clock)
    carla = await _carla(app, clock)
    await _erase(app, clock, "staff", carla)

    page = await client.get(USERS)
    assert page.status_code == 200
    assert f'id="being-erased-{carla}"' in page.text and 'href="/admin/erasure"' in page.text
    assert f'action="/admin/users/{carla}/active"' not in page.text
    assert f'action="/admin/users/{carla}/reset"' not in page.text

    enabled = await submit(client, USERS, {"active": "1"}, action=f"{USERS}/{carla}/active")
    assert enabled.status_code == 409
    assert "is being deleted" in enabled.text and "Admin → Erasure" in enabled.text
    role = await submit(client, USERS, {"role": "admin"}, action=f"{USERS}/{carla}/role")
    assert role.status_code == 409 and "is being deleted" in role.text
    reset = await submit(client, USERS, {"reset_2fa": "1"}, action=f"{USERS}/{carla}/reset")
    assert reset.status_code == 409 and "/reset/" not in reset.text

    row = await StaffUser.select().where(StaffUser.id == carla).first().run()
    assert row is not None and row["is_active"] is False and row["role"] == "photographer"
    assert await StaffInvitation.count().where(StaffInvitation.user == carla).run() == 0
    actions = {e.action for e in await audit.list_entries(limit=200)}
    assert not actions & {"user.enable", "user.role", "user.reset"}
    async with make_client(app) as browser:
        refused = await sign_in(browser, "carla", PASSWORD)
        assert refused.headers.get("location") not in ("/", "/login/two-factor")
        assert (await browser.get("/clients")).status_code in (302, 303, 401)


async def test_a_reset_link_made_before_the_erasure_no_longer_works(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """A reset link handed out before the erasure is refused with the reason, on the page and
    when posted; the password stays as it was."""
    carla = await _carla(app, clock)
    token = await invitations.start_reset(
        carla,
        reset_2fa=False,
        actor=Actor(id=None, name="owner"),
        address="test",
        settings=app.state.settings,
        now=clock(),
    )
    before = await StaffUser.select(StaffUser.password_hash).where(StaffUser.id == carla).run()
    await _erase(app, clock, "staff", carla)

    async with make_client(app) as browser:
        page = await browser.get(f"/reset/{token}")
        assert page.status_code == 410 and "the account is being deleted" in page.text
        # The page refuses, so post as a copy of its form kept from before would.
        login = await browser.get("/login")
        posted = await browser.post(
            f"/reset/{token}",
            data={"password": "new sapphire harbour 88", "confirm": "new sapphire harbour 88"}
            | {"_csrf": csrf_of(login.text)},
        )
        assert posted.status_code == 410 and "the account is being deleted" in posted.text
    after = await StaffUser.select(StaffUser.password_hash).where(StaffUser.id == carla).run()
    assert after == before


async def test_a_staff_account_is_given_back_once_its_erasure_is_cancelled(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """The refusal lasts only while the erasure is open: cancelled, the account can be changed
    again; and the whole studio's erasure (which keeps staff signed in so that it can be
    cancelled) refuses nothing."""
    await signed_in_owner(client, admin, clock)
    carla = await _carla(app, clock)
    request = await _erase(app, clock, "staff", carla)
    owner = await _owner()
    await erasure.cancel_erasure(app.state.settings, request.id, actor=owner.actor, now=clock())
    role = await submit(client, USERS, {"role": "admin"}, action=f"{USERS}/{carla}/role")
    assert role.status_code == 200 and "carla is now admin" in role.text

    await _erase(app, clock, "studio", None)
    disabled = await accounts.set_active(carla, False, actor=owner, address="test", now=clock())
    enabled = await accounts.set_active(carla, True, actor=owner, address="test", now=clock())
    assert (disabled.is_active, enabled.is_active) == (False, True)
    assert await invitations.start_reset(
        owner.id,
        reset_2fa=False,
        actor=Actor(id=None, name="cli"),
        address="console",
        settings=app.state.settings,
        now=clock(),
    )


async def test_a_client_being_erased_leaves_the_privacy_request_queue(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """While Anna is being erased her requests are not listed, their page and its answers are
    404 (and record no view of her), as her client page is; cancelled, they are back."""
    anna = await anna_and_ben(client, app, admin, clock)
    async with visitor(app) as browser:
        request_id = await _ask(browser, anna.link, "copy")
    assert ANNA["name"] in (await client.get(QUEUE)).text
    owner = await _owner()
    erased = await _erase(app, clock, "client", anna.client_id)
    views = await AuditEntry.count().where(AuditEntry.action == "privacy_request.view").run()

    queue = await client.get(QUEUE)
    assert queue.status_code == 200
    assert ANNA["name"] not in queue.text and f'href="{QUEUE}/{request_id}"' not in queue.text
    shown = await client.get(f"{QUEUE}/{request_id}")
    assert shown.status_code == 404 and ANNA["email"] not in shown.text
    refuse_page = await client.get(QUEUE)
    refused = await client.post(
        f"{QUEUE}/{request_id}/refuse",
        data={"refusal": "No.", "_csrf": csrf_of(refuse_page.text)},
    )
    assert refused.status_code == 404
    fulfilled = await client.post(
        f"{QUEUE}/{request_id}/fulfil", data={"_csrf": csrf_of(refuse_page.text)}
    )
    assert fulfilled.status_code == 404
    found = await requests.get_request(request_id)
    assert (found.status, found.export_id, found.answer_note) == ("open", None, "")
    after = await AuditEntry.count().where(AuditEntry.action == "privacy_request.view").run()
    assert after == views

    await erasure.cancel_erasure(app.state.settings, erased.id, actor=owner.actor, now=clock())
    assert ANNA["name"] in (await client.get(QUEUE)).text
    assert (await client.get(f"{QUEUE}/{request_id}")).status_code == 200


async def test_answering_a_deletion_leads_back_to_the_queue(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """Answering a deletion erases the client, so the admin lands on the queue with the notice
    (not on a page that is gone), and the request is no longer listed there."""
    anna = await anna_and_ben(client, app, admin, clock)
    async with visitor(app) as browser:
        request_id = await _ask(browser, anna.link, "deletion")
    page = f"{QUEUE}/{request_id}"
    answered = await submit(client, page, {}, action=f"{page}/fulfil")
    assert answered.status_code == 303 and answered.headers["location"] == f"{QUEUE}?done=erasing"
    queue = await client.get(answered.headers["location"])
    assert queue.status_code == 200
    assert "The request is answered" in queue.text and "The client is being deleted" in queue.text
    assert f'href="{page}"' not in queue.text
    found = await requests.get_request(request_id)
    assert found.status == "done" and found.erasure_id is not None
    assert await erasure.is_erased("client", anna.client_id)


async def test_a_guests_link_does_not_show_the_couples_privacy_requests(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """A guest holding another link to the same gallery gets 404 for the request the couple
    sent through theirs; each link shows what was sent through it, the couple's request too
    once the guest's own asking joined it."""
    await signed_in_owner(client, admin, clock)
    gallery, _ = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    couple = await share(client, gallery, recipient=ANNA["name"], email=ANNA["email"])
    guest = await share(client, gallery, recipient="A wedding guest")
    async with visitor(app) as browser:
        theirs = await _ask(browser, couple, "copy")
        own = await browser.get(f"{couple}/privacy/sent?request={theirs}")
        assert own.status_code == 200 and 'id="privacy-request-received"' in own.text
    async with visitor(app) as browser:
        walked = await browser.get(f"{guest}/privacy/sent?request={theirs}")
        assert walked.status_code == 404 and "privacy-request-received" not in walked.text
        joined = await _ask(browser, guest, "copy")
        assert joined == theirs
        shown = await browser.get(f"{guest}/privacy/sent?request={joined}&merged=1")
        assert shown.status_code == 200 and 'id="privacy-request-merged"' in shown.text
    assert await PrivacyRequest.count().run() == 1


async def test_a_staff_address_typed_with_capitals_leaves_the_audit_log(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, database_url: str
) -> None:
    """An invitation is audited under the address in lower case, and the purge erases entries
    about the address in whatever case they hold it."""
    mail = "Carla.Reyes@Studio.example"
    owner = await _owner()
    settings = app.state.settings
    await invitations.invite(
        mail, "photographer", actor=owner, address="t", settings=settings, now=clock()
    )
    invited = await AuditEntry.select(AuditEntry.target).where(AuditEntry.action == "user.invite")
    assert invited == [{"target": "email:carla.reyes@studio.example"}]
    # An entry written as typed, as invitations were before.
    await audit.record("user.invite", actor=owner.actor, target=f"email:{mail}", at=clock())
    carla = await _carla(app, clock, email=mail)
    await _erase(app, clock, "staff", carla)
    clock.advance(days=settings.privacy.erasure_grace_days, seconds=1)
    assert await purge.purge_due(settings, app.state.store, clock()) == 1

    left = await count(
        database_url,
        "SELECT count(*) FROM audit_entry WHERE target ILIKE $1 OR details ILIKE $1",
        "%reyes@%",
    )
    assert left == 0
    erased = await count(
        database_url,
        "SELECT count(*) FROM audit_entry WHERE action = 'user.invite' AND target = 'erased'",
    )
    assert erased == 2
    assert (await audit.verify_chain()).first_bad_seq is None
