"""A restore against the erasure ledger's history: a request cancelled since the point stays
cancelled, and files kept on legal hold are in every point (real PostgreSQL, the filesystem
store, real restic)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from litestar import Litestar

from appliance.audit.service import Actor
from appliance.backups.recovery import MANIFEST_NAME
from appliance.backups.repositories import backup_dir
from appliance.backups.restore import restore
from appliance.clients.tables import Client
from appliance.config import Settings
from appliance.galleries.tables import Gallery, Photo, ShareLink
from appliance.privacy import erasure, holds, ledger, purge
from appliance.privacy.tables import ErasureRequest as ErasureRow
from appliance.privacy.tables import LegalHold
from tests.conftest import FakeClock
from tests.integration import test_backups
from tests.integration.erasure_flows import (
    Erased,
    anna_and_ben,
    backed_up,
    erase_and_purge,
    object_bytes,
)
from tests.integration.erasure_flows import fresh_ledger as fresh_ledger  # autouse
from tests.integration.flows import Admin
from tests.integration.sharing_flows import visitor

backup_settings = test_backups.backup_settings  # the fixture: a repository of the test's own
OWNER = Actor(id=None, name="owner")


async def _request(settings: Settings, anna: Erased, now: dt.datetime) -> erasure.ErasureRequest:
    return await erasure.request_erasure(
        settings, kind="client", subject_id=anna.client_id, actor="owner", source="staff", now=now
    )


async def _anna_is_kept(settings: Settings, app: Litestar, anna: Erased, clock: FakeClock) -> None:
    """Anna is not being erased, her link opens again, and the purge leaves her be."""
    assert not await erasure.is_erased("client", anna.client_id)
    assert not ledger.reapply_pending(settings)
    revoked = ShareLink.select(ShareLink.id).where(ShareLink.revoked_at.is_not_null())
    assert await revoked.run() == []
    async with visitor(app) as browser:
        assert (await browser.get(anna.link)).status_code == 200
    clock.advance(days=settings.privacy.erasure_grace_days + 1)
    assert await purge.purge_due(settings, app.state.store, clock()) == 0
    assert await Client.count().where(Client.id == anna.client_id).run() == 1


@pytest.mark.parametrize("restored_after_grace", [False, True])
async def test_a_request_cancelled_after_the_point_stays_cancelled_after_the_restore(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
    restored_after_grace: bool,
) -> None:
    """Anna's erasure is requested, a point is taken during the grace period, the request is
    cancelled: the restored point shows it pending, and the restore cancels it again, giving
    her link back, so no purge deletes her; also when the grace period it had in the point
    is over by the time of the restore."""
    anna = await anna_and_ben(client, app, admin, clock)
    store = app.state.store
    grace = dt.timedelta(days=backup_settings.privacy.erasure_grace_days)
    # The restore runs at the real time; a request made longer ago than the grace period
    # is past its purge date there.
    requested_at = clock() - grace - dt.timedelta(days=1) if restored_after_grace else clock()
    request = await _request(backup_settings, anna, requested_at)
    target, point = await backed_up(backup_settings, store, clock)
    await erasure.cancel_erasure(
        backup_settings, request.id, actor=OWNER, now=requested_at + dt.timedelta(hours=1)
    )

    await restore(backup_settings, store, target, point)

    (row,) = await ErasureRow.select().run()
    assert (row["state"], row["open_key"]) == ("cancelled", None)
    assert row["requested_at"] == requested_at
    assert row["cancelled_at"] is not None and row["cancelled_at"] < row["purge_after"]
    # The ledger's line for the cancellation is not written twice.
    states = [e.get("state") for e in ledger.entries(backup_settings)]
    assert states == ["requested", "cancelled"]
    await _anna_is_kept(backup_settings, app, anna, clock)


async def test_a_request_cancelled_and_made_again_after_the_point_is_pending_once(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
) -> None:
    """Cancelled after the point and requested anew: the restore cancels the restored first
    request and makes the second again with its own time and purge date, the only one open."""
    anna = await anna_and_ben(client, app, admin, clock)
    store = app.state.store
    first = await _request(backup_settings, anna, clock())
    target, point = await backed_up(backup_settings, store, clock)
    clock.advance(hours=1)
    await erasure.cancel_erasure(backup_settings, first.id, actor=OWNER, now=clock())
    clock.advance(hours=1)
    second = await _request(backup_settings, anna, clock())

    await restore(backup_settings, store, target, point)

    rows = await ErasureRow.select().order_by(ErasureRow.requested_at).run()
    assert [(r["requested_at"], r["state"]) for r in rows] == [
        (first.requested_at, "cancelled"),
        (second.requested_at, "pending"),
    ]
    assert rows[1]["purge_after"] == second.purge_after
    assert await erasure.is_erased("client", anna.client_id)
    clock.advance(days=backup_settings.privacy.erasure_grace_days, seconds=1)
    assert await purge.purge_due(backup_settings, store, clock()) == 1
    assert await Client.count().where(Client.id == anna.client_id).run() == 0


async def test_a_point_taken_in_the_grace_period_restores_a_full_deletion_record(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
) -> None:
    """A point taken while Anna's request waited, restored after her purge: the re-applied
    purge's counts become the restored request's deletion record, as the purge wrote it."""
    anna = await anna_and_ben(client, app, admin, clock)
    store = app.state.store
    request = await _request(backup_settings, anna, clock())
    target, point = await backed_up(backup_settings, store, clock)
    clock.advance(days=backup_settings.privacy.erasure_grace_days, seconds=1)
    assert await purge.purge_due(backup_settings, store, clock()) == 1
    purged = await erasure.get_request(request.id)

    await restore(backup_settings, store, target, point)

    (row,) = await ErasureRow.select().run()
    assert row["state"] == "done"
    record = json.loads(row["progress"])
    assert record["counts"]["client"] == 1
    assert record["counts"]["photo"] == purged.counts["photo"] == 2
    assert set(record) == {"steps", "counts"}


@pytest.fixture
def photos_are_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """Photos stand in for a declared record with a file (an invoice and its PDF)."""
    monkeypatch.setattr(holds, "_RULES", {})
    holds.keep(Photo, reason="Invoice documents, §147 AO", years=10, since="created_at")


@pytest.mark.usefixtures("photos_are_held")
async def test_files_kept_on_legal_hold_are_in_the_point_and_come_back_with_it(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
) -> None:
    """Anna's purge keeps her (stand-in) records on legal hold with their files: the next
    point holds those files, with the record's content type, and after the store is lost the
    restore brings back the held copies and their files, byte for byte."""
    anna = await anna_and_ben(client, app, admin, clock)
    store = app.state.store
    held_photos = await Photo.select().where(Photo.gallery.client == anna.client_id).run()
    keys = {p[k]: p["content_type"] for p in held_photos for k in ("original_key", "thumb_key")}
    contents = {key: await object_bytes(store, key) for key in keys}
    await erase_and_purge(backup_settings, store, clock, anna.client_id)
    assert await LegalHold.count().run() == 2

    target, point = await backed_up(backup_settings, store, clock)
    manifest = json.loads((backup_dir(backup_settings) / "mirror" / MANIFEST_NAME).read_text())
    in_point = {o["key"]: o["content_type"] for o in manifest["objects"]}
    assert {key: in_point.get(key) for key in keys} == keys
    assert manifest["missing"] == []

    for key in [info.key async for info in store.list("")]:
        await store.delete(key)  # the disk is lost
    await restore(backup_settings, store, target, point)

    assert await LegalHold.count().run() == 2
    assert {key: await object_bytes(store, key) for key in keys} == contents
    assert await Gallery.count().where(Gallery.client == anna.client_id).run() == 0


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.mark.usefixtures("clean_db")
async def test_a_held_record_s_values_that_name_no_object_do_not_stop_the_backup(
    clock: FakeClock, backup_settings: Settings, app: Litestar
) -> None:
    """A held record's file is backed up with the record's content type, while its other
    ``*_key`` values that are no object key (a chunk's "12:3", a path out of the store, none
    at all) are not taken for files: the point is made and lacks nothing."""
    store = app.state.store
    await store.put("invoices/2027/1.pdf", _once(b"%PDF-1.7"), content_type="application/pdf")
    record = {
        "pdf_key": "invoices/2027/1.pdf",
        "content_type": "application/pdf",
        "chunk_key": "12:3",
        "up_key": "../secrets",
        "blob_key": None,
    }
    await LegalHold.insert(
        LegalHold(
            kind="client",
            subject_id=7,
            table_name="invoice",
            record_id=1,
            reason="Invoices, §147 AO",
            record=json.dumps(record),
            created_at=clock(),
            expires_at=clock() + dt.timedelta(days=3650),
        )
    ).run()

    await backed_up(backup_settings, store, clock)

    manifest = json.loads((backup_dir(backup_settings) / "mirror" / MANIFEST_NAME).read_text())
    objects = [(o["key"], o["content_type"]) for o in manifest["objects"]]
    assert objects == [("invoices/2027/1.pdf", "application/pdf")]
    assert manifest["missing"] == []
