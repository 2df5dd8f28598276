"""The S3 backend (MinIO in the bundle, or an S3-compatible EU cloud), through the minio SDK.

The SDK blocks, so its calls run on worker threads; ``put`` streams through a small bridge
that hands the SDK one chunk at a time, so memory stays bounded by one multipart part.

The parts of a multipart write (``put_part``) take another road, because they arrive with
their SHA-256 already known (the browser sends it with each chunk): the request is signed
with that SHA-256 by the SDK's signer and its body streamed on the event loop as it arrives,
so no part is held in memory and a server that checks payload hashes refuses a part whose
bytes do not match (we check them too, since not every server does). The request goes out
through ``_PartSender``, a small HTTP/1.1 writer on asyncio streams: for bodies of megabytes
a general HTTP client spent more CPU per byte than the sockets did, and every byte of every
upload passes here. A multipart write is found again by its key (S3 lists the open ones), so
callers need to keep nothing but the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
import weakref
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.from_thread
import anyio.to_thread
import msgspec
from minio import Minio
from minio.credentials.credentials import Credentials
from minio.datatypes import Part
from minio.error import S3Error
from minio.helpers import BaseURL
from minio.signer import sign_v4_s3
from minio.time import to_amz_date, utcnow
from urllib3.exceptions import HTTPError as Urllib3Error

from appliance.storage.base import (
    CHUNK_SIZE,
    MissingParts,
    MultipartInfo,
    ObjectInfo,
    ObjectNotFound,
    PartRejected,
    StorageError,
    check_key,
    check_part,
    verified_part,
)

__all__ = ["S3Store"]

PART_SIZE = 16 * 1024 * 1024  # one multipart part of ``put``: the most it holds in memory
MIN_PART_SIZE = 5 * 1024 * 1024  # S3 refuses smaller parts, but for the last
_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound", "NoSuchUpload"}
_PERMANENT = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket"}
_DAMAGED = {"XAmzContentSHA256Mismatch", "BadDigest", "IncompleteBody"}
_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")
# Waiting for the S3 server: connecting is quick or broken; taking or answering a large part
# may not be.
CONNECT_TIMEOUT = 10.0
SEND_TIMEOUT = 300.0  # for one wait until the server takes more of the body, or answers
IDLE_FOR = 4.0  # seconds a connection is kept for the next part (servers close idle ones)
MAX_ANSWER = 1024 * 1024  # the most of an answer's body read (an error's XML is small)


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


class _Answer(msgspec.Struct, frozen=True):
    status: int
    body: bytes


class _PartSender:
    """PUT requests with a streamed body to one S3 server over keep-alive HTTP/1.1, for the
    parts of multipart writes on one event loop.

    Only what those requests need: a body of a declared length (no ``Expect``: a part is
    refused, if at all, after its bytes), and an answer with ``Content-Length``, chunked, or
    ending with the connection. A connection is used again only after a complete answer
    that does not close it; one interrupted in any way (an error, a refused part whose body
    was cut short, a cancelled request) is dropped, so no stray bytes reach the next part.
    """

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        self.host, self.port, self.tls = host, port, tls
        self._idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = asyncio.get_running_loop().time()
        while self._idle:
            since, reader, writer = self._idle.pop()
            if now - since < IDLE_FOR and not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.transport.abort()
        async with asyncio.timeout(CONNECT_TIMEOUT):
            return await asyncio.open_connection(self.host, self.port, ssl=self.tls)

    def close(self) -> None:
        """Drop the connections kept for later parts."""
        while self._idle:
            self._idle.pop()[2].transport.abort()

    async def put(
        self, target: str, headers: dict[str, str], body: AsyncIterator[bytes]
    ) -> _Answer:
        """Send ``PUT target`` with ``headers`` (which must declare the Content-Length) and
        the bytes of ``body``; the server's answer. OSError or TimeoutError when the
        connection fails; whatever ``body`` raises, after dropping the connection."""
        reader, writer = await self._connection()
        kept = False
        try:
            lines = [f"PUT {target} HTTP/1.1"]
            lines.extend(f"{name}: {value}" for name, value in headers.items())
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            transport = writer.transport
            try:
                async for piece in body:
                    writer.write(piece)
                    # Wait only when the server is behind (drain's own check, done here so
                    # the timeout costs nothing while it keeps up).
                    if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
                        async with asyncio.timeout(SEND_TIMEOUT):
                            await writer.drain()
            except OSError:
                # The server may have answered before taking the whole body (a refusal).
                with contextlib.suppress(OSError, TimeoutError, ValueError, EOFError):
                    async with asyncio.timeout(1.0):
                        answer, _ = await _read_answer(reader)
                        return answer
                raise
            async with asyncio.timeout(SEND_TIMEOUT):
                answer, reusable = await _read_answer(reader)
            if reusable:
                self._idle.append((asyncio.get_running_loop().time(), reader, writer))
                kept = True
            return answer
        finally:
            if not kept:
                writer.transport.abort()


async def _read_answer(reader: asyncio.StreamReader) -> tuple[_Answer, bool]:
    """One HTTP/1.1 answer (after any interim 1xx ones), and whether the connection may be
    used again. ValueError for something that is not HTTP; EOFError if it ends early."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise EOFError("the connection closed before an answer") from exc
        except asyncio.LimitOverrunError as exc:
            raise ValueError("an answer's header is too long") from exc
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
        status = int(rest[:3])
        if not 100 <= status < 200:
            break
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    reusable = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if not 0 <= length <= MAX_ANSWER:
                raise ValueError(f"an answer of {length} bytes")
            body = await reader.readexactly(length)
        else:  # the answer ends with the connection
            body, reusable = await _read_to_end(reader), False
    except asyncio.IncompleteReadError as exc:
        raise EOFError("the connection closed within an answer") from exc
    except asyncio.LimitOverrunError as exc:
        raise ValueError("an answer's chunk header is too long") from exc
    return _Answer(status=status, body=body), reusable


async def _read_to_end(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while piece := await reader.read(MAX_ANSWER - len(body)):
        body += piece
        if len(body) >= MAX_ANSWER:
            raise ValueError("an answer longer than it may be")
    return bytes(body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return bytes(body)
        if len(body) + size > MAX_ANSWER:
            raise ValueError("an answer longer than it may be")
        body += await reader.readexactly(size)
        await reader.readexactly(2)


class S3Store:
    """Objects in one bucket, which must not be public."""

    def __init__(
        self, *, endpoint: str, access_key: str, secret_key: str, bucket: str, region: str
    ) -> None:
        parts = urlsplit(endpoint)
        self.bucket = bucket
        self.region = region or None
        secure = parts.scheme == "https"
        self._client = Minio(
            parts.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=self.region,
        )
        # For signing part uploads the way the SDK signs its own requests.
        self._base_url = BaseURL(("https://" if secure else "http://") + parts.netloc, self.region)
        self._credentials = Credentials(access_key, secret_key)
        self._signing_region = self.region
        # key -> id of its open multipart upload; found again by listing when not here.
        self._upload_ids: dict[str, str] = {}
        # Where parts go, and the connections there: one set per event loop (the worker runs
        # each job on a loop of its own).
        self._part_host = parts.hostname or "localhost"
        self._part_port = parts.port or (443 if secure else 80)
        self._part_tls = ssl.create_default_context() if secure else None
        self._senders: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _PartSender] = (
            weakref.WeakKeyDictionary()
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
            etag=(result.etag or "").strip('"'),
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
                etag=(item.etag or "").strip('"'),
            )

    async def delete_prefix(self, prefix: str) -> int:
        count = 0
        async for info in self.list(prefix):
            await self.delete(info.key)
            count += 1
        return count

    # --- multipart writes ------------------------------------------------------------------
    # The SDK's multipart calls (``_create_multipart_upload`` and the like) have no public
    # counterparts; they are the ones its own ``put_object`` uses.

    min_part_size = MIN_PART_SIZE

    def _sender(self) -> _PartSender:
        loop = asyncio.get_running_loop()
        sender = self._senders.get(loop)
        if sender is None:
            sender = _PartSender(self._part_host, self._part_port, self._part_tls)
            self._senders[loop] = sender
        return sender

    async def _region(self) -> str:
        if self._signing_region is None:
            self._signing_region = await self._call(
                "find the bucket's region",
                self._client._get_region,
                self.bucket,
            )
        return self._signing_region

    async def _open_uploads(self, key: str) -> tuple[str, ...]:
        """Ids of the open multipart uploads to exactly ``key``, oldest first."""
        result = await self._call(
            f"list uploads of {key!r}",
            self._client._list_multipart_uploads,
            self.bucket,
            prefix=key,
        )
        found = sorted(
            (upload.initiated_time or 0, upload.upload_id)
            for upload in result.uploads
            if upload.object_name == key and upload.upload_id
        )
        return tuple(upload_id for _, upload_id in found)

    async def _upload_id(self, key: str) -> str:
        """The open multipart upload of ``key`` (the oldest, should there be several, so every
        process picks the same); ObjectNotFound when there is none."""
        if key in self._upload_ids:
            return self._upload_ids[key]
        found = await self._open_uploads(key)
        if not found:
            raise ObjectNotFound(key)
        if len(self._upload_ids) > 10_000:  # a cache, not a record: forget the oldest
            del self._upload_ids[next(iter(self._upload_ids))]
        self._upload_ids[key] = found[0]
        return found[0]

    async def start_multipart(self, key: str, *, content_type: str) -> None:
        check_key(key)
        with contextlib.suppress(ObjectNotFound):
            await self._upload_id(key)
            return
        self._upload_ids[key] = await self._call(
            f"start {key!r}",
            self._client._create_multipart_upload,
            self.bucket,
            key,
            {"Content-Type": content_type},
        )

    async def put_part(
        self, key: str, number: int, chunks: AsyncIterator[bytes], *, length: int, sha256: str
    ) -> None:
        check_key(key)
        check_part(number, length, sha256)
        upload_id = await self._upload_id(key)
        region = await self._region()
        url = self._base_url.build(
            method="PUT",
            region=region,
            bucket_name=self.bucket,
            object_name=key,
            query_params={"partNumber": str(number), "uploadId": upload_id},
        )
        date = utcnow()
        headers = sign_v4_s3(
            method="PUT",
            url=url,
            region=region,
            headers={
                "Host": url.netloc,
                "Content-Length": str(length),
                "x-amz-content-sha256": sha256,
                "x-amz-date": to_amz_date(date),
            },
            credentials=self._credentials,
            content_sha256=sha256,
            date=date,
        )
        body = verified_part(chunks, length=length, sha256=sha256)
        what = f"put part {number} of {key!r}"
        sent = {name: str(value) for name, value in headers.items()}
        try:
            answer = await self._sender().put(f"{url.path}?{url.query}", sent, body)
        except (OSError, TimeoutError, ValueError, EOFError) as exc:
            raise StorageError(f"{what}: {type(exc).__name__}") from exc
        if answer.status == 200:
            return
        found = _CODE.search(answer.body)
        code = found.group(1).decode() if found else f"HTTP {answer.status}"
        if code == "NoSuchUpload":
            self._upload_ids.pop(key, None)
            raise ObjectNotFound(key)
        if code in _DAMAGED:
            raise PartRejected(f"{what}: {code}", reason="checksum", received=length)
        raise StorageError(f"{what}: {code}", permanent=code in _PERMANENT)

    async def _parts(self, key: str, upload_id: str) -> dict[int, Part]:
        parts: dict[int, Part] = {}
        marker: str | None = None
        while True:
            page = await self._call(
                f"list parts of {key!r}",
                self._client._list_parts,
                self.bucket,
                key,
                upload_id,
                part_number_marker=marker,
            )
            parts.update((part.part_number, part) for part in page.parts)
            if not page.is_truncated or not page.next_part_number_marker:
                return parts
            marker = page.next_part_number_marker

    async def complete_multipart(self, key: str, parts: int) -> ObjectInfo:
        check_key(key)
        try:
            upload_id = await self._upload_id(key)
        except ObjectNotFound:
            return await self.stat(key)  # completed before (or ObjectNotFound: never started)
        listed = await self._parts(key, upload_id)
        missing = [number for number in range(1, parts + 1) if number not in listed]
        if missing:
            raise MissingParts(key, missing)
        # The ETags S3 lists are those of the parts it holds now: a part sent twice counts
        # with its last copy, whichever request finished last.
        await self._call(
            f"complete {key!r}",
            self._client._complete_multipart_upload,
            self.bucket,
            key,
            upload_id,
            [listed[number] for number in range(1, parts + 1)],
        )
        self._upload_ids.pop(key, None)
        return await self.stat(key)

    async def abort_multipart(self, key: str) -> None:
        check_key(key)
        self._upload_ids.pop(key, None)
        for upload_id in await self._open_uploads(key):
            with contextlib.suppress(ObjectNotFound):
                await self._call(
                    f"abort {key!r}",
                    self._client._abort_multipart_upload,
                    self.bucket,
                    key,
                    upload_id,
                )

    async def list_multipart(self, prefix: str = "") -> AsyncIterator[MultipartInfo]:
        key_marker: str | None = None
        upload_marker: str | None = None
        while True:
            page = await self._call(
                f"list uploads under {prefix!r}",
                self._client._list_multipart_uploads,
                self.bucket,
                prefix=prefix,
                key_marker=key_marker,
                upload_id_marker=upload_marker,
            )
            for upload in page.uploads:
                if upload.initiated_time is not None:
                    yield MultipartInfo(key=upload.object_name, started=upload.initiated_time)
            if not page.is_truncated:
                return
            key_marker, upload_marker = page.next_key_marker, page.next_upload_id_marker


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
