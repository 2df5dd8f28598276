"""Recovery points, retention, drills and restores against real restic and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
from litestar import Litestar

from appliance.backups import jobs
from appliance.backups.drill import run_drill
from appliance.backups.pgtools import with_database
from appliance.backups.points import complete_points
from appliance.backups.repositories import TAG, configured, primary, restic_for
from appliance.backups.restic import RepositoryMissing
from appliance.backups.restore import choose_point, restore
from appliance.backups.service import JobFailed, do_backup, do_drill, run_job
from appliance.backups.tables import BackupJob, DrillReport, RecoveryPointCopy
from appliance.config import BackupSettings, Settings
from appliance.galleries.tables import Photo
from appliance.storage.base import StorageError
from appliance.storage.filesystem import FilesystemStore
from appliance.storage.s3 import S3Store
from tests.conftest import FakeClock, S3Server
from tests.integration.flows import Admin
from tests.integration.sharing_flows import published_gallery
from tests.integration.test_clients import ANNA, signed_in_owner


@pytest.fixture
def backup_settings(settings: Settings, tmp_path: Path) -> Settings:
    """The suite's settings with a repository and password of this test's own."""
    repository = {"name": "primary", "url": str(tmp_path / "repository")}
    backups = msgspec.convert(
        {"password_file": str(tmp_path / "password"), "repositories": [repository]},
        type=type(settings.backups),
    )
    return msgspec.structs.replace(settings, backups=backups)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _photos_with_originals(app: Litestar) -> dict[str, bytes]:
    store = app.state.store
    found = {}
    for row in await Photo.select(Photo.original_key).run():
        found[row["original_key"]] = b"".join([c async for c in store.get(row["original_key"])])
    return found


async def test_point_holds_dump_objects_and_manifest_and_drill_passes(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
) -> None:
    """A point stores both parts under one id; its manifest counts every table's rows and
    names every object with its digest; the drill restores it and passes every check."""
    await signed_in_owner(client, admin, clock)
    await published_gallery(client, app, clock, ANNA, ["a.jpg", "b.jpg", "c.jpg"])
    originals = await _photos_with_originals(app)
    result = await do_backup(backup_settings, app.state.store, clock)

    target = primary(configured(backup_settings))
    restic = restic_for(backup_settings, target)
    points = complete_points(await restic.snapshots(tags=[TAG]))
    assert [p.point_id for p in points] == [result["point_id"]]
    manifest = json.loads(
        (backup_settings.data_dir / "backup" / "mirror" / "manifest.json").read_text()
    )
    assert manifest["row_counts"]["photo"] == 3
    assert manifest["row_counts"]["gallery"] == 1
    by_key = {o["key"]: o for o in manifest["objects"]}
    assert len(by_key) == 9  # three originals, three thumbnails, three previews
    for key, data in originals.items():
        assert by_key[key]["sha256"] == hashlib.sha256(data).hexdigest()
        assert by_key[key]["size"] == len(data)
    rows = await RecoveryPointCopy.select().run()
    assert [r["point_id"] for r in rows] == [result["point_id"]]

    drill = await run_drill(backup_settings, target, now=clock)
    assert drill.passed, drill.failure
    names = [c["check"] for c in drill.checks]
    assert {"row counts", "migrations current", "sampled objects match their SHA-256"} <= set(names)
    sampled = next(c for c in drill.checks if c["check"].startswith("sampled"))
    assert sampled["detail"]["sampled"] == 9
    # The scratch database is gone afterwards.
    conn = await asyncpg.connect(backup_settings.database.url)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'appliance_drill_%'"
        )
    finally:
        await conn.close()
    assert left == 0


async def test_drill_fails_closed_when_an_object_was_damaged_in_the_repository(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
) -> None:
    """A byte flipped inside a pack: the drill fails (its restore or its digest check)."""
    await signed_in_owner(client, admin, clock)
    await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    await do_backup(backup_settings, app.state.store, clock)
    data = Path(backup_settings.backups.repositories[0].url) / "data"
    pack = max(data.rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    pack.chmod(0o600)
    pack.write_bytes(bytes(raw))
    drill = await run_drill(backup_settings, primary(configured(backup_settings)), now=clock)
    assert not drill.passed
    assert drill.failure


async def test_restore_into_scratch_gives_the_same_rows_and_bytes_beside_live_data(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
) -> None:
    """--into-scratch: a database of its own with the same photo rows, a folder with
    byte-identical originals; the live database is untouched."""
    await signed_in_owner(client, admin, clock)
    await published_gallery(client, app, clock, ANNA, ["a.jpg", "b.jpg"])
    originals = await _photos_with_originals(app)
    live = await Photo.select(Photo.id, Photo.original_key, Photo.sha256).order_by(Photo.id).run()
    await do_backup(backup_settings, app.state.store, clock)
    target = primary(configured(backup_settings))
    point = await choose_point(backup_settings, target, None)

    outcome = await restore(backup_settings, app.state.store, target, point, into_scratch=True)
    assert outcome.folder is not None
    url = backup_settings.database.url
    conn = await asyncpg.connect(with_database(url, outcome.database))
    try:
        rows = await conn.fetch("SELECT id, original_key, sha256 FROM photo ORDER BY id")
    finally:
        await conn.close()
    assert [dict(r) for r in rows] == live
    objects = next(outcome.folder.rglob("objects"))
    for key, data in originals.items():
        assert (objects / key).read_bytes() == data
    assert await Photo.count().run() == 2
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP DATABASE "{outcome.database}" WITH (FORCE)')
    finally:
        await conn.close()
    shutil.rmtree(outcome.folder)


async def test_jobs_run_once_and_a_dead_workers_job_is_taken_again(
    clean_db: None, backup_settings: Settings, clock: FakeClock, app: Litestar
) -> None:
    now = clock()
    assert await jobs.enqueue("check", "check:primary:x", now, repository="primary")
    assert not await jobs.enqueue("check", "check:primary:x", now, repository="primary")
    first = await jobs.claim("w1", now)
    assert first is not None and first.slot == "check:primary:x"
    assert await jobs.claim("w2", now) is None  # nothing else is due, and w1's is alive
    # w1 dies: no heartbeat for longer than STALE_SECONDS; w2 takes it over.
    later = now + dt.timedelta(seconds=jobs.STALE_SECONDS + 1)
    second = await jobs.claim("w2", later)
    assert second is not None and second.id == first.id and second.attempts == 2
    assert not await jobs.heartbeat(first, "w1", later)  # w1's late heartbeat is refused
    state = await run_job(backup_settings, app.state.store, second, lambda: later, "w2")
    assert state == "done"
    row = await BackupJob.select().where(BackupJob.id == first.id).first().run()
    assert row is not None and row["state"] == "done" and row["claimed_by"] == "w2"
    assert await DrillReport.count().run() == 0


async def test_point_in_a_locked_repository_clears_stale_locks_and_tries_once_more(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Locks are cleared only when a point finds the repository locked; then the point is
    made again and is complete, and the failed try leaves no part behind."""
    from appliance.backups.restic import RepositoryLocked, Restic

    await signed_in_owner(client, admin, clock)
    await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    calls: list[str] = []
    backup_command, unlock = Restic.backup_command, Restic.unlock

    async def locked_once(self: Restic, *args: object, **kwargs: object) -> object:
        calls.append("dump")
        if calls.count("dump") == 1:
            raise RepositoryLocked("back up the database: the repository is locked", code=11)
        return await backup_command(self, *args, **kwargs)  # type: ignore[arg-type]

    async def counted_unlock(self: Restic) -> None:
        calls.append("unlock")
        await unlock(self)

    monkeypatch.setattr(Restic, "backup_command", locked_once)
    monkeypatch.setattr(Restic, "unlock", counted_unlock)
    result = await do_backup(backup_settings, app.state.store, clock)

    assert calls == ["dump", "unlock", "dump"]
    restic = restic_for(backup_settings, primary(configured(backup_settings)))
    snapshots = await restic.snapshots(tags=[TAG])
    assert [p.point_id for p in complete_points(snapshots)] == [result["point_id"]]
    assert len(snapshots) == 2  # the failed try's files part was forgotten


async def test_a_job_whose_worker_keeps_dying_fails_instead_of_running_forever(
    clean_db: None, clock: FakeClock
) -> None:
    """Taken again after each death until the tries are spent; then failed, never claimed."""
    now = clock()
    await jobs.enqueue("check", "check:primary:y", now, repository="primary")
    for attempt in range(1, 4):
        assert await jobs.give_up_dead(now, max_attempts=3) == []
        job = await jobs.claim(f"w{attempt}", now)
        assert job is not None and job.attempts == attempt
        now += dt.timedelta(seconds=jobs.STALE_SECONDS + 1)  # the worker died: no heartbeat
    given_up = await jobs.give_up_dead(now, max_attempts=3)
    assert [(j.slot, j.attempts) for j in given_up] == [("check:primary:y", 3)]
    assert await jobs.claim("w4", now) is None
    row = await BackupJob.select().where(BackupJob.slot == "check:primary:y").first().run()
    assert row is not None and row["state"] == "failed" and "3 tries" in row["error"]


async def test_a_point_of_the_s3_store_fetches_only_new_objects_and_restores_onto_files(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    """With S3 the mirror downloads each object once; a deleted photo's objects leave the
    mirror; the point restores onto the filesystem store, byte for byte."""
    await signed_in_owner(client, admin, clock)
    await published_gallery(client, app, clock, ANNA, ["a.jpg", "b.jpg"])
    s3 = S3Store(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        bucket=f"backup-{secrets.token_hex(4)}",
        region="",
    )
    await s3.ensure_ready()
    content: dict[str, bytes] = {}
    async for info in app.state.store.list(""):
        data = b"".join([c async for c in app.state.store.get(info.key)])
        await s3.put(info.key, _once(data), content_type=info.content_type)
        content[info.key] = data
    first = await do_backup(backup_settings, s3, clock)
    assert first["fetched"] == 6
    clock.advance(days=1)  # nightly points: retention keeps one a day
    again = await do_backup(backup_settings, s3, clock)
    assert again["fetched"] == 0  # nothing new: nothing downloaded

    # A preview made again under the same key, with as many bytes: its ETag tells.
    preview = await Photo.select(Photo.preview_key).order_by(Photo.id).first().run()
    assert preview is not None
    remade = bytes(reversed(content[preview["preview_key"]]))
    await s3.put(preview["preview_key"], _once(remade), content_type="image/jpeg")
    content[preview["preview_key"]] = remade
    clock.advance(days=1)
    changed = await do_backup(backup_settings, s3, clock)
    assert changed["fetched"] == 1
    mirror = backup_settings.data_dir / "backup" / "mirror" / "objects"
    assert (mirror / preview["preview_key"]).read_bytes() == remade

    gone = await Photo.select().order_by(Photo.id).first().run()
    assert gone is not None
    await Photo.delete().where(Photo.id == gone["id"]).run()
    clock.advance(days=1)
    third = await do_backup(backup_settings, s3, clock)
    assert third["objects"] == 3
    assert not (mirror / gone["original_key"]).exists()

    target = primary(configured(backup_settings))
    point = await choose_point(backup_settings, target, changed["point_id"])
    files = FilesystemStore(tmp_path / "restored-objects")
    await files.ensure_ready()
    # A full restore, into a database of the test's own (the suite's stays as it is).
    url = backup_settings.database.url
    name = f"restore_{secrets.token_hex(4)}_test"
    conn = await asyncpg.connect(url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        database = msgspec.structs.replace(backup_settings.database, url=with_database(url, name))
        elsewhere = msgspec.structs.replace(backup_settings, database=database)
        outcome = await restore(elsewhere, files, target, point, into_scratch=False)
        restored = await asyncpg.connect(with_database(url, name))
        try:
            photos = await restored.fetchval("SELECT count(*) FROM photo")
        finally:
            await restored.close()
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
    assert photos == 2  # the point was taken before the deletion
    assert outcome.objects == 6 and not outcome.mismatched
    for key, data in content.items():
        assert b"".join([c async for c in files.get(key)]) == data


async def test_a_run_that_lost_its_claim_records_nothing(
    clean_db: None, backup_settings: Settings, clock: FakeClock
) -> None:
    """w1 stalls past STALE_SECONDS and w2 takes the job; w1's late outcome is refused, even
    when w1 took the job again itself (the claim is per try, not per worker)."""
    now = clock()
    await jobs.enqueue("check", "check:primary:z", now, repository="primary")
    first = await jobs.claim("w1", now)
    assert first is not None
    later = now + dt.timedelta(seconds=jobs.STALE_SECONDS + 1)
    again = await jobs.claim("w1", later)  # the same worker, a new try
    assert again is not None and again.attempts == 2
    state = await jobs.finish(
        first,
        "w1",
        later,
        ok=False,
        error="late",
        retryable=False,
        settings=backup_settings.backups,
    )
    assert state == "lost"
    assert not await jobs.heartbeat(first, "w1", later)
    row = await BackupJob.select().where(BackupJob.slot == "check:primary:z").first().run()
    assert row is not None and row["state"] == "running" and row["error"] == ""
    done = await jobs.finish(again, "w1", later, ok=True, settings=backup_settings.backups)
    assert done == "done"


async def test_photos_missing_from_the_store_fail_the_job_and_any_drill_of_that_point(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
) -> None:
    """A point made while originals are gone keeps its database but fails the job (alerted),
    and a drill of it fails: its rows name photos it does not hold."""
    await signed_in_owner(client, admin, clock)
    await published_gallery(client, app, clock, ANNA, ["a.jpg", "b.jpg"])
    lost = await Photo.select(Photo.original_key).order_by(Photo.id).first().run()
    assert lost is not None
    (app.state.store.root / lost["original_key"]).unlink()
    with pytest.raises(JobFailed, match="not in the store") as failed:
        await do_backup(backup_settings, app.state.store, clock)
    assert failed.value.retryable is False
    drill = await run_drill(backup_settings, primary(configured(backup_settings)), now=clock)
    assert not drill.passed
    assert "every referenced object is in the point" in drill.failure


async def test_an_unmounted_store_folder_fails_the_point_and_leaves_the_mirror(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
    tmp_path: Path,
) -> None:
    await signed_in_owner(client, admin, clock)
    await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    await do_backup(backup_settings, app.state.store, clock)
    mirror = backup_settings.data_dir / "backup" / "mirror" / "objects"
    before = sorted(p for p in mirror.rglob("*") if p.is_file())
    gone = FilesystemStore(tmp_path / "unmounted")
    with pytest.raises(StorageError, match="is not there"):
        await do_backup(backup_settings, gone, clock)
    assert sorted(p for p in mirror.rglob("*") if p.is_file()) == before


async def test_a_mirror_on_another_file_system_copies_each_object_once(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where hard links fail (EXDEV), objects are copied, and copied again only when the
    store's file changes, not every night."""
    import errno

    from appliance.backups import mirror

    def no_links(*_: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    await signed_in_owner(client, admin, clock)
    await published_gallery(client, app, clock, ANNA, ["a.jpg", "b.jpg"])
    monkeypatch.setattr(mirror, "_hard_link", no_links)
    first = await do_backup(backup_settings, app.state.store, clock)
    assert first["fetched"] == 6
    clock.advance(days=1)
    second = await do_backup(backup_settings, app.state.store, clock)
    assert second["fetched"] == 0


async def test_a_primary_on_an_unmounted_share_is_not_made_on_the_system_disk(
    clean_db: None, settings: Settings, clock: FakeClock, app: Litestar, tmp_path: Path
) -> None:
    share = tmp_path / "mnt" / "nas"  # the mount point itself is missing
    backups = msgspec.convert(
        {
            "password_file": str(tmp_path / "password"),
            "repositories": [{"name": "nas", "url": str(share / "fotostudio")}],
        },
        type=type(settings.backups),
    )
    on_share = msgspec.structs.replace(settings, backups=backups)
    with pytest.raises(RepositoryMissing, match="is it mounted"):
        await do_backup(on_share, app.state.store, clock)
    assert not share.exists()


async def test_a_running_copy_lets_the_backup_run_but_holds_the_primarys_check_and_prune(
    clean_db: None, clock: FakeClock
) -> None:
    now = clock()
    await jobs.enqueue("copy", "copy:offsite:p1", now, repository="offsite")
    copy = await jobs.claim("w1", now, primary="local")
    assert copy is not None and copy.kind == "copy"
    later = now + dt.timedelta(seconds=1)
    await jobs.enqueue("check", "check:local:d", later, repository="local")
    await jobs.enqueue("backup", "backup:d", later + dt.timedelta(seconds=1), repository="local")
    taken = await jobs.claim("w2", later + dt.timedelta(seconds=2), primary="local")
    assert taken is not None and taken.kind == "backup"  # the check, queued first, waits
    await jobs.finish(taken, "w2", later, ok=True, settings=BackupSettings())
    assert await jobs.claim("w2", later + dt.timedelta(seconds=3), primary="local") is None
    await jobs.finish(copy, "w1", later, ok=True, settings=BackupSettings())
    check = await jobs.claim("w2", later + dt.timedelta(seconds=4), primary="local")
    assert check is not None and check.kind == "check"


async def test_a_drill_sweeps_what_a_dead_drill_left_behind(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
) -> None:
    await signed_in_owner(client, admin, clock)
    await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    await do_backup(backup_settings, app.state.store, clock)
    left = backup_settings.data_dir / "backup" / "scratch" / "drill-0badf00d"
    (left / "files").mkdir(parents=True)
    conn = await asyncpg.connect(backup_settings.database.url)
    try:
        await conn.execute('CREATE DATABASE "appliance_drill_0badf00d"')
        result = await do_drill(backup_settings, "primary", clock)
        assert result["point_id"]
        leftover = await conn.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = 'appliance_drill_0badf00d'"
        )
    finally:
        await conn.execute('DROP DATABASE IF EXISTS "appliance_drill_0badf00d"')
        await conn.close()
    assert leftover == 0
    assert not left.exists()
