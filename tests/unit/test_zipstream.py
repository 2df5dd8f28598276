"""The streamed ZIP: valid archives, bounded memory, and entry names that cannot escape."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import shutil
import struct
import subprocess
import tracemalloc
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appliance.errors import NotFound
from appliance.galleries.zipstream import ZipEntry, safe_entry_name, stream_zip

WHEN = dt.datetime(2026, 6, 12, 14, 30, tzinfo=dt.UTC)


def entry(name: str, data: bytes, *, size: int | None = None) -> ZipEntry:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    return ZipEntry(
        name=name, size=len(data) if size is None else size, modified=WHEN, chunks=chunks
    )


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([piece async for piece in chunks])


async def test_archive_holds_every_entry_byte_for_byte() -> None:
    files = {
        "Ceremony/a.jpg": b"a" * 2500,
        "Ceremony/b.jpg": b"",
        "Party/c.jpg": bytes(range(256)) * 9,
    }
    data = await collect(stream_zip([entry(name, body) for name, body in files.items()]))
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    assert {name: archive.read(name) for name in archive.namelist()} == files
    assert archive.getinfo("Party/c.jpg").date_time == (2026, 6, 12, 14, 30, 0)


def test_entries_announced_as_huge_get_zip64_records_and_still_open(tmp_path: Path) -> None:
    data = asyncio.run(collect(stream_zip([entry("big.tif", b"x" * 5000, size=3 * 2**30)])))
    assert data[:4] == b"PK\x03\x04"
    name_length, extra_length = struct.unpack("<HH", data[26:30])
    extra = data[30 + name_length : 30 + name_length + extra_length]
    assert extra[:2] == b"\x01\x00"  # the entry's ZIP64 extra field
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.read("big.tif") == b"x" * 5000
    if shutil.which("unzip"):
        target = tmp_path / "all.zip"
        target.write_bytes(data)
        checked = subprocess.run(["unzip", "-t", str(target)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_memory_stays_at_one_chunk_however_large_the_archive() -> None:
    """64 MB through the writer: no yielded piece is much over a chunk and the peak of
    Python allocations stays a few MB."""
    chunk = b"\xaa" * (1024 * 1024)

    def big(name: str) -> ZipEntry:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(32):
                yield chunk

        return ZipEntry(name=name, size=32 * len(chunk), modified=WHEN, chunks=chunks)

    tracemalloc.start()
    largest = total = 0
    async for piece in stream_zip([big("one.jpg"), big("two.jpg")]):
        largest = max(largest, len(piece))
        total += len(piece)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total > 64 * 1024 * 1024
    assert largest <= len(chunk) + 4096
    assert peak < 8 * 1024 * 1024, peak


async def test_a_check_before_each_entry_can_end_the_archive() -> None:
    """A link withdrawn while its ZIP downloads: no entry after the check fails is sent."""
    calls = 0

    async def still_shared(_: ZipEntry) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise NotFound("This link was withdrawn by the studio.")

    stream = stream_zip(
        [entry("a.jpg", b"a" * 10), entry("b.jpg", b"b" * 10)], before_entry=still_shared
    )
    sent = b""
    with pytest.raises(NotFound):
        async for piece in stream:
            sent += piece
    assert b"a.jpg" in sent and b"b.jpg" not in sent


@pytest.mark.parametrize(
    "folder,filename,expected",
    [
        (None, "IMG_0001.jpg", "IMG_0001.jpg"),
        (None, "../../etc/passwd", "_.._etc_passwd"),
        (None, "/abs/path.jpg", "_abs_path.jpg"),
        (None, "C:\\Users\\x.jpg", "C__Users_x.jpg"),
        (None, "..", "photo-7"),
        (None, "  ", "photo-7"),
        (None, "bell\x07\x00name\u202e.jpg", "bell__name_.jpg"),
        ("../Ceremony", "a.jpg", "_Ceremony/a.jpg"),
        ("Party: night", "b.jpg", "Party_ night/b.jpg"),
        ("..", "c.jpg", "Photos/c.jpg"),
    ],
)
def test_entry_names_cannot_leave_the_folder(
    folder: str | None, filename: str, expected: str
) -> None:
    name = safe_entry_name(folder, filename, taken=set(), fallback="photo-7")
    assert name == expected
    parts = name.split("/")
    assert ".." not in parts and not name.startswith("/") and "\\" not in name


def test_entry_names_are_unique_ignoring_case_and_can_take_a_new_extension() -> None:
    taken: set[str] = set()
    names = [
        safe_entry_name(None, n, taken=taken, fallback="p") for n in ["a.JPG", "A.jpg", "a.jpg"]
    ]
    assert names == ["a.JPG", "A (2).jpg", "a (3).jpg"]
    assert (
        safe_entry_name(None, "scan.tiff", taken=taken, fallback="p", extension=".jpg")
        == "scan.jpg"
    )
    assert (
        safe_entry_name(None, "noext", taken=taken, fallback="p", extension=".jpg") == "noext.jpg"
    )
