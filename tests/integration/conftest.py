"""Fixtures for tests that talk HTTP to the app on the test's own event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from litestar import Litestar

from appliance.app import create_app
from appliance.config import Settings
from tests.conftest import FakeClock
from tests.integration.flows import Admin, run_wizard

CLIENT_ADDRESS = "192.0.2.10"


@pytest.fixture(scope="session")
async def app(settings: Settings, clock: FakeClock) -> AsyncIterator[Litestar]:
    application = create_app(settings, clock=clock)
    # The lifespan runs in a task of its own: its task group must be entered and left by the
    # same task, and pytest-asyncio sets fixtures up and tears them down in different tasks.
    started, stop = asyncio.Event(), asyncio.Event()

    async def serve() -> None:
        async with application.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(serve())
    await started.wait()
    yield application
    stop.set()
    await task


def make_client(app: Litestar, address: str = CLIENT_ADDRESS) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="https://localhost")


@pytest.fixture
async def client(app: Litestar, clean_db: None) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(app) as http:
        yield http


@pytest.fixture
async def admin(client: httpx.AsyncClient, settings: Settings, clock: FakeClock) -> Admin:
    """A finished wizard; the browser of ``client`` is not signed in afterwards."""
    owner = await run_wizard(client, settings, clock())
    clock.advance(seconds=30)  # the next TOTP step, so the enrolment code is not a replay
    client.cookies.clear()
    return owner
