"""Fixtures for the browser tests: the whole appliance as a subprocess, and Chromium.

The appliance runs as ``python -m appliance up`` in an empty folder, exactly as a studio starts
it: embedded PostgreSQL in ``data/``, no configuration file, only the port set. Everything it
prints goes to a log file whose tail is shown when a test fails. Screenshots and the log are kept
in ``test-artifacts/e2e/`` at the repository root for people reviewing a run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    sync_playwright,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "e2e"

READY_SECONDS = 60.0
TEARDOWN_STOP_SECONDS = 15.0
LOG_TAIL_LINES = 60

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

_CHILD_PID = re.compile(r"started \w+ \(pid (\d+)\)")
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()

# Requests to the appliance must never go through a proxy from the environment.
_LOCAL_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test item, so fixtures can tell whether the test failed."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def _test_failed(item: pytest.Item) -> bool:
    return any(report.failed for report in item.stash.get(_REPORTS, {}).values())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of a GET to ``url``, or None when nothing answers."""
    try:
        with _LOCAL_HTTP.open(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


@dataclass
class Appliance:
    """A running ``appliance up`` and what it printed."""

    process: subprocess.Popen[bytes]
    port: int
    folder: Path
    log_path: Path
    setup_link: str = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def child_pids(self) -> list[int]:
        """The web server and worker processes, as the supervisor logged them."""
        return [int(found) for found in _CHILD_PID.findall(self.log())]

    def stop(self, timeout: float) -> int:
        """Send SIGTERM and wait for the exit code; TimeoutExpired when it takes longer."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill_everything(self) -> None:
        """Last resort after a failed stop: the supervisor, its children and the database."""
        self.process.kill()
        self.process.wait()
        # The children run in sessions of their own and the database is a daemon, so they do not
        # die with the supervisor; end each by the pid the supervisor or PostgreSQL wrote down.
        for pid in self.child_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        postmaster = self.data_dir / "postgres" / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(int(postmaster.read_text().splitlines()[0]), signal.SIGINT)


def _wait_until_ready(appliance: Appliance) -> None:
    """Until /readyz answers 200 and the setup link was printed, or fail with the log's tail."""
    link = re.compile(rf"http://127\.0\.0\.1:{appliance.port}/setup\?token=[A-Za-z0-9_-]+")
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        code = appliance.process.poll()
        if code is not None:
            pytest.fail(
                f"appliance exited with code {code} while starting:\n{appliance.log_tail()}"
            )
        printed = link.search(appliance.log())
        if printed and http_status(f"{appliance.base_url}/readyz") == 200:
            appliance.setup_link = printed.group(0)
            return
        time.sleep(0.2)
    pytest.fail(f"appliance not ready within {READY_SECONDS:.0f} s:\n{appliance.log_tail()}")


@pytest.fixture
def appliance(request: pytest.FixtureRequest) -> Iterator[Appliance]:
    """A fresh appliance started with ``python -m appliance up`` in an empty folder."""
    # Not under pytest's tmp_path: run as root, the embedded PostgreSQL runs as a user of its own
    # that must traverse every parent folder, and another pytest run on the machine resets its
    # base folder to mode 0700 whenever it starts.
    scratch = Path(tempfile.mkdtemp(prefix="appliance-e2e-"))
    folder = scratch / "studio"
    folder.mkdir()
    port = _free_port()
    # Settings from the developer's shell (a database URL, a config file) must not leak in.
    env = {key: value for key, value in os.environ.items() if not key.startswith("APPLIANCE_")}
    env["APPLIANCE_SERVER__PORT"] = str(port)
    # Small pages, so that a gallery of a few photos already loads more as the client scrolls.
    env["APPLIANCE_SHARING__PHOTOS_PER_PAGE"] = "3"
    env["PYTHONUNBUFFERED"] = "1"
    log_path = scratch / "appliance.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "appliance", "up"],
            cwd=folder,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C on pytest is for pytest; teardown stops this
        )
    running = Appliance(process=process, port=port, folder=folder, log_path=log_path)
    try:
        _wait_until_ready(running)
        yield running
    finally:
        if process.poll() is None:
            try:
                running.stop(TEARDOWN_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                running.kill_everything()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_path, ARTIFACTS / f"{request.node.name}.log")
        if _test_failed(request.node):
            print(f"--- last lines printed by the appliance ---\n{running.log_tail()}")
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Chromium from the system, headless; one per run, with a new context per test."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}; `make tools-browser` installs it")
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@dataclass
class Tab:
    """One browser page in a fresh context, recording what it loads and what it logs."""

    context: BrowserContext
    page: Page
    shots: Path
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    taken: int = 0

    def record_console(self, message: ConsoleMessage) -> None:
        """Keep errors (failed loads, CSP refusals); the browser's own favicon request aside."""
        if message.type != "error":
            return
        source = message.location.get("url", "")
        if urlsplit(source).path == "/favicon.ico":
            return  # the browser asks for it on its own; the appliance serves none
        self.console_errors.append(f"{message.text} ({source})")

    def screenshot(self, step: str) -> None:
        """A full-page screenshot, numbered in the order the steps were taken."""
        self.taken += 1
        self.page.screenshot(path=self.shots / f"{self.taken:02d}-{step}.png", full_page=True)


@contextlib.contextmanager
def _tab_in_new_context(browser: Browser, shots: Path, item: pytest.Item) -> Iterator[Tab]:
    """A page in a context of its own (no cookies shared), screenshots into ``shots``."""
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    context.set_default_timeout(10_000)
    context.set_default_navigation_timeout(15_000)
    page = context.new_page()
    opened = Tab(context=context, page=page, shots=shots)
    page.on("request", lambda sent: opened.requests.append(sent.url))
    page.on("console", opened.record_console)
    page.on("pageerror", lambda error: opened.console_errors.append(str(error)))
    try:
        yield opened
    finally:
        if _test_failed(item):
            with contextlib.suppress(Exception):
                opened.screenshot("failure")
        context.close()


@pytest.fixture
def tab(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Tab]:
    """A page in a new browser context; screenshots go to test-artifacts/e2e/<test name>/."""
    with _tab_in_new_context(browser, ARTIFACTS / request.node.name, request.node) as opened:
        yield opened


@pytest.fixture
def second_tab(browser: Browser, tab: Tab, request: pytest.FixtureRequest) -> Iterator[Tab]:
    """A page in another new context, for a second person; screenshots go to ``second/``
    inside the folder of ``tab``."""
    with _tab_in_new_context(browser, tab.shots / "second", request.node) as opened:
        yield opened
