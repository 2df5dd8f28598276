"""Kill, cut and break: the appliance reports what is wrong and recovers what it can."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from appliance.db.engine import _with_database
from tests.conftest import S3Server
from tests.processes import AppProcess, free_port


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    pid_file = tmp_path / "data" / "postgres" / "postmaster.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)


@pytest.fixture
def blank_database(postgres_server: str) -> Iterator[str]:
    """An empty database of its own (no migrations run), dropped afterwards."""
    name = f"appliance_{secrets.token_hex(4)}_test"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(postgres_server)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(postgres_server, name)
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_crashed_child_is_restarted_and_logged(workdir: Path) -> None:
    """Killing the web server makes the supervisor log it and start a new one."""
    up = AppProcess(["up"], workdir=workdir, port=free_port())
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


def test_readyz_reports_pending_migrations(blank_database: str, tmp_path: Path) -> None:
    """A web server on an unmigrated database answers /readyz 503 naming what is pending."""
    env = {
        "APPLIANCE_DATABASE__URL": blank_database,
        "APPLIANCE_PATHS__DATA_DIR": str(tmp_path / "data"),
    }
    web = AppProcess(
        ["web", "--no-migrate", "--no-setup-token"], workdir=tmp_path, port=free_port(), env=env
    )
    try:
        web.wait_listening()
        response = httpx.get(web.url + "/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not ready" and body["checks"]["database"] == "ok"
        pending = body["checks"]["migrations"]["pending"]
        assert any(item.startswith("accounts:") for item in pending)
        assert any(item.startswith("audit:") for item in pending)
        health = httpx.get(web.url + "/healthz")
        assert health.json()["status"] == "ok"
        assert "server" not in health.headers  # uvicorn's banner is switched off
    finally:
        web.stop()


def test_readyz_reports_a_lost_database_and_the_process_stays_up(
    blank_database: str, postgres_server: str, tmp_path: Path
) -> None:
    """When the database disappears /readyz says 503 while /healthz still answers."""
    env = {
        "APPLIANCE_DATABASE__URL": blank_database,
        "APPLIANCE_PATHS__DATA_DIR": str(tmp_path / "data"),
    }
    web = AppProcess(["web", "--no-setup-token"], workdir=tmp_path, port=free_port(), env=env)
    try:
        web.wait_ready()
        name = urlsplit(blank_database).path.lstrip("/")

        async def drop() -> None:
            conn = await asyncpg.connect(postgres_server)
            try:
                await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            finally:
                await conn.close()

        asyncio.run(drop())
        response = httpx.get(web.url + "/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["database"].startswith("unreachable")
        assert httpx.get(web.url + "/healthz").status_code == 200
        page = httpx.get(web.url + "/login")
        assert page.status_code == 503 and "cannot reach its database" in page.text
        assert "Traceback" not in page.text
        assert web.process.poll() is None
    finally:
        web.stop()


def test_bad_configuration_stops_start_up_with_one_line(tmp_path: Path) -> None:
    """A wrong setting ends the process at once with one line naming the key."""
    web = AppProcess(
        ["web"],
        workdir=tmp_path,
        port=free_port(),
        env={"APPLIANCE_SERVER__TRUSTED_PROXIES": "not-a-network"},
    )
    web.process.wait(timeout=30)
    assert web.process.returncode != 0
    lines = [line for line in web.text().splitlines() if line.strip()]
    assert lines == [
        "Error: configuration error: server.trusted_proxies: "
        "'not-a-network' is not an IP address or network"
    ]


def test_migrate_command_applies_once_then_finds_nothing(
    blank_database: str, tmp_path: Path
) -> None:
    """`appliance migrate` builds an empty database; a second run has nothing to do."""
    import subprocess
    import sys

    env = {
        **os.environ,
        "APPLIANCE_DATABASE__URL": blank_database,
        "APPLIANCE_PATHS__DATA_DIR": str(tmp_path / "data"),
    }

    def migrate() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "appliance", "migrate"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    first = migrate()
    assert first.returncode == 0, first.stderr
    assert re.fullmatch(r"applied \d+ migration\(s\)\n", first.stdout)
    second = migrate()
    assert second.returncode == 0 and second.stdout == "database is up to date\n"


def test_public_bucket_stops_start_up_with_one_line(
    blank_database: str, s3_server: S3Server, tmp_path: Path
) -> None:
    """A bucket anyone may read is refused before the web server starts."""

    bucket = s3_server.public_bucket("*")
    env = {
        "APPLIANCE_DATABASE__URL": blank_database,
        "APPLIANCE_PATHS__DATA_DIR": str(tmp_path / "data"),
        "APPLIANCE_STORAGE__BACKEND": "s3",
        "APPLIANCE_STORAGE__ENDPOINT": s3_server.endpoint,
        "APPLIANCE_STORAGE__BUCKET": bucket,
        "APPLIANCE_STORAGE__ACCESS_KEY": s3_server.access_key,
        "APPLIANCE_STORAGE__SECRET_KEY": s3_server.secret_key,
    }
    web = AppProcess(["web", "--no-setup-token"], workdir=tmp_path, port=free_port(), env=env)
    web.process.wait(timeout=60)
    assert web.process.returncode == 1
    assert web.text().strip().splitlines()[-1] == (
        f"Error: storage: bucket '{bucket}' has a policy that lets anyone read it; remove the "
        "policy: photos must only be reachable through the appliance"
    )
