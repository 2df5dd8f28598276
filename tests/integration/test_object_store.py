"""One contract, every backend: the filesystem, a real S3 server (moto) on loopback, and MinIO
through testcontainers where a Docker engine answers."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from appliance.storage.base import ObjectNotFound, ObjectStore, StorageError
from appliance.storage.filesystem import FilesystemStore
from appliance.storage.s3 import PART_SIZE, S3Store
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
