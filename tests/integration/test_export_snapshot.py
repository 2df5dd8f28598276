"""An export reads its records from one snapshot, and lets go of it before the photos: writing
a client's photos can take an hour, and a snapshot held that long holds back vacuum on every
table. A photo deleted meanwhile is left out and said so, not a failed export (a file the
store lost while its record names it still fails one: test_exports)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import asyncpg
import pytest

from appliance.config import Settings
from appliance.exports import service
from appliance.galleries.tables import Photo
from appliance.storage.base import ObjectInfo
from appliance.storage.filesystem import FilesystemStore
from tests.conftest import FakeClock
from tests.integration.test_exports import archive_of, client_with_photos, manifest_of, staff_user

pytestmark = pytest.mark.usefixtures("clean_db")


async def open_snapshots(database_url: str) -> int:
    """Connections to the database, other than this one, inside a transaction."""
    connection = await asyncpg.connect(database_url)
    try:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
            )
        )
    finally:
        await connection.close()


class WatchedStore(FilesystemStore):
    """A store that notes, as each photo is about to be written, how many snapshots are open;
    and can delete one photo just before, as staff might meanwhile."""

    def __init__(self, root: Path, database_url: str) -> None:
        super().__init__(root)
        self.database_url = database_url
        self.snapshots: list[int] = []
        self.vanish: str = ""

    async def stat(self, key: str) -> ObjectInfo:
        if key.startswith("originals/"):
            self.snapshots.append(await open_snapshots(self.database_url))
            if key == self.vanish:  # staff delete the photo: its row, then its file
                await Photo.delete().where(Photo.original_key == key)
                await self.delete(key)
        return await super().stat(key)


@pytest.fixture
async def store(database_url: str, tmp_path: Path) -> WatchedStore:
    watched = WatchedStore(tmp_path / "objects", database_url)
    await watched.ensure_ready()
    return watched


async def export_of_three_photos(
    settings: Settings, store: WatchedStore, clock: FakeClock
) -> tuple[service.ExportJob, list[bytes]]:
    """Anna, with a gallery of three photos, and her export queued."""
    owner = await staff_user("olivia", clock())
    photos = [secrets.token_bytes(50_000) for _ in range(3)]
    anna, _ = await client_with_photos(store, owner, "Anna Berg", photos, clock())
    job = await service.request_export(
        settings, kind="client", subject_id=anna, actor=owner, source="staff", now=clock()
    )
    return job, photos


async def test_the_snapshot_ends_before_the_photos_are_written(
    settings: Settings, store: WatchedStore, clock: FakeClock
) -> None:
    job, photos = await export_of_three_photos(settings, store, clock)

    assert await service.run_pending(settings, store, clock()) == 1

    assert (await service.get_export(job.id)).state == "ready"
    assert store.snapshots == [0, 0, 0]
    archive = await archive_of(store, job.id)
    assert sorted(archive.read(n) for n in archive.namelist() if n.startswith("photos/")) == sorted(
        photos
    )


async def test_a_photo_deleted_while_the_export_runs_is_left_out_and_said_so(
    settings: Settings, store: WatchedStore, clock: FakeClock
) -> None:
    job, _ = await export_of_three_photos(settings, store, clock)
    keys = sorted([info.key async for info in store.list("originals/")])
    store.vanish = keys[1]

    assert await service.run_pending(settings, store, clock()) == 1

    done = await service.get_export(job.id)
    assert done.state == "ready" and done.files == 2
    archive = await archive_of(store, job.id)
    assert archive.testzip() is None
    written = [n for n in archive.namelist() if n.startswith("photos/")]
    assert len(written) == 2
    assert set(manifest_of(archive)) >= set(written)
    # The records were read before the photo went: they still list all three.
    rows = json.loads(archive.read("data/photo.json"))
    assert sorted(row["original_key"] for row in rows) == keys
    summary = archive.read("summary.html").decode()
    assert "2 photos" in summary
    assert "1 photo was deleted while this archive was being made" in summary
