"""Anna, Ben and the erasure steps the erasure, legal-hold and purge-fault tests share."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar

from appliance.accounts import service as accounts
from appliance.audit.service import Actor
from appliance.backups.points import Point
from appliance.backups.repositories import Target, configured, primary
from appliance.backups.restore import choose_point
from appliance.backups.service import do_backup
from appliance.clients.tables import Client
from appliance.config import Settings
from appliance.db.schema import registered_tables
from appliance.galleries.tables import Gallery, Photo
from appliance.notify.tables import OutboxMessage
from appliance.privacy import erasure, ledger, purge
from appliance.storage.base import ObjectStore
from tests.conftest import FakeClock
from tests.integration.flows import Admin
from tests.integration.sharing_flows import published_gallery, share
from tests.integration.test_clients import ANNA, BEN, signed_in_owner

__all__ = [
    "CARLA_PASSWORD",
    "Erased",
    "anna_and_ben",
    "backed_up",
    "carla",
    "count",
    "erase_and_purge",
    "erase_and_wait",
    "folder_traces",
    "fresh_ledger",
    "object_bytes",
    "purge_entry",
    "store_traces",
    "traces",
]

CARLA_PASSWORD = "amber meadow violin 77 cedar"


async def carla(
    settings: Settings, now: dt.datetime, email: str = "carla@studio.example"
) -> accounts.StaffMember:
    """Carla Reyes, a photographer who signs in with :data:`CARLA_PASSWORD`."""
    return await accounts.create_user(
        username="carla",
        email=email,
        display_name="Carla Reyes",
        role="photographer",
        password=CARLA_PASSWORD,
        settings=settings,
        now=now,
        actor=Actor(id=None, name="test"),
        address="test",
    )


@pytest.fixture(autouse=True)
def fresh_ledger(settings: Settings) -> Iterator[None]:
    """No erasure of one test reaches another (the data folder is the session's): the ledger
    goes before and after each test."""

    def wipe() -> None:
        ledger.ledger_path(settings).unlink(missing_ok=True)
        (ledger.ledger_path(settings).parent / "copied.json").unlink(missing_ok=True)

    wipe()
    yield
    wipe()


@dataclass
class Erased:
    """Anna as the tests know her: her client id, her link, her objects and their bytes."""

    client_id: int
    link: str
    keys: list[str]
    contents: list[bytes]


async def object_bytes(store: ObjectStore, key: str) -> bytes:
    """The whole content of the object under ``key``."""
    return b"".join([chunk async for chunk in store.get(key)])


async def anna_and_ben(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> Erased:
    """Two clients with a published gallery each, a link and a queued e-mail for Anna."""
    await signed_in_owner(client, admin, clock)
    anna_gallery, _ = await published_gallery(client, app, clock, ANNA, ["a1.jpg", "a2.jpg"])
    await published_gallery(client, app, clock, BEN, ["b1.jpg"], title="Portraits")
    link = await share(client, anna_gallery, recipient=ANNA["name"], email=ANNA["email"])
    anna = await Gallery.select(Gallery.client).where(Gallery.id == anna_gallery).first().run()
    assert anna is not None
    store = app.state.store
    photos = await Photo.select().where(Photo.gallery == anna_gallery).run()
    keys = [p[k] for p in photos for k in ("original_key", "thumb_key", "preview_key")]
    await OutboxMessage.insert(
        OutboxMessage(
            kind="email",
            recipient=ANNA["email"],
            subject=f"Your gallery, {ANNA['name']}",
            body_text="Hello",
            next_attempt_at=clock(),
            created_at=clock(),
        )
    ).run()
    contents = [await object_bytes(store, key) for key in keys]
    return Erased(client_id=anna["client"], link=link, keys=keys, contents=contents)


async def backed_up(
    settings: Settings, store: ObjectStore, clock: FakeClock
) -> tuple[Target, Point]:
    """A backup now, and its recovery point in the primary repository."""
    await do_backup(settings, store, clock)
    target = primary(configured(settings))
    return target, await choose_point(settings, target, None)


async def erase_and_wait(
    settings: Settings, clock: FakeClock, client_id: int
) -> erasure.ErasureRequest:
    """The owner erases the client and the grace period passes."""
    request = await erasure.request_erasure(
        settings, kind="client", subject_id=client_id, actor="owner", source="staff", now=clock()
    )
    clock.advance(days=settings.privacy.erasure_grace_days, seconds=1)
    return request


async def erase_and_purge(
    settings: Settings, store: ObjectStore, clock: FakeClock, client_id: int
) -> None:
    """The owner erases the client, the grace period passes, the daily purge runs."""
    await erase_and_wait(settings, clock, client_id)
    assert await purge.purge_due(settings, store, clock()) == 1


async def traces(database_url: str, needles: list[str], client_id: int) -> list[str]:
    """Every text or JSON value in every table of every registered app that contains a needle,
    and every foreign key to ``client`` still holding the client's id."""
    found = []
    conn = await asyncpg.connect(database_url)
    try:
        for table in registered_tables():
            name = table._meta.tablename
            for column in table._meta.columns:
                column_name = column._meta.db_column_name
                if column.value_type in (str, dict, list) or column_name in ("details",):
                    for needle in needles:
                        hits = await conn.fetchval(
                            f"SELECT count(*) FROM {name} WHERE {column_name}::text ILIKE $1",  # noqa: S608
                            f"%{needle}%",
                        )
                        if hits:
                            found.append(f"{name}.{column_name} holds {needle!r}")
            for column in table._meta.foreign_key_columns:
                if column._foreign_key_meta.resolved_references is Client:
                    column_name = column._meta.db_column_name
                    hits = await conn.fetchval(
                        f"SELECT count(*) FROM {name} WHERE {column_name} = $1",  # noqa: S608
                        client_id,
                    )
                    if hits:
                        found.append(f"{name}.{column_name} refers to client {client_id}")
        hits = await conn.fetchval("SELECT count(*) FROM client WHERE id = $1", client_id)
        if hits:
            found.append(f"client {client_id} is still there")
    finally:
        await conn.close()
    return found


async def store_traces(store: ObjectStore, keys: list[str], contents: list[bytes]) -> list[str]:
    """Every object in the store that is one of ``keys`` or holds one of ``contents``."""
    found = []
    async for info in store.list(""):
        if info.key in keys:
            found.append(f"object {info.key} is still there")
        data = await object_bytes(store, info.key)
        if any(content in data for content in contents):
            found.append(f"object {info.key} holds an erased photo's bytes")
    return found


def folder_traces(folder: Path, contents: list[bytes]) -> list[str]:
    """Every file under ``folder`` that holds one of ``contents``."""
    return [
        str(path)
        for path in folder.rglob("*")
        if path.is_file() and any(content in path.read_bytes() for content in contents)
    ]


async def count(database_url: str, sql: str, *args: object) -> int:
    """The number a ``SELECT count(*)`` query returns, on a connection of its own."""
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


def purge_entry(settings: Settings) -> dict[str, Any]:
    """The ledger's line of the purge (the request's own line comes first)."""
    purged = [e for e in ledger.entries(settings) if e.get("state") is None]
    assert len(purged) == 1, ledger.entries(settings)
    return purged[0]
