"""How far an erasure reaches, and no further: the studio's new clients after its own erasure,
a staff account and a client during the grace period, a guest's link to a couple's gallery,
and a staff member's address typed with capitals (real PostgreSQL, over HTTP)."""

from __future__ import annotations

import httpx
from litestar import Litestar

from appliance.accounts import service as accounts
from appliance.audit.service import Actor
from appliance.clients import service as clients
from appliance.clients.service import ClientDetails
from appliance.privacy import erasure, purge
from tests.conftest import FakeClock
from tests.integration.erasure_flows import anna_and_ben
from tests.integration.erasure_flows import fresh_ledger as fresh_ledger  # autouse
from tests.integration.flows import Admin, csrf_of
from tests.integration.test_clients import signed_in_owner

PASSWORD = "amber meadow violin 77 cedar"
QUEUE = "/admin/privacy-requests"
USERS = "/admin/users"


async def _owner() -> accounts.StaffMember:
    member = await accounts.find_member("owner")
    assert member is not None
    return member


async def _carla(app: Litestar, clock: FakeClock, email: str = "carla@studio.example") -> int:
    member = await accounts.create_user(
        username="carla",
        email=email,
        display_name="Carla Reyes",
        role="photographer",
        password=PASSWORD,
        settings=app.state.settings,
        now=clock(),
        actor=Actor(id=None, name="test"),
        address="test",
    )
    return member.id


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
