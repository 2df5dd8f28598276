"""A restore that fails after it replaced the live database, and a point taken while a purge
was half-way: erased people do not stay in the database, nor their data in the deletion
record."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Litestar

from appliance.backups import restore as restoring
from appliance.backups.restore import restore
from appliance.clients.tables import Client
from appliance.config import Settings
from appliance.privacy import ledger, purge
from appliance.privacy.tables import ErasureRequest as ErasureRow
from appliance.storage.base import ObjectStore, StorageError
from tests.conftest import FakeClock
from tests.faults.test_purge import DyingStore, WorkerDies
from tests.integration import test_backups
from tests.integration.erasure_flows import (
    anna_and_ben,
    backed_up,
    erase_and_purge,
    erase_and_wait,
    store_traces,
    traces,
)
from tests.integration.erasure_flows import fresh_ledger as fresh_ledger  # autouse
from tests.integration.flows import Admin
from tests.integration.test_clients import ANNA

backup_settings = test_backups.backup_settings  # the fixture: a repository of the test's own


class FullStore:
    """The real store, except that writing an object fails (a full disk, a bucket gone)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    async def put(self, key: str, chunks: AsyncIterator[bytes], *, content_type: str) -> Any:
        raise StorageError(f"no space left for {key}")


async def _migrations_fail(*args: object, **kwargs: object) -> None:
    raise RuntimeError("a migration failed")


@pytest.mark.parametrize("failure", ["objects", "migrations"])
async def test_a_restore_failing_before_the_erasures_leaves_them_to_the_next_purge(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    """A point from before Anna's purge is restored and the restore fails after the database
    was replaced but before the ledger was re-applied (an object cannot be written, a
    migration fails): Anna is back for now, the marker says so, and the next daily purge
    erases her again and records it."""
    anna = await anna_and_ben(client, app, admin, clock)
    store = app.state.store
    target, point = await backed_up(backup_settings, store, clock)
    await erase_and_purge(backup_settings, store, clock, anna.client_id)

    into: Any = store
    if failure == "objects":
        into = FullStore(store)
    else:
        monkeypatch.setattr(restoring, "migrate_database", _migrations_fail)
    with pytest.raises((StorageError, RuntimeError)):
        await restore(backup_settings, into, target, point)
    monkeypatch.undo()
    assert ledger.reapply_pending(backup_settings)
    assert await Client.count().where(Client.id == anna.client_id).run() == 1  # the point's

    clock.advance(days=1)
    await purge.purge_due(backup_settings, store, clock())
    assert not ledger.reapply_pending(backup_settings)
    assert await traces(database_url, [ANNA["name"], ANNA["email"]], anna.client_id) == []
    assert await store_traces(store, anna.keys, anna.contents) == []
    records = await ErasureRow.select(ErasureRow.subject_id, ErasureRow.state).run()
    assert records == [{"subject_id": anna.client_id, "state": "done"}]


async def test_a_scratch_restore_that_fails_leaves_no_marker(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restore into scratch space never touches the live database: failing, it leaves
    nothing for the daily purge to re-apply."""
    await anna_and_ben(client, app, admin, clock)
    target, point = await backed_up(backup_settings, app.state.store, clock)
    monkeypatch.setattr(restoring, "migrate_database", _migrations_fail)
    with pytest.raises(RuntimeError):
        await restore(backup_settings, app.state.store, target, point, into_scratch=True)
    assert not ledger.reapply_pending(backup_settings)


async def test_a_point_taken_mid_purge_restores_a_deletion_record_without_personal_data(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
) -> None:
    """The purge dies after Anna's rows went, the nightly point is taken then (its request
    holds her collected address and object keys), the purge finishes: restoring that point
    leaves a deletion record of steps and counts only, with the rows the first run deleted."""
    anna = await anna_and_ben(client, app, admin, clock)
    store = app.state.store
    request = await erase_and_wait(backup_settings, clock, anna.client_id)
    with pytest.raises(WorkerDies):
        await purge.purge_due(backup_settings, DyingStore(store, lives=1), clock())  # type: ignore[arg-type]
    target, point = await backed_up(backup_settings, store, clock)
    assert await purge.purge_due(backup_settings, store, clock()) == 1

    await restore(backup_settings, store, target, point)

    row = await ErasureRow.select().where(ErasureRow.id == request.id).first().run()
    assert row is not None
    assert row["state"] == "done"
    record = json.loads(row["progress"])
    assert set(record) == {"steps", "counts"}
    assert ANNA["email"].lower() not in row["progress"].lower()
    assert not any(key in row["progress"] for key in anna.keys)
    assert record["counts"]["client"] == 1
    assert record["counts"]["photo"] == 2
