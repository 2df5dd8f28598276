"""Erasure of a client: unreachable at once, purged for good after the grace period, asked for
twice or cancelled, refused for hostile input (real PostgreSQL, the filesystem store, real restic).

Erasure of staff and of the whole studio is in test_erasure_of_staff_and_studio.py, restores
and rewritten backups in test_erasure_and_backups.py."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from litestar import Litestar

from appliance.backups.service import do_backup
from appliance.clients.tables import Client
from appliance.config import Settings
from appliance.galleries.tables import Photo
from appliance.notify.tables import OutboxMessage
from appliance.privacy import erasure, ledger, purge
from appliance.privacy.tables import ErasureRequest as ErasureRow
from tests.conftest import FakeClock
from tests.integration import test_backups
from tests.integration.erasure_flows import (
    anna_and_ben,
    count,
    erase_and_wait,
    folder_traces,
    purge_entry,
    store_traces,
    traces,
)
from tests.integration.erasure_flows import fresh_ledger as fresh_ledger  # autouse
from tests.integration.flows import Admin, submit
from tests.integration.sharing_flows import visitor
from tests.integration.test_clients import ANNA, BEN

backup_settings = test_backups.backup_settings  # the fixture: a repository of the test's own


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

    anna = await anna_and_ben(client, app, admin, clock)
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
    assert folder_traces(mirror, anna.contents)

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
    assert await traces(database_url, needles, anna.client_id) == []
    assert await _addresses_about(database_url, anna.client_id) == 0
    assert await store_traces(store, anna.keys, anna.contents) == []
    assert folder_traces(mirror, anna.contents) == []
    assert await Client.count().where(Client.name == BEN["name"]).run() == 1
    assert await Photo.count().run() == 1  # Ben's

    done = await erasure.get_request(request.id)
    assert done.state == "done"
    assert done.counts["client"] == 1
    assert done.counts["photo"] == 2
    assert done.counts["share_link"] == 1
    assert done.counts["outbox_message"] == 3  # hers, the favourites to staff, the receipt
    assert done.counts["objects"] == len(set(anna.keys))  # a mirror copy is not a second one
    entry = purge_entry(backup_settings)
    assert entry["subject_id"] == anna.client_id
    assert set(entry["keys"]) >= set(anna.keys)
    assert ANNA["email"] not in ledger.ledger_path(backup_settings).read_text()


async def test_a_second_request_is_the_same_request_and_cancelling_gives_the_link_back(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    settings: Settings,
) -> None:
    """Requested twice: one request. Cancelled within the grace period: the link opens again;
    after the grace period a cancellation is refused."""
    anna = await anna_and_ben(client, app, admin, clock)
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
    anna = await anna_and_ben(client, app, admin, clock)
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


async def test_a_purge_another_run_is_carrying_out_is_skipped(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, database_url: str
) -> None:
    """While another run holds the request's purge lock, the daily job leaves the request
    alone (nothing deleted twice); once the lock is free it purges it."""
    anna = await anna_and_ben(client, app, admin, clock)
    settings = app.state.settings
    request = await erase_and_wait(settings, clock, anna.client_id)
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


async def _addresses_about(database_url: str, client_id: int) -> int:
    """Audit entries about the client or her privacy requests that still hold an address."""
    sql = (
        "SELECT count(*) FROM audit_entry WHERE address <> '' AND (target = $1"
        " OR target LIKE 'privacy_request:%')"
    )
    return await count(database_url, sql, f"client:{client_id}")
