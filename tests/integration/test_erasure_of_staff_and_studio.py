"""Erasure of a staff member and of the whole studio: signed out and refused at once, purged
after the grace period, the audit log still intact (real PostgreSQL, the filesystem store)."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from litestar import Litestar

from appliance.clients.tables import Client
from appliance.galleries.tables import Gallery
from appliance.privacy import erasure, purge
from tests.conftest import FakeClock
from tests.integration.erasure_flows import CARLA_PASSWORD, anna_and_ben, carla, count, traces
from tests.integration.erasure_flows import fresh_ledger as fresh_ledger  # autouse
from tests.integration.flows import Admin, submit
from tests.integration.sharing_flows import visitor
from tests.integration.test_clients import signed_in_owner


async def test_an_erased_staff_member_is_signed_out_refused_and_then_purged(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, database_url: str
) -> None:
    """Erasing a photographer ends their sessions and refuses their password at once; the purge
    removes their account, recovery codes and sessions, and the audit log still verifies."""
    from appliance.accounts.tables import StaffSession, StaffUser
    from appliance.audit.service import Actor, verify_chain
    from appliance.clients import service as clients
    from appliance.clients.service import ClientDetails
    from tests.conftest import make_client
    from tests.integration.flows import sign_in

    settings = app.state.settings
    password = CARLA_PASSWORD
    member = await carla(settings, clock())
    await _staff_leftovers(database_url, clock, "carla", "carla@studio.example")
    async with make_client(app) as other:
        await sign_in(other, "carla", "not her password at all")  # a throttle row by her name
    async with make_client(app) as browser:
        first = await sign_in(browser, "carla", password)
        assert first.status_code == 303, first.text[-500:]
        dora = await clients.create_client(
            ClientDetails(name="Dora Lind", email="dora@example.org"),
            actor=Actor(id=None, name="test"),
            address="test",
            now=clock(),
        )
        assert (await browser.get(f"/clients/{dora.id}")).status_code == 200
        assert await _audit_mentions(database_url, "carla") > 0
        assert await StaffSession.count().where(StaffSession.user == member.id).run() >= 1

        request = await erasure.request_erasure(
            settings,
            kind="staff",
            subject_id=member.id,
            actor="owner",
            source="staff",
            now=clock(),
        )
        assert await StaffSession.count().where(StaffSession.user == member.id).run() == 0
        home = await browser.get("/")
        assert home.status_code in (303, 401, 403)
    async with make_client(app) as other:
        refused = await sign_in(other, "carla", password)
        assert refused.headers.get("location") not in ("/", "/login/two-factor")

    clock.advance(days=settings.privacy.erasure_grace_days, seconds=1)
    assert await purge.purge_due(settings, app.state.store, clock()) == 1
    assert await StaffUser.count().where(StaffUser.id == member.id).run() == 0
    counts = (await erasure.get_request(request.id)).counts
    assert counts["staff_user"] == 1
    assert counts["audit_entries_erased"] > 0
    assert await _audit_mentions(database_url, "carla") == 0
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.RaiseError):  # only the erasure's own change is let through
            await conn.execute(
                "UPDATE audit_entry SET details = '{\"x\":1}' WHERE actor = 'erased'"
            )
    finally:
        await conn.close()
    assert await StaffUser.count().where(StaffUser.username == "owner").run() == 1
    conn = await asyncpg.connect(database_url)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM staff_user WHERE email = 'carla@studio.example'"
        )
    finally:
        await conn.close()
    assert left == 0
    assert await traces(database_url, ["carla"], -1) == []
    assert await _throttled(database_url, "carla") == 0
    assert (await verify_chain()).intact
    await _views_stay_in_the_clients_trail(database_url, member.id, dora.id)


async def test_erasing_the_whole_studio_keeps_only_the_admin_who_asked(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """With the studio's name typed, every link stops at once; after the grace period every
    client, gallery, photo and object is gone, and the admin who asked can still work."""
    from appliance.accounts.tables import StaffUser
    from appliance.privacy.tables import AffectedPerson, SecurityIncident
    from appliance.setup import service as setup

    anna = await anna_and_ben(client, app, admin, clock)
    incident = await SecurityIncident.insert(
        SecurityIncident(
            kind="leak",
            title="Laptop lost",
            detected_at=clock(),
            created_at=clock(),
            updated_at=clock(),
        )
    ).run()
    await AffectedPerson.insert(
        AffectedPerson(
            incident=incident[0]["id"],
            kind="client",
            person_id=anna.client_id,
            added_at=clock(),
        )
    ).run()
    studio = await setup.get_studio()
    assert studio is not None
    done = await submit(
        client,
        "/admin/erasure/new?kind=studio",
        {"kind": "studio", "subject_id": "", "confirm": studio.name},
        action="/admin/erasure",
    )
    assert done.status_code == 303, done.text[-500:]
    async with visitor(app) as browser:
        assert (await browser.get(anna.link)).status_code in (403, 404, 410)
    assert await erasure.is_erased("client", anna.client_id)

    clock.advance(days=app.state.settings.privacy.erasure_grace_days, seconds=1)
    store = app.state.store
    assert await purge.purge_due(app.state.settings, store, clock()) == 1
    assert await Client.count().run() == 0
    assert await Gallery.count().run() == 0
    assert [info.key async for info in store.list("")] == []
    assert [r["username"] for r in await StaffUser.select(StaffUser.username).run()] == ["owner"]
    assert await AffectedPerson.count().run() == 0  # the register named Anna by id
    client.cookies.clear()  # the session ran out during the grace period
    await signed_in_owner(client, admin, clock)
    assert (await client.get("/admin/erasure")).status_code == 200


async def _views_stay_in_the_clients_trail(
    database_url: str, staff_id: int, client_id: int
) -> None:
    """What an erased staff member viewed stays in the client's access trail, without their
    name, address or salt."""
    from appliance.exports.service import access_trail

    conn = await asyncpg.connect(database_url)
    try:
        views = await conn.fetch(
            "SELECT actor, target, address, salt, erased_at FROM audit_entry"
            " WHERE action = 'client.view' AND actor_id = $1",
            staff_id,
        )
    finally:
        await conn.close()
    assert [tuple(row)[:4] for row in views] == [("erased", f"client:{client_id}", "", None)]
    assert views[0]["erased_at"] is not None
    trail = [(a.who, a.action, a.target) async for a in access_trail(client_id)]
    assert ("erased", "client.view", f"client:{client_id}") in trail


async def _staff_leftovers(database_url: str, clock: FakeClock, username: str, email: str) -> None:
    """What holds a staff member's name or address without a foreign key to their account:
    the invitation they accepted, an export they asked for, a privacy request they answered."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO staff_invitation (token_hash, kind, email, role, created_at,"
            " expires_at, used_at) VALUES ('t-' || $1, 'invite', $2, 'photographer', $3, $3, $3)",
            username,
            email,
            clock(),
        )
        await conn.execute(
            "INSERT INTO export_job (kind, subject_id, requested_by_name, requested_at)"
            " SELECT 'client', id, $1, $2 FROM client LIMIT 1",
            username,
            clock(),
        )
        await conn.execute(
            "INSERT INTO privacy_request (client, kind, received_at, deadline_at, extended_by,"
            " answered_by) SELECT id, 'copy', $2, $2, $1, $1 FROM client LIMIT 1",
            username,
            clock(),
        )
    finally:
        await conn.close()


async def _throttled(database_url: str, username: str) -> int:
    from appliance.accounts.throttle import account_key

    sql = "SELECT count(*) FROM login_throttle WHERE key = $1"
    return await count(database_url, sql, account_key(username))


async def _audit_mentions(database_url: str, needle: str) -> int:
    sql = "SELECT count(*) FROM audit_entry WHERE actor = $1 OR target ILIKE $2 OR details ILIKE $2"
    return await count(database_url, sql, needle, f"%{needle}%")
