"""The filesystem backend: objects as files under one folder (the embedded default).

A write goes to a temporary file in the same file system and is renamed into place when
complete, so a reader sees the whole old object or the whole new one, never part of either.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread

from appliance.storage.base import CHUNK_SIZE, ObjectInfo, ObjectNotFound, StorageError, check_key

__all__ = ["FilesystemStore"]

_TYPES_SUFFIX = ".type"  # the content type of an object, kept beside it
_STAGING = ".staging"


class FilesystemStore:
    """Objects under ``root``; nothing here is served by a web server directly."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:
            raise StorageError(f"invalid object key {key[:80]!r}", permanent=True)
        return path

    async def ensure_ready(self) -> None:
        def prepare() -> None:
            (self.root / _STAGING).mkdir(parents=True, exist_ok=True, mode=0o700)
            self.root.chmod(0o700)

        try:
            await anyio.to_thread.run_sync(prepare)
        except OSError as exc:
            raise StorageError(f"cannot use {self.root}: {exc.strerror}", permanent=True) from exc

    async def put(self, key: str, chunks: AsyncIterator[bytes], *, content_type: str) -> ObjectInfo:
        path = self._path(key)
        staging = self.root / _STAGING / f"{secrets.token_hex(8)}.part"
        size = 0
        try:
            await anyio.to_thread.run_sync(
                lambda: staging.parent.mkdir(parents=True, exist_ok=True)
            )
            handle = await anyio.open_file(staging, "wb")
            try:
                async for chunk in chunks:
                    await handle.write(chunk)
                    size += len(chunk)
                await handle.flush()
                await anyio.to_thread.run_sync(os.fsync, handle.wrapped.fileno())
            finally:
                await handle.aclose()

            def publish() -> None:
                path.parent.mkdir(parents=True, exist_ok=True)
                # The type goes through staging too, so it is never seen half-written.
                type_staging = staging.with_suffix(".type")
                type_staging.write_text(content_type)
                type_staging.replace(path.with_name(path.name + _TYPES_SUFFIX))
                staging.replace(path)
                # The renames are durable only once the folder itself is on disk.
                folder = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)

            await anyio.to_thread.run_sync(publish)
        except OSError as exc:
            raise StorageError(f"cannot write {key!r}: {exc.strerror}") from exc
        finally:
            # Whatever happened (error, cancellation), no partial file stays behind.
            for leftover in (staging, staging.with_suffix(".type")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        return ObjectInfo(key=key, size=size, content_type=content_type)

    async def get(
        self, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await anyio.open_file(path, "rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        try:
            await handle.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                want = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
                chunk = await handle.read(want)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            await handle.aclose()

    async def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)

        def read() -> ObjectInfo:
            size = path.stat().st_size
            try:
                content_type = path.with_name(path.name + _TYPES_SUFFIX).read_text()
            except FileNotFoundError:
                content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            return ObjectInfo(key=key, size=size, content_type=content_type)

        try:
            return await anyio.to_thread.run_sync(read)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    async def delete(self, key: str) -> None:
        path = self._path(key)

        def remove() -> None:
            for victim in (path, path.with_name(path.name + _TYPES_SUFFIX)):
                with contextlib.suppress(FileNotFoundError):
                    victim.unlink()

        await anyio.to_thread.run_sync(remove)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        # Walk only below the prefix's folder: "uploads/12/" never reads the rest of the store.
        folder_part = prefix.rpartition("/")[0]
        start = self.root / folder_part if folder_part else self.root
        if folder_part:
            check_key(folder_part)

        def walk() -> list[str]:
            keys = []
            for folder, dirs, files in os.walk(start):
                dirs[:] = [d for d in dirs if d != _STAGING]
                for name in files:
                    if name.endswith(_TYPES_SUFFIX):
                        continue
                    key = Path(folder, name).relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        keys.append(key)
            return sorted(keys)

        for key in await anyio.to_thread.run_sync(walk):
            with contextlib.suppress(ObjectNotFound):
                yield await self.stat(key)

    async def delete_prefix(self, prefix: str) -> int:
        count = 0
        async for info in self.list(prefix):
            await self.delete(info.key)
            count += 1
        return count
