"""`appliance up` as a studio runs it: embedded PostgreSQL, supervised children, clean stop."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import AppProcess, free_port

STOP_LIMIT_SECONDS = 10


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not under pytest's tmp_path: the embedded PostgreSQL runs as a user of its own that must
    # traverse every parent folder, and any other pytest run on the machine resets pytest's
    # base folder to mode 0700 when it starts.
    folder = Path(tempfile.mkdtemp(prefix="appliance-up-"))
    try:
        yield folder
    finally:
        # Whatever happened, leave no embedded server running.
        pid_file = folder / "data" / "postgres" / "postmaster.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
        shutil.rmtree(folder, ignore_errors=True)


def _setup_link(log: str) -> str:
    match = re.search(r"(http://127\.0\.0\.1:\d+/setup\?token=[\w-]+)", log)
    assert match, log
    return match.group(1)


def test_up_serves_stops_on_sigterm_and_reuses_its_data(workdir: Path) -> None:
    """`up` starts everything from nothing, answers /readyz, stops cleanly in under 10 s on
    SIGTERM, and a second start (stopped with Ctrl-C) finds the data of the first."""
    port = free_port()
    first = AppProcess(["up"], workdir=workdir, port=port)
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
    # The backup repository's password is made at the first start, private to the appliance.
    password_file = workdir / "data" / "backup" / "restic-password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text()

    second = AppProcess(["up"], workdir=workdir, port=port)
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
    assert password_file.read_text() == password  # never made anew
