"""Erasure of a client: unreachable at once, purged for good after the grace period, and never
brought back by a restore (real PostgreSQL, the filesystem store, real restic)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar

from appliance.backups.points import Point
from appliance.backups.repositories import Target, configured, primary
from appliance.backups.restore import choose_point, restore
from appliance.backups.service import do_backup
from appliance.clients.tables import Client
from appliance.config import Settings
from appliance.galleries.tables import Gallery, Photo
from appliance.notify.tables import OutboxMessage
from appliance.privacy import erasure, ledger, purge
from appliance.privacy.tables import ErasureRequest as ErasureRow
from appliance.storage.base import ObjectStore
from tests.conftest import FakeClock
from tests.integration import test_backups
from tests.integration.flows import Admin, submit
from tests.integration.sharing_flows import published_gallery, share, visitor
from tests.integration.test_clients import ANNA, BEN, signed_in_owner

backup_settings = test_backups.backup_settings  # the fixture: a repository of the test's own


@pytest.fixture(autouse=True)
def fresh_ledger(settings: Settings) -> Iterator[None]:
    """No erasure of one test reaches another (the data folder is the session's): the ledger
    goes before and after each test."""

    def wipe() -> None:
        ledger.ledger_path(settings).unlink(missing_ok=True)
        (ledger.ledger_path(settings).parent / "copied.json").unlink(missing_ok=True)

    wipe()
    yield
    wipe()


@dataclass
class Erased:
    """Anna as the tests know her: her client id, her link, her objects and their bytes."""

    client_id: int
    link: str
    keys: list[str]
    contents: list[bytes]


async def _object_bytes(store: ObjectStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.get(key)])


async def _anna_and_ben(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> Erased:
    """Two clients with a published gallery each, a link and a queued e-mail for Anna."""
    await signed_in_owner(client, admin, clock)
    anna_gallery, _ = await published_gallery(client, app, clock, ANNA, ["a1.jpg", "a2.jpg"])
    await published_gallery(client, app, clock, BEN, ["b1.jpg"], title="Portraits")
    link = await share(client, anna_gallery, recipient=ANNA["name"], email=ANNA["email"])
    anna = await Gallery.select(Gallery.client).where(Gallery.id == anna_gallery).first().run()
    assert anna is not None
    store = app.state.store
    photos = await Photo.select().where(Photo.gallery == anna_gallery).run()
    keys = [p[k] for p in photos for k in ("original_key", "thumb_key", "preview_key")]
    await OutboxMessage.insert(
        OutboxMessage(
            kind="email",
            recipient=ANNA["email"],
            subject=f"Your gallery, {ANNA['name']}",
            body_text="Hello",
            next_attempt_at=clock(),
            created_at=clock(),
        )
    ).run()
    contents = [await _object_bytes(store, key) for key in keys]
    return Erased(client_id=anna["client"], link=link, keys=keys, contents=contents)


async def _backed_up(
    settings: Settings, store: ObjectStore, clock: FakeClock
) -> tuple[Target, Point]:
    """A backup now, and its recovery point in the primary repository."""
    await do_backup(settings, store, clock)
    target = primary(configured(settings))
    return target, await choose_point(settings, target, None)


async def _erase_and_wait(
    settings: Settings, clock: FakeClock, client_id: int
) -> erasure.ErasureRequest:
    """The owner erases the client and the grace period passes."""
    request = await erasure.request_erasure(
        settings, kind="client", subject_id=client_id, actor="owner", source="staff", now=clock()
    )
    clock.advance(days=settings.privacy.erasure_grace_days, seconds=1)
    return request


async def _erase_and_purge(
    settings: Settings, store: ObjectStore, clock: FakeClock, client_id: int
) -> None:
    """The owner erases the client, the grace period passes, the daily purge runs."""
    await _erase_and_wait(settings, clock, client_id)
    assert await purge.purge_due(settings, store, clock()) == 1


async def _traces(database_url: str, needles: list[str], client_id: int) -> list[str]:
    """Every text or JSON value in every table of every registered app that contains a needle,
    and every foreign key to ``client`` still holding the client's id."""
    found = []
    conn = await asyncpg.connect(database_url)
    try:
        for table in purge.registered_tables():
            name = table._meta.tablename
            for column in table._meta.columns:
                column_name = column._meta.db_column_name
                if column.value_type in (str, dict, list) or column_name in ("details",):
                    for needle in needles:
                        hits = await conn.fetchval(
                            f"SELECT count(*) FROM {name} WHERE {column_name}::text ILIKE $1",  # noqa: S608
                            f"%{needle}%",
                        )
                        if hits:
                            found.append(f"{name}.{column_name} holds {needle!r}")
            for column in table._meta.foreign_key_columns:
                if column._foreign_key_meta.resolved_references is Client:
                    column_name = column._meta.db_column_name
                    hits = await conn.fetchval(
                        f"SELECT count(*) FROM {name} WHERE {column_name} = $1",  # noqa: S608
                        client_id,
                    )
                    if hits:
                        found.append(f"{name}.{column_name} refers to client {client_id}")
        hits = await conn.fetchval("SELECT count(*) FROM client WHERE id = $1", client_id)
        if hits:
            found.append(f"client {client_id} is still there")
    finally:
        await conn.close()
    return found


async def _store_traces(store: ObjectStore, keys: list[str], contents: list[bytes]) -> list[str]:
    found = []
    async for info in store.list(""):
        if info.key in keys:
            found.append(f"object {info.key} is still there")
        data = await _object_bytes(store, info.key)
        if any(content in data for content in contents):
            found.append(f"object {info.key} holds an erased photo's bytes")
    return found


def _folder_traces(folder: Path, contents: list[bytes]) -> list[str]:
    return [
        str(path)
        for path in folder.rglob("*")
        if path.is_file() and any(content in path.read_bytes() for content in contents)
    ]


async def test_a_purged_client_leaves_no_trace_in_any_table_object_or_mirror_copy(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
    database_url: str,
) -> None:
    """Erased at once (the link stops working), purged after the grace period: no table of
    any registered app, no object and no mirror copy holds Anna's name, address, id or photos,
    Ben is untouched, and a deletion record with counts remains."""
    from tests.integration.test_languages import send_favourites
    from tests.integration.test_privacy_requests import ask

    anna = await _anna_and_ben(client, app, admin, clock)
    store = app.state.store
    # Staff are told of her favourites (her name in a message to them); she asks for a copy
    # of her data through her link (her address in the audit log).
    photo = await Photo.select(Photo.id).where(Photo.original_key == anna.keys[0]).first().run()
    assert photo is not None
    await send_favourites(app, anna.link, photo["id"])
    assert await OutboxMessage.count().where(OutboxMessage.about != "").run() >= 1
    async with visitor(app) as browser:
        assert (await ask(browser, anna.link, "copy")).status_code in (200, 303)
    assert await _addresses_about(database_url, anna.client_id) > 0
    await do_backup(backup_settings, store, clock)  # the mirror now holds Anna's photos
    mirror = backup_settings.data_dir / "backup" / "mirror" / "objects"
    assert _folder_traces(mirror, anna.contents)

    request = await erasure.request_erasure(
        backup_settings,
        kind="client",
        subject_id=anna.client_id,
        actor="owner",
        source="staff",
        now=clock(),
    )
    async with visitor(app) as browser:
        opened = await browser.get(anna.link)
    assert opened.status_code in (403, 404, 410), opened.status_code
    assert await erasure.is_erased("client", anna.client_id)

    # Not yet: the grace period still runs.
    assert await purge.purge_due(backup_settings, store, clock()) == 0
    clock.advance(days=backup_settings.privacy.erasure_grace_days, seconds=1)
    assert await purge.purge_due(backup_settings, store, clock()) == 1

    needles = [ANNA["name"], ANNA["email"], "Hauptstr", "film look", "+49 170"]
    assert await _traces(database_url, needles, anna.client_id) == []
    assert await _addresses_about(database_url, anna.client_id) == 0
    assert await _store_traces(store, anna.keys, anna.contents) == []
    assert _folder_traces(mirror, anna.contents) == []
    assert await Client.count().where(Client.name == BEN["name"]).run() == 1
    assert await Photo.count().run() == 1  # Ben's

    done = await erasure.get_request(request.id)
    assert done.state == "done"
    assert done.counts["client"] == 1
    assert done.counts["photo"] == 2
    assert done.counts["share_link"] == 1
    assert done.counts["outbox_message"] == 3  # hers, the favourites to staff, the receipt
    assert done.counts["objects"] == len(set(anna.keys))  # a mirror copy is not a second one
    entry = _purge_entry(backup_settings)
    assert entry["subject_id"] == anna.client_id
    assert set(entry["keys"]) >= set(anna.keys)
    assert ANNA["email"] not in ledger.ledger_path(backup_settings).read_text()


async def test_restoring_a_point_from_before_the_erasure_erases_the_client_again(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
    database_url: str,
) -> None:
    """A recovery point taken while Anna existed, restored after her purge: the ledger (also
    copied into the repository) erases her again, her photos are not written back, Ben stays."""
    anna = await _anna_and_ben(client, app, admin, clock)
    store = app.state.store
    target, point = await _backed_up(backup_settings, store, clock)

    await _erase_and_purge(backup_settings, store, clock, anna.client_id)
    assert await ledger.copy_to_repositories(backup_settings) == ["primary"]
    # A new machine: no local ledger; the repository's copy must be enough.
    ledger.ledger_path(backup_settings).unlink()

    await restore(backup_settings, store, target, point)

    needles = [ANNA["name"], ANNA["email"], "Hauptstr"]
    assert await _traces(database_url, needles, anna.client_id) == []
    assert await _store_traces(store, anna.keys, anna.contents) == []
    assert await Client.count().where(Client.name == BEN["name"]).run() == 1
    records = await ErasureRow.select().run()
    assert [(r["kind"], r["subject_id"], r["state"]) for r in records] == [
        ("client", anna.client_id, "done")
    ]
    assert json.loads(records[0]["progress"])["counts"]["client"] == 1
    entry = _purge_entry(backup_settings)
    assert entry["subject_id"] == anna.client_id
    assert entry["sequences"]["client_id_seq"] >= anna.client_id


async def test_a_second_request_is_the_same_request_and_cancelling_gives_the_link_back(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    settings: Settings,
) -> None:
    """Requested twice: one request. Cancelled within the grace period: the link opens again;
    after the grace period a cancellation is refused."""
    anna = await _anna_and_ben(client, app, admin, clock)
    first = await erasure.request_erasure(
        settings,
        kind="client",
        subject_id=anna.client_id,
        actor="owner",
        source="staff",
        now=clock(),
    )
    clock.advance(hours=1)
    second = await erasure.request_erasure(
        settings,
        kind="client",
        subject_id=anna.client_id,
        actor="owner",
        source="client",
        now=clock(),
    )
    assert second.id == first.id
    assert await ErasureRow.count().run() == 1
    from appliance.audit.service import Actor

    cancelled = await erasure.cancel_erasure(
        settings, first.id, actor=Actor(id=1, name="owner"), now=clock()
    )
    assert cancelled.state == "cancelled"
    assert not await erasure.is_erased("client", anna.client_id)
    async with visitor(app) as browser:
        opened = await browser.get(anna.link)
    assert opened.status_code == 200

    again = await erasure.request_erasure(
        settings,
        kind="client",
        subject_id=anna.client_id,
        actor="owner",
        source="staff",
        now=clock(),
    )
    assert again.id != first.id
    clock.advance(days=settings.privacy.erasure_grace_days, seconds=1)
    from appliance.errors import Conflict

    with pytest.raises(Conflict):
        await erasure.cancel_erasure(
            settings, again.id, actor=Actor(id=1, name="owner"), now=clock()
        )


async def test_erasing_a_client_that_does_not_exist_or_of_the_wrong_kind_is_refused(
    clean_db: None, settings: Settings, clock: FakeClock
) -> None:
    """A missing client, a staff id passed as a studio, a kind that is none: clear errors,
    nothing recorded."""
    from appliance.errors import InvalidInput, NotFound

    with pytest.raises(NotFound):
        await erasure.request_erasure(
            settings, kind="client", subject_id=4242, actor="owner", source="staff", now=clock()
        )
    with pytest.raises(InvalidInput):
        await erasure.request_erasure(
            settings, kind="studio", subject_id=1, actor="owner", source="staff", now=clock()
        )
    with pytest.raises(InvalidInput):
        await erasure.request_erasure(
            settings, kind="gallery", subject_id=1, actor="owner", source="staff", now=clock()
        )
    assert await ErasureRow.count().run() == 0


@pytest.mark.parametrize(
    ("days", "accepted"), [("0", False), ("1", True), ("29", True), ("30", False)]
)
def test_the_grace_period_must_end_within_thirty_days_of_the_request(
    days: str, accepted: bool
) -> None:
    """The purge runs daily after the grace period, so 30 days or more would break the
    policy's promise: such a setting stops start-up with the key named."""
    from appliance.config import ConfigError, load_settings

    environ = {"APPLIANCE_PRIVACY__ERASURE_GRACE_DAYS": days}
    if accepted:
        assert load_settings(environ=environ).privacy.erasure_grace_days == int(days)
    else:
        with pytest.raises(ConfigError, match="erasure_grace_days"):
            load_settings(environ=environ)


async def test_admin_confirms_a_deletion_that_names_what_goes_and_refuses_hostile_posts(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """The confirmation names the client and the records that go; a post without the CSRF
    token, for a client that does not exist, or for the studio without its typed name records
    nothing; the confirmed post makes the request, shown with its cancel button."""
    anna = await _anna_and_ben(client, app, admin, clock)
    page = await client.get(f"/admin/erasure/new?kind=client&subject={anna.client_id}")
    assert page.status_code == 200
    assert ANNA["name"] in page.text
    assert "2 photo" in page.text and "1 share_link" in page.text

    bare = await client.post(
        "/admin/erasure", data={"kind": "client", "subject_id": str(anna.client_id)}
    )
    assert bare.status_code == 403
    missing = await submit(
        client,
        f"/admin/erasure/new?kind=client&subject={anna.client_id}",
        {"kind": "client", "subject_id": "987654"},
        action="/admin/erasure",
    )
    assert missing.status_code == 404
    assert "no client #987654" in missing.text
    hostile = await client.get("/admin/erasure/new?kind=client&subject=1%20OR%201=1")
    assert hostile.status_code == 400
    studio = await submit(
        client,
        "/admin/erasure/new?kind=studio",
        {"kind": "studio", "subject_id": "", "confirm": "not the name"},
        action="/admin/erasure",
    )
    assert studio.status_code == 400
    assert "Type the studio's name" in studio.text
    # A client's id sent as a staff id names the owner here: the owner cannot erase themself.
    from appliance.accounts.tables import StaffUser

    owner = await StaffUser.select(StaffUser.id).where(StaffUser.username == "owner").first().run()
    assert owner is not None and owner["id"] == anna.client_id
    own = await submit(
        client,
        f"/admin/erasure/new?kind=client&subject={anna.client_id}",
        {"kind": "staff", "subject_id": str(anna.client_id)},
        action="/admin/erasure",
    )
    assert own.status_code == 409
    assert "your own account" in own.text
    assert await ErasureRow.count().run() == 0

    done = await submit(
        client,
        f"/admin/erasure/new?kind=client&subject={anna.client_id}",
        {"kind": "client", "subject_id": str(anna.client_id)},
        action="/admin/erasure",
    )
    assert done.status_code == 303
    listing = await client.get("/admin/erasure")
    assert f"client #{anna.client_id}" in listing.text
    assert "/cancel" in listing.text
    assert ANNA["name"] not in listing.text
    assert await erasure.is_erased("client", anna.client_id)


async def test_an_erased_staff_member_is_signed_out_refused_and_then_purged(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, database_url: str
) -> None:
    """Erasing a photographer ends their sessions and refuses their password at once; the purge
    removes their account, recovery codes and sessions, and the audit log still verifies."""
    from appliance.accounts import service as accounts
    from appliance.accounts.tables import StaffSession, StaffUser
    from appliance.audit.service import Actor, verify_chain
    from appliance.clients import service as clients
    from appliance.clients.service import ClientDetails
    from tests.conftest import make_client
    from tests.integration.flows import sign_in

    settings = app.state.settings
    password = "amber meadow violin 77 cedar"
    member = await accounts.create_user(
        username="carla",
        email="carla@studio.example",
        display_name="Carla Reyes",
        role="photographer",
        password=password,
        settings=settings,
        now=clock(),
        actor=Actor(id=None, name="test"),
        address="test",
    )
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
    assert await _traces(database_url, ["carla"], -1) == []
    assert await _throttled(database_url, "carla") == 0
    assert (await verify_chain()).intact
    await _views_stay_in_the_clients_trail(database_url, member.id, dora.id)


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


async def _count(database_url: str, sql: str, *args: object) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def _addresses_about(database_url: str, client_id: int) -> int:
    """Audit entries about the client or her privacy requests that still hold an address."""
    sql = (
        "SELECT count(*) FROM audit_entry WHERE address <> '' AND (target = $1"
        " OR target LIKE 'privacy_request:%')"
    )
    return await _count(database_url, sql, f"client:{client_id}")


async def _throttled(database_url: str, username: str) -> int:
    from appliance.accounts.throttle import account_key

    sql = "SELECT count(*) FROM login_throttle WHERE key = $1"
    return await _count(database_url, sql, account_key(username))


async def _audit_mentions(database_url: str, needle: str) -> int:
    sql = "SELECT count(*) FROM audit_entry WHERE actor = $1 OR target ILIKE $2 OR details ILIKE $2"
    return await _count(database_url, sql, needle, f"%{needle}%")


async def test_rewriting_the_backups_cuts_a_purged_clients_photos_out_of_every_point(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
) -> None:
    """After the purge, rewrite-backups leaves no byte of Anna's photos in the repository's
    points (restored into scratch to look), keeps Ben's, and the restore drill still passes;
    someone not purged is refused."""
    from appliance.backups.drill import run_drill
    from appliance.errors import InvalidInput

    anna = await _anna_and_ben(client, app, admin, clock)
    store = app.state.store
    await do_backup(backup_settings, store, clock)
    target = primary(configured(backup_settings))
    with pytest.raises(InvalidInput):
        await ledger.rewrite_backups(backup_settings, kind="client", subject_id=anna.client_id)
    await _erase_and_purge(backup_settings, store, clock, anna.client_id)

    done = await ledger.rewrite_backups(backup_settings, kind="client", subject_id=anna.client_id)
    assert done == {"primary": len(set(anna.keys))}

    point = await choose_point(backup_settings, target, None)
    outcome = await restore(backup_settings, store, target, point, into_scratch=True)
    assert outcome.folder is not None
    try:
        assert _folder_traces(outcome.folder, anna.contents) == []
        ben = await Photo.select(Photo.original_key).first().run()
        assert ben is not None
        assert list(outcome.folder.rglob(Path(ben["original_key"]).name))
    finally:
        conn = await asyncpg.connect(backup_settings.database.url)
        try:
            await conn.execute(f'DROP DATABASE "{outcome.database}" WITH (FORCE)')
        finally:
            await conn.close()
        shutil.rmtree(outcome.folder)
    drill = await run_drill(backup_settings, target, now=clock)
    assert drill.passed, drill.failure


async def test_erasing_the_whole_studio_keeps_only_the_admin_who_asked(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """With the studio's name typed, every link stops at once; after the grace period every
    client, gallery, photo and object is gone, and the admin who asked can still work."""
    from appliance.accounts.tables import StaffUser
    from appliance.privacy.tables import AffectedPerson, SecurityIncident
    from appliance.setup import service as setup

    anna = await _anna_and_ben(client, app, admin, clock)
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


async def test_reapplying_the_studio_erasure_spares_everyone_created_since(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, database_url: str
) -> None:
    """The ledger re-applies the whole studio's erasure only up to the ids it reached: a
    client, a staff member and an e-mail made after the purge (as after a restore) stay."""
    from appliance.accounts.tables import StaffUser

    await _anna_and_ben(client, app, admin, clock)
    settings = app.state.settings
    owner = await StaffUser.select(StaffUser.id).where(StaffUser.username == "owner").first().run()
    assert owner is not None
    await erasure.request_erasure(
        settings,
        kind="studio",
        subject_id=None,
        actor="owner",
        source="staff",
        now=clock(),
        actor_id=owner["id"],
    )
    clock.advance(days=settings.privacy.erasure_grace_days, seconds=1)
    assert await purge.purge_due(settings, app.state.store, clock()) == 1
    assert await Client.count().run() == 0

    await Client.insert(
        Client(name="Dora New", email="dora@example.org", created_at=clock(), updated_at=clock())
    ).run()
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO staff_user (username, email, display_name, role, password_hash,"
            " is_active, password_changed_at, created_at) SELECT 'erik', 'erik@studio.example',"
            " 'Erik', role, password_hash, TRUE, created_at, created_at FROM staff_user"
            " WHERE id = $1",
            owner["id"],
        )
    finally:
        await conn.close()
    await OutboxMessage.insert(
        OutboxMessage(
            kind="email",
            recipient="dora@example.org",
            subject="Welcome",
            next_attempt_at=clock(),
            created_at=clock(),
        )
    ).run()

    assert await ledger.reapply(settings, app.state.store, clock()) == 1
    assert [r["name"] for r in await Client.select(Client.name).run()] == ["Dora New"]
    staff = {r["username"] for r in await StaffUser.select(StaffUser.username).run()}
    assert staff == {"owner", "erik"}
    assert await OutboxMessage.count().where(OutboxMessage.recipient == "dora@example.org").run()


async def test_a_purge_another_run_is_carrying_out_is_skipped(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, database_url: str
) -> None:
    """While another run holds the request's purge lock, the daily job leaves the request
    alone (nothing deleted twice); once the lock is free it purges it."""
    anna = await _anna_and_ben(client, app, admin, clock)
    settings = app.state.settings
    request = await _erase_and_wait(settings, clock, anna.client_id)
    other = await asyncpg.connect(database_url)
    try:
        assert await other.fetchval(
            "SELECT pg_try_advisory_lock($1, $2)", purge.PURGE_LOCK, request.id
        )
        assert await purge.purge_due(settings, app.state.store, clock()) == 0
        assert await Client.count().where(Client.id == anna.client_id).run() == 1
        assert (await erasure.get_request(request.id)).state == "pending"
    finally:
        await other.close()
    assert await purge.purge_due(settings, app.state.store, clock()) == 1
    assert await Client.count().where(Client.id == anna.client_id).run() == 0


async def test_restoring_a_point_from_before_a_pending_request_keeps_the_request(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
) -> None:
    """A request still in its grace period when an older point is restored is made again
    from the ledger, with its original purge date; a cancelled one is not."""
    anna = await _anna_and_ben(client, app, admin, clock)
    store = app.state.store
    target, point = await _backed_up(backup_settings, store, clock)
    request = await erasure.request_erasure(
        backup_settings,
        kind="client",
        subject_id=anna.client_id,
        actor="owner",
        source="staff",
        now=clock(),
    )

    await restore(backup_settings, store, target, point)

    rows = await ErasureRow.select().run()
    assert [(r["kind"], r["subject_id"], r["state"]) for r in rows] == [
        ("client", anna.client_id, "pending")
    ]
    assert rows[0]["purge_after"] == request.purge_after
    async with visitor(app) as browser:
        assert (await browser.get(anna.link)).status_code in (403, 404, 410)

    from appliance.audit.service import Actor

    await erasure.cancel_erasure(
        backup_settings, rows[0]["id"], actor=Actor(id=None, name="owner"), now=clock()
    )
    await restore(backup_settings, store, target, point)
    assert await ErasureRow.count().run() == 0
    assert not await erasure.is_erased("client", anna.client_id)


def _purge_entry(settings: Settings) -> dict[str, Any]:
    """The ledger's line of the purge (the request's own line comes first)."""
    purged = [e for e in ledger.entries(settings) if e.get("state") is None]
    assert len(purged) == 1, ledger.entries(settings)
    return purged[0]
