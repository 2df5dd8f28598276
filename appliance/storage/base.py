"""The object store contract: what every backend offers, and the errors it raises.

Keys are relative, slash-separated names of a restricted alphabet (checked here, once, for
every backend), so no backend ever sees ``..``, an absolute path or a control character.
Writes are all-or-nothing: a failed or cancelled ``put`` leaves no object behind.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Protocol

import msgspec

__all__ = [
    "CHUNK_SIZE",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "StorageError",
    "check_key",
]

CHUNK_SIZE = 1024 * 1024  # bytes per read when streaming an object out
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


class ObjectInfo(msgspec.Struct, frozen=True):
    key: str
    size: int
    content_type: str


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe object name, else raise a permanent StorageError."""
    if len(key) > MAX_KEY_LENGTH or not _KEY.fullmatch(key) or ".." in key:
        raise StorageError(f"invalid object key {key[:80]!r}", permanent=True)
    return key


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
