"""The export archive: records as JSON, the person's files, a summary and a SHA-256 manifest,
written as one streamed ZIP into the object store.

Memory does not grow with the number of records or the size of the files: records are
fetched a batch at a time and each JSON file is written item by item; each file is read from
the store chunk by chunk; each chunk of the archive goes on to the store's streamed ``put``
before the next is read (the galleries' ZIP writer). What grows is the bookkeeping of each
entry (the ZIP's central directory, which every ZIP ends with, and the manifest's checksum):
about 1 KB per file, some 50 MB for 50,000 photos. Checksums
are computed from the chunks written, so the manifest, written last, describes exactly the
bytes that went into the archive; the summary is written just before it, so the counts it
gives are those of the records and files written.

The files are listed from the records' snapshot into a :class:`FileList` on disk, and the
snapshot ends before the first file is written: writing a client's photos can take an hour,
and a snapshot held that long holds back vacuum on every table. A file deleted after it was
listed, record and all, is left out and counted (``Contents.gone``), not a failed export;
a file the store lost while its record still names it fails the export as before.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec

from appliance.exports import records
from appliance.galleries.zipstream import ZipEntry, safe_entry_name, stream_zip
from appliance.storage.base import ObjectInfo, ObjectNotFound, ObjectStore

__all__ = [
    "MANIFEST",
    "SUMMARY",
    "Contents",
    "FileList",
    "JsonDocument",
    "PersonFile",
    "files_of",
    "table_documents",
    "write_archive",
]

MANIFEST = "manifest-sha256.txt"  # the format of sha256sum, so `sha256sum -c` checks it
SUMMARY = "summary.html"
# A column with an object key of a person's own file, and the column with its name.
FILE_COLUMNS = {"original_key": "filename"}
# A long entry (a table of many rows, a large photo) still tells the job it is alive.
HEARTBEAT_SECONDS = 30.0
_JSON_CHUNK = 256 * 1024  # JSON is handed to the ZIP writer in pieces of about this size


class PersonFile(msgspec.Struct, frozen=True):
    key: str
    filename: str
    folder: str  # "photos"
    sub: str = ""  # the gallery's id, so two galleries' IMG_0001.jpg stay apart
    table: str = ""  # the record that names the file: "photo"
    column: str = ""  # "original_key"


class JsonDocument(msgspec.Struct, frozen=True):
    """One JSON file of the archive, an array written item by item as ``items`` yields them."""

    folder: str | None  # "data", or None for the archive's top
    filename: str  # "client.json"
    items: Callable[[], AsyncIterator[Any]]
    label: str = ""  # what the summary calls it (a table's name)


class Contents(msgspec.Struct):
    """What went into the archive, for the summary written after it."""

    items: dict[str, int] = msgspec.field(default_factory=dict)  # per document's label
    files: int = 0
    gone: int = 0  # files listed in the records but deleted before they could be written
    digests: dict[str, str] = msgspec.field(default_factory=dict)  # entry name to SHA-256


def table_documents(
    reader: records.Reader, queries: list[records.TableQuery]
) -> list[JsonDocument]:
    """``data/<table>.json`` for each table's rows, fetched a batch at a time."""
    return [
        JsonDocument(
            folder="data",
            filename=f"{query.table}.json",
            items=lambda query=query: reader.rows(query),  # type: ignore[misc]
            label=query.table,
        )
        for query in queries
    ]


async def files_of(
    reader: records.Reader, queries: list[records.TableQuery]
) -> AsyncIterator[PersonFile]:
    """The files the records point at (photo originals), folder by their table and parent."""
    for query in queries:
        if not query.columns & FILE_COLUMNS.keys():
            continue
        async for row in reader.rows(query):
            for key_column, name_column in FILE_COLUMNS.items():
                key = row.get(key_column)
                if isinstance(key, str) and key:
                    parent = row.get("gallery")
                    name = str(row.get(name_column) or key.rsplit("/", 1)[-1])
                    yield PersonFile(
                        key=key,
                        filename=name,
                        folder=f"{query.table}s",
                        sub=str(parent) if parent else "",
                        table=query.table,
                        column=key_column,
                    )


class FileList:
    """Files to write, kept in a temporary file rather than in memory: listed while the
    records' snapshot is open, read back after it has ended. One JSON line each (JSON escapes
    a newline inside a string, so lines split cleanly)."""

    def __init__(self) -> None:
        self._spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._encoder = msgspec.json.Encoder()
        self.count = 0

    async def fill(self, files: AsyncIterable[PersonFile]) -> None:
        async for item in files:
            self._spool.write(self._encoder.encode(item) + b"\n")
            self.count += 1

    async def __aiter__(self) -> AsyncIterator[PersonFile]:
        self._spool.seek(0)
        for line in self._spool:
            yield msgspec.json.decode(line, type=PersonFile)

    def close(self) -> None:
        self._spool.close()


def _hook(obj: Any) -> Any:
    return str(obj)  # anything msgspec has no JSON form for (intervals, ranges...)


def _item(value: Any) -> bytes:
    """One item of a JSON array as ``msgspec.json.format(array, indent=2)`` lays it out."""
    text = msgspec.json.format(msgspec.json.encode(value, enc_hook=_hook), indent=2)
    # Strings are escaped, so a newline in the text is always one of the layout's.
    return b"  " + text.replace(b"\n", b"\n  ")


async def _array(items: AsyncIterable[Any], counted: Callable[[int], None]) -> AsyncIterator[bytes]:
    """A JSON array of ``items`` in pieces of about ``_JSON_CHUNK``; then ``counted(n)``."""
    count = 0
    pending: list[bytes] = []
    size = 0
    async for item in items:
        data = (b"[\n" if count == 0 else b",\n") + _item(item)
        count += 1
        pending.append(data)
        size += len(data)
        if size >= _JSON_CHUNK:
            yield b"".join(pending)
            pending, size = [], 0
    pending.append(b"\n]" if count else b"[]")
    yield b"".join(pending)
    counted(count)


def _bytes(data: bytes) -> Callable[[], AsyncIterator[bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    return chunks


async def write_archive(
    store: ObjectStore,
    key: str,
    *,
    documents: list[JsonDocument],
    files: AsyncIterable[PersonFile],
    summary: Callable[[Contents], bytes],
    now: dt.datetime,
    heartbeat: Callable[[], Awaitable[None]] | None = None,
) -> tuple[ObjectInfo, Contents]:
    """Stream the archive into ``key``; returns the stored object and what went into it.
    ``summary`` renders the summary from what was written. A failure part-way leaves no
    object (the store's ``put`` is all or nothing)."""
    contents = Contents()
    digests = contents.digests
    taken = {SUMMARY.casefold(), MANIFEST.casefold()}
    taken_in: dict[str, set[str]] = {}
    last_beat = time.monotonic()

    async def beat(force: bool) -> None:
        nonlocal last_beat
        if heartbeat is not None and (force or time.monotonic() - last_beat >= HEARTBEAT_SECONDS):
            await heartbeat()
            last_beat = time.monotonic()

    def hashed(entry: ZipEntry) -> ZipEntry:
        async def chunks() -> AsyncIterator[bytes]:
            digest = hashlib.sha256()
            async for chunk in entry.chunks():
                digest.update(chunk)
                yield chunk
                await beat(force=False)
            digests[entry.name] = digest.hexdigest()
            await beat(force=True)

        return ZipEntry(name=entry.name, size=entry.size, modified=entry.modified, chunks=chunks)

    def document(doc: JsonDocument) -> ZipEntry:
        name = safe_entry_name(doc.folder, doc.filename, taken=taken, fallback="records.json")

        def counted(count: int) -> None:
            contents.items[doc.label or name] = count

        # The size is a hint for the ZIP writer (ZIP64 or not); a streamed entry's real
        # length is recorded after its bytes.
        return ZipEntry(
            name=name, size=0, modified=now, chunks=lambda: _array(doc.items(), counted)
        )

    async def entries() -> AsyncIterator[ZipEntry]:
        for doc in documents:
            yield hashed(document(doc))
        async for item in files:
            try:
                info = await store.stat(item.key)
            except ObjectNotFound:
                if not item.table or await records.still_recorded(
                    item.table, item.column, item.key
                ):
                    raise  # the store lost a file its record still names
                contents.gone += 1  # deleted with its record since the records were read
                continue
            # One component per call of safe_entry_name, each made safe; unique per folder.
            inner = safe_entry_name(
                item.sub or None,
                item.filename,
                taken=taken_in.setdefault(item.folder, set()),
                fallback="file",
            )
            contents.files += 1
            yield hashed(
                ZipEntry(
                    name=f"{item.folder}/{inner}",
                    size=info.size,
                    modified=now,
                    chunks=lambda key=item.key: store.get(key),  # type: ignore[misc]
                )
            )
        # Written after everything it describes, with what was written.
        page = summary(contents)
        yield hashed(ZipEntry(name=SUMMARY, size=len(page), modified=now, chunks=_bytes(page)))

        async def manifest() -> AsyncIterator[bytes]:
            lines: list[str] = []
            for name, digest in digests.items():  # in pieces, not one large string
                lines.append(f"{digest}  {name}\n")
                if len(lines) == 1000:
                    yield "".join(lines).encode()
                    lines = []
            yield "".join(lines).encode()

        yield ZipEntry(name=MANIFEST, size=0, modified=now, chunks=manifest)

    stored = await store.put(key, stream_zip(entries()), content_type="application/zip")
    return stored, contents
