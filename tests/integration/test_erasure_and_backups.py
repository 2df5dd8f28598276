"""Erasure and the backups: a restore re-applies the erasure ledger, and rewriting the backups
cuts a purged client's photos out of every point (real PostgreSQL, the filesystem store, real
restic)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import asyncpg
import httpx
import pytest
from litestar import Litestar

from appliance.backups.repositories import configured, primary
from appliance.backups.restore import choose_point, restore
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
    backed_up,
    erase_and_purge,
    folder_traces,
    purge_entry,
    store_traces,
    traces,
)
from tests.integration.erasure_flows import fresh_ledger as fresh_ledger  # autouse
from tests.integration.flows import Admin
from tests.integration.sharing_flows import visitor
from tests.integration.test_clients import ANNA, BEN

backup_settings = test_backups.backup_settings  # the fixture: a repository of the test's own


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
    anna = await anna_and_ben(client, app, admin, clock)
    store = app.state.store
    target, point = await backed_up(backup_settings, store, clock)

    await erase_and_purge(backup_settings, store, clock, anna.client_id)
    assert await ledger.copy_to_repositories(backup_settings) == ["primary"]
    # A new machine: no local ledger; the repository's copy must be enough.
    ledger.ledger_path(backup_settings).unlink()

    await restore(backup_settings, store, target, point)

    needles = [ANNA["name"], ANNA["email"], "Hauptstr"]
    assert await traces(database_url, needles, anna.client_id) == []
    assert await store_traces(store, anna.keys, anna.contents) == []
    assert await Client.count().where(Client.name == BEN["name"]).run() == 1
    records = await ErasureRow.select().run()
    assert [(r["kind"], r["subject_id"], r["state"]) for r in records] == [
        ("client", anna.client_id, "done")
    ]
    assert json.loads(records[0]["progress"])["counts"]["client"] == 1
    entry = purge_entry(backup_settings)
    assert entry["subject_id"] == anna.client_id
    assert entry["sequences"]["client_id_seq"] >= anna.client_id


async def test_restoring_a_point_from_before_a_pending_request_keeps_the_request(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
) -> None:
    """A request still in its grace period when an older point is restored is made again
    from the ledger, with its original purge date; a cancelled one is not."""
    anna = await anna_and_ben(client, app, admin, clock)
    store = app.state.store
    target, point = await backed_up(backup_settings, store, clock)
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


async def test_reapplying_the_studio_erasure_spares_everyone_created_since(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, database_url: str
) -> None:
    """The ledger re-applies the whole studio's erasure only up to the ids it reached: a
    client, a staff member and an e-mail made after the purge (as after a restore) stay."""
    from appliance.accounts.tables import StaffUser

    await anna_and_ben(client, app, admin, clock)
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

    anna = await anna_and_ben(client, app, admin, clock)
    store = app.state.store
    await do_backup(backup_settings, store, clock)
    target = primary(configured(backup_settings))
    with pytest.raises(InvalidInput):
        await ledger.rewrite_backups(backup_settings, kind="client", subject_id=anna.client_id)
    await erase_and_purge(backup_settings, store, clock, anna.client_id)

    done = await ledger.rewrite_backups(backup_settings, kind="client", subject_id=anna.client_id)
    assert done == {"primary": len(set(anna.keys))}

    point = await choose_point(backup_settings, target, None)
    outcome = await restore(backup_settings, store, target, point, into_scratch=True)
    assert outcome.folder is not None
    try:
        assert folder_traces(outcome.folder, anna.contents) == []
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
