"""The client gallery page of a 500-photo gallery under 32 concurrent clients, against a bare
Litestar endpoint served the same way, in one run.

Both sides are real ``uvicorn`` processes with one worker, started as ``appliance web`` starts
its server (uvicorn's default loop and parser, no proxy headers, no server header, access log
on): the appliance on the test database, and a one-route Litestar app that returns a short HTML
page. The gallery, its client and its share link are made through the real pages; its 500
photos are inserted as ready rows, since the page only signs their URLs and never reads the
files.

One load generator in this process drives both: 32 tasks, each with a keep-alive connection of
its own, each request sent as soon as the last one answered. Every simulated client opened the
link once beforehand, so it carries the visitor and CSRF cookies of a returning browser. Printed:
requests a second, their ratio, p50 / p99 latency, and the CPU each server and the generator
used (a bare server well below a whole core means the client side, not the server, set the
baseline). Asserted: every answer is 200, holds the first page of tiles and offers the other
440; nothing about time.

``GALLERY_BENCH_SECONDS`` sets the measured seconds a side (default 15), taken in five turns a
side that alternate, so load from elsewhere on the machine falls on both sides alike.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from appliance.config import Settings, SharingSettings
from appliance.galleries.tables import GallerySet, Photo
from tests.benchmarks.harness import cookie_browser, cpu_seconds, web_process
from tests.integration.flows import run_wizard, sign_in, submit
from tests.integration.sharing_flows import share
from tests.integration.test_clients import ANNA, create
from tests.integration.test_galleries import new_gallery
from tests.processes import AppProcess, free_port

DURATION_ENV = "GALLERY_BENCH_SECONDS"
DEFAULT_SECONDS = 15.0
WARM_UP_SECONDS = 1.0
ROUNDS = 5
CLIENTS = 32
PHOTOS = 500
TILE = b'<li id="p'  # one per photo in the grid (see share/gallery.html)
FIRST_PAGE = SharingSettings().photos_per_page  # the rest load as the client scrolls

# The baseline: one trivial HTML endpoint, run with the options `appliance web` passes uvicorn.
BARE_APP = """
import sys

import uvicorn
from litestar import Litestar, MediaType, get


@get("/", media_type=MediaType.HTML)
async def page() -> str:
    return "<!doctype html><title>Hello</title><p>Hello, world.</p>"


uvicorn.run(
    Litestar([page]),
    host="127.0.0.1",
    port=int(sys.argv[1]),
    proxy_headers=False,
    server_header=False,
    timeout_graceful_shutdown=5,
)
"""


@dataclass(frozen=True)
class Load:
    """What the generator measured against one server."""

    requests: int
    seconds: float
    latencies: list[float]
    cpu_seconds: float  # the server process's user + system time during the window
    generator_seconds: float  # the same for this process, the load generator

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def percentile(self, point: int) -> float:
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[point - 1]

    def __add__(self, other: Load) -> Load:
        return Load(
            requests=self.requests + other.requests,
            seconds=self.seconds + other.seconds,
            latencies=self.latencies + other.latencies,
            cpu_seconds=self.cpu_seconds + other.cpu_seconds,
            generator_seconds=self.generator_seconds + other.generator_seconds,
        )

    def line(self, name: str) -> str:
        return (
            f"  {name:<28} {self.per_second:7.1f} req/s, p50 {self.percentile(50) * 1000:6.1f} ms,"
            f" p99 {self.percentile(99) * 1000:6.1f} ms ({self.requests} requests)"
            f"\n  {'':<28} CPU: server {self.cpu_seconds / self.seconds:4.0%} of a core"
            f" ({self.cpu_seconds / self.requests * 1000:.2f} ms a request),"
            f" load generator {self.generator_seconds / self.seconds:4.0%}"
        )


async def _drive(
    url: str,
    path: str,
    cookies: list[str],
    pid: int,
    check: Callable[[httpx.Response], None],
    duration: float,
) -> Load:
    """Warm up, then keep one request in flight per client for ``duration`` seconds."""
    clients = [
        httpx.AsyncClient(
            base_url=url,
            # As load tools such as wrk do, ask for no compression: the generator shares the
            # machine, and inflating every page would make it, not the server, the bottleneck.
            headers={"Accept-Encoding": "identity", **({"Cookie": cookie} if cookie else {})},
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            timeout=60,
        )
        for cookie in cookies
    ]
    latencies: list[float] = []

    async def run(client: httpx.AsyncClient, until: float, record: bool) -> None:
        while time.perf_counter() < until:
            started = time.perf_counter()
            response = await client.get(path)
            elapsed = time.perf_counter() - started
            check(response)
            if record:
                latencies.append(elapsed)

    async def all_clients(seconds: float, record: bool) -> float:
        started = time.perf_counter()
        until = started + seconds
        await asyncio.gather(*(run(client, until, record) for client in clients))
        return time.perf_counter() - started  # the last requests end after `until`

    try:
        await all_clients(WARM_UP_SECONDS, record=False)
        cpu, generator = sum(cpu_seconds(pid)), time.process_time()
        seconds = await all_clients(duration, record=True)
        cpu, generator = sum(cpu_seconds(pid)) - cpu, time.process_time() - generator
    finally:
        for client in clients:
            await client.aclose()
    return Load(
        requests=len(latencies),
        seconds=seconds,
        latencies=latencies,
        cpu_seconds=cpu,
        generator_seconds=generator,
    )


@pytest.fixture
def web(settings: Settings, tmp_path: Path) -> Iterator[AppProcess]:
    """``appliance web`` on the test database, one worker, its file store in ``tmp_path``."""
    with web_process(settings, tmp_path) as process:
        yield process


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """The bare Litestar app under uvicorn in a process of its own: its URL and pid."""
    port = free_port()
    log = tmp_path / "bare.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", BARE_APP, str(port)], stdout=sink, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"bare app did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
async def staff(
    clean_db: None, web: AppProcess, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """A browser signed in to the web process as the owner (wizard, then a recovery code)."""
    async with cookie_browser(web.url) as http:
        owner = await run_wizard(http, settings, dt.datetime.now(dt.UTC))
        http.cookies.clear()
        signed = await sign_in(http, owner.username, owner.password, code=owner.recovery_codes[0])
        assert signed.headers.get("location") == "/", signed.text[-2000:]
        yield http


async def _gallery_link(staff: httpx.AsyncClient) -> str:
    """A published gallery of PHOTOS ready photos in one set, shared; returns ``/s/<token>``."""
    gallery = await new_gallery(staff, await create(staff, ANNA))
    row = await GallerySet.select(GallerySet.id).where(GallerySet.gallery == gallery).first().run()
    assert row is not None
    now = dt.datetime.now(dt.UTC)
    await Photo.insert(
        *(
            Photo(
                gallery=gallery,
                gallery_set=row["id"],
                filename=f"DSC_{number:04d}.jpg",
                content_type="image/jpeg",
                size=12_000_000,
                sha256=f"{number:064x}",
                width=6000,
                height=4000,
                original_key=f"originals/{gallery}/{number:04d}",
                status="ready",
                thumb_key=f"thumbs/{gallery}/{number:04d}.jpg",
                preview_key=f"previews/{gallery}/{number:04d}.jpg",
                position=number,
                created_at=now,
            )
            for number in range(PHOTOS)
        )
    ).run()
    published = await submit(
        staff,
        f"/galleries/{gallery}",
        {"status": "published"},
        action=f"/galleries/{gallery}/status",
    )
    assert published.status_code == 303, published.text[-2000:]
    return await share(staff, gallery)


def _gallery_page(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text[-2000:]
    assert response.content.count(TILE) == FIRST_PAGE
    assert f"More photos ({PHOTOS - FIRST_PAGE} more)".encode() in response.content


def _bare_page(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text[-2000:]
    assert b"Hello, world." in response.content


async def _open_as_newcookie_browser(url: str, path: str) -> tuple[str, int, int]:
    """Open the link as a browser that has never seen it: the Cookie header it sends from now
    on, and the size of the page, as it is and as it travels gzip-compressed."""
    async with cookie_browser(url) as browser:
        page = await browser.get(path)
        _gallery_page(page)
        assert page.headers.get("content-encoding") == "gzip"
        cookie = "; ".join(f"{item.name}={item.value}" for item in browser.cookies.jar)
        return cookie, len(page.content), page.num_bytes_downloaded


async def test_gallery_page_against_bare_endpoint(
    staff: httpx.AsyncClient, web: AppProcess, bare: tuple[str, int]
) -> None:
    """Requests a second and latency of a 500-photo gallery page against a bare endpoint."""
    path = await _gallery_link(staff)
    opened = [await _open_as_newcookie_browser(web.url, path) for _ in range(CLIENTS)]
    cookies = [cookie for cookie, _, _ in opened]
    assert all("fs_visitor" in cookie and "fs_csrf" in cookie for cookie in cookies)
    assert len(set(cookies)) == CLIENTS  # a visit of its own for every client
    size, compressed = opened[0][1], opened[0][2]

    bare_url, bare_pid = bare
    # The two sides take turns in short rounds, so whatever else the machine is doing falls
    # on both alike instead of on whichever side happened to run at the time.
    total = float(os.environ.get(DURATION_ENV, DEFAULT_SECONDS))
    seconds = total / ROUNDS
    baseline = page = None
    for _ in range(ROUNDS):
        bare_round = await _drive(bare_url, "/", [""] * CLIENTS, bare_pid, _bare_page, seconds)
        page_round = await _drive(web.url, path, cookies, web.process.pid, _gallery_page, seconds)
        baseline = bare_round if baseline is None else baseline + bare_round
        page = page_round if page is None else page + page_round
    assert baseline is not None and page is not None

    print(
        f"\n{CLIENTS} clients, keep-alive, {baseline.seconds:.0f} s a side in {ROUNDS} turns,"
        f" gallery of {PHOTOS} photos ({size / 1024:.0f} KB a page,"
        f" {compressed / 1024:.0f} KB gzip-compressed; the load asks for it uncompressed):"
        f"\n{baseline.line('bare Litestar endpoint')}"
        f"\n{page.line('client gallery page (ours)')}"
        f"\n  throughput ratio (gallery / bare): {page.per_second / baseline.per_second:.3f}"
    )
