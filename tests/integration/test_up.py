"""`appliance up` as a studio runs it: embedded PostgreSQL, supervised children, clean stop."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

STOP_LIMIT_SECONDS = 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Running:
    """One `appliance up` process with its log."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.log = workdir / f"up-{time.monotonic_ns()}.log"
        env = {**os.environ, "APPLIANCE_SERVER__PORT": str(port)}
        env.pop("APPLIANCE_DATABASE__URL", None)
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "appliance", "up"],
                cwd=workdir,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{port}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"appliance up exited early:\n{self.text()[-4000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"never ready:\n{self.text()[-4000:]}")

    def stop(self, signum: int = signal.SIGTERM) -> float:
        started = time.monotonic()
        self.process.send_signal(signum)
        self.process.wait(timeout=30)
        return time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    # Whatever happened, leave no embedded server running.
    pid_file = tmp_path / "data" / "postgres" / "postmaster.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)


def _setup_link(log: str) -> str:
    match = re.search(r"(http://127\.0\.0\.1:\d+/setup\?token=[\w-]+)", log)
    assert match, log
    return match.group(1)


def test_up_serves_stops_on_sigterm_and_reuses_its_data(workdir: Path) -> None:
    """`up` starts everything from nothing, answers /readyz, stops cleanly in under 10 s on
    SIGTERM, and a second start (stopped with Ctrl-C) finds the data of the first."""
    port = _free_port()
    first = Running(workdir, port)
    try:
        first.wait_ready()
        ready = httpx.get(first.url + "/readyz").json()
        assert ready == {"status": "ready", "checks": {"database": "ok", "migrations": "current"}}
        link = _setup_link(first.text())
        with httpx.Client(base_url=first.url) as browser:
            opened = browser.get(link.removeprefix(first.url))
            assert opened.headers["location"] == "/setup/studio"
            cookies = "; ".join(
                header.split(";")[0] for header in opened.headers.get_list("set-cookie")
            )
            page = browser.get("/setup/studio", headers={"Cookie": cookies})
            page_cookie = page.headers.get("set-cookie", "").split(";")[0]
            token = re.search(r'name="_csrf" value="([^"]+)"', page.text)
            assert token
            saved = browser.post(
                "/setup/studio",
                data={
                    "studio_name": "Studio Persist",
                    "contact_email": "p@studio.example",
                    "_csrf": token.group(1),
                },
                headers={"Cookie": "; ".join(c for c in (cookies, page_cookie) if c)},
            )
            assert saved.headers["location"] == "/setup/admin", saved.text
        took = first.stop(signal.SIGTERM)
        assert first.process.returncode == 0, first.text()[-3000:]
        assert took < STOP_LIMIT_SECONDS
        assert "all processes stopped" in first.text()
        assert not (workdir / "data" / "postgres" / "postmaster.pid").exists()
    finally:
        first.kill()

    second = Running(workdir, port)
    try:
        second.wait_ready()
        new_link = _setup_link(second.text())
        assert new_link != link  # a fresh one-time token each start
        assert httpx.get(link, timeout=5).status_code == 403  # the old token is dead
        opened = httpx.get(new_link, timeout=5)
        assert opened.headers["location"] == "/setup/admin"  # the studio step was kept
        took = second.stop(signal.SIGINT)
        assert second.process.returncode == 0
        assert took < STOP_LIMIT_SECONDS
    finally:
        second.kill()


def test_crashed_child_is_restarted_and_logged(workdir: Path) -> None:
    """Killing the web server makes the supervisor log it and start a new one."""
    up = Running(workdir, _free_port())
    try:
        up.wait_ready()
        web_pid = int(re.search(r"started web \(pid (\d+)\)", up.text()).group(1))  # type: ignore[union-attr]
        os.kill(web_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while "web exited with code -9" not in up.text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "web exited with code -9" in up.text()
        up.wait_ready()
        pids = [int(p) for p in re.findall(r"started web \(pid (\d+)\)", up.text())]
        assert len(pids) == 2 and pids[1] != web_pid
        up.stop()
        assert up.process.returncode == 0
    finally:
        up.kill()
