"""Connect Piccolo to the configured PostgreSQL, run migrations under a lock, report their state."""

from __future__ import annotations

import contextlib
import io
import os
import socket
from collections.abc import AsyncIterator

import asyncpg
from piccolo.apps.migrations.commands.base import BaseMigrationManager
from piccolo.apps.migrations.commands.forwards import run_forwards
from piccolo.apps.migrations.tables import Migration
from piccolo.engine.postgres import PostgresEngine

__all__ = [
    "DATABASE_UNAVAILABLE",
    "configure",
    "connection_pool",
    "engine",
    "ensure_database",
    "pending_migrations",
    "run_migrations",
]

PICCOLO_CONF = "appliance.db.piccolo_conf"
# Any fixed 64-bit number: every process that migrates takes this advisory lock first, so the
# web server and the worker starting together never run the same migration twice.
_MIGRATION_LOCK_ID = 0x70686F746F73
_pool_size = {"max": 10}  # set by configure(); the engine has no field for it

# Errors that mean "the database cannot be reached right now", not "this request is wrong".
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused or reset on the network
    TimeoutError,
    socket.gaierror,  # the server's name does not resolve
    FileNotFoundError,  # the Unix socket of the (embedded) server is gone
    asyncpg.PostgresConnectionError,  # refused, failed, rejected connections
    asyncpg.InterfaceError,  # the connection went away under a query
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InvalidCatalogNameError,  # the database itself is gone
)


def engine() -> PostgresEngine:
    """The process's one Piccolo engine (from ``appliance.db.piccolo_conf``)."""
    os.environ.setdefault("PICCOLO_CONF", PICCOLO_CONF)
    from appliance.db import piccolo_conf

    return piccolo_conf.DB


def configure(dsn: str, *, pool_max_size: int = 10) -> PostgresEngine:
    """Point the engine at ``dsn``; must run before the first query."""
    db = engine()
    db.config = {"dsn": dsn}
    _pool_size["max"] = pool_max_size
    return db


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Reset of a connection given back to the pool: nothing beyond asyncpg's own step, which
    rolls back an unfinished transaction. asyncpg's full reset (RESET ALL, UNLISTEN, release
    of session advisory locks) costs a round trip after every query; the appliance never
    leaves such session state on pooled connections (its advisory locks are
    transaction-scoped; the migration lock has a connection of its own)."""


@contextlib.asynccontextmanager
async def connection_pool() -> AsyncIterator[None]:
    """Hold a connection pool for the life of a web process."""
    db = engine()
    await db.start_connection_pool(min_size=1, max_size=_pool_size["max"], reset=_keep_session)
    try:
        yield
    finally:
        await db.close_connection_pool()


async def ensure_database(dsn: str, name: str) -> str:
    """Create database ``name`` on the server of ``dsn`` if missing; return a DSN for it."""
    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            quoted = '"' + name.replace('"', '""') + '"'
            await conn.execute(f"CREATE DATABASE {quoted}")
    finally:
        await conn.close()
    return _with_database(dsn, name)


def _with_database(dsn: str, name: str) -> str:
    scheme, _, rest = dsn.partition("://")
    authority, slash, path = rest.partition("/")
    _, question, query = path.partition("?")
    return f"{scheme}://{authority}/{name}{question}{query}" if slash else f"{dsn}/{name}"


async def run_migrations(dsn: str, *, quiet: bool = True) -> list[str]:
    """Apply every pending migration of every app, holding an advisory lock; return what ran.

    Piccolo prints progress; ``quiet`` keeps it out of the web server's log.
    """
    pending_before = await pending_migrations()
    lock = await asyncpg.connect(dsn)
    try:
        await lock.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_ID)
        sink = io.StringIO() if quiet else None
        with contextlib.redirect_stdout(sink) if sink else contextlib.nullcontext():
            result = await run_forwards(app_name="all")
        if not result.success:
            raise RuntimeError(f"migration failed: {result.message}")
    finally:
        await lock.close()
    return pending_before


async def pending_migrations() -> list[str]:
    """Migrations present in the code but not yet applied, as ``app:id``."""
    ran: set[str] = set()
    if await Migration.table_exists().run():
        rows = await Migration.select(Migration.app_name, Migration.name).run()
        ran = {f"{row['app_name']}:{row['name']}" for row in rows}
    return [m for m in code_migrations() if m not in ran]


def code_migrations() -> list[str]:
    """Every migration the code holds, as ``app:id``, app by app in dependency order."""
    manager = BaseMigrationManager()
    found = []
    for app_module in manager.get_app_modules():
        config = app_module.APP_CONFIG
        modules = manager.get_migration_modules(config.resolved_migrations_folder_path)
        found += [f"{config.app_name}:{m}" for m in manager.get_migration_ids(modules)]
    return found
