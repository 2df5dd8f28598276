"""Uploads against a real web process and S3 server: a chunk cut off half-way, and a web
process killed before the upload was finished."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from minio import Minio

from appliance.config import Settings
from appliance.galleries.tables import GallerySet, Photo
from tests.benchmarks.harness import cookie_browser
from tests.benchmarks.test_upload_throughput import _photo
from tests.conftest import S3Server
from tests.integration.flows import csrf_of, run_wizard, sign_in
from tests.integration.test_clients import ANNA, create
from tests.integration.test_galleries import new_gallery
from tests.processes import AppProcess, free_port

MB = 1024 * 1024


class Web:
    """``appliance web`` on the test database with its S3 store on the moto server; it can be
    killed and started again on the same port, database and bucket."""

    def __init__(self, settings: Settings, s3_server: S3Server, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.bucket = f"faults-{secrets.token_hex(4)}"
        self.env = {
            "APPLIANCE_DATABASE__URL": settings.database.url,
            "APPLIANCE_SECURITY__SECRET_KEY": settings.security.secret_key,
            "APPLIANCE_PATHS__DATA_DIR": str(workdir / "data"),
            "APPLIANCE_LOGGING__LEVEL": "WARNING",
            "APPLIANCE_STORAGE__BACKEND": "s3",
            "APPLIANCE_STORAGE__ENDPOINT": s3_server.endpoint,
            "APPLIANCE_STORAGE__BUCKET": self.bucket,
            "APPLIANCE_STORAGE__ACCESS_KEY": s3_server.access_key,
            "APPLIANCE_STORAGE__SECRET_KEY": s3_server.secret_key,
        }
        self.s3 = Minio(
            s3_server.endpoint.removeprefix("http://"),
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            secure=False,
        )
        self.process = self.start()

    def start(self) -> AppProcess:
        process = AppProcess(
            ["web", "--no-migrate", "--no-setup-token"],
            workdir=self.workdir,
            port=self.port,
            env=self.env,
        )
        process.wait_ready()
        return process

    def stored(self, key: str) -> bytes:
        response = self.s3.get_object(self.bucket, key)
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()


@pytest.fixture
def web(settings: Settings, s3_server: S3Server, tmp_path: Path) -> Iterator[Web]:
    server = Web(settings, s3_server, tmp_path)
    try:
        yield server
    finally:
        if server.process.process.poll() is None:
            server.process.stop()


@pytest.fixture
async def staff(clean_db: None, web: Web, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A browser signed in to the web process as the owner."""
    async with cookie_browser(web.process.url, timeout=300) as http:
        owner = await run_wizard(http, settings, dt.datetime.now(dt.UTC))
        http.cookies.clear()
        signed = await sign_in(http, owner.username, owner.password, code=owner.recovery_codes[0])
        assert signed.headers.get("location") == "/", signed.text[-2000:]
        yield http


async def _start(
    http: httpx.AsyncClient, data: bytes
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """A gallery and an upload of ``data`` into it: the API path, headers, the upload's state."""
    gallery = await new_gallery(http, await create(http, ANNA))
    row = await GallerySet.select(GallerySet.id).where(GallerySet.gallery == gallery).first().run()
    assert row is not None
    headers = {"X-CSRF-Token": csrf_of((await http.get(f"/galleries/{gallery}")).text)}
    api = f"/api/v1/galleries/{gallery}/uploads"
    started = await http.post(
        api,
        headers=headers,
        json={"filename": "DSC_0001.jpg", "size": len(data), "set_id": row["id"]},
    )
    assert started.status_code == 201, started.text
    return api, headers, started.json()


async def _send(
    http: httpx.AsyncClient,
    api: str,
    headers: dict[str, str],
    state: dict[str, Any],
    data: bytes,
    index: int,
) -> httpx.Response:
    size = state["chunk_size"]
    piece = data[index * size : (index + 1) * size]
    return await http.put(
        f"{api}/{state['token']}/chunks/{index}",
        content=piece,
        headers={**headers, "X-Chunk-SHA256": hashlib.sha256(piece).hexdigest()},
    )


async def test_a_chunk_cut_off_half_way_is_not_kept_and_the_upload_resumes(
    staff: httpx.AsyncClient, web: Web
) -> None:
    """The connection drops half-way through a chunk (as a closed laptop does): the chunk
    is not counted and no part of it reaches the original; sent again, the file arrives whole."""
    data = _photo(4000, 3000, 20)  # about 14 MB of noise: two chunks of 8 MB
    api, headers, state = await _start(staff, data)
    assert state["chunks"] == 2, state
    cookie = "; ".join(f"{c.name}={c.value}" for c in staff.cookies.jar)

    async def raw_put(index: int, *, cut: bool) -> bytes:
        """Chunk ``index`` over a socket of its own; with ``cut``, only half the body is sent
        before the connection is torn down. Returns the status line (empty when cut)."""
        size = state["chunk_size"]
        piece = data[index * size : (index + 1) * size]
        reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
        head = (
            f"PUT {api}/{state['token']}/chunks/{index} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Length: {len(piece)}\r\nContent-Type: application/octet-stream\r\n"
            f"X-CSRF-Token: {headers['X-CSRF-Token']}\r\nCookie: {cookie}\r\n"
            f"X-Chunk-SHA256: {hashlib.sha256(piece).hexdigest()}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + (piece[: len(piece) // 2] if cut else piece))
        await writer.drain()
        if not cut:
            status = await reader.readline()
            writer.close()
            return status
        await asyncio.sleep(0.5)  # the web process is streaming the first half on to S3
        writer.transport.abort()
        await asyncio.sleep(0.5)
        return b""

    assert (await raw_put(0, cut=False)).startswith(b"HTTP/1.1 200")  # the request is right
    await raw_put(1, cut=True)
    assert (await staff.get(f"{api}/{state['token']}")).json()["received"] == [0]
    assert (await _send(staff, api, headers, state, data, 1)).status_code == 200
    done = await staff.post(f"{api}/{state['token']}/complete", headers=headers)
    assert done.status_code == 201, done.text
    row = await Photo.select(Photo.original_key).where(Photo.id == done.json()["id"]).first()
    assert row is not None and web.stored(row["original_key"]) == data
    assert web.s3._list_multipart_uploads(web.bucket).uploads == []
    assert "Traceback" not in web.process.text()


async def test_an_upload_outlives_a_killed_web_process(staff: httpx.AsyncClient, web: Web) -> None:
    """Every chunk arrived, then the web process was killed: a new process (which has never
    seen the upload) finishes it from what the database and S3 hold."""
    data = _photo(4000, 3000, 20)
    api, headers, state = await _start(staff, data)
    for index in range(state["chunks"]):
        assert (await _send(staff, api, headers, state, data, index)).status_code == 200
    web.process.stop(signal.SIGKILL)
    web.process = web.start()
    done = await staff.post(f"{api}/{state['token']}/complete", headers=headers)
    assert done.status_code == 201, done.text
    row = await Photo.select(Photo.original_key).where(Photo.id == done.json()["id"]).first()
    assert row is not None and web.stored(row["original_key"]) == data
