"""The object store contract: what every backend offers, and the errors it raises.

Keys are relative, slash-separated names of a restricted alphabet (checked here, once, for
every backend), so no backend ever sees ``..``, an absolute path or a control character.
Writes are all-or-nothing: a failed or cancelled ``put`` leaves no object behind, and a
multipart write shows nothing under its key until it is completed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import AsyncIterator
from typing import Literal, Protocol

import msgspec

__all__ = [
    "CHUNK_SIZE",
    "MAX_PARTS",
    "InsufficientSpace",
    "MissingParts",
    "MultipartInfo",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "PartRejected",
    "StorageError",
    "check_key",
    "check_part",
    "verified_part",
]

CHUNK_SIZE = 1024 * 1024  # bytes per read when streaming an object out
MAX_PARTS = 10_000  # parts of one multipart write, numbered from 1 (S3's limit)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")
MAX_KEY_LENGTH = 512


class StorageError(Exception):
    """The store failed; ``permanent`` says whether trying again can help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class ObjectNotFound(StorageError):
    """No object under that key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object {key!r}", permanent=True)
        self.key = key


class PartRejected(StorageError):
    """A part's bytes were not what the caller declared; nothing of them was kept.

    ``reason`` is "long" (more bytes than declared), "short" (the stream ended early) or
    "checksum" (the right length, another SHA-256); ``received`` counts the bytes seen.
    """

    def __init__(
        self, message: str, *, reason: Literal["long", "short", "checksum"], received: int
    ):
        super().__init__(message, permanent=True)
        self.reason = reason
        self.received = received


class MissingParts(StorageError):
    """Completing a multipart write found parts missing or of the wrong size (``numbers``)."""

    def __init__(self, key: str, numbers: list[int]) -> None:
        shown = ", ".join(map(str, numbers[:10]))
        super().__init__(f"parts {shown} of {key!r} are missing", permanent=True)
        self.numbers = numbers


class InsufficientSpace(StorageError):
    """The store has no room for what was asked; nothing was changed, so it can be retried."""


class ObjectInfo(msgspec.Struct, frozen=True):
    key: str
    size: int
    content_type: str
    # Changes whenever the object's bytes do (S3's ETag); "" where the backend has none.
    etag: str = ""


class MultipartInfo(msgspec.Struct, frozen=True):
    """A multipart write that was started and neither completed nor aborted."""

    key: str
    started: dt.datetime


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe object name, else raise a permanent StorageError."""
    if len(key) > MAX_KEY_LENGTH or not _KEY.fullmatch(key) or ".." in key:
        raise StorageError(f"invalid object key {key[:80]!r}", permanent=True)
    return key


def check_part(number: int, length: int, sha256: str) -> None:
    """Refuse (permanently) a part number, length or SHA-256 that no backend could take."""
    if not 1 <= number <= MAX_PARTS:
        raise StorageError(f"part number {number} is outside 1 to {MAX_PARTS}", permanent=True)
    if length < 1:
        raise StorageError(f"a part must have at least one byte, not {length}", permanent=True)
    if not _SHA256.fullmatch(sha256):
        raise StorageError("a part's SHA-256 must be 64 lower-case hex digits", permanent=True)


async def verified_part(
    chunks: AsyncIterator[bytes], *, length: int, sha256: str
) -> AsyncIterator[bytes]:
    """Pass ``chunks`` on while counting and hashing them; raise PartRejected as soon as they
    are longer than ``length``, shorter, or hash to another SHA-256.

    The piece that completes the part is handed on only after the whole part has been
    checked, so a backend that writes what it is given (a file, an HTTP request with a
    declared length) never receives the last byte of a wrong part and keeps none of it.
    """
    digest = hashlib.sha256()
    received = 0
    async for piece in chunks:
        if not piece:
            continue
        received += len(piece)
        if received > length:
            raise PartRejected(
                f"the part has more than {length} bytes", reason="long", received=received
            )
        digest.update(piece)
        if received == length and digest.hexdigest() != sha256:
            raise PartRejected(
                "the part's SHA-256 is not the declared one", reason="checksum", received=received
            )
        yield piece
    if received < length:
        raise PartRejected(
            f"the part has {received} bytes, not {length}", reason="short", received=received
        )


class ObjectStore(Protocol):
    """Where photos and documents live. Every method may raise StorageError."""

    async def ensure_ready(self) -> None:
        """Create what is missing (bucket, folder) and refuse an unsafe set-up (public bucket)."""
        ...

    async def put(self, key: str, chunks: AsyncIterator[bytes], *, content_type: str) -> ObjectInfo:
        """Store the bytes of ``chunks`` under ``key``, replacing any object there; all or
        nothing. Memory use is bounded whatever the size."""
        ...

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream the object (or ``length`` bytes of it from ``offset``); ObjectNotFound if none."""
        ...

    async def stat(self, key: str) -> ObjectInfo:
        """Size and type of the object; ObjectNotFound if none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; removing a missing one is not an error."""
        ...

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix``; returns how many."""
        ...

    # A multipart write: parts numbered 1 to MAX_PARTS arrive in any order (each with its
    # length and SHA-256, and sent again to replace it), then become one object at once.

    @property
    def min_part_size(self) -> int:
        """The fewest bytes every part but the last must have (S3: 5 MiB)."""
        ...

    async def start_multipart(self, key: str, *, content_type: str) -> None:
        """Open a multipart write to ``key``; nothing appears under ``key`` until it is
        completed. Starting one where one is open already keeps the open one."""
        ...

    async def put_part(
        self, key: str, number: int, chunks: AsyncIterator[bytes], *, length: int, sha256: str
    ) -> None:
        """Store part ``number``, replacing an earlier one of that number, if ``chunks`` are
        exactly ``length`` bytes with that (hex) SHA-256; PartRejected otherwise. A rejected,
        failed or cancelled part changes nothing: an earlier part of that number stays.
        ObjectNotFound when no write to ``key`` is open. Memory use is bounded whatever the
        length."""
        ...

    async def complete_multipart(self, key: str, parts: int) -> ObjectInfo:
        """Join parts 1 to ``parts``, in order, into the object ``key``, all or nothing, and
        drop the parts (any numbered above ``parts`` too). MissingParts when some are
        missing; InsufficientSpace when there is no room to join them (nothing changed);
        ObjectNotFound when no write to ``key`` is open and no object is there. Completing
        again after a success returns the object, so a retry is harmless."""
        ...

    async def abort_multipart(self, key: str) -> None:
        """Drop an open multipart write to ``key`` and its parts; none open is not an error."""
        ...

    def list_multipart(self, prefix: str = "") -> AsyncIterator[MultipartInfo]:
        """The open multipart writes to keys under ``prefix`` (for purging abandoned ones;
        a server that cannot list them by prefix lists none)."""
        ...
