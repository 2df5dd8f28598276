"""Resumable photo uploads: a file arrives in numbered chunks, then becomes a photo.

Steps:
1. ``start_upload`` checks the name, size and set, and hands out an upload token.
2. ``receive_chunk`` streams one chunk into the object store while hashing it; a chunk whose
   length or SHA-256 is wrong is discarded; sending the same chunk again replaces it, so a
   dropped connection simply resends.
3. ``complete_upload`` joins the chunks on local disk (bounded memory, any file size), records
   the SHA-256, sniffs the type from the bytes, decodes the image once to refuse truncated or
   corrupt files and those over the pixel bound, stores the original, and only then writes the
   photo row; the chunks are removed either way. Nothing half-written stays behind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import shutil
import tempfile
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import asyncpg
import msgspec

from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.config import UploadSettings
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.galleries.derivatives import queue_derivatives
from appliance.galleries.service import lock_gallery
from appliance.galleries.tables import Gallery, GallerySet, Photo, PhotoUpload, PhotoUploadChunk
from appliance.storage.base import ObjectStore, StorageError

__all__ = [
    "PhotoRecord",
    "UploadState",
    "complete_upload",
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


class UploadState(msgspec.Struct, frozen=True):
    token: str
    size: int
    chunk_size: int
    chunks: int
    received: list[int]


class PhotoRecord(msgspec.Struct, frozen=True):
    id: int
    gallery_id: int
    set_id: int
    filename: str
    content_type: str
    size: int
    sha256: str
    width: int
    height: int
    duplicate_of: int | None = None


COMPLETING_FOR = dt.timedelta(minutes=15)  # a claim older than this was a request that died
MAX_OPEN_UPLOADS = 1000  # per person: a whole shoot at once, not an unbounded pile of chunks
DISK_HEADROOM = 256 * 1024 * 1024  # kept free beside the joined file


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


def _chunk_count(size: int, chunk_size: int) -> int:
    return -(-size // chunk_size)


async def start_upload(
    gallery_id: int,
    set_id: int,
    *,
    filename: str,
    size: int,
    rules: UploadSettings,
    actor: Actor,
    now: dt.datetime,
) -> UploadState:
    """Open an upload for one file into a set of a gallery."""
    name = _clean_filename(filename)
    if size <= 0:
        raise InvalidInput(f"{name} is empty.", field="size")
    if size > rules.max_file_mb * 1024 * 1024:
        raise InvalidInput(f"{name} is larger than {rules.max_file_mb} MB.", field="size")
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
    chunk_size = rules.chunk_mb * 1024 * 1024
    token = secrets.token_urlsafe(24)
    await PhotoUpload.insert(
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
    ).run()
    return UploadState(
        token=token,
        size=size,
        chunk_size=chunk_size,
        chunks=_chunk_count(size, chunk_size),
        received=[],
    )


async def _upload_row(token: str, gallery_id: int) -> dict[str, Any]:
    row = (
        await PhotoUpload.select()
        .where(PhotoUpload.token == token[:64])
        .where(PhotoUpload.gallery == gallery_id)
        .first()
        .run()
    )
    if row is None:
        raise NotFound("There is no such upload (it may have finished or been abandoned).")
    return row


def _chunk_object(upload_id: int, index: int) -> str:
    return f"uploads/{upload_id}/{index:06d}"


async def upload_state(token: str, gallery_id: int) -> UploadState:
    """Which chunks arrived: a browser resuming after a break sends only the others."""
    row = await _upload_row(token, gallery_id)
    rows = (
        await PhotoUploadChunk.select(PhotoUploadChunk.position)
        .where(PhotoUploadChunk.upload == row["id"])
        .order_by(PhotoUploadChunk.position)
        .run()
    )
    return UploadState(
        token=token,
        size=row["size"],
        chunk_size=row["chunk_size"],
        chunks=_chunk_count(row["size"], row["chunk_size"]),
        received=[r["position"] for r in rows],
    )


async def receive_chunk(
    token: str,
    gallery_id: int,
    index: int,
    body: AsyncIterator[bytes],
    *,
    sha256: str,
    store: ObjectStore,
) -> UploadState:
    """Store chunk ``index`` if its length and SHA-256 are right; idempotent per index."""
    row = await _upload_row(token, gallery_id)
    count = _chunk_count(row["size"], row["chunk_size"])
    if not 0 <= index < count:
        raise InvalidInput(f"Chunk {index} is outside this file (0 to {count - 1}).", field="index")
    expected = min(row["chunk_size"], row["size"] - index * row["chunk_size"])
    digest = hashlib.sha256()
    received = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal received
        async for piece in body:
            received += len(piece)
            if received > expected:
                raise InvalidInput(f"Chunk {index} is longer than {expected} bytes.", field="chunk")
            digest.update(piece)
            yield piece

    key = _chunk_object(row["id"], index)
    await store.put(key, counted(), content_type="application/octet-stream")
    problem = None
    if received != expected:
        problem = f"Chunk {index} has {received} bytes; {expected} were expected. Send it again."
    elif digest.hexdigest() != sha256.strip().lower():
        problem = f"Chunk {index} arrived damaged (checksum mismatch). Send it again."
    if problem:
        await store.delete(key)
        raise InvalidInput(problem, field="chunk")
    try:
        await _record_chunk(row["id"], index, received, digest.hexdigest())
    except asyncpg.ForeignKeyViolationError:
        # The upload was finished, purged or its set deleted while this chunk arrived.
        await store.delete(key)
        raise NotFound("This upload no longer exists.") from None
    return await upload_state(token, gallery_id)


async def _record_chunk(upload_id: int, index: int, size: int, sha256: str) -> None:
    await PhotoUploadChunk.raw(
        "INSERT INTO photo_upload_chunk (upload, chunk_key, position, size, sha256)"
        " VALUES ({}, {}, {}, {}, {})"
        " ON CONFLICT (chunk_key) DO UPDATE SET size = EXCLUDED.size, sha256 = EXCLUDED.sha256",
        upload_id,
        f"{upload_id}:{index}",
        index,
        size,
        sha256,
    )


async def _discard(row: dict[str, Any], store: ObjectStore) -> None:
    """Remove an upload's chunks and its rows (after completion, or when it is refused)."""
    await store.delete_prefix(f"uploads/{row['id']}/")
    await PhotoUpload.delete().where(PhotoUpload.id == row["id"]).run()


def _check_file(path: Path, rules: UploadSettings) -> tuple[str, int, int]:
    """Type (sniffed), width and height, after decoding the whole image once.

    Runs on a worker thread. Decoding every pixel is what catches a truncated or corrupt file;
    pyvips streams it, so memory stays small even for 150-megapixel images.
    """
    import pyvips

    with path.open("rb") as handle:
        content_type = sniff_type(handle.read(32))
    if content_type is None:
        raise InvalidInput("This is not a JPEG, PNG, TIFF, WebP or HEIC image.", field="file")
    try:
        image = pyvips.Image.new_from_file(str(path), access="sequential", fail_on="truncated")
    except pyvips.Error:
        raise InvalidInput(
            "This file cannot be read as an image (damaged, or not a supported format).",
            field="file",
        ) from None
    width, height = int(image.width), int(image.height)
    if width * height > rules.max_megapixels * 1_000_000:
        raise InvalidInput(
            f"This image has {width * height / 1e6:.0f} megapixels; the limit is "
            f"{rules.max_megapixels}.",
            field="file",
        )
    try:
        image.avg()
    except pyvips.Error:
        raise InvalidInput(
            "This image is damaged or incomplete. Export it again and upload the new file.",
            field="file",
        ) from None
    return content_type, width, height


async def _join(row: dict[str, Any], chunks: int, store: ObjectStore, target: Any) -> str:
    """Append every chunk, in order, to the open file ``target``; returns the SHA-256."""
    digest = hashlib.sha256()
    async_file = anyio.wrap_file(target)
    for index in range(chunks):
        async for piece in store.get(_chunk_object(row["id"], index)):
            digest.update(piece)
            await async_file.write(piece)
    await async_file.flush()
    return digest.hexdigest()


async def _file_chunks(path: str) -> AsyncIterator[bytes]:
    handle = await anyio.open_file(path, "rb")
    try:
        while piece := await handle.read(1024 * 1024):
            yield piece
    finally:
        await handle.aclose()


async def complete_upload(
    token: str,
    gallery_id: int,
    *,
    store: ObjectStore,
    rules: UploadSettings,
    scratch: Path,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> PhotoRecord:
    """Join, check and store the original; returns the new photo (noting an exact duplicate).

    The upload is claimed first, so a second "complete" of the same upload (a retry, a double
    click) is refused instead of making a second photo.
    """
    row = await _upload_row(token, gallery_id)
    state = await upload_state(token, gallery_id)
    missing = sorted(set(range(state.chunks)) - set(state.received))
    if missing:
        raise Conflict(f"Chunks still missing: {', '.join(map(str, missing[:10]))}.")
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
            row,
            state,
            gallery_id,
            store=store,
            rules=rules,
            scratch=scratch,
            actor=actor,
            address=address,
            now=now,
        )
    except (InvalidInput, StorageError):
        await _discard(row, store)  # refused: nothing of it stays
        raise
    except BaseException:
        # Anything else (the database, a cancelled request): let the browser try again.
        await (
            PhotoUpload.update({PhotoUpload.completing_at: None})
            .where(PhotoUpload.id == row["id"])
            .run()
        )
        raise


async def _require_set(set_id: int) -> None:
    if not await GallerySet.exists().where(GallerySet.id == set_id).run():
        raise Conflict("The set of this upload was deleted.")


async def _complete_claimed(
    row: dict[str, Any],
    state: UploadState,
    gallery_id: int,
    *,
    store: ObjectStore,
    rules: UploadSettings,
    scratch: Path,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> PhotoRecord:
    await anyio.to_thread.run_sync(lambda: scratch.mkdir(parents=True, exist_ok=True))
    free = (await anyio.to_thread.run_sync(shutil.disk_usage, scratch)).free
    if free < row["size"] + DISK_HEADROOM:
        raise Conflict(
            "The server's disk is too full to finish this upload. Ask the studio's IT to free "
            "space; the upload can be finished afterwards."
        )
    key = f"originals/{gallery_id}/{secrets.token_hex(16)}"
    with tempfile.NamedTemporaryFile(dir=scratch, suffix=".part") as joined:
        sha256 = await _join(row, state.chunks, store, joined)
        try:
            content_type, width, height = await anyio.to_thread.run_sync(
                _check_file, Path(joined.name), rules
            )
        except InvalidInput as exc:
            raise InvalidInput(f"{row['filename']}: {exc.message}", field=exc.field) from None
        await store.put(key, _file_chunks(joined.name), content_type=content_type)
    try:
        async with Gallery._meta.db.transaction(allow_nested=True):
            # The gallery's lock orders this against set changes and other completions, so
            # positions do not collide and the set cannot vanish under the insert.
            await lock_gallery(gallery_id)
            await _require_set(row["gallery_set"])
            duplicate = (
                await Photo.select(Photo.id)
                .where(Photo.gallery == gallery_id)
                .where(Photo.sha256 == sha256)
                .first()
                .run()
            )
            position = await Photo.count().where(Photo.gallery_set == row["gallery_set"]).run()
            rows = await Photo.insert(
                Photo(
                    gallery=gallery_id,
                    gallery_set=row["gallery_set"],
                    filename=row["filename"],
                    content_type=content_type,
                    size=row["size"],
                    sha256=sha256,
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
                details={"photo": rows[0]["id"], "bytes": row["size"]},
                at=now,
            )
    except BaseException:
        await store.delete(key)  # no object without its row
        raise
    await _discard(row, store)
    return PhotoRecord(
        id=rows[0]["id"],
        gallery_id=gallery_id,
        set_id=row["gallery_set"],
        filename=row["filename"],
        content_type=content_type,
        size=row["size"],
        sha256=sha256,
        width=width,
        height=height,
        duplicate_of=duplicate["id"] if duplicate else None,
    )


async def purge_abandoned(store: ObjectStore, now: dt.datetime, *, older_than: dt.timedelta) -> int:
    """Remove uploads started longer ago than ``older_than`` and never completed, with their
    chunks; returns how many. (A browser resumes within days, not weeks.)"""
    rows = await PhotoUpload.select().where(PhotoUpload.created_at < now - older_than).run()
    for row in rows:
        await _discard(row, store)
    return len(rows)
