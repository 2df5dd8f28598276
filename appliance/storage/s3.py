"""The S3 backend (MinIO in the bundle, or an S3-compatible EU cloud), through the minio SDK.

The SDK blocks, so every call runs on a worker thread; uploads stream through a small bridge
that hands the SDK one chunk at a time, so memory stays bounded by one multipart part.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.from_thread
import anyio.to_thread
from minio import Minio
from minio.error import S3Error
from urllib3.exceptions import HTTPError as Urllib3Error

from appliance.storage.base import CHUNK_SIZE, ObjectInfo, ObjectNotFound, StorageError, check_key

__all__ = ["S3Store"]

PART_SIZE = 16 * 1024 * 1024  # one multipart part: the most an upload holds in memory
_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"}
_PERMANENT = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket"}


def _error(exc: Exception, what: str) -> StorageError:
    if isinstance(exc, S3Error):
        return StorageError(f"{what}: {exc.code}", permanent=exc.code in _PERMANENT)
    return StorageError(f"{what}: {type(exc).__name__}")


class _ChunkReader:
    """A blocking file-like ``read(n)`` over an async chunk iterator, for the SDK's thread."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()
        self._done = False
        self.size = 0

    async def _next(self) -> bytes | None:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) < size):
            chunk = anyio.from_thread.run(self._next)
            if chunk is None:
                self._done = True
            else:
                self._buffer += chunk
        take = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        out = bytes(self._buffer[:take])
        del self._buffer[:take]
        self.size += len(out)
        return out


class S3Store:
    """Objects in one bucket, which must not be public."""

    def __init__(
        self, *, endpoint: str, access_key: str, secret_key: str, bucket: str, region: str
    ) -> None:
        parts = urlsplit(endpoint)
        self.bucket = bucket
        self.region = region or None
        self._client = Minio(
            parts.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=parts.scheme == "https",
            region=self.region,
        )

    async def _call(
        self, what: str, function: Any, *args: Any, key: str = "", **kwargs: Any
    ) -> Any:
        """Run one SDK call on a worker thread, with its errors mapped to ours."""
        try:
            return await anyio.to_thread.run_sync(lambda: function(*args, **kwargs))
        except S3Error as exc:
            if exc.code in _MISSING:
                raise ObjectNotFound(key or what) from None
            raise _error(exc, what) from exc
        except (Urllib3Error, OSError) as exc:
            raise _error(exc, what) from exc

    async def ensure_ready(self) -> None:
        client = self._client
        if not await self._call("check bucket", client.bucket_exists, self.bucket):
            await self._call("create bucket", client.make_bucket, self.bucket, self.region)
        try:
            policy = await anyio.to_thread.run_sync(client.get_bucket_policy, self.bucket)
        except S3Error as exc:
            if exc.code in {"NoSuchBucketPolicy", "NoSuchPolicy"}:
                return
            raise _error(exc, "read bucket policy") from exc
        except (Urllib3Error, OSError) as exc:
            raise _error(exc, "read bucket policy") from exc
        if _is_public(policy):
            raise StorageError(
                f"bucket {self.bucket!r} has a policy that lets anyone read it; remove the "
                "policy: photos must only be reachable through the appliance",
                permanent=True,
            )

    async def put(self, key: str, chunks: AsyncIterator[bytes], *, content_type: str) -> ObjectInfo:
        check_key(key)
        reader = _ChunkReader(chunks)
        # length=-1 streams in parts of PART_SIZE, one at a time; an error or a cancelled
        # upload aborts the multipart upload, so no partial object becomes visible.
        await self._call(
            f"put {key!r}",
            self._client.put_object,
            self.bucket,
            key,
            reader,
            -1,
            content_type=content_type,
            part_size=PART_SIZE,
            num_parallel_uploads=1,
        )
        return ObjectInfo(key=key, size=reader.size, content_type=content_type)

    async def get(
        self, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        check_key(key)
        if length == 0:
            await self.stat(key)  # still ObjectNotFound for a missing object, as on a disk
            return
        try:
            response = await self._call(
                f"get {key!r}",
                self._client.get_object,
                self.bucket,
                key,
                offset,
                length or 0,
                key=key,
            )
        except StorageError as exc:
            if "InvalidRange" not in str(exc):
                raise
            await self.stat(key)
            return  # an offset at or past the end reads nothing, as from a file
        try:
            while True:
                try:
                    chunk = await anyio.to_thread.run_sync(response.read, CHUNK_SIZE)
                except (Urllib3Error, OSError) as exc:
                    raise _error(exc, f"read {key!r}") from exc
                if not chunk:
                    break
                yield chunk
        finally:
            response.close()
            response.release_conn()

    async def stat(self, key: str) -> ObjectInfo:
        check_key(key)
        result = await self._call(
            f"stat {key!r}", self._client.stat_object, self.bucket, key, key=key
        )
        return ObjectInfo(
            key=key,
            size=int(result.size or 0),
            content_type=result.content_type or "application/octet-stream",
        )

    async def delete(self, key: str) -> None:
        check_key(key)
        with contextlib.suppress(ObjectNotFound):
            await self._call(
                f"delete {key!r}", self._client.remove_object, self.bucket, key, key=key
            )

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        def collect() -> list[Any]:
            return list(self._client.list_objects(self.bucket, prefix=prefix, recursive=True))

        for item in await self._call(f"list {prefix!r}", collect):
            yield ObjectInfo(
                key=item.object_name,
                size=int(item.size or 0),
                content_type=item.content_type or "application/octet-stream",
            )

    async def delete_prefix(self, prefix: str) -> int:
        count = 0
        async for info in self.list(prefix):
            await self.delete(info.key)
            count += 1
        return count


def _is_public(policy: str) -> bool:
    """Whether a bucket policy grants anything to everyone (Principal "*")."""
    try:
        document = json.loads(policy or "{}")
    except json.JSONDecodeError:
        return True  # unreadable: treat as unsafe
    for statement in document.get("Statement", []):
        principal = statement.get("Principal")
        if statement.get("Effect") == "Allow" and (
            principal == "*" or (isinstance(principal, dict) and "*" in str(principal.get("AWS")))
        ):
            return True
    return False
