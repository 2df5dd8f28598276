"""Bring an appliance back from a recovery point: the database, then the objects, then the
migrations. Runs from ``appliance restore`` while the appliance is stopped.

Objects go back through the store interface, so a point taken on the filesystem store restores
onto S3 and the other way round; each one's SHA-256 is compared with the manifest on the way.
``into_scratch`` restores beside the live data instead (a database of its own and a folder) for
inspection, and changes nothing that is live.
"""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from appliance.backups import pgtools
from appliance.backups.drill import (
    DrillFailed,
    check_dump,
    find_point,
    migrate_database,
    pg_restore,
    restore_point,
)
from appliance.backups.mirror import file_sha256
from appliance.backups.points import Point
from appliance.backups.repositories import Target, backup_dir, restic_for
from appliance.backups.restic import Restic
from appliance.config import Settings
from appliance.privacy import ledger
from appliance.storage.base import ObjectStore, check_key

__all__ = ["Progress", "RestoreOutcome", "choose_point", "restore"]

Progress = Callable[[str, float, float], None]  # (stage, done, total)


@dataclass
class RestoreOutcome:
    point: Point
    database: str  # the database name restored into
    objects: int
    object_bytes: int
    folder: Path | None  # the scratch folder kept with --into-scratch
    mismatched: list[str]


async def choose_point(settings: Settings, target: Target, point_id: str | None) -> Point:
    return await find_point(restic_for(settings, target), point_id)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as handle:
        while chunk := await handle.read(1024 * 1024):
            yield chunk


async def _reset_schema(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


async def restore(
    settings: Settings,
    store: ObjectStore,
    target: Target,
    point: Point,
    *,
    into_scratch: bool = False,
    progress: Progress | None = None,
) -> RestoreOutcome:
    report = progress or (lambda stage, done, total: None)
    restic = restic_for(settings, target)
    folder = backup_dir(settings) / "scratch" / f"restore-{point.point_id}-{secrets.token_hex(2)}"

    def on_event(event: dict[str, Any]) -> None:
        if event.get("message_type") == "status":
            total = float(event.get("total_bytes") or 0)
            report("download", float(event.get("bytes_restored") or 0), total)

    try:
        return await _restore_into(
            settings, store, restic, point, folder, on_event, report, into_scratch=into_scratch
        )
    except BaseException:
        # A failed restore leaves no full-size copy of the photos behind in scratch space.
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))
        raise


async def _restore_into(
    settings: Settings,
    store: ObjectStore,
    restic: Restic,
    point: Point,
    folder: Path,
    on_event: Callable[[dict[str, Any]], None],
    report: Progress,
    *,
    into_scratch: bool,
) -> RestoreOutcome:
    restored = await restore_point(restic, point, folder, on_event=on_event)
    manifest = restored.manifest
    if not into_scratch:
        # A new machine has no erasure ledger yet: the repository's copy names who was erased.
        await ledger.merge_from_repository(settings, restic)
    total = float(sum(o["size"] for o in manifest.objects))
    report("download", total, total)
    dsn = settings.database.url
    # Everything that can be checked is checked before the live database is touched: the
    # tools are there and the dump reads.
    await check_dump(settings, restored.dump, dsn)
    if into_scratch:
        name = f"appliance_restored_{point.point_id.lower().replace('-', '_')}"
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        target_dsn = pgtools.with_database(dsn, name)
    else:
        # From here on the live database holds the point's rows, erased people included,
        # until the ledger is re-applied: should the restore fail or be killed before that
        # has finished, the marker makes the daily purge re-apply it.
        ledger.mark_reapply_pending(settings)
        await _reset_schema(dsn)
        target_dsn = dsn
        name = dsn.rsplit("/", 1)[-1].split("?")[0]
    report("database", 0, 1)
    await pg_restore(settings, restored.dump, target_dsn)
    report("database", 1, 1)
    mismatched: list[str] = []
    written = 0
    if not into_scratch:
        # Objects of people erased since the point was taken are never written back.
        skipped = set(manifest.deleted_during_backup) | ledger.erased_keys(settings)
        for entry in manifest.objects:
            if entry["key"] in skipped:
                continue
            path = restored.objects / check_key(entry["key"])
            if not await anyio.Path(path).exists():
                raise DrillFailed(f"the point lacks object {entry['key']}")
            # Checked before it is written: a damaged copy must not replace a good object
            # that may still be in the store.
            if await anyio.to_thread.run_sync(file_sha256, path) != entry["sha256"]:
                mismatched.append(entry["key"])
                continue
            await store.put(entry["key"], _file_chunks(path), content_type=entry["content_type"])
            written += entry["size"]
            report("objects", written, total)
    report("migrations", 0, 1)
    await migrate_database(settings, target_dsn)
    report("migrations", 1, 1)
    if not into_scratch:
        # Whoever was erased after the point was taken is erased again, rows and all; the
        # marker set before the database was replaced goes only when this has succeeded.
        report("erasures", 0, 1)
        await ledger.reapply(settings, store, dt.datetime.now(dt.UTC))
        report("erasures", 1, 1)
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))
    return RestoreOutcome(
        point=point,
        database=name,
        objects=len(manifest.objects),
        object_bytes=int(total),
        folder=folder if into_scratch else None,
        mismatched=mismatched,
    )


def describe_age(point: Point, now: dt.datetime) -> str:
    hours = (now - point.taken_at).total_seconds() / 3600
    return f"{hours:.1f} hours" if hours < 48 else f"{hours / 24:.1f} days"
