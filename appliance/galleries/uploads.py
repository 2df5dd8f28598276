"""Resumable photo uploads: a file arrives in numbered chunks, then becomes a photo.

Each upload is a multipart write to the object store (see ``ObjectStore.start_multipart``):
every chunk becomes one part of the original, so finishing an upload moves no bytes.

Steps:
1. ``start_upload`` checks the name, size and set, records the upload and opens the
   multipart write of its original; it hands out an upload token.
2. ``receive_chunk`` streams one chunk straight into its part, while the store counts and
   hashes it: a chunk whose length or SHA-256 is wrong is refused and changes nothing; sending
   the same chunk again replaces it, so a dropped connection simply resends. The first bytes
   of chunk 0 are remembered for a while (``_Heads``).
3. ``complete_upload`` claims the upload, has the store join the parts into the original,
   sniffs the type from the first bytes and reads only the image's header (type, dimensions,
   the pixel bound), from the remembered first bytes where they reach and from the original
   beyond, then writes the photo row and removes the upload's record in one transaction. A
   refused file is removed with its parts: nothing half-written stays behind.

What moved to the worker: decoding every pixel (which catches truncated and corrupt files)
and the file's SHA-256 (which needs every byte). Both happen in the derivative job, which
reads the whole original anyway; a file damaged past its header ends there as a failed photo
with the decoder's reason, and the SHA-256 is recorded there, which is when an exact
duplicate can be told (``duplicates``).
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import mimetypes
import re
import secrets
import unicodedata
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import asyncpg
import msgspec

from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.config import UploadSettings
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.galleries.derivatives import libvips, queue_derivatives
from appliance.galleries.service import lock_gallery
from appliance.galleries.tables import Gallery, GallerySet, Photo, PhotoUpload, PhotoUploadChunk
from appliance.storage.base import (
    MAX_PARTS,
    InsufficientSpace,
    MissingParts,
    ObjectNotFound,
    ObjectStore,
    PartRejected,
    StorageError,
)

__all__ = [
    "PhotoRecord",
    "UploadState",
    "complete_upload",
    "duplicates",
    "purge_abandoned",
    "receive_chunk",
    "sniff_type",
    "start_upload",
    "upload_state",
]

_MAGIC: list[tuple[bytes, int, str]] = [
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"II*\x00", 0, "image/tiff"),
    (b"MM\x00*", 0, "image/tiff"),
]
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_IMAGE_TYPES = {"image/jpeg", "image/png", "image/tiff", "image/webp", "image/heic"}


class UploadState(msgspec.Struct, frozen=True):
    token: str
    size: int
    chunk_size: int
    chunks: int
    received: list[int]


class PhotoRecord(msgspec.Struct, frozen=True):
    """The photo an upload became. Its SHA-256 is not known yet: the worker records it when
    it reads the file to make the previews."""

    id: int
    gallery_id: int
    set_id: int
    filename: str
    content_type: str
    size: int
    width: int
    height: int
    status: str = "processing"


COMPLETING_FOR = dt.timedelta(minutes=15)  # a claim older than this was a request that died
MAX_OPEN_UPLOADS = 1000  # per person: a whole shoot at once, not an unbounded pile of chunks
HEADER_BLOCK = 64 * 1024  # the header of an upload is read in blocks of this size...
HEADER_LIMIT = 4 * 1024 * 1024  # ...and no more than this (a real header needs a few KB)
HEAD_KEPT = 4 * HEADER_BLOCK  # the first bytes of a file remembered from its chunk 0...
HEADS_KEPT = 32  # ...for this many files at most (the latest): 8 MB


def sniff_type(head: bytes) -> str | None:
    """The image type from the first bytes of a file; None for anything else."""
    for magic, offset, content_type in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "image/heic"
    return None


def _clean_filename(name: str) -> str:
    name = unicodedata.normalize("NFC", name.strip())
    if not name:
        raise InvalidInput("The file has no name.", field="filename")
    if len(name) > 255:
        raise InvalidInput("The file name is longer than 255 characters.", field="filename")
    if "/" in name or "\\" in name or name in {".", ".."}:
        raise InvalidInput("File names cannot contain / or \\.", field="filename")
    if any(unicodedata.category(char) in {"Cc", "Cf", "Cs"} for char in name):
        raise InvalidInput("The file name contains control characters.", field="filename")
    return name


class _Heads:
    """The first bytes of the files whose chunk 0 passed through this process lately, by
    the key of their original.

    Reading an upload's header back from the store costs a request, and on some S3 servers
    (moto among them) a ranged read loads the whole object. The first HEAD_KEPT bytes hold
    nearly every header (a camera's EXIF with its thumbnail, XMP, a colour profile) and pass
    through here anyway; only bytes of a chunk the store has taken whole, so checked against
    its SHA-256, are remembered; a chunk sent again carries the same bytes, so which send is
    remembered does not matter. Only a shortcut: a file whose head is not here (sent through
    another process, forgotten, or the process restarted) is read from the store.
    """

    def __init__(self) -> None:
        self._heads: collections.OrderedDict[str, bytes] = collections.OrderedDict()

    def keep(self, key: str, head: bytes) -> None:
        self._heads[key] = head
        self._heads.move_to_end(key)
        while len(self._heads) > HEADS_KEPT:
            self._heads.popitem(last=False)

    def take(self, key: str) -> bytes:
        """The head of ``key`` (forgotten here), or nothing."""
        return self._heads.pop(key, b"")


_heads = _Heads()


def _chunk_count(size: int, chunk_size: int) -> int:
    return -(-size // chunk_size)


def _original_key(gallery_id: int, token: str) -> str:
    """Where an upload's original goes: named after its token (by a digest, so the key says
    nothing of the token), so the upload's record needs no column for it and a retried or
    purged upload finds its object again."""
    return f"originals/{gallery_id}/{hashlib.sha256(f'upload:{token}'.encode()).hexdigest()[:32]}"


async def start_upload(
    gallery_id: int,
    set_id: int,
    *,
    filename: str,
    size: int,
    rules: UploadSettings,
    store: ObjectStore,
    actor: Actor,
    now: dt.datetime,
) -> UploadState:
    """Open an upload for one file into a set of a gallery.

    Chunks are ``uploads.chunk_mb`` long, or the store's smallest part (5 MiB on S3) when
    that is larger, since each chunk becomes one part of the original.
    """
    name = _clean_filename(filename)
    if size <= 0:
        raise InvalidInput(f"{name} is empty.", field="size")
    if size > rules.max_file_mb * 1024 * 1024:
        raise InvalidInput(f"{name} is larger than {rules.max_file_mb} MB.", field="size")
    chunk_size = max(rules.chunk_mb * 1024 * 1024, store.min_part_size)
    if _chunk_count(size, chunk_size) > MAX_PARTS:
        raise InvalidInput(f"{name} would need more than {MAX_PARTS} chunks.", field="size")
    owner = (
        await GallerySet.select(GallerySet.id)
        .where(GallerySet.id == set_id)
        .where(GallerySet.gallery == gallery_id)
        .first()
        .run()
    )
    if owner is None:
        raise NotFound("There is no such set in this gallery.")
    open_uploads = await PhotoUpload.count().where(PhotoUpload.created_by == actor.id).run()
    if open_uploads >= MAX_OPEN_UPLOADS:
        raise Conflict(
            f"You have {open_uploads} unfinished uploads. Let them finish (or wait a week for "
            "abandoned ones to be cleared) before starting more."
        )
    token = secrets.token_urlsafe(24)
    rows = await PhotoUpload.insert(
        PhotoUpload(
            token=token,
            gallery=gallery_id,
            gallery_set=set_id,
            filename=name,
            size=size,
            chunk_size=chunk_size,
            created_by=actor.id,
            created_at=now,
        )
    ).returning(PhotoUpload.id)
    # The record comes first: a write opened for it is always found by the purge, while a
    # record without its write (the store failed) is removed right here.
    guessed = mimetypes.guess_type(name)[0]
    try:
        await store.start_multipart(
            _original_key(gallery_id, token),
            # The object's own type; the photo's type is sniffed from its bytes at the end.
            content_type=guessed if guessed in _IMAGE_TYPES else "application/octet-stream",
        )
    except BaseException:
        await PhotoUpload.delete().where(PhotoUpload.id == rows[0]["id"]).run()
        raise
    return UploadState(
        token=token,
        size=size,
        chunk_size=chunk_size,
        chunks=_chunk_count(size, chunk_size),
        received=[],
    )


async def _upload_row(token: str, gallery_id: int) -> dict[str, Any]:
    # Raw: this runs for every chunk, and the query builder's own work showed in profiles.
    rows = await PhotoUpload.raw(
        "SELECT id, token, gallery, gallery_set, filename, size, chunk_size, created_by,"
        " created_at, completing_at FROM photo_upload WHERE token = {} AND gallery = {}",
        token[:64],
        gallery_id,
    )
    if not rows:
        raise NotFound("There is no such upload (it may have finished or been abandoned).")
    return dict(rows[0])


async def upload_state(token: str, gallery_id: int) -> UploadState:
    """Which chunks arrived: a browser resuming after a break sends only the others."""
    return await _state(await _upload_row(token, gallery_id))


async def _state(row: dict[str, Any]) -> UploadState:
    rows = (
        await PhotoUploadChunk.select(PhotoUploadChunk.position)
        .where(PhotoUploadChunk.upload == row["id"])
        .order_by(PhotoUploadChunk.position)
        .run()
    )
    return UploadState(
        token=row["token"],
        size=row["size"],
        chunk_size=row["chunk_size"],
        chunks=_chunk_count(row["size"], row["chunk_size"]),
        received=[r["position"] for r in rows],
    )


def _being_completed(row: dict[str, Any], now: dt.datetime) -> bool:
    claimed = row["completing_at"]
    return claimed is not None and claimed >= now - COMPLETING_FOR


async def receive_chunk(
    token: str,
    gallery_id: int,
    index: int,
    body: AsyncIterator[bytes],
    *,
    sha256: str,
    store: ObjectStore,
    now: dt.datetime | None = None,
) -> UploadState:
    """Store chunk ``index`` if its length and SHA-256 are right; idempotent per index.

    The bytes go straight on into the chunk's part as they arrive; nothing holds the chunk
    (of chunk 0, the first HEAD_KEPT bytes, see ``_Heads``).
    """
    row = await _upload_row(token, gallery_id)
    count = _chunk_count(row["size"], row["chunk_size"])
    if not 0 <= index < count:
        raise InvalidInput(f"Chunk {index} is outside this file (0 to {count - 1}).", field="index")
    digest = sha256.strip().lower()
    if not _SHA256.fullmatch(digest):
        raise InvalidInput("The chunk's X-Chunk-SHA256 is not a SHA-256 in hex.", field="sha256")
    if _being_completed(row, now or dt.datetime.now(dt.UTC)):
        raise Conflict(f"{row['filename']} is being finished; it takes no more chunks.")
    expected = min(row["chunk_size"], row["size"] - index * row["chunk_size"])
    key = _original_key(gallery_id, row["token"])
    head = bytearray()
    if index == 0:
        body = _keeping(body, head)
    try:
        await store.put_part(key, index + 1, body, length=expected, sha256=digest)
    except PartRejected as exc:
        if exc.reason == "long":
            problem = f"Chunk {index} is longer than {expected} bytes."
        elif exc.reason == "short":
            problem = f"Chunk {index} has {exc.received} bytes; {expected} were expected."
        else:
            problem = f"Chunk {index} arrived damaged (checksum mismatch)."
        raise InvalidInput(f"{problem} Send it again.", field="chunk") from None
    except ObjectNotFound:
        raise NotFound("This upload no longer exists.") from None
    if head:
        _heads.keep(key, bytes(head))
    try:
        received = await _record_chunk(row["id"], index, expected, digest)
    except asyncpg.ForeignKeyViolationError:
        # The upload was finished, purged or its set deleted while this chunk arrived.
        await store.abort_multipart(key)
        raise NotFound("This upload no longer exists.") from None
    return UploadState(
        token=row["token"],
        size=row["size"],
        chunk_size=row["chunk_size"],
        chunks=count,
        received=received,
    )


async def _keeping(chunks: AsyncIterator[bytes], head: bytearray) -> AsyncIterator[bytes]:
    """Pass ``chunks`` on, copying their first HEAD_KEPT bytes into ``head``."""
    async for piece in chunks:
        if len(head) < HEAD_KEPT:
            head += piece[: HEAD_KEPT - len(head)]
        yield piece


async def _record_chunk(upload_id: int, index: int, size: int, sha256: str) -> list[int]:
    """Count chunk ``index`` as arrived; returns every chunk that has, in order.

    One round trip: the statement's own snapshot does not see the row it writes, so the
    chunk just written is added from the insert's RETURNING.
    """
    rows = await PhotoUploadChunk.raw(
        "WITH recorded AS ("
        " INSERT INTO photo_upload_chunk (upload, chunk_key, position, size, sha256)"
        " VALUES ({}, {}, {}, {}, {})"
        " ON CONFLICT (chunk_key) DO UPDATE SET size = EXCLUDED.size, sha256 = EXCLUDED.sha256"
        " RETURNING position)"
        " SELECT position FROM photo_upload_chunk WHERE upload = {}"
        " UNION SELECT position FROM recorded ORDER BY position",
        upload_id,
        f"{upload_id}:{index}",
        index,
        size,
        sha256,
        upload_id,
    )
    return [r["position"] for r in rows]


async def _discard(row: dict[str, Any], store: ObjectStore) -> None:
    """Remove an upload whole: its open write (parts), its original if it was joined, chunk
    objects of the kind uploads kept before they were multipart writes, and its record."""
    key = _original_key(row["gallery"], row["token"])
    _heads.take(key)
    await store.abort_multipart(key)
    await store.delete(key)
    await store.delete_prefix(f"uploads/{row['id']}/")
    await PhotoUpload.delete().where(PhotoUpload.id == row["id"]).run()


class _Blocks:
    """A blocking, seekable reader over one stored object, for libvips on a worker thread.

    The blocks that ``head`` (the object's first bytes, where known) covers are read from it;
    each other block is fetched once, with a ranged read on the event loop; a loader that
    wants more than HEADER_LIMIT (no header needs that) reads an early end instead. Errors
    cannot cross libvips' callbacks, so a storage failure is kept in ``error`` and raised
    afterwards.
    """

    def __init__(self, store: ObjectStore, key: str, size: int, head: bytes = b"") -> None:
        self.store, self.key, self.size = store, key, size
        self.head = head[:size]
        self.position = 0
        self.fetched = 0
        self.error: StorageError | None = None
        self._cache: collections.OrderedDict[int, bytes] = collections.OrderedDict()

    async def _fetch(self, offset: int) -> bytes:
        pieces = [p async for p in self.store.get(self.key, offset=offset, length=HEADER_BLOCK)]
        return b"".join(pieces)

    def _block(self, number: int) -> bytes:
        start, end = number * HEADER_BLOCK, min((number + 1) * HEADER_BLOCK, self.size)
        if end <= len(self.head):
            return self.head[start:end]
        if number in self._cache:
            self._cache.move_to_end(number)
            return self._cache[number]
        if self.error is not None or self.fetched >= HEADER_LIMIT:
            return b""
        try:
            data = anyio.from_thread.run(self._fetch, number * HEADER_BLOCK)
        except StorageError as exc:
            self.error = exc
            return b""
        self.fetched += len(data)
        self._cache[number] = data
        if len(self._cache) > 8:
            self._cache.popitem(last=False)
        return data

    def read_at(self, offset: int, length: int) -> bytes:
        out = bytearray()
        while len(out) < length and offset < self.size:
            block = self._block(offset // HEADER_BLOCK)
            start = offset % HEADER_BLOCK
            piece = block[start : start + length - len(out)]
            if not piece:
                break
            out += piece
            offset += len(piece)
        return bytes(out)

    def read(self, length: int) -> bytes:
        data = self.read_at(self.position, length)
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int) -> int:
        base = {0: 0, 1: self.position, 2: self.size}.get(whence)
        if base is None or base + offset < 0:
            return -1
        self.position = base + offset
        return self.position


def _webp_size(head: bytes) -> tuple[int, int] | None:
    """Width and height from the first 30 bytes of a WebP (libvips would read it whole)."""
    kind = head[12:16]
    if kind == b"VP8X" and len(head) >= 30:
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if kind == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        width = int.from_bytes(head[26:28], "little") & 0x3FFF
        height = int.from_bytes(head[28:30], "little") & 0x3FFF
        return (width, height) if width and height else None
    if kind == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _inspect(blocks: _Blocks, rules: UploadSettings) -> tuple[str, int, int]:
    """Type (sniffed), width and height of a stored upload, from its header alone.

    Runs on a worker thread. Decoding every pixel is left to the derivative job, which does
    it anyway: a file whose header is fine and whose pixels are not fails there.
    """
    head = blocks.read_at(0, 32)
    content_type = sniff_type(head)
    if blocks.error is not None:
        raise blocks.error
    if content_type is None:
        raise InvalidInput("This is not a JPEG, PNG, TIFF, WebP or HEIC image.", field="file")
    unreadable = InvalidInput(
        "This file cannot be read as an image (damaged, or not a supported format).",
        field="file",
    )
    if content_type == "image/webp":
        size = _webp_size(blocks.read_at(0, 30))
        if size is None:
            raise unreadable
        width, height = size
    else:
        pyvips = libvips()
        source = pyvips.SourceCustom()
        source.on_read(blocks.read)
        source.on_seek(blocks.seek)
        try:
            image = pyvips.Image.new_from_source(source, "", access="sequential")
            width, height = int(image.width), int(image.height)
        except pyvips.Error:
            if blocks.error is not None:
                raise blocks.error from None
            raise unreadable from None
    if width * height > rules.max_megapixels * 1_000_000:
        raise InvalidInput(
            f"This image has {width * height / 1e6:.0f} megapixels; the limit is "
            f"{rules.max_megapixels}.",
            field="file",
        )
    return content_type, width, height


class _SetGone(Conflict):
    """The upload's set was deleted meanwhile."""


async def complete_upload(
    token: str,
    gallery_id: int,
    *,
    store: ObjectStore,
    rules: UploadSettings,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> PhotoRecord:
    """Join the chunks into the original, check its header and record the photo.

    The upload is claimed first, so a second "complete" of the same upload (a retry, a double
    click) is refused instead of making a second photo. A refused file is removed with its
    parts; a failure that may pass (the database, the store's network, a full disk) keeps
    everything, so finishing can simply be asked again.
    """
    row = await _upload_row(token, gallery_id)
    state = await _state(row)
    missing = sorted(set(range(state.chunks)) - set(state.received))
    if missing:
        raise Conflict(
            f"Chunks still missing: {', '.join(map(str, missing[:10]))}.", field="chunks"
        )
    claimed = (
        await PhotoUpload.update({PhotoUpload.completing_at: now})
        .where(PhotoUpload.id == row["id"])
        .where(
            PhotoUpload.completing_at.is_null() | (PhotoUpload.completing_at < now - COMPLETING_FOR)
        )
        .returning(PhotoUpload.id)
        .run()
    )
    if not claimed:
        raise Conflict(f"{row['filename']} is already being finished.")
    try:
        return await _complete_claimed(
            row, state, gallery_id, store=store, rules=rules, actor=actor, address=address, now=now
        )
    except (InvalidInput, _SetGone):
        await _discard(row, store)  # refused: nothing of it stays
        raise
    except StorageError as exc:
        if exc.permanent:
            await _discard(row, store)
        else:
            await _release(row)
        raise
    except BaseException:
        # Anything else (the database, a cancelled request): let the browser try again.
        await _release(row)
        raise


async def _release(row: dict[str, Any]) -> None:
    await (
        PhotoUpload.update({PhotoUpload.completing_at: None})
        .where(PhotoUpload.id == row["id"])
        .run()
    )


async def _join(row: dict[str, Any], key: str, chunks: int, store: ObjectStore) -> int:
    """Have the store join the parts; returns the original's size."""
    try:
        info = await store.complete_multipart(key, chunks)
    except MissingParts as exc:
        # The store lacks parts the database counts (lost, or a resend still in flight):
        # forget them, so the browser's next look at the upload sends them again.
        await (
            PhotoUploadChunk.delete()
            .where(PhotoUploadChunk.upload == row["id"])
            .where(PhotoUploadChunk.position.is_in([number - 1 for number in exc.numbers]))
            .run()
        )
        shown = ", ".join(str(number - 1) for number in exc.numbers[:10])
        raise Conflict(f"Chunks still missing: {shown}.", field="chunks") from None
    except InsufficientSpace:
        raise Conflict(
            "The server's disk is too full to finish this upload. Ask the studio's IT to free "
            "space; the upload can be finished afterwards."
        ) from None
    except ObjectNotFound:
        # Neither an open write nor an object: the upload began before uploads were written
        # as multipart writes, or its write was aborted. Nothing can be finished from it.
        raise InvalidInput(
            "This upload cannot be finished any more; upload the file again.", field="file"
        ) from None
    return info.size


async def _complete_claimed(
    row: dict[str, Any],
    state: UploadState,
    gallery_id: int,
    *,
    store: ObjectStore,
    rules: UploadSettings,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> PhotoRecord:
    key = _original_key(gallery_id, row["token"])
    size = await _join(row, key, state.chunks, store)
    if size != row["size"]:
        raise InvalidInput(
            f"{row['filename']}: {size} bytes arrived where {row['size']} were announced.",
            field="file",
        )
    try:
        content_type, width, height = await anyio.to_thread.run_sync(
            _inspect, _Blocks(store, key, size, _heads.take(key)), rules
        )
    except InvalidInput as exc:
        raise InvalidInput(f"{row['filename']}: {exc.message}", field=exc.field) from None
    async with Gallery._meta.db.transaction(allow_nested=True):
        # The gallery's lock orders this against set changes and other completions, so
        # positions do not collide and the set cannot vanish under the insert.
        await lock_gallery(gallery_id)
        if not await GallerySet.exists().where(GallerySet.id == row["gallery_set"]).run():
            raise _SetGone("The set of this upload was deleted.")
        position = await Photo.count().where(Photo.gallery_set == row["gallery_set"]).run()
        rows = await Photo.insert(
            Photo(
                gallery=gallery_id,
                gallery_set=row["gallery_set"],
                filename=row["filename"],
                content_type=content_type,
                size=size,
                sha256="",  # recorded by the derivative job, which reads every byte
                width=width,
                height=height,
                original_key=key,
                position=position,
                created_by=actor.id,
                created_at=now,
            )
        ).returning(Photo.id)
        await queue_derivatives(rows[0]["id"], now)
        await audit.record(
            "photo.upload",
            actor=actor,
            target=f"gallery:{gallery_id}",
            address=address,
            details={"photo": rows[0]["id"], "bytes": size},
            at=now,
        )
        # In the same transaction: the original belongs either to its upload (which the purge
        # removes, object and all) or to its photo, never to neither.
        await PhotoUpload.delete().where(PhotoUpload.id == row["id"]).run()
    return PhotoRecord(
        id=rows[0]["id"],
        gallery_id=gallery_id,
        set_id=row["gallery_set"],
        filename=row["filename"],
        content_type=content_type,
        size=size,
        width=width,
        height=height,
    )


async def duplicates(gallery_id: int) -> dict[int, int]:
    """Photo id to the id of the earliest photo of the same gallery with the same bytes
    (the same SHA-256), for every photo that repeats one; photos the worker has not read
    yet count once they are read."""
    rows = await Photo.raw(
        "SELECT later.id AS photo, min(earlier.id) AS same_as"
        " FROM photo later JOIN photo earlier"
        "   ON earlier.gallery = later.gallery AND earlier.sha256 = later.sha256"
        "  AND earlier.id < later.id"
        " WHERE later.gallery = {} AND later.sha256 <> ''"
        " GROUP BY later.id",
        gallery_id,
    )
    return {row["photo"]: row["same_as"] for row in rows}


async def purge_abandoned(store: ObjectStore, now: dt.datetime, *, older_than: dt.timedelta) -> int:
    """Remove uploads started longer ago than ``older_than`` and never completed, with their
    parts; returns how many. (A browser resumes within days, not weeks.)

    Open writes under ``originals/`` that no upload owns (a request died between opening one
    and recording it, or a record was removed by hand) are aborted too, once as old.
    """
    rows = await PhotoUpload.select().where(PhotoUpload.created_at < now - older_than).run()
    for row in rows:
        await _discard(row, store)
    # Listed before the records are read: a write is opened only after its record exists,
    # so any write listed here whose upload is alive has its record in ``owned``.
    old = [w.key async for w in store.list_multipart("originals/") if w.started < now - older_than]
    owned = {
        _original_key(row["gallery"], row["token"])
        for row in await PhotoUpload.select(PhotoUpload.gallery, PhotoUpload.token).run()
    }
    for key in old:
        if key not in owned:
            await store.abort_multipart(key)
    return len(rows)
