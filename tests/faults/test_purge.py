"""A purge killed half-way: the request keeps its progress and the next run finishes it."""

from __future__ import annotations

import json

import httpx
import pytest
from litestar import Litestar

from appliance.config import Settings
from appliance.galleries.tables import Photo
from appliance.privacy import erasure, ledger, purge
from appliance.privacy.tables import ErasureRequest as ErasureRow
from appliance.storage.base import ObjectStore
from tests.conftest import FakeClock
from tests.integration import test_backups
from tests.integration.erasure_flows import (
    anna_and_ben,
    backed_up,
    erase_and_purge,
    erase_and_wait,
    store_traces,
)
from tests.integration.erasure_flows import fresh_ledger as fresh_ledger  # autouse
from tests.integration.flows import Admin

backup_settings = test_backups.backup_settings  # the fixture: a repository of the test's own


class WorkerDies(Exception):
    """The worker process going away in the middle of the object step."""


class DyingStore:
    """The real store, except that the worker dies after ``lives`` deletions."""

    def __init__(self, store: ObjectStore, lives: int) -> None:
        self.store = store
        self.lives = lives

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    async def delete(self, key: str) -> None:
        if self.lives == 0:
            raise WorkerDies(key)
        self.lives -= 1
        await self.store.delete(key)


async def test_a_purge_killed_half_way_finishes_on_the_next_run(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    settings: Settings,
) -> None:
    """Killed after the rows and two objects: the request stays "purging" with the steps it
    finished and the keys still to delete; the next run deletes the rest and records the
    deletion once."""
    anna = await anna_and_ben(client, app, admin, clock)
    request = await erase_and_wait(settings, clock, anna.client_id)
    store = app.state.store
    try:
        await purge.purge_due(settings, DyingStore(store, lives=2), clock())  # type: ignore[arg-type]
    except WorkerDies:
        pass
    else:
        raise AssertionError("the purge did not reach the object step")
    row = await ErasureRow.select().where(ErasureRow.id == request.id).first().run()
    assert row is not None
    assert row["state"] == "purging"
    progress = json.loads(row["progress"])
    assert progress["steps"] == ["collect", "ledger", "rows"]
    assert set(anna.keys) <= set(progress["keys"])
    assert await Photo.count().run() == 1  # Ben's; Anna's rows went before the kill
    assert await store_traces(store, anna.keys, anna.contents) != []  # objects left behind

    assert await purge.purge_due(settings, store, clock()) == 1
    assert await store_traces(store, anna.keys, anna.contents) == []
    done = await erasure.get_request(request.id)
    assert done.state == "done"
    assert done.counts["photo"] == 2
    assert "keys" not in json.loads(
        (await ErasureRow.select().where(ErasureRow.id == request.id).first().run() or {})[
            "progress"
        ]
    )
    assert await purge.purge_due(settings, store, clock()) == 0  # nothing left to do


async def test_a_restore_whose_erasures_fail_reapplies_them_at_the_next_purge(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    backup_settings: Settings,
) -> None:
    """The worker dies while the restore erases Anna again: the restore fails and leaves a
    marker; the next daily purge re-applies the ledger first and records her erasure."""
    from appliance.backups.restore import restore
    from appliance.clients.tables import Client

    anna = await anna_and_ben(client, app, admin, clock)
    store = app.state.store
    target, point = await backed_up(backup_settings, store, clock)
    await erase_and_purge(backup_settings, store, clock, anna.client_id)

    with pytest.raises(WorkerDies):
        await restore(backup_settings, DyingStore(store, lives=0), target, point)  # type: ignore[arg-type]
    assert ledger.reapply_pending(backup_settings)
    assert await ErasureRow.count().run() == 0  # the restored point predates the request

    await purge.purge_due(backup_settings, store, clock())
    assert not ledger.reapply_pending(backup_settings)
    assert await Client.count().where(Client.id == anna.client_id).run() == 0
    assert await store_traces(store, anna.keys, anna.contents) == []
    records = await ErasureRow.select(ErasureRow.subject_id, ErasureRow.state).run()
    assert records == [{"subject_id": anna.client_id, "state": "done"}]
