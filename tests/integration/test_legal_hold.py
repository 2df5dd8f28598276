"""The legal hold: a record the law obliges the studio to keep survives the erasure of the
person it is about as a restricted copy, with the files it names, and goes when its own time
is up.

No domain declares such records yet (billing will declare its invoices), so a client's
gallery and photos stand in for an unpaid invoice and its PDF: the mechanism is the same for
any declared table.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from appliance.audit.service import Actor
from appliance.config import Settings
from appliance.galleries.tables import Gallery, Photo
from appliance.privacy import holds, purge
from appliance.privacy.tables import ErasureRequest as ErasureRow
from appliance.privacy.tables import LegalHold
from appliance.storage.filesystem import FilesystemStore
from tests.conftest import FakeClock
from tests.integration.erasure_flows import erase_and_wait, traces
from tests.integration.erasure_flows import fresh_ledger as fresh_ledger  # autouse
from tests.integration.test_exports import client_with_photos, staff_user

pytestmark = pytest.mark.usefixtures("clean_db")

OWNER = Actor(id=None, name="owner")
BERLIN = "Europe/Berlin"


@pytest.fixture(autouse=True)
def declared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(holds, "_RULES", {})
    holds.keep(Gallery, reason="Invoices, §147 AO", years=10, since="created_at")
    holds.keep(Photo, reason="Invoice documents, §147 AO", years=10, since="created_at")


@pytest.fixture
def in_berlin(settings: Settings) -> Settings:
    """A studio in Berlin: the year a record falls in is Berlin's, not UTC's."""
    return msgspec.structs.replace(
        settings, backups=msgspec.structs.replace(settings.backups, timezone=BERLIN)
    )


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else json.loads(value)


async def test_an_erased_person_s_held_records_and_files_are_kept_until_their_hold_expires(
    in_berlin: Settings, database_url: str, clock: FakeClock, tmp_path: Path
) -> None:
    """Anna is erased while her (stand-in) invoice must be kept: the purge deletes the rows
    like everything else, keeps a copy of each on legal hold with its reason, keeps the file
    it names, counts them in the deletion record; the copy and the file go once ten years
    have passed from the end of the record's year in the studio's zone."""
    settings = in_berlin
    store = FilesystemStore(tmp_path / "objects")
    await store.ensure_ready()
    # 23:30 UTC on New Year's Eve is 00:30 on 1 January in Berlin: the record is of 2027.
    clock.now = dt.datetime(2026, 12, 31, 23, 30, tzinfo=dt.UTC)
    owner = await staff_user("olivia", clock())
    anna, gallery = await client_with_photos(store, owner, "Anna Berg", [b"pdf" * 100], clock())
    (photo,) = await Photo.select(Photo.id, Photo.original_key).run()
    request = await erase_and_wait(settings, clock, anna)
    assert await purge.purge_due(settings, store, clock()) == 1

    assert await Gallery.count().where(Gallery.id == gallery) == 0  # not in daily work
    assert await Photo.count() == 0
    held = {row["table_name"]: row for row in await LegalHold.select().run()}
    assert set(held) == {"gallery", "photo"}
    copy = held["gallery"]
    assert (copy["kind"], copy["subject_id"], copy["record_id"]) == ("client", anna, gallery)
    assert copy["reason"] == "Invoices, §147 AO"
    assert as_dict(copy["record"])["title"] == "Anna Berg wedding"
    assert as_dict(held["photo"]["record"])["original_key"] == photo["original_key"]
    new_year_2038 = dt.datetime(2038, 1, 1, tzinfo=dt.UTC) - dt.timedelta(hours=1)  # Berlin
    assert {row["expires_at"] for row in held.values()} == {new_year_2038}
    # The file the held record names is kept; the only trace of Anna is the held copies.
    assert await store.stat(photo["original_key"])
    assert await traces(database_url, ["Anna Berg"], anna) == [
        "legal_hold.record holds 'Anna Berg'"
    ]
    done = await ErasureRow.select(ErasureRow.progress).where(ErasureRow.id == request.id).first()
    assert done is not None
    counts = as_dict(done["progress"])["counts"]
    assert counts["gallery kept on legal hold"] == 1 and counts["gallery"] == 1
    assert counts["photo kept on legal hold"] == 1 and counts["photo"] == 1
    assert photo["original_key"] not in json.dumps(as_dict(done["progress"]))

    clock.now = new_year_2038 - dt.timedelta(minutes=1)
    await purge.purge_due(settings, store, clock())
    assert await LegalHold.count() == 2  # not yet
    clock.now = new_year_2038
    await purge.purge_due(settings, store, clock())
    assert await LegalHold.count() == 0
    assert [o.key async for o in store.list("")] == []
    assert await traces(database_url, ["Anna Berg"], anna) == []


async def test_holding_deletes_and_copies_each_row_once(clock: FakeClock, tmp_path: Path) -> None:
    """Copy and deletion are one statement: run again (a purge killed and re-run, a restore
    re-applying the ledger), nothing is held twice and nothing deleted without its copy."""
    store = FilesystemStore(tmp_path / "objects")
    await store.ensure_ready()
    owner = await staff_user("olivia", clock())
    _, gallery = await client_with_photos(store, owner, "Anna Berg", [], clock())
    where = f"id = {gallery}"
    first = await holds.delete_and_hold(
        Gallery, where, kind="client", subject_id=1, zone="UTC", now=clock()
    )
    again = await holds.delete_and_hold(
        Gallery, where, kind="client", subject_id=1, zone="UTC", now=clock()
    )
    assert (first, again) == ((1, 1), (0, 0))
    assert await LegalHold.count() == 1 and await Gallery.count() == 0


async def test_a_rule_without_a_date_counts_from_the_purge(
    clock: FakeClock, tmp_path: Path
) -> None:
    """Without a record date the hold runs from the purge: to the day with ``from_year_end``
    off, else from the end of the purge's year in the studio's zone."""
    store = FilesystemStore(tmp_path / "objects")
    await store.ensure_ready()
    owner = await staff_user("olivia", clock())
    _, gallery = await client_with_photos(store, owner, "Anna Berg", [], clock())
    _, other = await client_with_photos(store, owner, "Ben Cole", [], clock())
    now = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)
    holds.keep(Gallery, reason="Contracts, §257 HGB", years=6, from_year_end=False)
    await holds.delete_and_hold(
        Gallery, f"id = {gallery}", kind="client", subject_id=1, zone=BERLIN, now=now
    )
    holds.keep(Gallery, reason="Contracts, §257 HGB", years=6)
    await holds.delete_and_hold(
        Gallery, f"id = {other}", kind="client", subject_id=2, zone=BERLIN, now=now
    )
    expiry = {row["record_id"]: row["expires_at"] for row in await LegalHold.select().run()}
    assert expiry[gallery] == dt.datetime(2032, 7, 1, 12, 0, tzinfo=dt.UTC)
    assert expiry[other] == dt.datetime(2033, 1, 1, tzinfo=dt.UTC) - dt.timedelta(hours=1)


def test_a_rule_that_cannot_work_is_refused_when_declared() -> None:
    for reason, years, since in (
        ("", 10, ""),
        ("Invoices", 0, ""),
        ("Invoices", 31, ""),
        ("Invoices", 10, "title"),  # not a date
        ("Invoices", 10, "no_such_column"),
    ):
        with pytest.raises(ValueError):
            holds.keep(Gallery, reason=reason, years=years, since=since)
    assert set(holds.declared()) == {"gallery", "photo"}  # the fixture's, unchanged


async def test_an_undeclared_table_is_not_held(clock: FakeClock) -> None:
    holds._RULES.clear()
    assert (
        await holds.delete_and_hold(
            Gallery, "id = 1", kind="client", subject_id=1, zone="UTC", now=clock()
        )
        is None
    )
    assert holds.key_columns(Photo) == []
