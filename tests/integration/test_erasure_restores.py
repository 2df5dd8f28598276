"""Files kept on legal hold are in every recovery point and come back with a restore (real
PostgreSQL, the filesystem store, real restic)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from litestar import Litestar

from appliance.backups.recovery import MANIFEST_NAME
from appliance.backups.repositories import backup_dir
from appliance.backups.restore import restore
from appliance.config import Settings
from appliance.galleries.tables import Gallery, Photo
from appliance.privacy import holds
from appliance.privacy.tables import LegalHold
from tests.conftest import FakeClock
from tests.integration import test_backups
from tests.integration.erasure_flows import (
    anna_and_ben,
    backed_up,
    erase_and_purge,
    object_bytes,
)
from tests.integration.erasure_flows import fresh_ledger as fresh_ledger  # autouse
from tests.integration.flows import Admin

backup_settings = test_backups.backup_settings  # the fixture: a repository of the test's own


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
