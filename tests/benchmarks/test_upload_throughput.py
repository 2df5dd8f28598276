"""Photo uploads through the appliance against the minio SDK putting the same files straight
into the same S3 server, in one run; and how far the web process's peak memory grows.

The appliance runs as its own ``appliance web`` process with the S3 store pointed at the moto
server, so its peak memory (``VmHWM``) is its own. Files go through the chunked API the way the
gallery page's script sends them: each chunk with its SHA-256, up to three chunks on their way
at once across files (the next file starts once every chunk of the last one is on its way),
then "complete" for each file. The batch goes in groups of about GROUP_BYTES; right after each
group, the same files go straight into the same bucket with ``fput_object`` (the SDK's
defaults: 5 MB parts, three at a time), one after the other, so both sides meet the S3 server
in the same state. Printed, not asserted on time; every file must arrive whole (SHA-256 of the
stored object). Also printed: the CPU time the S3 server, the web process and this test (the
browser on one side, the SDK on the other) spent on each side, and the machine's load average,
since every process here shares the same cores.

``UPLOAD_BENCH_MB`` sets the size of the batch (default 512; the recorded figures use 2048).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import pyvips
from minio import Minio

from appliance.config import Settings
from appliance.galleries.tables import GallerySet, Photo
from tests.benchmarks.harness import cookie_browser, cpu_seconds, web_process
from tests.conftest import S3Server
from tests.integration.flows import csrf_of, run_wizard, sign_in
from tests.integration.test_clients import ANNA, create
from tests.integration.test_galleries import new_gallery
from tests.processes import AppProcess

BATCH_ENV = "UPLOAD_BENCH_MB"
DEFAULT_BATCH_MB = 512
MB = 1024 * 1024
IN_FLIGHT = 3  # chunks on their way at once, as upload.js sends them
GROUP_BYTES = 256 * MB  # appliance and direct take turns after about this much
# Camera-like sizes, each about as many bytes as a high-quality JPEG from such a sensor:
# (width, height, noise sigma) -> about 29, 34 and 44 MB at quality 95.
SHAPES = [(6000, 4000, 20), (7008, 4672, 16), (8256, 5504, 14)]


def _photo(width: int, height: int, sigma: int) -> bytes:
    """A real JPEG of fine noise over a gradient: it decodes whole and barely compresses."""
    grain = pyvips.Image.gaussnoise(width, height, mean=128, sigma=sigma)
    ramp = pyvips.Image.xyz(width, height)
    red = (grain + ramp[0] * (60 / width)).cast("uchar")
    green = (grain + ramp[1] * (60 / height)).cast("uchar")
    blue = pyvips.Image.gaussnoise(width, height, mean=100, sigma=sigma).cast("uchar")
    image = red.bandjoin([green, blue]).copy(interpretation="srgb")
    return bytes(image.write_to_buffer(".jpg", Q=95))


def _batch(folder: Path, total: int) -> list[Path]:
    """Files of camera-like JPEGs adding up to at least ``total`` bytes, each one different.

    Three encodes are reused: each file gets a comment segment of its own right after the
    start-of-image marker, so every file is a valid JPEG with a SHA-256 of its own.
    """
    bases = [_photo(*shape) for shape in SHAPES]
    paths: list[Path] = []
    written = 0
    while written < total:
        base = bases[len(paths) % len(bases)]
        comment = f"benchmark file {len(paths)} {secrets.token_hex(8)}".encode()
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        path = folder / f"DSC_{len(paths):04d}.jpg"
        path.write_bytes(base[:2] + segment + base[2:])
        written += path.stat().st_size
        paths.append(path)
    return paths


def _memory_kb(pid: int, field: str) -> int:
    """One ``Vm*`` line of /proc/<pid>/status, in KiB (VmHWM: the peak resident set so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def _s3_server_pid(endpoint: str) -> int:
    """The process of the moto server listening at ``endpoint`` (started by the fixtures)."""
    port = endpoint.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.endswith(b"moto_server") for arg in argv) and port.encode() in argv:
            return int(entry.name)
    raise AssertionError(f"no S3 server process for {endpoint}")


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(MB):
            digest.update(piece)
    return digest.hexdigest()


def _stored_sha256(client: Minio, bucket: str, key: str) -> str:
    digest = hashlib.sha256()
    response = client.get_object(bucket, key)
    try:
        for piece in response.stream(MB):
            digest.update(piece)
    finally:
        response.close()
        response.release_conn()
    return digest.hexdigest()


@pytest.fixture
def photos(tmp_path: Path) -> Iterator[list[Path]]:
    """The batch on disk, removed afterwards (pytest keeps its last temporary folders)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    yield _batch(folder, int(os.environ.get(BATCH_ENV, DEFAULT_BATCH_MB)) * MB)
    shutil.rmtree(folder)


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return f"bench-{secrets.token_hex(4)}"


@pytest.fixture
def web(
    settings: Settings, s3_server: S3Server, bucket: str, tmp_path: Path
) -> Iterator[AppProcess]:
    """``appliance web`` on the test database with the S3 store on the moto server."""
    with web_process(
        settings,
        tmp_path,
        APPLIANCE_STORAGE__BACKEND="s3",
        APPLIANCE_STORAGE__ENDPOINT=s3_server.endpoint,
        APPLIANCE_STORAGE__BUCKET=bucket,
        APPLIANCE_STORAGE__ACCESS_KEY=s3_server.access_key,
        APPLIANCE_STORAGE__SECRET_KEY=s3_server.secret_key,
    ) as process:
        yield process


@pytest.fixture
async def staff(
    clean_db: None, web: AppProcess, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """A browser signed in to the web process as the owner (wizard, then a recovery code)."""
    async with cookie_browser(web.url, timeout=300) as http:
        owner = await run_wizard(http, settings, dt.datetime.now(dt.UTC))
        http.cookies.clear()
        signed = await sign_in(http, owner.username, owner.password, code=owner.recovery_codes[0])
        assert signed.headers.get("location") == "/", signed.text[-2000:]
        yield http


async def _upload_group(
    http: httpx.AsyncClient, gallery: int, set_id: int, csrf: str, paths: list[Path]
) -> tuple[dict[str, dict[str, Any]], float, int]:
    """Files as upload.js sends them: the new photos by file name, the seconds spent waiting
    for "complete" after a file's last chunk arrived (summed), and the chunk size."""
    api = f"/api/v1/galleries/{gallery}/uploads"
    headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}
    slots = asyncio.Semaphore(IN_FLIGHT)
    answers: dict[str, dict[str, Any]] = {}
    completing = 0.0
    chunk_size = 0

    async def send(path: Path, token: str, index: int, size: int) -> None:
        try:
            async with await anyio.open_file(path, "rb") as handle:
                await handle.seek(index * size)
                piece = await handle.read(size)
            sent = await http.put(
                f"{api}/{token}/chunks/{index}",
                content=piece,
                headers={
                    **headers,
                    "Content-Type": "application/octet-stream",
                    "X-Chunk-SHA256": hashlib.sha256(piece).hexdigest(),
                },
            )
            assert sent.status_code == 200, sent.text
        finally:
            slots.release()

    async def finish(path: Path, token: str, sends: list[asyncio.Task[None]]) -> None:
        nonlocal completing
        await asyncio.gather(*sends)
        started = time.perf_counter()
        done = await http.post(f"{api}/{token}/complete", headers=headers)
        completing += time.perf_counter() - started
        assert done.status_code == 201, done.text
        answers[path.name] = done.json()

    ends = []
    for path in paths:
        started = await http.post(
            api,
            headers=headers,
            json={"filename": path.name, "size": path.stat().st_size, "set_id": set_id},
        )
        assert started.status_code == 201, started.text
        state = started.json()
        chunk_size = state["chunk_size"]
        sends = []
        for index in range(state["chunks"]):
            await slots.acquire()
            sends.append(asyncio.create_task(send(path, state["token"], index, chunk_size)))
        ends.append(asyncio.create_task(finish(path, state["token"], sends)))
    await asyncio.gather(*ends)
    return answers, completing, chunk_size


def _groups(paths: list[Path], sizes: list[int]) -> list[list[Path]]:
    groups: list[list[Path]] = [[]]
    filled = 0
    for path, size in zip(paths, sizes, strict=True):
        if filled >= GROUP_BYTES:
            groups.append([])
            filled = 0
        groups[-1].append(path)
        filled += size
    return groups


async def test_upload_throughput_against_direct_s3_put(
    staff: httpx.AsyncClient,
    web: AppProcess,
    photos: list[Path],
    s3_server: S3Server,
    bucket: str,
) -> None:
    """Throughput through the chunked API against a direct SDK put, and the web's peak memory."""
    expected = {path.name: _sha256_of(path) for path in photos}
    sizes = [path.stat().st_size for path in photos]
    size_of = {path.name: size for path, size in zip(photos, sizes, strict=True)}
    direct = Minio(
        s3_server.endpoint.removeprefix("http://"),
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
    )
    gallery = await new_gallery(staff, await create(staff, ANNA))
    row = await GallerySet.select(GallerySet.id).where(GallerySet.gallery == gallery).first().run()
    assert row is not None
    csrf = csrf_of((await staff.get(f"/galleries/{gallery}")).text)

    s3_pid = _s3_server_pid(s3_server.endpoint)

    def cpu_now() -> tuple[float, float, float]:
        """CPU seconds so far of the S3 server, the web process and this process."""
        return (
            sum(cpu_seconds(s3_pid)),
            sum(cpu_seconds(web.process.pid)),
            sum(cpu_seconds(os.getpid())),
        )

    load_before = os.getloadavg()[0]
    peak_before = _memory_kb(web.process.pid, "VmHWM")
    cpu_before = cpu_seconds(web.process.pid)
    peak_first = 0
    through_app = completing = straight = 0.0
    chunk_size = 0
    answers: dict[str, dict[str, Any]] = {}
    app_cpu, direct_cpu = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    for group in _groups(photos, sizes):
        first = cpu_now()
        started = time.perf_counter()
        group_answers, seconds, chunk_size = await _upload_group(
            staff, gallery, row["id"], csrf, group
        )
        through_app += time.perf_counter() - started
        answers.update(group_answers)
        completing += seconds
        peak_first = peak_first or _memory_kb(web.process.pid, "VmHWM")
        between = cpu_now()
        started = time.perf_counter()
        for path in group:
            direct.fput_object(bucket, f"direct/{path.name}", str(path), content_type="image/jpeg")
        straight += time.perf_counter() - started
        last = cpu_now()
        for side in range(3):
            app_cpu[side] += between[side] - first[side]
            direct_cpu[side] += last[side] - between[side]
    load_after = os.getloadavg()[0]
    peak_after = _memory_kb(web.process.pid, "VmHWM")
    cpu_after = cpu_seconds(web.process.pid)
    web_user, web_system = cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1]
    web_cpu = web_user + web_system
    resident_after = _memory_kb(web.process.pid, "VmRSS")

    # Outside the timing: every file arrived whole on both sides, and no chunk was left behind.
    rows = await Photo.select(Photo.filename, Photo.original_key).where(Photo.gallery == gallery)
    stored = {photo["filename"]: photo["original_key"] for photo in rows}
    assert sorted(stored) == sorted(expected)
    for name, sha256 in expected.items():
        assert answers[name]["size"] == size_of[name], name
        assert _stored_sha256(direct, bucket, stored[name]) == sha256, name
        assert _stored_sha256(direct, bucket, f"direct/{name}") == sha256, name
    assert list(direct.list_objects(bucket, prefix="uploads/", recursive=True)) == []
    assert direct._list_multipart_uploads(bucket).uploads == []  # every write was completed

    total = sum(sizes) / MB
    print(
        f"\n{len(photos)} JPEGs of {min(sizes) / MB:.0f}-{max(sizes) / MB:.0f} MB, "
        f"{total:.0f} MB in all, {chunk_size // MB} MB chunks, {IN_FLIGHT} on their way at once:"
        f"\n  appliance (chunked API, S3 store): {through_app:6.1f} s, "
        f"{total / through_app:6.1f} MB/s (waiting for 'complete', summed: {completing:.1f} s)"
        f"\n  minio fput_object, same server:    {straight:6.1f} s, {total / straight:6.1f} MB/s"
        f"\n  throughput ratio (appliance / direct): {straight / through_app:.2f}"
        f"\n  web process CPU: {web_cpu:.1f} s ({web_cpu / total * 1000:.2f} ms a MB; "
        f"user {web_user:.1f} s, system {web_system:.1f} s)"
        f"\n  CPU through the appliance: S3 server {app_cpu[0]:.1f} s, web process "
        f"{app_cpu[1]:.1f} s, this test as the browser {app_cpu[2]:.1f} s"
        f"\n  CPU of the direct put:     S3 server {direct_cpu[0]:.1f} s, this test as the "
        f"SDK {direct_cpu[2]:.1f} s"
        f"\n  load average (1 min): {load_before:.1f} before, {load_after:.1f} after"
        f"\n  web process peak memory (VmHWM): {peak_before / 1024:.0f} MB before, "
        f"{peak_first / 1024:.0f} MB after the first file, {peak_after / 1024:.0f} MB after "
        f"the batch (resident at the end: {resident_after / 1024:.0f} MB)"
        f"\n  peak memory growth over the batch: {(peak_after - peak_before) / 1024:.0f} MB"
    )
