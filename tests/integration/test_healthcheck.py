"""What the compose bundle's containers run besides serving: ``appliance healthcheck
web|worker`` against a real database and a real web server (exit 0 or 1, one line saying why),
and the one-shot ``appliance migrate`` making the S3 bucket that web and worker then expect."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.config import Settings
from appliance.monitoring.tables import ProcessHeartbeat
from tests.conftest import S3Server
from tests.processes import AppProcess, free_port

SITE = "photos.example.com"
# server.host in the bundle's config.toml; only the check reads it here, nothing binds to it.
BUNDLE_HOST = "0.0.0.0"  # noqa: S104


def _healthcheck(part: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    return subprocess.run(
        [sys.executable, "-m", "appliance", "healthcheck", part],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout + result.stderr
    return lines[0]


async def _beat(seconds_ago: float) -> None:
    now = dt.datetime.now(dt.UTC)
    beat = now - dt.timedelta(seconds=seconds_ago)
    await ProcessHeartbeat(name="worker", beat_at=beat, started_at=beat).save().run()


async def test_worker_is_healthy_with_a_fresh_heartbeat(clean_db: None, settings: Settings) -> None:
    """A heartbeat written seconds ago: exit 0, and the line says how old it is."""
    await _beat(5)
    result = _healthcheck("worker", {"APPLIANCE_DATABASE__URL": settings.database.url})
    assert result.returncode == 0, result.stdout + result.stderr
    line = _one_line(result)
    assert line.startswith("worker: healthy: last heartbeat ")
    assert line.endswith(" s ago")


async def test_worker_without_a_heartbeat_is_unhealthy(clean_db: None, settings: Settings) -> None:
    """No worker has ever beaten (it never started, or not yet): exit 1, saying so."""
    result = _healthcheck("worker", {"APPLIANCE_DATABASE__URL": settings.database.url})
    assert result.returncode == 1
    assert _one_line(result) == "worker: unhealthy: no heartbeat from the worker yet"


async def test_stale_heartbeat_is_judged_by_worker_stale_seconds(
    clean_db: None, settings: Settings
) -> None:
    """A beat 100 s old passes the default limit (180 s) and fails a limit of 60 s."""
    await _beat(100)
    env = {"APPLIANCE_DATABASE__URL": settings.database.url}
    within = _healthcheck("worker", env)
    assert within.returncode == 0, within.stdout + within.stderr
    assert _one_line(within) == "worker: healthy: last heartbeat 1 min ago"

    stale = _healthcheck("worker", {**env, "APPLIANCE_MONITORING__WORKER_STALE_SECONDS": "60"})
    assert stale.returncode == 1
    assert _one_line(stale) == (
        "worker: unhealthy: last heartbeat 1 min ago, over the limit of 1 min"
    )


async def test_heartbeat_hours_old_is_unhealthy(clean_db: None, settings: Settings) -> None:
    """A worker that died in the night: exit 1 with the age of its last beat."""
    await _beat(3 * 3600 + 120)
    result = _healthcheck("worker", {"APPLIANCE_DATABASE__URL": settings.database.url})
    assert result.returncode == 1
    assert _one_line(result) == (
        "worker: unhealthy: last heartbeat 3 h 2 min ago, over the limit of 3 min"
    )


def test_worker_check_with_the_database_down_is_unhealthy() -> None:
    """A database that refuses connections: exit 1 in one line, no traceback."""
    url = f"postgresql://appliance@127.0.0.1:{free_port()}/appliance"
    result = _healthcheck("worker", {"APPLIANCE_DATABASE__URL": url})
    assert result.returncode == 1
    assert _one_line(result).startswith(
        "worker: unhealthy: cannot read the heartbeat from the database: "
    )
    assert "Traceback" not in result.stderr


def test_worker_check_never_starts_a_database(tmp_path: Path) -> None:
    """Without database.url the check says so instead of starting the embedded server."""
    result = _healthcheck("worker", {"APPLIANCE_PATHS__DATA_DIR": str(tmp_path / "data")})
    assert result.returncode == 1
    assert "database.url is not set" in _one_line(result)
    assert not (tmp_path / "data" / "postgres").exists()


@pytest.fixture(scope="module")
def web_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AppProcess, dict[str, str]]]:
    """``appliance web`` as the bundle runs it (no migrations, no setup link), answering
    only to the studio's name, and the environment its health check sees."""
    port = free_port()
    env = {
        "APPLIANCE_DATABASE__URL": database_url,
        "APPLIANCE_SECURITY__SECRET_KEY": "s" * 48,
        "APPLIANCE_SERVER__ALLOWED_HOSTS": SITE,
    }
    workdir = tmp_path_factory.mktemp("web")
    server = AppProcess(
        ["web", "--host", "127.0.0.1", "--no-migrate", "--no-setup-token"],
        workdir=workdir,
        port=port,
        env=env,
    )
    try:
        server.wait_listening()
        # In the container server.host is 0.0.0.0: the check must ask 127.0.0.1 for it.
        seen = {"APPLIANCE_SERVER__PORT": str(port), "APPLIANCE_SERVER__HOST": BUNDLE_HOST}
        yield server, {**env, **seen}
    finally:
        server.stop()


def test_web_is_healthy_when_its_server_answers(
    web_server: tuple[AppProcess, dict[str, str]],
) -> None:
    """The running server answers /healthz to a Host it accepts: exit 0."""
    _, env = web_server
    result = _healthcheck("web", env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _one_line(result) == "web: healthy: the web server answers"


def test_web_check_ignores_the_workers_way_to_the_web_server(
    web_server: tuple[AppProcess, dict[str, str]],
) -> None:
    """monitoring.web_url (http://web:8000 in the bundle) is the worker's address for the web
    container; the web container's own check still asks its own server."""
    _, env = web_server
    result = _healthcheck(
        "web", {**env, "APPLIANCE_MONITORING__WEB_URL": "http://web.invalid:8000"}
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_web_on_a_closed_port_is_unhealthy(
    web_server: tuple[AppProcess, dict[str, str]],
) -> None:
    """Nothing listens on the configured port: exit 1 with the reason."""
    _, env = web_server
    result = _healthcheck("web", {**env, "APPLIANCE_SERVER__PORT": str(free_port())})
    assert result.returncode == 1
    assert _one_line(result) == "web: unhealthy: no answer from the web server: ConnectError"


def _s3_env(database_url: str, s3_server: S3Server, bucket: str, data: Path) -> dict[str, str]:
    return {
        "APPLIANCE_DATABASE__URL": database_url,
        "APPLIANCE_PATHS__DATA_DIR": str(data),
        "APPLIANCE_STORAGE__BACKEND": "s3",
        "APPLIANCE_STORAGE__ENDPOINT": s3_server.endpoint,
        "APPLIANCE_STORAGE__BUCKET": bucket,
        "APPLIANCE_STORAGE__ACCESS_KEY": s3_server.access_key,
        "APPLIANCE_STORAGE__SECRET_KEY": s3_server.secret_key,
    }


def _bucket_exists(s3_server: S3Server, bucket: str) -> bool:
    from minio import Minio

    client = Minio(
        s3_server.endpoint.removeprefix("http://"),
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
    )
    return bool(client.bucket_exists(bucket))


def _migrate(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", "migrate", *extra],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_migrate_makes_the_bucket(database_url: str, s3_server: S3Server, tmp_path: Path) -> None:
    """The bundle's migrate service leaves a private bucket behind for web, which starts with
    --no-migrate; ``--no-storage`` leaves the object store alone."""
    bucket = f"photos-{secrets.token_hex(4)}"
    env = _s3_env(database_url, s3_server, bucket, tmp_path / "data")

    untouched = _migrate(env, "--no-storage")
    assert untouched.returncode == 0, untouched.stderr
    assert not _bucket_exists(s3_server, bucket)

    made = _migrate(env)
    assert made.returncode == 0, made.stderr
    assert made.stdout == "database is up to date\n"
    assert _bucket_exists(s3_server, bucket)


def test_migrate_refuses_a_public_bucket(
    database_url: str, s3_server: S3Server, tmp_path: Path
) -> None:
    """A bucket anyone may read fails the migrate service, so web and worker never start."""
    bucket = s3_server.public_bucket("*")
    result = _migrate(_s3_env(database_url, s3_server, bucket, tmp_path / "data"))
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"Error: storage: bucket '{bucket}' has a policy that lets anyone read it")
    )
