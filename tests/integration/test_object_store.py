"""One contract, every backend: the filesystem, a real S3 server (moto) on loopback, and MinIO
through testcontainers where a Docker engine answers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from appliance.storage.base import (
    MissingParts,
    ObjectNotFound,
    ObjectStore,
    PartRejected,
    StorageError,
)
from appliance.storage.filesystem import FilesystemStore
from appliance.storage.s3 import PART_SIZE, S3Store, _PartSender
from tests.conftest import S3Server


@pytest.fixture(scope="session")
def minio_server() -> Iterator[tuple[str, str, str]]:
    """MinIO in a container; skipped, with the reason, when no Docker engine answers."""
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine here"
        pytest.skip(f"MinIO through testcontainers needs a Docker engine: {type(exc).__name__}")
    from testcontainers.minio import MinioContainer

    with MinioContainer() as container:
        config = container.get_config()
        yield f"http://{config['endpoint']}", config["access_key"], config["secret_key"]


@pytest.fixture(params=["filesystem", "s3", "minio"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, s3_server: S3Server
) -> AsyncIterator[ObjectStore]:
    """A fresh, ready store of each kind (its own folder or bucket)."""
    backend: ObjectStore
    if request.param == "filesystem":
        backend = FilesystemStore(tmp_path / "objects")
    elif request.param == "s3":
        backend = S3Store(
            endpoint=s3_server.endpoint,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            bucket=f"test-{secrets.token_hex(4)}",
            region="",
        )
    else:
        endpoint, access, secret = request.getfixturevalue("minio_server")
        backend = S3Store(
            endpoint=endpoint,
            access_key=access,
            secret_key=secret,
            bucket=f"test-{secrets.token_hex(4)}",
            region="",
        )
    await backend.ensure_ready()
    yield backend


async def chunks_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(store: ObjectStore, key: str, **kwargs: int) -> bytes:
    return b"".join([chunk async for chunk in store.get(key, **kwargs)])


async def test_put_then_get_returns_the_same_bytes(store: ObjectStore) -> None:
    """What goes in comes out, byte for byte, with its size and type."""
    data = os.urandom(300_000)
    info = await store.put("galleries/1/a.jpg", chunks_of(data), content_type="image/jpeg")
    assert info.size == len(data)
    assert await read_all(store, "galleries/1/a.jpg") == data
    stat = await store.stat("galleries/1/a.jpg")
    assert (stat.size, stat.content_type) == (len(data), "image/jpeg")


async def test_ranges_read_the_right_bytes(store: ObjectStore) -> None:
    """offset and length select exactly that slice (for resumed downloads and range requests)."""
    data = bytes(range(256)) * 100
    await store.put("r/x.bin", chunks_of(data), content_type="application/octet-stream")
    assert await read_all(store, "r/x.bin", offset=1000, length=300) == data[1000:1300]
    assert await read_all(store, "r/x.bin", offset=25_000) == data[25_000:]


async def test_zero_length_and_past_the_end_read_nothing(store: ObjectStore) -> None:
    """length=0, or an offset at or past the end, reads no bytes on every backend."""
    await store.put("r/y.bin", chunks_of(b"0123456789"), content_type="text/plain")
    assert await read_all(store, "r/y.bin", offset=2, length=0) == b""
    assert await read_all(store, "r/y.bin", offset=10) == b""
    assert await read_all(store, "r/y.bin", offset=50) == b""
    assert await read_all(store, "r/y.bin", offset=8, length=100) == b"89"


async def test_empty_object_is_stored(store: ObjectStore) -> None:
    """Zero bytes is a valid object."""
    await store.put("empty", chunks_of(b""), content_type="text/plain")
    assert (await store.stat("empty")).size == 0
    assert await read_all(store, "empty") == b""


async def test_large_object_streams_across_parts(store: ObjectStore) -> None:
    """An object larger than one multipart part arrives whole (checked by SHA-256)."""
    data = os.urandom(PART_SIZE + 3 * 1024 * 1024)
    await store.put("big/raw.tif", chunks_of(data, 1024 * 1024), content_type="image/tiff")
    digest = hashlib.sha256()
    async for chunk in store.get("big/raw.tif"):
        digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


async def test_failed_upload_leaves_nothing_behind(store: ObjectStore) -> None:
    """A source that breaks mid-way leaves neither the new object nor a partial one."""

    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(PART_SIZE + 1024)
        raise ConnectionResetError("client went away")

    with pytest.raises((ConnectionResetError, StorageError)):
        await store.put("half/done.jpg", broken(), content_type="image/jpeg")
    with pytest.raises(ObjectNotFound):
        await store.stat("half/done.jpg")
    assert [info.key async for info in store.list("")] == []


async def test_failed_replace_keeps_the_old_object(store: ObjectStore) -> None:
    """Replacing an object with a broken upload keeps the old bytes readable."""
    await store.put("keep.jpg", chunks_of(b"old bytes"), content_type="image/jpeg")

    async def broken() -> AsyncIterator[bytes]:
        yield b"new"
        raise ConnectionResetError

    with pytest.raises((ConnectionResetError, StorageError)):
        await store.put("keep.jpg", broken(), content_type="image/jpeg")
    assert await read_all(store, "keep.jpg") == b"old bytes"


async def test_missing_object_raises_not_found(store: ObjectStore) -> None:
    """stat and get of an absent key raise ObjectNotFound; delete of one is fine."""
    with pytest.raises(ObjectNotFound):
        await store.stat("nope/x")
    with pytest.raises(ObjectNotFound):
        await read_all(store, "nope/x")
    await store.delete("nope/x")


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "/abs",
        "a/../b",
        "a//b",
        "a/./b",
        "with space",
        "ctl\x00",
        "",
        "x" * 600,
        "trailing/",
        ".hidden",
        "a\\b",
    ],
)
async def test_unsafe_keys_are_refused(store: ObjectStore, key: str) -> None:
    """Keys with path tricks, control characters or odd shapes never reach the backend."""
    with pytest.raises(StorageError) as refused:
        await store.put(key, chunks_of(b"x"), content_type="text/plain")
    assert refused.value.permanent


async def test_list_and_delete_prefix(store: ObjectStore) -> None:
    """Listing is by prefix and in key order; delete_prefix removes exactly that prefix."""
    for key in ("g/2/b", "g/2/a", "g/20/c", "h/1"):
        await store.put(key, chunks_of(key.encode()), content_type="text/plain")
    assert [i.key async for i in store.list("g/2/")] == ["g/2/a", "g/2/b"]
    assert await store.delete_prefix("g/2/") == 2
    assert [i.key async for i in store.list("")] == ["g/20/c", "h/1"]


async def test_concurrent_writes_of_one_key_leave_one_whole_object(store: ObjectStore) -> None:
    """Two uploads racing for one key end with one of them, whole, never a mix."""
    first, second = os.urandom(200_000), os.urandom(200_000)
    await asyncio.gather(
        store.put("race.jpg", chunks_of(first), content_type="image/jpeg"),
        store.put("race.jpg", chunks_of(second), content_type="image/jpeg"),
    )
    assert await read_all(store, "race.jpg") in (first, second)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def put_part(store: ObjectStore, key: str, number: int, data: bytes) -> None:
    await store.put_part(key, number, chunks_of(data), length=len(data), sha256=sha(data))


def parts_for(store: ObjectStore, count: int) -> list[bytes]:
    """``count`` different parts, each but the last as small as the store allows."""
    size = store.min_part_size
    return [os.urandom(size) for _ in range(count - 1)] + [os.urandom(70_000)]


async def test_multipart_parts_in_any_order_become_one_object(store: ObjectStore) -> None:
    """Parts sent out of order, one of them twice, join in number order; nothing shows under
    the key until completion, and completing again is harmless."""
    parts = parts_for(store, 3)
    await store.start_multipart("m/photo.jpg", content_type="image/jpeg")
    await store.start_multipart("m/photo.jpg", content_type="image/jpeg")  # keeps the open one
    for number in (3, 1, 2, 1):
        await put_part(store, "m/photo.jpg", number, parts[number - 1])
    with pytest.raises(ObjectNotFound):
        await store.stat("m/photo.jpg")
    assert [info.key async for info in store.list_multipart("m/")] == ["m/photo.jpg"]
    assert [info.key async for info in store.list("")] == []
    info = await store.complete_multipart("m/photo.jpg", 3)
    assert info.size == sum(map(len, parts))
    assert await read_all(store, "m/photo.jpg") == b"".join(parts)
    assert (await store.stat("m/photo.jpg")).content_type == "image/jpeg"
    assert [info async for info in store.list_multipart("")] == []
    again = await store.complete_multipart("m/photo.jpg", 3)
    assert again.size == info.size
    assert [info.key async for info in store.list("")] == ["m/photo.jpg"]


async def test_a_part_in_pieces_of_odd_sizes_is_stored_byte_for_byte(store: ObjectStore) -> None:
    """Pieces of a size that divides nothing (the S3 store joins them into larger ones before
    sending) arrive whole and in order, in every part."""
    parts = parts_for(store, 2)
    await store.start_multipart("m/odd.jpg", content_type="image/jpeg")
    for number, data in enumerate(parts, start=1):
        await store.put_part(
            "m/odd.jpg", number, chunks_of(data, 4099), length=len(data), sha256=sha(data)
        )
    await store.complete_multipart("m/odd.jpg", 2)
    assert await read_all(store, "m/odd.jpg") == b"".join(parts)


async def test_a_part_that_is_not_as_declared_changes_nothing(store: ObjectStore) -> None:
    """Too long, too short or the wrong SHA-256: PartRejected saying which, and the part
    sent before under that number stays."""
    good = os.urandom(100_000)
    await store.start_multipart("m/x.tif", content_type="image/tiff")
    await put_part(store, "m/x.tif", 1, good)
    bad = os.urandom(100_000)
    cases = [
        (bad + b"x", len(bad), sha(bad), "long"),
        (bad[:-1], len(bad), sha(bad), "short"),
        (bad, len(bad), sha(good), "checksum"),
    ]
    for data, length, digest, reason in cases:
        with pytest.raises(PartRejected) as rejected:
            await store.put_part("m/x.tif", 1, chunks_of(data), length=length, sha256=digest)
        assert rejected.value.reason == reason
    await store.complete_multipart("m/x.tif", 1)
    assert await read_all(store, "m/x.tif") == good


async def test_a_part_whose_source_breaks_changes_nothing(store: ObjectStore) -> None:
    """A part cut off half-way (the browser went away) leaves the earlier part of its number."""
    good = os.urandom(80_000)
    await store.start_multipart("m/y.jpg", content_type="image/jpeg")
    await put_part(store, "m/y.jpg", 1, good)

    async def broken() -> AsyncIterator[bytes]:
        yield good[:40_000]
        raise ConnectionResetError("client went away")

    with pytest.raises((ConnectionResetError, StorageError)):
        await store.put_part("m/y.jpg", 1, broken(), length=len(good), sha256=sha(good))
    await store.complete_multipart("m/y.jpg", 1)
    assert await read_all(store, "m/y.jpg") == good


async def test_missing_parts_are_named_and_the_write_stays_open(store: ObjectStore) -> None:
    """Completing without every part raises MissingParts with their numbers; once they
    arrive, completing works."""
    parts = parts_for(store, 3)
    await store.start_multipart("m/z.jpg", content_type="image/jpeg")
    await put_part(store, "m/z.jpg", 2, parts[1])
    with pytest.raises(MissingParts) as missing:
        await store.complete_multipart("m/z.jpg", 3)
    assert missing.value.numbers == [1, 3]
    await put_part(store, "m/z.jpg", 1, parts[0])
    await put_part(store, "m/z.jpg", 3, parts[2])
    await store.complete_multipart("m/z.jpg", 3)
    assert await read_all(store, "m/z.jpg") == b"".join(parts)


async def test_aborted_multipart_write_leaves_nothing(store: ObjectStore) -> None:
    """Aborting drops the parts; later parts and completion find no write to the key."""
    data = os.urandom(50_000)
    await store.start_multipart("m/gone.jpg", content_type="image/jpeg")
    await put_part(store, "m/gone.jpg", 1, data)
    await store.abort_multipart("m/gone.jpg")
    await store.abort_multipart("m/gone.jpg")  # none open: not an error
    with pytest.raises(ObjectNotFound):
        await put_part(store, "m/gone.jpg", 1, data)
    with pytest.raises(ObjectNotFound):
        await store.complete_multipart("m/gone.jpg", 1)
    assert [info async for info in store.list_multipart("")] == []
    assert [info.key async for info in store.list("")] == []


async def test_open_multipart_writes_are_listed_by_prefix(store: ObjectStore) -> None:
    """Open writes are listed under their prefix with the time they were started (moto
    reports one fixed time in the past for every upload, so only "not later than now")."""
    for key in ("originals/1/a", "originals/2/b", "other/c"):
        await store.start_multipart(key, content_type="image/jpeg")
    listed = [info async for info in store.list_multipart("originals/")]
    assert [info.key for info in listed] == ["originals/1/a", "originals/2/b"]
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    assert all(info.started < soon for info in listed)


async def test_unsafe_part_numbers_and_checksums_are_refused(store: ObjectStore) -> None:
    """Part numbers outside 1 to 10000 and checksums that are not SHA-256 hex never reach a
    backend."""
    await store.start_multipart("m/p.jpg", content_type="image/jpeg")
    for number, digest in ((0, sha(b"x")), (10_001, sha(b"x")), (1, "abc"), (1, "Z" * 64)):
        with pytest.raises(StorageError) as refused:
            await store.put_part("m/p.jpg", number, chunks_of(b"x"), length=1, sha256=digest)
        assert refused.value.permanent


class _Recorder:
    """A loopback HTTP server that keeps each request's raw bytes and answers every one with
    ``answer``, then keeps the connection open (or closes it: ``closing``)."""

    def __init__(self, answer: bytes, *, closing: bool = False) -> None:
        self.answer, self.closing = answer, closing
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                line, *rest = head.removesuffix("\r\n\r\n").split("\r\n")
                headers = {n.lower(): v.strip() for n, _, v in (h.partition(":") for h in rest)}
                body = await reader.readexactly(int(headers["content-length"]))
                self.requests.append((line, headers, body))
                writer.write(self.answer)
                await writer.drain()
                if self.closing:
                    break
        writer.close()


@contextlib.asynccontextmanager
async def recorder(
    store: S3Store, answer: bytes, *, closing: bool = False
) -> AsyncIterator[_Recorder]:
    """Parts of ``store`` go to a recording server instead of its S3 server."""
    recording = _Recorder(answer, closing=closing)
    server = await asyncio.start_server(recording.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = store._senders[asyncio.get_running_loop()] = _PartSender("127.0.0.1", port, None)
    async with server:
        try:
            yield recording
        finally:
            sender.close()
            del store._senders[asyncio.get_running_loop()]


async def signature_store(s3_server: S3Server, key: str) -> S3Store:
    store = S3Store(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        bucket=f"sig-{secrets.token_hex(4)}",
        region="eu-central-1",
    )
    await store.ensure_ready()
    await store.start_multipart(key, content_type="image/jpeg")
    return store


async def test_part_requests_are_signed_as_botocore_signs_them(s3_server: S3Server) -> None:
    """A part goes out signed with its SHA-256 as the payload hash (so S3 checks the bytes),
    and its signature is the one botocore computes for the same request: moto does not check
    signatures, so an independent signer does."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    store = await signature_store(s3_server, "originals/1/a_b.jpg")
    data = os.urandom(10_000)
    ok = b'HTTP/1.1 200 OK\r\nETag: "x"\r\nContent-Length: 0\r\n\r\n'
    async with recorder(store, ok) as recording:
        await put_part(store, "originals/1/a_b.jpg", 7, data)
    await store.abort_multipart("originals/1/a_b.jpg")
    ((line, headers, body),) = recording.requests
    method, target, version = line.split(" ")
    assert (method, version) == ("PUT", "HTTP/1.1")
    assert body == data
    assert headers["x-amz-content-sha256"] == sha(data)
    assert headers["content-length"] == str(len(data))
    assert headers["host"] == s3_server.endpoint.removeprefix("http://")
    assert "partNumber=7" in target and "uploadId=" in target
    # botocore takes the payload hash from the header spelt this way.
    names = {"host": "host", "content-length": "content-length", "x-amz-date": "x-amz-date"}
    names["x-amz-content-sha256"] = "X-Amz-Content-SHA256"
    signed = AWSRequest(
        method="PUT",
        url=f"http://{headers['host']}{target}",
        headers={spelt: headers[name] for name, spelt in names.items()},
    )
    signed.context["timestamp"] = headers["x-amz-date"]
    signer = S3SigV4Auth(
        Credentials(s3_server.access_key, s3_server.secret_key), "s3", "eu-central-1"
    )
    expected = signer.signature(
        signer.string_to_sign(signed, signer.canonical_request(signed)), signed
    )
    assert headers["authorization"].endswith(f"Signature={expected}")


async def test_parts_share_a_kept_open_connection(s3_server: S3Server) -> None:
    """Parts one after another go over one connection while the server keeps it open (its
    answer read to the end, so the next request starts clean), and over a new one after it
    says it closes."""
    store = await signature_store(s3_server, "originals/1/c.jpg")
    kept = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfine\n"
    async with recorder(store, kept) as recording:
        for number in (1, 2, 3):
            await put_part(store, "originals/1/c.jpg", number, os.urandom(1000 * number))
    assert [len(body) for _, _, body in recording.requests] == [1000, 2000, 3000]
    assert recording.connections == 1
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    async with recorder(store, closing) as recording:
        for number in (1, 2):
            await put_part(store, "originals/1/c.jpg", number, os.urandom(100))
    assert recording.connections == 2
    await store.abort_multipart("originals/1/c.jpg")


async def test_refused_part_reports_the_servers_code(s3_server: S3Server) -> None:
    """An error answer, chunked as some servers send them, becomes the error its S3 code
    means: a checksum mismatch a rejected part, a vanished upload ObjectNotFound."""
    store = await signature_store(s3_server, "originals/1/d.jpg")

    def chunked(code: str) -> bytes:
        xml = f"<Error><Code>{code}</Code></Error>".encode()
        return (
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
            + f"{len(xml):x}\r\n".encode()
            + xml
            + b"\r\n0\r\n\r\n"
        )

    async with recorder(store, chunked("XAmzContentSHA256Mismatch")) as recording:
        with pytest.raises(PartRejected) as rejected:
            await put_part(store, "originals/1/d.jpg", 1, b"abc")
        assert rejected.value.reason == "checksum"
        with pytest.raises(PartRejected):  # the same connection, read cleanly to the end
            await put_part(store, "originals/1/d.jpg", 1, b"abc")
    assert recording.connections == 1
    async with recorder(store, chunked("NoSuchUpload")):
        with pytest.raises(ObjectNotFound):
            await put_part(store, "originals/1/d.jpg", 1, b"abc")
    await store.abort_multipart("originals/1/d.jpg")


async def test_answer_that_ends_with_its_connection_is_read_whole(s3_server: S3Server) -> None:
    """An answer without a length runs to the connection's end: its code is read from all of
    it, and the next part goes over a new connection."""
    store = await signature_store(s3_server, "originals/1/e.jpg")
    filler = b"<!-- " + b"x" * 300_000 + b" -->"  # more than one read's worth before the code
    denied = b"HTTP/1.1 403 Forbidden\r\n\r\n" + filler + b"<Error><Code>AccessDenied</Code>"
    async with recorder(store, denied, closing=True) as recording:
        for number in (1, 2):
            with pytest.raises(StorageError) as refused:
                await put_part(store, "originals/1/e.jpg", number, b"abc")
            assert refused.value.permanent and "AccessDenied" in str(refused.value)
    assert recording.connections == 2
    await store.abort_multipart("originals/1/e.jpg")


async def test_public_bucket_is_refused(s3_server: S3Server) -> None:
    """A bucket whose policy lets anyone read stops the appliance with a clear message."""
    bucket = s3_server.public_bucket({"AWS": ["*"]})
    store = S3Store(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        bucket=bucket,
        region="",
    )
    with pytest.raises(StorageError) as refused:
        await store.ensure_ready()
    assert refused.value.permanent and "lets anyone read it" in str(refused.value)


async def test_unreachable_server_is_a_temporary_error(tmp_path: Path) -> None:
    """Nothing listening: a StorageError that is not permanent (worth trying again)."""
    store = S3Store(
        endpoint="http://127.0.0.1:9",
        access_key="a",
        secret_key="b" * 8,
        bucket="nowhere",
        region="",
    )
    with pytest.raises(StorageError) as failed:
        await store.stat("x")
    assert not failed.value.permanent


async def test_filesystem_objects_are_private_to_the_appliance(tmp_path: Path) -> None:
    """The object folder is readable by the appliance's user only."""
    store = FilesystemStore(tmp_path / "objects")
    await store.ensure_ready()
    assert (tmp_path / "objects").stat().st_mode & 0o077 == 0
