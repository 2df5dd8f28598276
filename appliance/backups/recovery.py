"""A recovery point: the database, the objects it refers to, and a manifest, under one id.

Steps of :func:`take_recovery_point`:

1. open a read-only REPEATABLE READ transaction and export its snapshot; in that snapshot, count
   the rows of every table, read the applied migrations and the objects the rows refer to;
2. ``pg_dump -Fc --snapshot=<it>`` through ``restic backup --stdin-from-command``: the dump is
   exactly the state counted in step 1, and a dump that fails leaves no snapshot at all;
3. meanwhile bring the object mirror up to date with those references (:mod:`.mirror`) and
   write ``manifest.json`` beside it: time, app version, migrations, row counts, and every
   object's key, size and SHA-256;
4. back up the mirror and the manifest as the second snapshot, while the dump may still run
   (two restic processes: each spends about half a second opening the repository, and an
   incremental point is mostly that).

Both snapshots carry the tags ``fotostudio``, ``point:<id>`` and ``part:db`` / ``part:files``,
and the same time. A point is complete when both exist; a failure forgets whatever part of it
was stored, so no half point is ever offered for a restore. A point that finds the
repository locked has restic remove the locks it judges stale and is tried once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import logging
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from appliance import __version__
from appliance.backups import pgtools
from appliance.backups.mirror import MirrorResult, Reference, sync_mirror, write_json
from appliance.backups.repositories import HOST, TAG, Target, backup_dir, restic_for
from appliance.backups.restic import BackupSummary, RepositoryLocked, Restic, ResticError
from appliance.config import Settings
from appliance.storage.base import ObjectStore

__all__ = [
    "DB_FILENAME",
    "MANIFEST_NAME",
    "REFERENCE_QUERIES",
    "Manifest",
    "PointOutcome",
    "take_recovery_point",
]

log = logging.getLogger(__name__)

DB_FILENAME = "appliance-db.dump"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1

# Every column that holds an object key, with the content type the object was stored with.
# A domain that stores objects adds its query here; the drill checks every key they return.
REFERENCE_QUERIES = (
    "SELECT original_key AS key, content_type FROM photo",
    "SELECT thumb_key AS key, 'image/jpeg' AS content_type FROM photo WHERE thumb_key <> ''",
    "SELECT preview_key AS key, 'image/jpeg' AS content_type FROM photo WHERE preview_key <> ''",
    # Files of records kept on legal hold after their person was erased (an invoice's PDF):
    # the row is gone from its table, so only its copy's ``*_key`` values name the file
    # (as :mod:`appliance.privacy.holds` reads them). Values that cannot be object keys
    # (a chunk's "12:3") are left out, as the purge leaves them; the content type is the
    # record's own when it has one.
    "SELECT field.value AS key,"
    " coalesce(held.record ->> 'content_type', 'application/octet-stream') AS content_type"
    " FROM legal_hold AS held CROSS JOIN LATERAL jsonb_each_text(held.record) AS field"
    " WHERE right(field.key, 4) = '_key' AND length(field.value) <= 512"
    " AND field.value ~ '^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$'"
    " AND strpos(field.value, '..') = 0",
)


class Manifest(msgspec.Struct, kw_only=True):
    format: int = MANIFEST_FORMAT
    point_id: str
    taken_at: str  # ISO 8601, UTC
    app_version: str
    migrations: list[str]  # "app:id", applied in the dumped database
    row_counts: dict[str, int]
    objects: list[dict[str, Any]]  # {"key", "size", "sha256", "content_type"}
    deleted_during_backup: list[str] = []  # rows deleted before their object was read
    missing: list[str] = []  # referred to by the database but absent from the store
    server_version: int = 0


@dataclass
class PointOutcome:
    point_id: str
    repository: str
    taken_at: dt.datetime
    db_snapshot: str
    files_snapshot: str
    manifest: Manifest
    mirror: MirrorResult
    seconds: float
    db_summary: BackupSummary
    files_summary: BackupSummary


def new_point_id(now: dt.datetime) -> str:
    return f"{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


@dataclass
class _Capture:
    snapshot_name: str
    row_counts: dict[str, int]
    migrations: list[str]
    references: list[Reference]
    server_version: int


async def table_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """The rows of every table of the public schema, as ``conn`` sees them."""
    tables = await conn.fetch(
        "SELECT quote_ident(table_name) AS name, table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name"
    )
    counts = {}
    for table in tables:
        counts[table["table_name"]] = await conn.fetchval(f"SELECT count(*) FROM {table['name']}")  # noqa: S608 - quoted names from the catalogue
    return counts


async def _capture(conn: asyncpg.Connection) -> _Capture:
    snapshot_name = await conn.fetchval("SELECT pg_export_snapshot()")
    counts = await table_counts(conn)
    migrations = []
    if "migration" in counts:
        rows = await conn.fetch("SELECT app_name, name FROM migration ORDER BY app_name, name")
        migrations = [f"{r['app_name']}:{r['name']}" for r in rows]
    references = []
    for query in REFERENCE_QUERIES:
        with contextlib.suppress(asyncpg.UndefinedTableError):
            async with conn.transaction():  # a savepoint: a missing table must not end the snapshot
                rows = await conn.fetch(query)
            references += [Reference(r["key"], r["content_type"]) for r in rows if r["key"]]
    version = int(await conn.fetchval("SHOW server_version_num")) // 10000
    return _Capture(snapshot_name, counts, migrations, references, version)


async def _still_referenced(dsn: str, keys: list[str]) -> set[str]:
    """Of ``keys``, those the live database still refers to."""
    if not keys:
        return set()
    conn = await asyncpg.connect(dsn)
    try:
        found: set[str] = set()
        for query in REFERENCE_QUERIES:
            with contextlib.suppress(asyncpg.UndefinedTableError):
                rows = await conn.fetch(f"SELECT key FROM ({query}) AS r WHERE key = ANY($1)", keys)  # noqa: S608 - fixed queries
                found |= {r["key"] for r in rows}
        return found
    finally:
        await conn.close()


def restic_time(now: dt.datetime) -> str:
    """restic's ``--time`` format, in UTC (restic runs with TZ=UTC)."""
    return f"{now.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}"


async def take_recovery_point(
    settings: Settings,
    store: ObjectStore,
    target: Target,
    *,
    now: dt.datetime,
) -> PointOutcome:
    """Make one recovery point in ``target`` (the primary); raise on any failure."""
    restic = restic_for(settings, target)
    with _mirror_lock(backup_dir(settings) / "mirror"):
        try:
            return await _take_point(settings, store, target, restic, now)
        except RepositoryLocked:
            # A restic killed earlier left a stale lock. Clearing stale locks only when one is
            # in the way saves opening the repository (about half a second of key derivation)
            # on every point; a live lock stays and fails this point again, to be retried.
            await restic.unlock()
            return await _take_point(settings, store, target, restic, now)


@contextlib.contextmanager
def _mirror_lock(folder: Path) -> Iterator[None]:
    """One point at a time per mirror, across processes: two would link, prune and describe
    the same folder under each other (the job queue already runs one backup at a time; this
    holds even if a claim were ever taken twice)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (folder / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ResticError("another recovery point is being made right now") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def _take_point(
    settings: Settings, store: ObjectStore, target: Target, restic: Restic, now: dt.datetime
) -> PointOutcome:
    started = time.monotonic()
    point_id = new_point_id(now)
    mirror_root = backup_dir(settings) / "mirror"
    objects_dir = mirror_root / "objects"
    tags = [TAG, f"point:{point_id}"]
    stamp = restic_time(now)
    dsn = settings.database.url
    conn = await asyncpg.connect(dsn)
    tasks: list[asyncio.Task[BackupSummary]] = []
    try:
        transaction = conn.transaction(isolation="repeatable_read", readonly=True)
        await transaction.start()
        capture = await _capture(conn)
        tools = pgtools.find_pg_tools(capture.server_version, settings.backups.pg_bin_dir)
        url, env = pgtools.libpq_target(dsn)
        command = [
            tools.pg_dump,
            "--format=custom",
            "--no-owner",
            "--no-privileges",
            f"--snapshot={capture.snapshot_name}",
            f"--dbname={url}",
        ]
        dump_task = asyncio.create_task(
            restic.backup_command(
                command,
                filename=DB_FILENAME,
                tags=[*tags, "part:db"],
                host=HOST,
                time=stamp,
                extra_env={**env, "TZ": "UTC"},
            )
        )
        tasks.append(dump_task)
        mirror = await sync_mirror(store, objects_dir, capture.references)
        gone = await _still_referenced(dsn, mirror.missing)
        manifest = Manifest(
            point_id=point_id,
            taken_at=now.astimezone(dt.UTC).isoformat(),
            app_version=__version__,
            migrations=capture.migrations,
            row_counts=capture.row_counts,
            objects=[msgspec.to_builtins(entry) for entry in mirror.objects],
            deleted_during_backup=sorted(set(mirror.missing) - gone),
            missing=sorted(gone),
            server_version=capture.server_version,
        )
        manifest_path = mirror_root / MANIFEST_NAME
        write_json(manifest_path, msgspec.to_builtins(manifest))
        files_task = asyncio.create_task(
            restic.backup(
                [objects_dir, manifest_path],
                tags=[*tags, "part:files"],
                host=HOST,
                time=stamp,
            )
        )
        tasks.append(files_task)
        db_summary, files_summary = await asyncio.gather(dump_task, files_task)
    except BaseException:
        for task in tasks:
            if not task.done():
                task.cancel()  # restic is stopped; its part, if stored, is forgotten below
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await _forget_point(restic, point_id)
        raise
    finally:
        with contextlib.suppress(Exception):
            await conn.close()  # ends the exported snapshot, after pg_dump has finished
    return PointOutcome(
        point_id=point_id,
        repository=target.name,
        taken_at=now,
        db_snapshot=db_summary.snapshot_id,
        files_snapshot=files_summary.snapshot_id,
        manifest=manifest,
        mirror=mirror,
        seconds=time.monotonic() - started,
        db_summary=db_summary,
        files_summary=files_summary,
    )


async def _forget_point(restic: Restic, point_id: str) -> None:
    """Forget the parts of a failed point that were stored, so it never looks complete."""
    try:
        parts = await restic.snapshots(tags=[TAG, f"point:{point_id}"])
        await restic.forget([s.id for s in parts])
    except ResticError as exc:
        # Points are only offered when both parts exist, so a leftover part is harmless;
        # retention removes it later.
        log.warning("could not forget the parts of failed point %s: %s", point_id, exc)
