"""Restore drills: prove that a recovery point brings the appliance back, byte for byte.

A drill restores the newest complete point of one repository into a scratch folder, loads the
dump into a scratch database, and passes only when:

- every table has the row count the manifest recorded;
- every object of the manifest is in the restored files with the recorded size;
- a sample of objects (all of them when there are fewer) has the recorded SHA-256, and each
  sampled original also has the digest its photo row in the restored database names;
- the migrations of the restored database are those the manifest recorded, and the code's
  migrations apply on top of it with none left pending.

Any step that cannot be carried out fails the drill (fail closed). The scratch database and
folder are removed afterwards, whatever happened; the evidence is kept as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
import asyncpg
import msgspec

from appliance.backups import pgtools
from appliance.backups.mirror import file_sha256, write_json
from appliance.backups.points import POINT_ID, Point, complete_points
from appliance.backups.recovery import (
    DB_FILENAME,
    MANIFEST_NAME,
    REFERENCE_QUERIES,
    Manifest,
    table_counts,
)
from appliance.backups.repositories import TAG, Target, backup_dir, restic_for
from appliance.backups.restic import Restic
from appliance.config import Settings
from appliance.db.engine import code_migrations
from appliance.privacy import ledger

__all__ = ["DrillFailed", "DrillResult", "RestoredPoint", "restore_point", "run_drill"]

log = logging.getLogger(__name__)


class DrillFailed(Exception):
    """A step of a drill or a restore could not be carried out or verified."""


@dataclass
class RestoredPoint:
    """A point restored into a folder: the dump file, the objects folder, the manifest."""

    folder: Path
    dump: Path
    objects: Path
    manifest: Manifest
    seconds: float


@dataclass
class DrillResult:
    passed: bool
    repository: str
    point_id: str
    started_at: dt.datetime
    finished_at: dt.datetime
    rto_seconds: float = 0.0
    rpo_seconds: float = 0.0
    checks: list[dict[str, Any]] = field(default_factory=list)
    failure: str = ""

    def report(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "repository": self.repository,
            "point_id": self.point_id,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "rto_seconds": round(self.rto_seconds, 3),
            "rpo_seconds": round(self.rpo_seconds, 3),
            "failure": self.failure,
            "checks": self.checks,
        }


def _find(folder: Path, name: str) -> Path:
    """restic restores a snapshot under the absolute paths it backed up; find ``name``."""
    direct = folder / name
    if direct.exists():
        return direct
    for root, dirs, files in os.walk(folder):
        if name in files or name in dirs:
            return Path(root, name)
    raise DrillFailed(f"the restored point has no {name}")


async def latest_point(restic: Restic) -> Point:
    points = complete_points(await restic.snapshots(tags=[TAG]))
    if not points:
        raise DrillFailed(f"repository {restic.repository.name} holds no complete recovery point")
    return points[0]


async def find_point(restic: Restic, point_id: str | None) -> Point:
    if point_id is None:
        return await latest_point(restic)
    if not POINT_ID.match(point_id):
        raise DrillFailed(f"{point_id!r} is not a recovery point id (like 20261129T023000Z-3fa1)")
    for point in complete_points(await restic.snapshots(tags=[TAG, f"point:{point_id}"])):
        if point.point_id == point_id:
            return point
    raise DrillFailed(f"repository {restic.repository.name} has no complete point {point_id}")


async def restore_point(
    restic: Restic,
    point: Point,
    folder: Path,
    *,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> RestoredPoint:
    started = time.monotonic()
    await anyio.Path(folder).mkdir(parents=True, exist_ok=True, mode=0o700)
    await restic.restore(point.db_snapshot, folder / "db")
    await restic.restore(point.files_snapshot, folder / "files", on_event=on_event)
    dump = _find(folder / "db", DB_FILENAME)
    manifest_file = _find(folder / "files", MANIFEST_NAME)
    try:
        manifest = msgspec.json.decode(manifest_file.read_bytes(), type=Manifest)
    except msgspec.DecodeError as exc:
        raise DrillFailed(f"the manifest cannot be read: {exc}") from None
    if manifest.point_id != point.point_id:
        raise DrillFailed(f"the manifest is of point {manifest.point_id}, not {point.point_id}")
    objects = manifest_file.parent / "objects"
    if manifest.objects and not objects.is_dir():
        raise DrillFailed("the restored point has no objects folder")
    return RestoredPoint(folder, dump, objects, manifest, time.monotonic() - started)


async def _tools(settings: Settings, dsn: str) -> pgtools.PgTools:
    conn = await asyncpg.connect(dsn)
    try:
        major = int(await conn.fetchval("SHOW server_version_num")) // 10000
    finally:
        await conn.close()
    try:
        return pgtools.find_pg_tools(major, settings.backups.pg_bin_dir)
    except pgtools.PgToolsMissing as exc:
        raise DrillFailed(str(exc)) from None


async def check_dump(settings: Settings, dump: Path, dsn: str) -> None:
    """The right pg_restore is there and reads ``dump`` (its table of contents)."""
    tools = await _tools(settings, dsn)
    await _run_tool(
        [tools.pg_restore, "--list", str(dump)],
        dict(os.environ),
        what="the dump cannot be read",
        limit=600,
    )


async def _run_tool(argv: list[str], env: dict[str, str], *, what: str, limit: float) -> None:
    """Run a tool (pg_restore, the migrations) with the environment ``env``; stopped at
    ``limit`` seconds or when the job is cancelled."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        _, err = await asyncio.wait_for(process.communicate(), limit)
    except TimeoutError:
        await _kill(process)
        raise DrillFailed(f"{what}: stopped after {limit:.0f} s") from None
    except asyncio.CancelledError:  # the job was stopped: the tool must not run on
        await _kill(process)
        raise
    if process.returncode != 0:
        lines = err.decode("utf-8", "replace").strip().splitlines()
        raise DrillFailed(f"{what}: {lines[-1] if lines else process.returncode}")


async def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()


async def pg_restore(settings: Settings, dump: Path, dsn: str) -> None:
    """Load ``dump`` into the database ``dsn``; any error fails (no partial load passes)."""
    tools = await _tools(settings, dsn)
    url, env = pgtools.libpq_target(dsn)
    argv = [
        tools.pg_restore,
        "--exit-on-error",
        "--no-owner",
        "--no-privileges",
        "--single-transaction",
    ]
    argv += [f"--dbname={url}", str(dump)]
    limit = settings.backups.timeout_minutes * 60.0
    await _run_tool(argv, {**os.environ, **env}, what="pg_restore failed", limit=limit)


async def migrate_database(settings: Settings, dsn: str) -> None:
    """Apply the code's migrations to ``dsn`` in a process of its own (the ORM engine of this
    process stays on the live database)."""
    env = {k: v for k, v in os.environ.items() if k != "APPLIANCE_DATABASE__URL_FILE"}
    env["APPLIANCE_DATABASE__URL"] = dsn  # a *_FILE secret would win over it: dropped above
    # The scratch database only: the live object store is no business of a drill.
    argv = [sys.executable, "-m", "appliance", "migrate", "--no-storage"]
    limit = settings.backups.timeout_minutes * 60.0
    await _run_tool(argv, env, what="migrations do not apply", limit=limit)


def _check_objects(
    restored: RestoredPoint, sample_size: int, erased: set[str]
) -> tuple[list[str], list[dict[str, Any]]]:
    """Problems with the restored objects, and the sampled digests for the evidence.

    Objects of erased people (``erased``, from the erasure ledger) may have been cut out of the
    point by ``appliance privacy rewrite-backups``: their absence is no fault.
    """
    problems = []
    present = []
    skipped = set(restored.manifest.deleted_during_backup) | erased
    for entry in restored.manifest.objects:
        if entry["key"] in skipped:
            continue
        path = restored.objects / entry["key"]
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            problems.append(f"object {entry['key']} is missing")
            continue
        if size != entry["size"]:
            problems.append(f"object {entry['key']} has {size} bytes, not {entry['size']}")
            continue
        present.append(entry)
    sample = present if len(present) <= sample_size else random.sample(present, sample_size)
    checked = []
    for entry in sample:
        digest = file_sha256(restored.objects / entry["key"])
        checked.append({"key": entry["key"], "sha256": digest, "ok": digest == entry["sha256"]})
        if digest != entry["sha256"]:
            problems.append(f"object {entry['key']} does not match its SHA-256")
    return problems, checked


async def verify(settings: Settings, restored: RestoredPoint, dsn: str) -> list[dict[str, Any]]:
    """The drill's checks on a restored point loaded into ``dsn``; raises on the first failure
    with every finding so far in the evidence."""
    checks: list[dict[str, Any]] = []
    manifest = restored.manifest

    def check(name: str, ok: bool, detail: Any) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail})
        if not ok:
            raise DrillFailed(f"{name}: {detail}")

    conn = await asyncpg.connect(dsn)
    try:
        counts = await table_counts(conn)
        wrong = {
            table: {"manifest": expected, "restored": counts.get(table)}
            for table, expected in manifest.row_counts.items()
            if counts.get(table) != expected
        }
        check("row counts", not wrong and bool(manifest.row_counts), wrong or len(counts))
        rows = await conn.fetch("SELECT app_name, name FROM migration")
        restored_migrations = sorted(f"{r['app_name']}:{r['name']}" for r in rows)
        check(
            "migrations as recorded",
            restored_migrations == sorted(manifest.migrations),
            f"{len(restored_migrations)} applied",
        )
        originals = {
            r["original_key"]: r["sha256"]
            for r in await conn.fetch("SELECT original_key, sha256 FROM photo")
        }
        # Every object the restored rows refer to must be in the point, whatever the manifest
        # says: a point made while the store was unmounted has rows and no photos.
        referenced: set[str] = set()
        for query in REFERENCE_QUERIES:
            referenced |= {r["key"] for r in await conn.fetch(query) if r["key"]}
    finally:
        await conn.close()

    problems, sampled = await anyio.to_thread.run_sync(
        _check_objects, restored, settings.backups.drill_sample, ledger.erased_keys(settings)
    )
    check(
        "objects present with their sizes",
        not [p for p in problems if "SHA-256" not in p],
        problems[:20] or f"{len(manifest.objects)} objects",
    )
    mismatched_db = [
        s["key"]
        for s in sampled
        if s["key"] in originals and originals[s["key"]] not in {"", s["sha256"]}
    ]
    check(
        "sampled objects match their SHA-256",
        all(s["ok"] for s in sampled) and not mismatched_db,
        {"sampled": len(sampled), "bad": [s["key"] for s in sampled if not s["ok"]] + mismatched_db}
        if sampled
        else "no objects to sample",
    )
    in_point = {entry["key"] for entry in manifest.objects}
    absent = sorted(referenced - in_point - set(manifest.deleted_during_backup))
    check(
        "every referenced object is in the point",
        not absent,
        {"missing": len(absent), "first": absent[:20]} if absent else f"{len(referenced)}",
    )
    await migrate_database(settings, dsn)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT app_name, name FROM migration")
    finally:
        await conn.close()
    applied = {f"{r['app_name']}:{r['name']}" for r in rows}
    pending = [m for m in code_migrations() if m not in applied]
    check("migrations current", not pending, pending or f"{len(applied)} applied")
    return checks


async def run_drill(
    settings: Settings, target: Target, *, now: Callable[[], dt.datetime]
) -> DrillResult:
    """Restore the newest point of ``target`` beside the live data and verify it."""
    started_at = now()
    clock = time.monotonic()
    restic = restic_for(settings, target)
    scratch = backup_dir(settings) / "scratch" / f"drill-{secrets.token_hex(4)}"
    scratch_db = f"appliance_drill_{secrets.token_hex(4)}"
    result = DrillResult(False, target.name, "", started_at, started_at)
    admin = await asyncpg.connect(settings.database.url)
    created = False
    try:
        point = await latest_point(restic)
        result.point_id = point.point_id
        result.rpo_seconds = (started_at - point.taken_at).total_seconds()
        restored = await restore_point(restic, point, scratch)
        result.checks.append(
            {"check": "restore", "ok": True, "detail": f"{restored.seconds:.1f} s"}
        )
        await admin.execute(f'CREATE DATABASE "{scratch_db}"')
        created = True
        dsn = pgtools.with_database(settings.database.url, scratch_db)
        await pg_restore(settings, restored.dump, dsn)
        result.checks += await verify(settings, restored, dsn)
        result.passed = True
    except DrillFailed as exc:
        result.failure = str(exc)
    except Exception as exc:  # fail closed: any step that could not run fails the drill
        log.exception("drill of %s could not finish", target.name)
        result.failure = f"{type(exc).__name__}: {exc}"
    finally:
        result.rto_seconds = time.monotonic() - clock
        if created:
            with contextlib.suppress(Exception):
                await admin.execute(f'DROP DATABASE IF EXISTS "{scratch_db}" WITH (FORCE)')
        await admin.close()
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(scratch, ignore_errors=True))
        result.finished_at = now()
    _save_evidence(settings, result)
    return result


def _save_evidence(settings: Settings, result: DrillResult) -> Path:
    folder = backup_dir(settings) / "drills"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{result.started_at:%Y%m%dT%H%M%SZ}-{result.repository}.json"
    write_json(path, result.report())
    return path
