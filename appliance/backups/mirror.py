"""The object mirror: exactly the objects one database snapshot refers to, in a local folder.

restic backs up this folder rather than the store itself, for three reasons:

- it holds what the database snapshot refers to, so a photo deleted while the backup runs is
  still in the folder when restic reads it, and a half-uploaded one is never in it;
- for the filesystem store its files are hard links (no copy, no extra space); for the S3 store
  they are downloaded once and kept, so each backup fetches only new objects and removes
  deleted ones, and the backup restores onto either backend;
- its paths never change, so restic finds the previous snapshot and reads only new files.

Each object's SHA-256 is computed once and remembered (``hashes.json``) by what identifies that
version of the file (inode, size and mtime of the link; size and ETag in S3).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgspec

from appliance.storage.base import ObjectNotFound, ObjectStore, StorageError, check_key

__all__ = [
    "MirrorResult",
    "ObjectEntry",
    "Reference",
    "file_sha256",
    "sync_mirror",
    "write_json",
]

log = logging.getLogger(__name__)
_HASH_CHUNK = 1024 * 1024
_hard_link = os.link  # a name of its own, so a test can play a store on another file system


class Reference(msgspec.Struct, frozen=True):
    """An object the database refers to."""

    key: str
    content_type: str


class ObjectEntry(msgspec.Struct, frozen=True):
    key: str
    size: int
    sha256: str
    content_type: str


class MirrorResult(msgspec.Struct):
    objects: list[ObjectEntry]
    missing: list[str]  # referred to by the database, absent from the store
    fetched: int = 0  # objects linked or downloaded in this run
    removed: int = 0


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _load_hashes(path: Path) -> dict[str, list[Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` whole or not at all: a temporary file, synced, renamed into place."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


def _prune(folder: Path, wanted: set[str]) -> int:
    """Remove files of the mirror that no reference names, and folders left empty."""
    removed = 0
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            path = Path(root, name)
            if path.relative_to(folder).as_posix() not in wanted:
                path.unlink(missing_ok=True)
                removed += 1
        for name in dirs:
            with contextlib.suppress(OSError):  # not empty
                Path(root, name).rmdir()
    return removed


def _link_into(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
    try:
        _hard_link(source, temporary)
    except FileNotFoundError:
        raise
    except OSError:  # another file system, or one without hard links: copy instead
        shutil.copy2(source, temporary)
    temporary.replace(target)


def _sync_filesystem(
    root: Path, folder: Path, references: list[Reference], hashes: dict[str, list[Any]]
) -> MirrorResult:
    """Hard links where the mirror and the store share a file system, copies elsewhere.

    ``hashes`` keeps, per key, the mirror file's (inode, size, mtime), its SHA-256 and the
    store file's (inode, mtime) it came from: a copy (which has an inode of its own) is then
    made again only when the store's file changed, not every night.
    """
    result = MirrorResult(objects=[], missing=[])
    for ref in references:
        source = root / check_key(ref.key)
        target = folder / ref.key
        try:
            stat = source.stat()
        except FileNotFoundError:
            result.missing.append(ref.key)
            continue
        origin = [stat.st_ino, stat.st_mtime_ns]
        known = hashes.get(ref.key)
        try:
            current = target.stat()
            same_file = current.st_ino == stat.st_ino  # a hard link to it
            copied = known is not None and known[:3] == _ident(current) and known[4:6] == origin
            fresh = current.st_size == stat.st_size and (same_file or copied)
        except FileNotFoundError:
            fresh = False
        if not fresh:
            try:
                _link_into(source, target)
            except FileNotFoundError:  # deleted since the stat above
                result.missing.append(ref.key)
                continue
            result.fetched += 1
            current = target.stat()
        ident = _ident(current)
        sha = str(known[3]) if known and known[:3] == ident else file_sha256(target)
        hashes[ref.key] = [*ident, sha, *origin]
        result.objects.append(ObjectEntry(ref.key, current.st_size, sha, ref.content_type))
    return result


def _ident(stat: os.stat_result) -> list[int]:
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns]


async def _sync_remote(
    store: ObjectStore, folder: Path, references: list[Reference], hashes: dict[str, list[Any]]
) -> MirrorResult:
    listing = {info.key: info async for info in store.list("")}
    result = MirrorResult(objects=[], missing=[])
    for ref in references:
        info = listing.get(ref.key)
        if info is None:
            result.missing.append(ref.key)
            continue
        ident = [info.size, info.etag]
        target = folder / check_key(ref.key)
        known = hashes.get(ref.key)
        have = await anyio.Path(target).exists()
        if not (have and known and known[:2] == ident):
            try:
                sha = await _download(store, ref.key, target)
            except ObjectNotFound:
                result.missing.append(ref.key)
                continue
            hashes[ref.key] = [*ident, sha]
            result.fetched += 1
        result.objects.append(
            ObjectEntry(ref.key, info.size, str(hashes[ref.key][2]), ref.content_type)
        )
    return result


async def _download(store: ObjectStore, key: str, target: Path) -> str:
    await anyio.Path(target.parent).mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
    digest = hashlib.sha256()
    try:
        async with await anyio.open_file(temporary, "wb") as handle:
            async for chunk in store.get(key):
                digest.update(chunk)
                await handle.write(chunk)
        await anyio.Path(temporary).replace(target)
    finally:
        await anyio.Path(temporary).unlink(missing_ok=True)
    return digest.hexdigest()


async def sync_mirror(
    store: ObjectStore, folder: Path, references: Iterable[Reference]
) -> MirrorResult:
    """Make ``folder`` hold exactly the referenced objects; return their sizes and digests."""
    refs = sorted({r.key: r for r in references}.values(), key=lambda r: r.key)
    await anyio.Path(folder).mkdir(parents=True, exist_ok=True, mode=0o700)
    hashes_file = folder.parent / "hashes.json"
    hashes = await anyio.to_thread.run_sync(_load_hashes, hashes_file)
    root = getattr(store, "root", None)
    if isinstance(root, Path) and refs and not await anyio.Path(root).is_dir():
        # An unmounted share: do not empty the mirror (the next point would copy it all again).
        raise StorageError(f"the object store folder {root} is not there", permanent=True)
    if isinstance(root, Path):
        result = await anyio.to_thread.run_sync(_sync_filesystem, root, folder, refs, hashes)
    else:
        result = await _sync_remote(store, folder, refs, hashes)
    wanted = {entry.key for entry in result.objects}
    result.removed = await anyio.to_thread.run_sync(_prune, folder, wanted)
    for key in list(hashes):
        if key not in wanted:
            del hashes[key]
    await anyio.to_thread.run_sync(write_json, hashes_file, hashes)
    if result.missing:
        log.warning("%d referenced objects are not in the store", len(result.missing))
    return result
