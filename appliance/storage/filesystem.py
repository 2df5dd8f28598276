"""The filesystem backend: objects as files under one folder (the embedded default).

A write goes to a temporary file in the same file system and is renamed into place when
complete, so a reader sees the whole old object or the whole new one, never part of either.

A multipart write keeps its parts as files in a folder of its own under ``.multipart`` (each
part written to a temporary file, checked, then renamed into place, so a part is whole or
absent); completing it copies the parts, in order, into one staging file that is renamed
into place like any other write. Folders whose names start with a dot are never keys.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import mimetypes
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread

from appliance.storage.base import (
    CHUNK_SIZE,
    InsufficientSpace,
    MissingParts,
    MultipartInfo,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    check_key,
    check_part,
    verified_part,
)

__all__ = ["FilesystemStore"]

_TYPES_SUFFIX = ".type"  # the content type of an object, kept beside it
_STAGING = ".staging"
_MULTIPART = ".multipart"
_KEY_FILE = "key"  # in a multipart folder: the key it will become
_TYPE_FILE = "type"  # and the content type
DISK_HEADROOM = 256 * 1024 * 1024  # kept free beside a joined multipart write


def _fsync_folder(folder: Path) -> None:
    """Make renames into ``folder`` durable."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _append(source: Path, target: int) -> None:
    """Copy the file ``source`` to the end of the open file ``target`` (in the kernel where
    the file system allows it)."""
    with source.open("rb") as handle:
        remaining = os.fstat(handle.fileno()).st_size
        while remaining > 0:
            copied = os.copy_file_range(handle.fileno(), target, min(remaining, 1 << 30))
            if copied == 0:
                raise OSError(f"{source.name} ended early")
            remaining -= copied


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
            (self.root / _MULTIPART).mkdir(exist_ok=True, mode=0o700)
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

            await anyio.to_thread.run_sync(self._publish, staging, path, content_type)
        except OSError as exc:
            raise StorageError(f"cannot write {key!r}: {exc.strerror}") from exc
        finally:
            # Whatever happened (error, cancellation), no partial file stays behind.
            for leftover in (staging, staging.with_suffix(".type")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        return ObjectInfo(key=key, size=size, content_type=content_type)

    @staticmethod
    def _publish(staging: Path, path: Path, content_type: str) -> None:
        """Rename a finished staging file (and its type) into place, durably."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # The type goes through staging too, so it is never seen half-written.
        type_staging = staging.with_suffix(".type")
        type_staging.write_text(content_type)
        type_staging.replace(path.with_name(path.name + _TYPES_SUFFIX))
        staging.replace(path)
        # The renames are durable only once the folder itself is on disk.
        _fsync_folder(path.parent)

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
                dirs[:] = [d for d in dirs if not d.startswith(".")]
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

    # --- multipart writes ------------------------------------------------------------------

    min_part_size = 1  # files have no smallest part

    def _folder(self, key: str) -> Path:
        """The folder of the multipart write to ``key``: named by a digest, so any key fits."""
        check_key(key)
        return self.root / _MULTIPART / hashlib.sha256(key.encode()).hexdigest()[:40]

    async def start_multipart(self, key: str, *, content_type: str) -> None:
        folder = self._folder(key)

        def start() -> None:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not (folder / _KEY_FILE).exists():
                (folder / _TYPE_FILE).write_text(content_type)
                # Written last: a folder with its key file is a complete, open write.
                (folder / _KEY_FILE).write_text(key)

        try:
            await anyio.to_thread.run_sync(start)
        except OSError as exc:
            raise StorageError(f"cannot start a write to {key!r}: {exc.strerror}") from exc

    async def put_part(
        self, key: str, number: int, chunks: AsyncIterator[bytes], *, length: int, sha256: str
    ) -> None:
        check_part(number, length, sha256)
        folder = self._folder(key)
        if not await anyio.Path(folder / _KEY_FILE).exists():
            raise ObjectNotFound(key)
        temporary = folder / f"{number:05d}.{secrets.token_hex(8)}.tmp"
        try:
            handle = await anyio.open_file(temporary, "wb")
            try:
                async for piece in verified_part(chunks, length=length, sha256=sha256):
                    await handle.write(piece)
                await handle.flush()
                await anyio.to_thread.run_sync(os.fsync, handle.wrapped.fileno())
            finally:
                await handle.aclose()
            # Only a whole, checked part replaces the one of its number.
            await anyio.Path(temporary).replace(folder / f"{number:05d}.part")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None  # aborted (or completed) meanwhile
        except OSError as exc:
            raise StorageError(f"cannot write part {number} of {key!r}: {exc.strerror}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                await anyio.Path(temporary).unlink()

    async def complete_multipart(self, key: str, parts: int) -> ObjectInfo:
        folder = self._folder(key)
        path = self._path(key)
        staging = self.root / _STAGING / f"{secrets.token_hex(8)}.part"

        def complete() -> ObjectInfo | None:
            try:
                content_type = (folder / _TYPE_FILE).read_text()
                (folder / _KEY_FILE).stat()
            except FileNotFoundError:
                return None  # no open write: completed before, or never started
            files = [folder / f"{number:05d}.part" for number in range(1, parts + 1)]
            missing = [n for n, file in enumerate(files, 1) if not file.exists()]
            if missing:
                raise MissingParts(key, missing)
            size = sum(file.stat().st_size for file in files)
            if shutil.disk_usage(self.root).free < size + DISK_HEADROOM:
                raise InsufficientSpace(f"no room to join {size} bytes into {key!r}")
            staging.parent.mkdir(parents=True, exist_ok=True)
            with staging.open("wb") as target:
                for file in files:
                    _append(file, target.fileno())
                target.flush()
                os.fsync(target.fileno())
            self._publish(staging, path, content_type)
            shutil.rmtree(folder)
            return ObjectInfo(key=key, size=size, content_type=content_type)

        try:
            joined = await anyio.to_thread.run_sync(complete)
        except OSError as exc:
            raise StorageError(f"cannot join the parts of {key!r}: {exc.strerror}") from exc
        finally:
            for leftover in (staging, staging.with_suffix(".type")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        return joined if joined is not None else await self.stat(key)

    async def abort_multipart(self, key: str) -> None:
        folder = self._folder(key)
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))

    async def list_multipart(self, prefix: str = "") -> AsyncIterator[MultipartInfo]:
        def scan() -> list[MultipartInfo]:
            found = []
            with contextlib.suppress(FileNotFoundError):
                for folder in (self.root / _MULTIPART).iterdir():
                    try:
                        key_file = folder / _KEY_FILE
                        key = key_file.read_text()
                        started = dt.datetime.fromtimestamp(key_file.stat().st_mtime, dt.UTC)
                    except (FileNotFoundError, NotADirectoryError):
                        continue
                    if key.startswith(prefix):
                        found.append(MultipartInfo(key=key, started=started))
            return sorted(found, key=lambda info: info.key)

        for info in await anyio.to_thread.run_sync(scan):
            yield info
