"""Shared fixtures: a throwaway PostgreSQL database built by the migrations, settings, a clock."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import asyncpg
import httpx
import msgspec
import pytest
from litestar import Litestar
from passlib.hash import argon2

from appliance.app import create_app
from appliance.config import Settings, load_settings
from tests.receiver import Receiver

if TYPE_CHECKING:
    from tests.integration.flows import Admin

SERVER_DSN_ENV = "APPLIANCE_TEST_POSTGRES"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


class FakeClock:
    """A clock the tests move by hand; starts at the real time so TOTP codes stay meaningful."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)

    def reset(self) -> None:
        self.now = dt.datetime.now(dt.UTC)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Forced onto the embedded server, run only the tests that use a database: the others
    (object stores, alert URLs, processors pages from configuration) do not change with the
    server, and already ran in the main pass."""
    if os.environ.get(SERVER_DSN_ENV) != "embedded":
        return
    uses = [("postgres_server" in getattr(item, "fixturenames", ()), item) for item in items]
    if not all(used for used, _ in uses):
        config.hook.pytest_deselected(items=[item for used, item in uses if not used])
        items[:] = [item for used, item in uses if used]


def _server_reachable(dsn: str) -> bool:
    if os.environ.get(SERVER_DSN_ENV) == "embedded":
        return False  # forced: run the suite as on a machine without PostgreSQL
    if SERVER_DSN_ENV in os.environ:
        return True
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


# argon2id at its least cost: the suite signs in and sets passwords thousands of times, and at
# the shipped cost (~0.1 s of CPU each) that was half the time of the tests that sign in. A
# hash carries its parameters, so either kind verifies under either setting.
CHEAP_HASHER = argon2.using(type="ID", memory_cost=64, rounds=1, parallelism=1)


@pytest.fixture(autouse=True)
def cheap_password_hashes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test hashes cheaply but those marked ``shipped_password_cost`` (the tests of the
    cost itself and of timing), which get the shipped hasher and a dummy hash made by it."""
    from appliance.accounts import passwords

    shipped = passwords._hasher
    if request.node.get_closest_marker("shipped_password_cost") is None:
        passwords._hasher = CHEAP_HASHER
    # The dummy hash an unknown user name is checked against is made once, by the hasher of
    # the moment: made again for each test, so it always has the cost of the test's hasher.
    passwords._dummy_hash.cache_clear()
    try:
        yield
    finally:
        passwords._hasher = shipped
        passwords._dummy_hash.cache_clear()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The machine's PostgreSQL when one answers, else the embedded one started for this run.

    ``APPLIANCE_TEST_POSTGRES`` names another server, or ``embedded`` to force the fallback.
    """
    dsn = os.environ.get(SERVER_DSN_ENV, DEFAULT_SERVER)
    if _server_reachable(dsn):
        yield dsn
        return
    from appliance.db.embedded import start_embedded

    # Not under pytest's base folder: the server runs as a user of its own that must traverse
    # every parent folder, and another pytest run starting on the machine resets that base
    # folder to mode 0700 (the server could then no longer be stopped cleanly).
    folder = Path(tempfile.mkdtemp(prefix="appliance-test-pg-"))
    embedded = start_embedded(folder)
    try:
        yield embedded.dsn
    finally:
        embedded.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(postgres_server: str) -> Iterator[str]:
    """A fresh database named ``*_test``, migrated; dropped at the end of the run."""
    from appliance.db.engine import _with_database, configure, run_migrations

    name = f"appliance_{secrets.token_hex(4)}_test"
    assert name.endswith("_test"), "the suite only ever touches databases named *_test"

    async def create() -> None:
        conn = await asyncpg.connect(postgres_server)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(postgres_server)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    url = _with_database(postgres_server, name)
    configure(url)
    asyncio.run(run_migrations(url))
    try:
        yield url
    finally:
        asyncio.run(drop())


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def settings(database_url: str, data_dir: Path) -> Settings:
    base = load_settings(environ={})
    return msgspec.structs.replace(
        base,
        database=msgspec.structs.replace(base.database, url=database_url),
        paths=msgspec.structs.replace(base.paths, data_dir=str(data_dir)),
        security=msgspec.structs.replace(base.security, secret_key="k" * 48),
        server=msgspec.structs.replace(
            base.server,
            allowed_hosts=["localhost", "127.0.0.1", "appliance.test"],
            trusted_proxies=["10.9.9.9/32"],
        ),
    )


@pytest.fixture(scope="session")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def clean_db(database_url: str, clock: FakeClock, data_dir: Path) -> AsyncIterator[None]:
    """Empty every table (the audit log too, bypassing its append-only trigger) and the object
    store of the app's data folder before a test."""
    clock.reset()
    await asyncio.to_thread(shutil.rmtree, data_dir / "objects", True)
    await empty_database(database_url)
    yield


async def empty_database(database_url: str) -> None:
    """Every table the migrations made emptied, as on a fresh install."""
    conn = await asyncpg.connect(database_url)
    try:
        # Superuser-only switch that disables triggers for this connection: the tests may wipe
        # the audit log between tests, the application never can.
        await conn.execute("SET session_replication_role = replica")
        # Every table the migrations made, except Piccolo's record of the migrations themselves.
        tables = await conn.fetch(
            "SELECT quote_ident(tablename) AS name FROM pg_tables"
            " WHERE schemaname = 'public' AND tablename <> 'migration'"
        )
        sequences = await conn.fetch(
            "SELECT quote_ident(sequencename) AS name FROM pg_sequences WHERE schemaname = 'public'"
        )
        # DELETE and a sequence restart rather than TRUNCATE ... RESTART IDENTITY: a test
        # leaves a few rows, and TRUNCATE makes new files for each of some 50 tables and their
        # indexes (136 ms against 8 ms, for every test). The replica role above also turns
        # off the foreign-key triggers, so the order of the tables does not matter.
        #
        # The lock first, as TRUNCATE would take it: the session's app runs its worker watch in
        # the background, and a row it is inserting while the DELETE runs would survive it and
        # keep an id the restarted sequence hands out again.
        names = ", ".join(row["name"] for row in tables)
        statements = [f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE"]
        statements += [f"DELETE FROM {row['name']}" for row in tables]  # noqa: S608 - catalogue names
        statements += [f"ALTER SEQUENCE {row['name']} RESTART" for row in sequences]
        for attempt in range(5):
            try:
                # One simple query with several statements runs as one transaction.
                await conn.execute("; ".join(statements))
            except asyncpg.DeadlockDetectedError:
                # The watch held one table while waiting for another this lock already has;
                # the server aborted one of the two, and it was this one.
                if attempt == 4:
                    raise
            else:
                break
    finally:
        await conn.close()


# --- the app over HTTP, on the test's own event loop ---------------------------------------

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
    # Litestar's __call__ is typed with its own scope types, which httpx's ASGI type does not
    # accept although the two agree at run time.
    transport = httpx.ASGITransport(app=cast(Any, app), client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="https://localhost")


@pytest.fixture
async def client(app: Litestar, clean_db: None) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(app) as http:
        yield http


@pytest.fixture
async def admin(client: httpx.AsyncClient, settings: Settings, clock: FakeClock) -> Admin:
    """A finished wizard; the browser of ``client`` is not signed in afterwards."""
    from tests.integration.flows import run_wizard

    owner = await run_wizard(client, settings, clock())
    clock.advance(seconds=30)  # the next TOTP step, so the enrolment code is not a replay
    client.cookies.clear()
    return owner


# --- a real S3 server (moto) on loopback -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str = "testing-access"
    secret_key: str = "testing-secret-key"

    def public_bucket(self, principal: object) -> str:
        """A new bucket whose policy lets ``principal`` ("*" or {"AWS": ["*"]}) read it."""
        import json

        from minio import Minio

        bucket = f"open-{secrets.token_hex(4)}"
        client = Minio(
            self.endpoint.removeprefix("http://"),
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
        )
        client.make_bucket(bucket)
        statement = {
            "Effect": "Allow",
            "Principal": principal,
            "Action": ["s3:GetObject"],
            "Resource": [f"arn:aws:s3:::{bucket}/*"],
        }
        client.set_bucket_policy(
            bucket, json.dumps({"Version": "2012-10-17", "Statement": [statement]})
        )
        return bucket


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A recording HTTP server for alert and ping URLs, for one test."""
    server = Receiver()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The moto S3 server as its own process on a free loopback port, for the whole run."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    executable = Path(sys.executable).with_name("moto_server")
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(executable), "-H", "127.0.0.1", "-p", str(port)], stdout=sink, stderr=sink
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield S3Server(endpoint=f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(timeout=10)
