"""Fixtures and helpers shared by several integration test modules."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from huey.api import PeriodicTask

from appliance.config import Settings
from appliance.db.engine import engine
from appliance.worker import close_thread_loop, make_huey
from tests.smtp import SmtpServer

# A channel nobody listens on: alerts to it stay in the outbox, where the tests read them.
ALERT_URL = "json://127.0.0.1:9/security-hook"
# The login that ``smtp_login_server`` asks for.
SMTP_USER = "studio"
SMTP_PASSWORD = "relay-pass-7f3e9a"


@pytest.fixture
def alerting(settings: Settings) -> Settings:
    """The settings with one alert URL, so every alert becomes one outbox row."""
    return msgspec.structs.replace(
        settings, notify=msgspec.structs.replace(settings.notify, alert_urls=[ALERT_URL])
    )


def _running(server: SmtpServer) -> Iterator[SmtpServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A running SMTP server on loopback for one test, taking mail without a login."""
    yield from _running(SmtpServer())


@pytest.fixture
def smtp_login_server() -> Iterator[SmtpServer]:
    """A running SMTP server on loopback for one test that wants SMTP_USER / SMTP_PASSWORD."""
    yield from _running(SmtpServer(credentials=(SMTP_USER, SMTP_PASSWORD)))


async def run_periodic_twice(settings: Settings, name: str, tmp_path: Path) -> None:
    """Run the periodic huey task ``name`` (e.g. ``monitoring.maintenance_notices``) twice, as
    the worker would: through huey, in a thread with a loop of its own and without the web
    app's pool (as in tests/integration/test_worker.py)."""
    data = msgspec.structs.replace(settings.paths, data_dir=str(tmp_path))
    huey = make_huey(msgspec.structs.replace(settings, paths=data), immediate=True)
    (task,) = [
        t
        for t in huey._registry._registry.values()
        if issubclass(t, PeriodicTask) and t.__name__ == name
    ]
    db = engine()
    pool, db.pool = db.pool, None
    try:

        def execute_twice() -> None:
            try:
                huey.execute(task())
                huey.execute(task())
            finally:
                close_thread_loop()

        await asyncio.to_thread(execute_twice)
    finally:
        db.pool = pool
