"""The erasure ledger: who was erased, as identifiers only, kept outside the database.

A restore brings back the database and the objects of an older recovery point, with every
person erased since. The ledger (``<data_dir>/privacy/erasure-ledger.jsonl``, one JSON object
a line: request id, kind, subject id, object keys, times; no name, no address) is not part of
any recovery point's restore path, so it survives a restore; :func:`reapply` then erases those
people again and settles the requests made or cancelled since the point, and the restore skips
their objects altogether. A copy goes into every backup repository as a small snapshot of its
own (tag ``fotostudio-erasure-ledger``), so a new machine restoring from a repository gets it
too (:func:`merge_from_repository`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from appliance.backups.repositories import HOST, TAG, backup_dir, restic_for, targets
from appliance.backups.restic import Restic, ResticError
from appliance.config import Settings
from appliance.errors import InvalidInput
from appliance.storage.base import ObjectStore

__all__ = [
    "LEDGER_TAG",
    "append",
    "copy_to_repositories",
    "entries",
    "erased_keys",
    "ledger_path",
    "mark_reapply_pending",
    "merge_from_repository",
    "reapply",
    "reapply_pending",
    "rewrite_backups",
]

log = logging.getLogger(__name__)
LEDGER_TAG = "fotostudio-erasure-ledger"
_FIELDS = (
    "request_id",
    "kind",
    "subject_id",
    "keep_staff",
    "requested_at",
    "purged_at",
    "keys",
    "sequences",
    "state",  # "requested" or "cancelled" at request time; absent once purged
)


def ledger_path(settings: Settings) -> Path:
    return settings.data_dir / "privacy" / "erasure-ledger.jsonl"


def entries(settings: Settings) -> list[dict[str, Any]]:
    """Every entry, oldest first; a torn last line (a crash mid-write) is skipped."""
    path = ledger_path(settings)
    if not path.exists():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            found.append(json.loads(line))
    return found


def _identity(entry: dict[str, Any]) -> tuple[Any, ...]:
    return (entry.get("kind"), entry.get("subject_id"), entry.get("requested_at"))


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return _identity(a) == _identity(b) and a.get("state") == b.get("state")


def _purged(entry: dict[str, Any]) -> bool:
    return entry.get("state") is None


def append(settings: Settings, entry: dict[str, Any]) -> bool:
    """Add ``entry`` unless it is there already (a purge step run twice); flushed to disk
    before returning, since the rows go next. Returns whether it was added."""
    clean = {key: entry.get(key) for key in _FIELDS}
    if any(_same(clean, known) for known in entries(settings)):
        return False
    path = ledger_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(clean, sort_keys=True, separators=(",", ":")) + "\n"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def erased_keys(settings: Settings) -> set[str]:
    """Object keys of erased people: a restore never writes these back."""
    return {key for entry in entries(settings) for key in entry.get("keys") or []}


def _marker(settings: Settings) -> Path:
    return ledger_path(settings).parent / "reapply-pending"


def mark_reapply_pending(settings: Settings) -> None:
    """Note that the ledger must be re-applied, flushed to disk: set by a restore before it
    replaces the live database, so a restore that fails or is killed after that point leaves
    the marker, and the daily purge erases again whoever the replaced rows bring back."""
    marker = _marker(settings)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    folder = os.open(marker.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the new name itself, not only the (empty) file
    finally:
        os.close(folder)


def reapply_pending(settings: Settings) -> bool:
    """A restore's re-application did not finish: the daily purge runs it first."""
    return _marker(settings).exists()


async def reapply(settings: Settings, store: ObjectStore, now: dt.datetime) -> int:
    """Erase again everyone the ledger names (after a restore), cancel again every request
    cancelled since, and make pending again every request still open when it was made;
    returns how many entries were acted on.

    The marker (:func:`mark_reapply_pending`) stands while this runs and goes only when it
    has finished: if it fails (the restore then fails too), the next daily purge runs it again
    before anything else.
    """
    from appliance.db.engine import configure, engine

    if not engine().config.get("dsn"):
        configure(settings.database.url)  # `appliance restore` runs without the ORM set up
    mark_reapply_pending(settings)
    done = await _reapply_purged(settings, store, now)
    # Cancelled before reopened: a request cancelled and then made again has the person's
    # open key only once the restored copy of the cancelled one lets go of it.
    done += await _cancel_requests(settings, now)
    done += await _reopen_requests(settings)
    _marker(settings).unlink(missing_ok=True)
    return done


def _row_of(entry: dict[str, Any]) -> Any:
    """The condition that finds the request of ``entry`` among the restored rows: the ledger
    has no row id (a restored point's ids may differ), so kind, subject and request time."""
    from appliance.privacy.tables import ErasureRequest as ErasureRow

    requested_at = dt.datetime.fromisoformat(entry["requested_at"])
    same = (ErasureRow.kind == entry["kind"]) & (ErasureRow.requested_at == requested_at)
    if entry["subject_id"] is not None:
        same &= ErasureRow.subject_id == entry["subject_id"]
    return same


async def _cancel_requests(settings: Settings, now: dt.datetime) -> int:
    """A request cancelled after the restored point was taken is pending in that point: it is
    cancelled again, giving back what it switched off, or the next purge would erase someone
    the studio decided to keep."""
    from appliance.audit.service import Actor
    from appliance.privacy.erasure import cancel_erasure
    from appliance.privacy.tables import ErasureRequest as ErasureRow

    actor = Actor(id=None, name="erasure ledger")
    cancelled = 0
    for entry in entries(settings):
        if entry.get("state") != "cancelled":
            continue
        pending = ErasureRow.select(ErasureRow.id, ErasureRow.purge_after).where(
            _row_of(entry) & (ErasureRow.state == "pending")
        )
        for row in await pending.run():
            # A cancellation is refused once the grace period is over, and this one was made
            # within it (the ledger does not say when): dated at the latest just before its end.
            at = min(now, row["purge_after"] - dt.timedelta(microseconds=1))
            await cancel_erasure(settings, row["id"], actor=actor, now=at)
            cancelled += 1
    return cancelled


async def _reopen_requests(settings: Settings) -> int:
    """A request made after the restored point was taken and neither purged nor cancelled
    since: the restored database has no trace of it, so it is made again, with its original
    time (hence its original purge date)."""
    from appliance.errors import Conflict, NotFound
    from appliance.privacy.erasure import request_erasure
    from appliance.privacy.tables import ErasureRequest as ErasureRow

    found = entries(settings)
    settled = {_identity(e) for e in found if e.get("state") != "requested"}
    reopened = 0
    for entry in found:
        if entry.get("state") != "requested" or _identity(entry) in settled:
            continue
        if await ErasureRow.exists().where(_row_of(entry)).run():
            continue
        try:
            await request_erasure(
                settings,
                kind=entry["kind"],
                subject_id=entry["subject_id"],
                actor="erasure ledger",
                source="staff",
                now=dt.datetime.fromisoformat(entry["requested_at"]),
                actor_id=entry.get("keep_staff"),
                from_ledger=True,
            )
        except (Conflict, NotFound):
            continue  # not in the restored point (nothing to erase) or already requested
        reopened += 1
    return reopened


async def _reapply_purged(settings: Settings, store: ObjectStore, now: dt.datetime) -> int:
    """Each purged entry again with fresh progress (the restored rows are found anew); its
    deletion record is made to say "done" whatever state the restored database had for it.

    The record is written whole: a point taken while the purge was half-way holds the keys,
    addresses and user names it had collected, which must not outlive the restore. Its counts
    are those of the restored record (what had gone before the point) plus the re-application's
    (what the point still held)."""
    from appliance.privacy.purge import purge_subject
    from appliance.privacy.tables import ErasureRequest as ErasureRow

    found = [entry for entry in entries(settings) if _purged(entry)]
    for entry in found:
        await _advance_sequences(entry.get("sequences") or {})
        progress = await purge_subject(
            settings,
            store,
            kind=entry["kind"],
            subject_id=entry["subject_id"],
            progress={},
            now=now,
            keep_staff=entry.get("keep_staff"),
            marks=entry.get("sequences") or {},
        )
        purged_at = dt.datetime.fromisoformat(entry["purged_at"])
        restored = await ErasureRow.select(ErasureRow.id, ErasureRow.progress).where(_row_of(entry))
        for row in restored:
            record = _deletion_record(progress, row["progress"])
            await (
                ErasureRow.update(
                    {
                        ErasureRow.state: "done",
                        ErasureRow.open_key: None,
                        ErasureRow.purged_at: purged_at,
                        ErasureRow.progress: record,
                        ErasureRow.undo: "{}",
                    }
                )
                .where(ErasureRow.id == row["id"])
                .run()
            )
        if not restored:
            await ErasureRow.insert(
                ErasureRow(
                    kind=entry["kind"],
                    subject_id=entry["subject_id"],
                    state="done",
                    source="staff",
                    requested_at=dt.datetime.fromisoformat(entry["requested_at"]),
                    purge_after=purged_at,
                    purged_at=purged_at,
                    progress=_deletion_record(progress, "{}"),
                    undo="{}",
                )
            ).run()
    return len(found)


def _deletion_record(progress: dict[str, Any], restored: Any) -> str:
    """Steps and counts only, as the purge leaves it: no key, address or user name."""
    before = json.loads(restored or "{}") if isinstance(restored, str) else dict(restored or {})
    counts = dict(before.get("counts") or {})
    for name, n in progress["counts"].items():
        counts[name] = counts.get(name, 0) + n
    return json.dumps({"steps": progress["steps"], "counts": counts})


async def sequence_marks() -> dict[str, int]:
    """Every id sequence's last value: recorded with an erasure so that after the restore of
    an older point no id (a client's, a photo's, hence an object key) is handed out again,
    or the next re-application of the ledger would erase someone new under an old id."""
    from appliance.privacy.tables import ErasureRequest as ErasureRow

    rows = await ErasureRow.raw(
        "SELECT sequencename AS name, last_value AS value FROM pg_sequences "
        "WHERE schemaname = 'public' AND last_value IS NOT NULL"
    )
    return {row["name"]: int(row["value"]) for row in rows}


async def _advance_sequences(marks: dict[str, int]) -> None:
    from appliance.privacy.tables import ErasureRequest as ErasureRow

    current = await sequence_marks()
    for name, value in marks.items():
        if current.get(name, 0) < value:
            await ErasureRow.raw("SELECT setval({}::regclass, {})", name, value)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


async def copy_to_repositories(settings: Settings) -> list[str]:
    """Back the ledger up into every configured repository whose copy is older than the file;
    the older ledger snapshots there are forgotten. Returns the repositories written to.

    A repository that cannot be reached is skipped (logged); the next daily run tries again.
    """
    path = ledger_path(settings)
    if not path.exists() or not settings.backups.enabled:
        return []
    digest = _digest(path)
    marks = path.parent / "copied.json"
    copied: dict[str, str] = json.loads(marks.read_text()) if marks.exists() else {}
    written = []
    for target in await targets(settings):
        if copied.get(target.name) == digest:
            continue
        restic = restic_for(settings, target, timeout=600)
        try:
            before = await restic.snapshots(tags=[LEDGER_TAG])
            await restic.backup([path], tags=[LEDGER_TAG], host=HOST)
            await restic.forget([s.id for s in before])
        except ResticError as exc:
            log.warning("erasure ledger not copied to %s: %s", target.name, exc)
            continue
        copied[target.name] = digest
        written.append(target.name)
    marks.write_text(json.dumps(copied))
    return written


async def merge_from_repository(settings: Settings, restic: Restic) -> int:
    """Add the entries of the repository's newest ledger copy that this machine lacks (a new
    machine restoring from a repository has none). Returns how many were added."""
    try:
        copies = await restic.snapshots(tags=[LEDGER_TAG])
    except ResticError as exc:
        log.warning("no erasure ledger read from the repository: %s", exc)
        return 0
    if not copies:
        return 0
    newest = max(copies, key=lambda s: s.time)
    scratch = backup_dir(settings) / "scratch" / f"ledger-{newest.id[:12]}"
    try:
        await restic.restore(newest.id, scratch)
        added = 0
        for file in scratch.rglob(ledger_path(settings).name):
            for line in file.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):
                    added += append(settings, json.loads(line))
        return added
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _subject_keys(settings: Settings, kind: str, subject_id: int | None) -> list[str]:
    matching = [
        e
        for e in entries(settings)
        if _purged(e) and e["kind"] == kind and e["subject_id"] == subject_id
    ]
    if not matching:
        who = "the studio" if kind == "studio" else f"{kind} {subject_id}"
        raise InvalidInput(f"{who} is not in the erasure ledger: only purged people are cut out")
    return sorted({key for e in matching for key in e.get("keys") or []})


async def rewrite_backups(
    settings: Settings, *, kind: str, subject_id: int | None, prune: bool = True
) -> dict[str, int]:
    """Cut a purged person's files out of every recovery point of every repository
    (``restic rewrite --forget``, then ``prune`` so the data itself goes). Returns the number
    of files excluded per repository.

    The points' database dumps still hold their rows: a dump cannot be rewritten, so those
    leave with retention (``backups.max_age_days``), and a restore erases them again.
    """
    keys = _subject_keys(settings, kind, subject_id)
    if not keys:
        return {}
    mirror = backup_dir(settings) / "mirror" / "objects"
    scratch = backup_dir(settings) / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    patterns = scratch / f"rewrite-{kind}-{subject_id}.txt"
    # Object keys are made by the appliance (no wildcard characters); each names one file.
    patterns.write_text("".join(f"{mirror / key}\n" for key in keys), encoding="utf-8")
    done: dict[str, int] = {}
    try:
        for target in await targets(settings):
            restic = restic_for(settings, target)
            await restic.rewrite(tags=[TAG, "part:files"], exclude_file=patterns)
            if prune:
                await restic.prune()
            done[target.name] = len(keys)
    finally:
        patterns.unlink(missing_ok=True)
    return done
