"""A ZIP archive written as a stream: no size limit, memory bounded by one chunk.

Python's ``zipfile`` writes to an output it cannot seek by putting each entry's CRC and sizes
in a data descriptor after the entry's bytes, and ZIP64 records where an entry or the archive
passes 4 GB. The archive is built into a small sink that is emptied after every chunk, so each
chunk of a photo leaves the server before the next is read from the store. Entries are stored,
not deflated: JPEGs and the other photo formats do not get smaller.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
import zipfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable

import msgspec

__all__ = ["ZipEntry", "safe_entry_name", "stream_zip"]

MAX_NAME = 150


class ZipEntry(msgspec.Struct, frozen=True):
    name: str  # already made safe with safe_entry_name
    size: int
    modified: dt.datetime
    chunks: Callable[[], AsyncIterator[bytes]]
    ident: int = 0  # what the caller knows the entry by (a photo id)


class _Sink:
    """The write-only, unseekable file ``zipfile`` writes into."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _clean_part(text: str, fallback: str) -> str:
    """One path component: no separators, control characters, leading dots or spaces."""
    text = unicodedata.normalize("NFC", text)
    kept = "".join(
        "_" if char in '/\\:*?"<>|' or unicodedata.category(char)[0] == "C" else char
        for char in text
    )
    kept = kept.strip().lstrip(".").strip()
    return kept[:MAX_NAME] or fallback


def safe_entry_name(
    folder: str | None, filename: str, *, taken: set[str], fallback: str, extension: str = ""
) -> str:
    """An archive path that cannot leave the folder it is unpacked into, unique in ``taken``.

    ``extension`` (".jpg") replaces the file's own, for copies in another format.
    """
    name = _clean_part(filename, fallback)
    if extension:
        stem = name.rsplit(".", 1)[0] if "." in name else name
        name = (stem or fallback) + extension
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    prefix = f"{_clean_part(folder, 'Photos')}/" if folder else ""
    candidate = prefix + name
    number = 2
    while candidate.casefold() in taken:
        candidate = f"{prefix}{stem} ({number}){dot}{suffix}"
        number += 1
    taken.add(candidate.casefold())
    return candidate


async def stream_zip(
    entries: Iterable[ZipEntry] | AsyncIterable[ZipEntry],
    *,
    before_entry: Callable[[ZipEntry], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """The archive's bytes, chunk by chunk. ``before_entry`` runs before each entry and may
    raise to end the archive early (a share link revoked, a photo deleted while it downloads)."""
    sink = _Sink()
    archive = zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED)
    async for entry in _each(entries):
        if before_entry is not None:
            await before_entry(entry)
        info = zipfile.ZipInfo(entry.name, _zip_time(entry.modified))
        info.compress_type = zipfile.ZIP_STORED
        info.file_size = entry.size  # lets zipfile choose ZIP64 for entries near 4 GB
        info.external_attr = 0o644 << 16
        with archive.open(info, mode="w", force_zip64=entry.size > 2**31) as out:
            async for chunk in entry.chunks():
                out.write(chunk)
                yield sink.drain()
        if tail := sink.drain():
            yield tail
    archive.close()
    yield sink.drain()


async def _each(entries: Iterable[ZipEntry] | AsyncIterable[ZipEntry]) -> AsyncIterator[ZipEntry]:
    """The entries of a list, or of a generator that finds them while the archive is written."""
    if isinstance(entries, AsyncIterable):
        async for entry in entries:
            yield entry
    else:
        for entry in entries:
            yield entry


def _zip_time(moment: dt.datetime) -> tuple[int, int, int, int, int, int]:
    # ZIP times have no zone and start in 1980.
    moment = max(moment, dt.datetime(1980, 1, 1, tzinfo=dt.UTC))
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
