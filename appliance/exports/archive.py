"""The export archive: records as JSON, the person's files, a summary and a SHA-256 manifest,
written as one streamed ZIP into the object store.

Memory stays bounded whatever the number and size of the files: each file is read from the
store chunk by chunk and each chunk of the archive goes on to the store's streamed ``put``
before the next is read (the galleries' ZIP writer). Checksums are computed from those same
chunks, so the manifest, written last, describes exactly the bytes that went into the archive.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from appliance.exports.records import TableRecords
from appliance.galleries.zipstream import ZipEntry, safe_entry_name, stream_zip
from appliance.storage.base import ObjectInfo, ObjectStore

__all__ = ["MANIFEST", "SUMMARY", "PersonFile", "files_of", "write_archive"]

MANIFEST = "manifest-sha256.txt"  # the format of sha256sum, so `sha256sum -c` checks it
SUMMARY = "summary.html"
# A column with an object key of a person's own file, and the column with its name.
FILE_COLUMNS = {"original_key": "filename"}


class PersonFile(msgspec.Struct, frozen=True):
    key: str
    filename: str
    folder: str  # "photos"
    sub: str = ""  # the gallery's id, so two galleries' IMG_0001.jpg stay apart


def files_of(records: list[TableRecords]) -> list[PersonFile]:
    """The files the records point at (photo originals), folder by their table and parent."""
    found = []
    for table in records:
        for row in table.rows:
            for key_column, name_column in FILE_COLUMNS.items():
                key = row.get(key_column)
                if isinstance(key, str) and key:
                    parent = row.get("gallery")
                    name = str(row.get(name_column) or key.rsplit("/", 1)[-1])
                    found.append(
                        PersonFile(
                            key=key,
                            filename=name,
                            folder=f"{table.table}s",
                            sub=str(parent) if parent else "",
                        )
                    )
    return found


def _json(value: Any) -> bytes:
    def hook(obj: Any) -> Any:
        return str(obj)  # anything msgspec has no JSON form for (intervals, ranges...)

    return msgspec.json.format(msgspec.json.encode(value, enc_hook=hook), indent=2)


def _bytes(data: bytes) -> Callable[[], AsyncIterator[bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    return chunks


async def write_archive(
    store: ObjectStore,
    key: str,
    *,
    records: list[TableRecords],
    files: list[PersonFile],
    extra_json: dict[str, Any],
    summary: bytes,
    now: dt.datetime,
    heartbeat: Callable[[], Any] | None = None,
) -> tuple[ObjectInfo, dict[str, str]]:
    """Stream the archive into ``key``; returns the stored object and the manifest (name to
    SHA-256). A failure part-way leaves no object (the store's ``put`` is all or nothing)."""
    digests: dict[str, str] = {}
    taken: set[str] = set()
    taken_in: dict[str, set[str]] = {}
    entries: list[ZipEntry] = [
        ZipEntry(name=SUMMARY, size=len(summary), modified=now, chunks=_bytes(summary))
    ]
    taken.add(SUMMARY.casefold())
    for table in records:
        data = _json(table.rows)
        name = safe_entry_name("data", f"{table.table}.json", taken=taken, fallback="records")
        entries.append(ZipEntry(name=name, size=len(data), modified=now, chunks=_bytes(data)))
    for name_hint, value in extra_json.items():
        data = _json(value)
        name = safe_entry_name(None, name_hint, taken=taken, fallback="data.json")
        entries.append(ZipEntry(name=name, size=len(data), modified=now, chunks=_bytes(data)))
    for item in files:
        info = await store.stat(item.key)
        # One component per call of safe_entry_name, each made safe; names unique per folder.
        inner = safe_entry_name(
            item.sub or None,
            item.filename,
            taken=taken_in.setdefault(item.folder, set()),
            fallback="file",
        )
        name = f"{item.folder}/{inner}"
        entries.append(
            ZipEntry(
                name=name,
                size=info.size,
                modified=now,
                chunks=lambda key=item.key: store.get(key),  # type: ignore[misc]
            )
        )

    def hashed(entry: ZipEntry) -> ZipEntry:
        async def chunks() -> AsyncIterator[bytes]:
            digest = hashlib.sha256()
            async for chunk in entry.chunks():
                digest.update(chunk)
                yield chunk
            digests[entry.name] = digest.hexdigest()
            if heartbeat is not None:
                await heartbeat()

        return ZipEntry(name=entry.name, size=entry.size, modified=entry.modified, chunks=chunks)

    async def manifest() -> AsyncIterator[bytes]:
        # Runs after every other entry was written, so every checksum is known.
        yield "".join(f"{digest}  {name}\n" for name, digest in digests.items()).encode()

    # The manifest's size is only a hint for the ZIP writer (ZIP64 or not); its real length is
    # recorded after its bytes, like every entry of a streamed archive.
    every = [hashed(entry) for entry in entries]
    every.append(ZipEntry(name=MANIFEST, size=0, modified=now, chunks=manifest))
    stored = await store.put(key, stream_zip(every), content_type="application/zip")
    return stored, dict(digests)
