"""The export archive's writer: JSON arrays laid out item by item exactly as one encoding of
the whole list would be, handed on in bounded pieces, and a summary written after the
records and files it counts."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from appliance.exports import archive
from appliance.exports.archive import Contents, JsonDocument, PersonFile
from appliance.storage.filesystem import FilesystemStore

WHEN = dt.datetime(2026, 6, 12, 14, 30, tzinfo=dt.UTC)


async def items_of(values: list[Any]) -> AsyncIterator[Any]:
    for value in values:
        yield value


async def written(values: list[Any]) -> tuple[list[bytes], list[int]]:
    counts: list[int] = []
    pieces = [piece async for piece in archive._array(items_of(values), counts.append)]
    return pieces, counts


@pytest.mark.parametrize(
    "values",
    [
        [],
        [{"id": 1}],
        [
            {"id": 1, "name": "Anna\nBerg", "tags": ["a", "b"], "at": WHEN, "empty": {}},
            {"id": 2, "nested": {"list": [1, [2, 3]], "none": None}, "gap": dt.timedelta(1)},
            'a string with \\ and " and {braces}',
            17,
        ],
    ],
    ids=["empty", "one", "mixed"],
)
async def test_an_array_written_item_by_item_is_the_whole_array(values: list[Any]) -> None:
    pieces, counts = await written(values)
    whole = msgspec.json.format(msgspec.json.encode(values), indent=2)
    assert b"".join(pieces) == whole
    assert json.loads(b"".join(pieces)) == json.loads(whole)
    assert counts == [len(values)]


async def test_a_long_array_is_handed_on_in_bounded_pieces() -> None:
    row = {"id": 0, "note": "x" * 200}
    values = [{**row, "id": n} for n in range(20_000)]
    pieces, counts = await written(values)
    assert counts == [20_000] and len(pieces) > 10
    largest = max(len(piece) for piece in pieces)
    assert largest < archive._JSON_CHUNK + 1024, largest
    assert [v["id"] for v in json.loads(b"".join(pieces))] == list(range(20_000))


async def test_the_summary_is_written_last_with_what_went_in(tmp_path: Path) -> None:
    """Two documents and two files go in; the summary callback sees their counts, the
    manifest checks every entry, and the heartbeat runs once per entry at least."""
    store = FilesystemStore(tmp_path / "objects")
    await store.ensure_ready()
    photos = {"originals/1/a.jpg": b"a" * 3000, "originals/1/b.jpg": b"b" * 5000}
    for key, data in photos.items():
        await store.put(key, items_of([data]), content_type="image/jpeg")

    async def files() -> AsyncIterator[PersonFile]:
        for key in photos:
            yield PersonFile(key=key, filename="IMG.jpg", folder="photos", sub="1")

    seen: list[Contents] = []

    def summary(contents: Contents) -> bytes:
        seen.append(msgspec.structs.replace(contents, items=dict(contents.items)))
        return f"<p>{contents.items} {contents.files}</p>".encode()

    beats: list[int] = []

    async def heartbeat() -> None:
        beats.append(1)

    documents = [
        JsonDocument(folder="data", filename="client.json", items=lambda: items_of([{"id": 1}])),
        JsonDocument(
            folder=None, filename="access_log.json", items=lambda: items_of([]), label="log"
        ),
    ]
    stored, contents = await archive.write_archive(
        store,
        "exports/client/1/1-1.zip",
        documents=documents,
        files=files(),
        summary=summary,
        now=WHEN,
        heartbeat=heartbeat,
    )
    data = b"".join([chunk async for chunk in store.get("exports/client/1/1-1.zip")])
    assert stored.size == len(data)
    zipped = zipfile.ZipFile(io.BytesIO(data))
    assert zipped.namelist() == [
        "data/client.json",
        "access_log.json",
        "photos/1/IMG.jpg",
        "photos/1/IMG (2).jpg",
        archive.SUMMARY,
        archive.MANIFEST,
    ]
    assert seen == [contents]
    assert contents.items == {"data/client.json": 1, "log": 0} and contents.files == 2
    assert zipped.read(archive.SUMMARY) == summary(contents)
    lines = zipped.read(archive.MANIFEST).decode().splitlines()
    manifest = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in lines}
    assert set(manifest) == set(zipped.namelist()) - {archive.MANIFEST}
    for name, digest in manifest.items():
        assert hashlib.sha256(zipped.read(name)).hexdigest() == digest, name
    assert manifest == contents.digests
    assert len(beats) >= 5
