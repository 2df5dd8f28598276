"""The legal hold: a record the law obliges the studio to keep survives the erasure of the
person it is about as a restricted copy, and goes when its own time is up.

No domain declares such records yet (billing will declare its invoices), so a client's
gallery stands in for an unpaid invoice: the mechanism is the same for any declared table.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import asyncpg
import pytest

from appliance.audit.service import Actor
from appliance.clients import service as clients
from appliance.clients.service import ClientDetails
from appliance.config import Settings
from appliance.galleries import service as galleries
from appliance.galleries.service import GalleryDetails
from appliance.galleries.tables import Gallery
from appliance.privacy import holds, purge
from appliance.privacy.holds import HoldRule
from appliance.privacy.tables import ErasureRequest as ErasureRow
from appliance.privacy.tables import LegalHold
from appliance.storage.filesystem import FilesystemStore
from tests.conftest import FakeClock
from tests.integration.erasure_flows import erase_and_wait, traces
from tests.integration.erasure_flows import fresh_ledger as fresh_ledger  # autouse

pytestmark = pytest.mark.usefixtures("clean_db")

OWNER = Actor(id=None, name="owner")
STAND_IN = HoldRule(table="gallery", reason="Invoices, §147 AO", years=10, since="created_at")


@pytest.fixture(autouse=True)
def declared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(holds, "_RULES", {})
    holds.keep(STAND_IN)


async def anna_with_a_gallery(clock: FakeClock) -> tuple[int, int]:
    anna = await clients.create_client(
        ClientDetails(name="Anna Berg", email="anna@example.org"),
        actor=OWNER,
        address="",
        now=clock(),
    )
    gallery = await galleries.create_gallery(
        anna.id, GalleryDetails(title="Anna Berg wedding"), actor=OWNER, address="", now=clock()
    )
    return anna.id, gallery.id


async def test_an_erased_person_s_held_record_is_kept_restricted_until_its_hold_expires(
    settings: Settings, database_url: str, clock: FakeClock, tmp_path: Path
) -> None:
    """Anna is erased while her (stand-in) invoice must be kept: the purge deletes her and the
    record's row like everything else, keeps one copy on legal hold with its reason and an
    expiry ten years after the end of the record's year, names it in the deletion record,
    and the daily purge deletes the copy once the hold has expired."""
    clock.now = dt.datetime(2026, 6, 12, 10, 0, tzinfo=dt.UTC)
    anna, gallery = await anna_with_a_gallery(clock)
    store = FilesystemStore(tmp_path / "objects")
    await store.ensure_ready()
    request = await erase_and_wait(settings, clock, anna)
    assert await purge.purge_due(settings, store, clock()) == 1

    assert await Gallery.count().where(Gallery.id == gallery) == 0  # not in daily work
    (held,) = await LegalHold.select().run()
    record = held["record"] if isinstance(held["record"], dict) else json.loads(held["record"])
    assert (held["kind"], held["subject_id"], held["table_name"], held["record_id"]) == (
        "client",
        anna,
        "gallery",
        gallery,
    )
    assert held["reason"] == STAND_IN.reason and record["title"] == "Anna Berg wedding"
    assert held["expires_at"] == dt.datetime(2037, 1, 1, tzinfo=dt.UTC)
    # The only trace of Anna left anywhere is the held copy.
    assert await traces(database_url, ["Anna Berg"], anna) == [
        "legal_hold.record holds 'Anna Berg'"
    ]
    done = await ErasureRow.select(ErasureRow.progress).where(ErasureRow.id == request.id).first()
    assert done is not None
    progress = (
        done["progress"] if isinstance(done["progress"], dict) else json.loads(done["progress"])
    )
    assert progress["counts"]["gallery kept on legal hold"] == 1
    assert progress["counts"]["gallery"] == 1

    clock.now = dt.datetime(2036, 12, 31, 23, 59, tzinfo=dt.UTC)
    await purge.purge_due(settings, store, clock())
    assert await LegalHold.count() == 1  # not yet
    clock.now = dt.datetime(2037, 1, 1, 0, 0, tzinfo=dt.UTC)
    await purge.purge_due(settings, store, clock())
    assert await LegalHold.count() == 0
    assert await traces(database_url, ["Anna Berg"], anna) == []


async def test_a_held_row_is_held_once_when_a_killed_purge_runs_again(
    database_url: str, clock: FakeClock
) -> None:
    """Holding is part of the deletion's transaction; run again (a purge killed and re-run,
    a restore re-applying the ledger), a row already held is not held twice."""
    _, gallery = await anna_with_a_gallery(clock)
    where = f"id = {gallery}"
    first = await holds.hold_rows(Gallery, where, kind="client", subject_id=1, now=clock())
    again = await holds.hold_rows(Gallery, where, kind="client", subject_id=1, now=clock())
    assert (first, again) == (1, 0)
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM legal_hold") == 1
    finally:
        await conn.close()


async def test_an_undeclared_table_is_not_held_and_a_rule_needs_a_reason_and_years(
    clock: FakeClock,
) -> None:
    _, gallery = await anna_with_a_gallery(clock)
    holds._RULES.clear()
    assert (
        await holds.hold_rows(Gallery, f"id = {gallery}", kind="client", subject_id=1, now=clock())
        == 0
    )
    for bad in (
        HoldRule(table="invoice", reason="", years=10),
        HoldRule(table="invoice", reason="Invoices", years=0),
        HoldRule(table="invoice", reason="Invoices", years=31),
    ):
        with pytest.raises(ValueError):
            holds.keep(bad)
    assert holds.declared() == {}
