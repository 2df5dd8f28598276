"""An incremental recovery point against plain ``restic backup`` of the same photos, and the
restore drill's RTO against plain ``restic restore`` + ``pg_restore``, in one run.

The data: a filesystem store of random-content originals of 4-12 MB (``BACKUP_BENCH_MB`` in
all, default 2048), each with a ready photo row whose ``original_key`` names it, so the
recovery point refers to every file. Both sides first make a full backup; then, in each of
``BACKUP_BENCH_ROUNDS`` rounds (default 3), 1 % more photos are added (files and rows) and both
incrementals run, ours and plain taking turns at going first, so both see the same new data and
the same page cache.

- Ours: ``do_backup``, the backup job as the worker runs it (the repository's existence checked,
  ``pg_dump`` through restic, the mirror linked and hashed, the manifest, the files snapshot,
  retention); the recovery point alone is printed too. The clock moves a day per point, as
  nightly points do, so retention forgets nothing.
- Plain: the same data backed up by hand into a repository of its own, as an administrator
  would script it: ``restic backup --stdin-from-command -- pg_dump -Fc``, then ``restic backup
  <store folder>`` (the photos and the store's small content-type files beside them). The
  photos-only time is printed too.

The target (ours at most 1.2x plain) is judged on the recovery point, which is what "a
backup" is; the whole job adds retention (a snapshot listing, and ``forget`` when a point
drops out), which plain restic does in a command of its own, and is printed beside it.

The drill (``run_drill``: restore both snapshots, load the dump into a scratch database, count
rows, hash a sample, apply migrations) is timed against the same two snapshots restored with
plain ``restic restore`` and the dump loaded with plain ``pg_restore``, no checks.

Printed, not asserted on time; every backup must succeed and the drill must pass.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import random
import secrets
import shutil
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import msgspec
import pytest

from appliance.backups import pgtools
from appliance.backups.drill import latest_point, run_drill
from appliance.backups.recovery import DB_FILENAME
from appliance.backups.repositories import configured, primary, restic_for
from appliance.backups.restic import find_restic
from appliance.backups.service import do_backup
from appliance.clients.tables import Client
from appliance.config import Settings
from appliance.galleries.tables import Gallery, GallerySet, Photo
from appliance.storage.filesystem import FilesystemStore
from tests.conftest import FakeClock

SIZE_ENV = "BACKUP_BENCH_MB"
ROUNDS_ENV = "BACKUP_BENCH_ROUNDS"
DEFAULT_MB = 2048
DEFAULT_ROUNDS = 3
MB = 1024 * 1024
NEW_SHARE = 0.01  # of the data, added before each incremental
TARGET = 1.2  # the bound on ours / plain for an incremental


class RandomContent:
    """``size`` random bytes in 1 MB chunks; their SHA-256 once read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.digest = hashlib.sha256()

    async def chunks(self) -> AsyncIterator[bytes]:
        left = self.size
        while left:
            piece = os.urandom(min(MB, left))
            self.digest.update(piece)
            left -= len(piece)
            yield piece


class Studio:
    """The benchmark's store, gallery and the photos written so far."""

    def __init__(self, store: FilesystemStore, gallery_id: int, set_id: int) -> None:
        self.store = store
        self.gallery_id = gallery_id
        self.set_id = set_id
        self.count = 0
        self.bytes = 0
        self.random = random.Random(20240611)

    async def add(self, total: int, now: dt.datetime) -> int:
        """Write photos of 4-12 MB, random content, until ``total`` more bytes; return them."""
        added = 0
        rows = []
        while added < total:
            size = self.random.randint(4 * MB, 12 * MB)
            key = f"originals/{self.gallery_id}/{secrets.token_hex(16)}"
            content = RandomContent(size)
            await self.store.put(key, content.chunks(), content_type="image/jpeg")
            rows.append(
                Photo(
                    gallery=self.gallery_id,
                    gallery_set=self.set_id,
                    filename=f"DSC_{self.count:05d}.jpg",
                    content_type="image/jpeg",
                    size=size,
                    sha256=content.digest.hexdigest(),
                    width=6000,
                    height=4000,
                    original_key=key,
                    status="ready",
                    position=self.count,
                    created_at=now,
                )
            )
            self.count += 1
            added += size
        await Photo.insert(*rows).run()
        self.bytes += added
        return added


async def _studio(store: FilesystemStore, now: dt.datetime) -> Studio:
    client = await Client.insert(Client(name="Benchmark", created_at=now, updated_at=now)).run()
    gallery = await Gallery.insert(
        Gallery(client=client[0]["id"], title="Wedding", created_at=now, updated_at=now)
    ).run()
    gallery_set = await GallerySet.insert(
        GallerySet(gallery=gallery[0]["id"], name="Ceremony")
    ).run()
    return Studio(store, gallery[0]["id"], gallery_set[0]["id"])


class PlainRestic:
    """restic as an administrator would run it by hand: no JSON, no tags, its own cache."""

    def __init__(self, repository: Path, password_file: Path, cache: Path) -> None:
        self.binary = find_restic()
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            "RESTIC_REPOSITORY": str(repository),
            "RESTIC_PASSWORD_FILE": str(password_file),
            "RESTIC_CACHE_DIR": str(cache),
        }

    def run(self, *args: str, env: dict[str, str] | None = None) -> float:
        """Run ``restic <args>``; return the seconds it took."""
        started = time.perf_counter()
        subprocess.run(
            [self.binary, "--quiet", *args],
            env={**self.env, **(env or {})},
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=3600,
        )
        return time.perf_counter() - started


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """The benchmark's data (store, repositories, restores), removed afterwards: pytest keeps
    its last temporary folders, and these hold gigabytes."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def _backup_settings(settings: Settings, folder: Path) -> Settings:
    """The suite's database with a data folder, repository and password of the benchmark's own."""
    backups = msgspec.convert(
        {
            "password_file": str(folder / "password"),
            "repositories": [{"name": "primary", "url": str(folder / "repository")}],
        },
        type=type(settings.backups),
    )
    paths = msgspec.structs.replace(settings.paths, data_dir=str(folder / "data"))
    return msgspec.structs.replace(settings, backups=backups, paths=paths)


async def _plain_restore(settings: Settings, scratch: Path) -> tuple[float, float]:
    """The newest point's two snapshots restored with plain ``restic restore`` and the dump
    loaded with plain ``pg_restore`` into a scratch database; the seconds of each."""
    target = primary(configured(settings))
    point = await latest_point(restic_for(settings, target))  # known beforehand, untimed
    by_hand = PlainRestic(
        Path(target.repository.url),
        target.repository.password_file,
        settings.data_dir / "backup" / "cache",  # the drill's cache: the same metadata at hand
    )
    restored = 0.0
    for snapshot in (point.db_snapshot, point.files_snapshot):
        restored += await asyncio.to_thread(
            by_hand.run, "restore", snapshot, "--target", str(scratch)
        )
    dumps = await asyncio.to_thread(lambda: list(scratch.rglob(DB_FILENAME)))
    dump = dumps[0]
    name = f"appliance_plain_{secrets.token_hex(4)}_test"
    admin = await asyncpg.connect(settings.database.url)
    try:
        major = int(await admin.fetchval("SHOW server_version_num")) // 10000
        tools = pgtools.find_pg_tools(major, settings.backups.pg_bin_dir)
        url, env = pgtools.libpq_target(pgtools.with_database(settings.database.url, name))
        started = time.perf_counter()
        await admin.execute(f'CREATE DATABASE "{name}"')
        await asyncio.to_thread(
            subprocess.run,
            [tools.pg_restore, "--no-owner", "--exit-on-error", f"--dbname={url}", str(dump)],
            env={**os.environ, **env},
            check=True,
            timeout=3600,
        )
        loaded = time.perf_counter() - started
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return restored, loaded


async def test_incremental_backup_and_drill_against_plain_restic(
    settings: Settings, clean_db: None, clock: FakeClock, folder: Path
) -> None:
    """Our incremental recovery point and drill RTO beside plain restic on the same photos."""
    total = int(os.environ.get(SIZE_ENV, DEFAULT_MB)) * MB
    rounds = int(os.environ.get(ROUNDS_ENV, DEFAULT_ROUNDS))
    ours_settings = _backup_settings(settings, folder)
    store = FilesystemStore(folder / "objects")
    await store.ensure_ready()
    plain = PlainRestic(folder / "plain-repository", folder / "password", folder / "plain-cache")
    studio = await _studio(store, clock())
    await studio.add(total, clock())

    # Full backups first; the plain repository shares the password file ours creates.
    full_ours = await do_backup(ours_settings, store, clock)
    plain.run("init")
    full_plain = plain.run("backup", str(store.root))

    admin = await asyncpg.connect(settings.database.url)
    try:
        major = int(await admin.fetchval("SHOW server_version_num")) // 10000
    finally:
        await admin.close()
    tools = pgtools.find_pg_tools(major, settings.backups.pg_bin_dir)
    url, pg_env = pgtools.libpq_target(settings.database.url)
    dump_args = ("backup", "--stdin-filename", DB_FILENAME, "--stdin-from-command", "--")
    dump_args += (tools.pg_dump, "--format=custom", f"--dbname={url}")

    ours: list[float] = []
    plain_times: list[float] = []
    plain_photos: list[float] = []
    points: list[dict[str, object]] = []
    for turn in range(rounds):
        new = await studio.add(int(total * NEW_SHARE), clock())
        clock.advance(days=1)  # a nightly point: retention keeps every one of them

        async def ours_once() -> None:
            started = time.perf_counter()
            points.append(await do_backup(ours_settings, store, clock))
            ours.append(time.perf_counter() - started)

        def plain_once() -> None:
            dump = plain.run(*dump_args, env=pg_env)
            photos = plain.run("backup", str(store.root))
            plain_photos.append(photos)
            plain_times.append(dump + photos)

        if turn % 2 == 0:
            await ours_once()
            plain_once()
        else:
            plain_once()
            await ours_once()
        print(
            f"\nround {turn + 1}: +{new / MB:.0f} MB in {studio.count} photos;"
            f" recovery point {points[-1]['seconds']} s (job {ours[-1]:.2f} s),"
            f" plain {plain_times[-1]:.2f} s (photos alone {plain_photos[-1]:.2f} s),"
            f" ratio {float(str(points[-1]['seconds'])) / plain_times[-1]:.2f}"
        )

    scratch = folder / "plain-restore"
    restored, loaded = await _plain_restore(ours_settings, scratch)
    shutil.rmtree(scratch)
    drill = await run_drill(ours_settings, primary(configured(ours_settings)), now=clock)
    assert drill.passed, drill.failure
    restore_check = next(c for c in drill.checks if c["check"] == "restore")

    point_seconds = [float(str(p["seconds"])) for p in points]
    plain_median = statistics.median(plain_times)
    ratio = statistics.median(point_seconds) / plain_median
    print(
        f"\n{studio.bytes / MB:.0f} MB in {studio.count} photos of 4-12 MB (random content);"
        f" +{NEW_SHARE:.0%} before each incremental"
        f"\n  full backup: ours {full_ours['seconds']} s (recovery point), plain {full_plain:.1f} s"
        f" (photos)"
        f"\n  ours = recovery point: pg_dump through restic beside mirror + manifest + files"
        f"\n  plain = restic backup --stdin-from-command pg_dump, then restic backup <store>"
        f"\n  incremental, median of {rounds}: ours {statistics.median(point_seconds):.2f} s,"
        f" plain {plain_median:.2f} s"
        f"\n  ratio ours / plain: {ratio:.2f} (target <= {TARGET})"
        f"\n  against plain restic of the photos alone ({statistics.median(plain_photos):.2f} s):"
        f" {statistics.median(point_seconds) / statistics.median(plain_photos):.2f}"
        f"\n  the whole job (do_backup: the point, then retention and bookkeeping):"
        f" {statistics.median(ours):.2f} s, ratio {statistics.median(ours) / plain_median:.2f}"
        f"\n  drill RTO (run_drill): {drill.rto_seconds:.1f} s, of which restore"
        f" {restore_check['detail']}"
        f"\n  plain restic restore of the same two snapshots {restored:.1f} s"
        f" + pg_restore {loaded:.1f} s = {restored + loaded:.1f} s;"
        f" RTO ratio {drill.rto_seconds / (restored + loaded):.2f}"
    )
    assert all(p["fetched"] for p in points), "each incremental must take the new photos"
