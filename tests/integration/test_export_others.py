"""An export holds what is about the person and nothing of anyone else's (GDPR Art. 15(4)):
an e-mail address staff typed names no one for certain, and a row that only names a member
of staff as its creator keeps no dates of the client it is about."""

from __future__ import annotations

import datetime as dt

import pytest

from appliance.audit.service import Actor
from appliance.clients import service as clients
from appliance.clients.service import ClientDetails
from appliance.exports import records
from appliance.galleries import service as galleries
from appliance.galleries.service import GalleryDetails
from appliance.notify.tables import OutboxMessage
from tests.conftest import FakeClock
from tests.integration.test_exports import staff_user

pytestmark = pytest.mark.usefixtures("clean_db")


async def client_at(address: str, name: str, owner: Actor, now: dt.datetime) -> int:
    made = await clients.create_client(
        ClientDetails(name=name, email=address), actor=owner, address="", now=now
    )
    return made.id


async def mail_to(address: str, subject: str, now: dt.datetime) -> None:
    await OutboxMessage(
        kind="email",
        recipient=address,
        subject=subject,
        body_text=f"{subject}: the text",
        next_attempt_at=now,
        created_at=now,
    ).save()


async def tables_of(kind: records.PersonKind, subject_id: int) -> dict[str, list[dict]]:
    return {found.table: found.rows for found in await records.collect(kind, subject_id)}


async def test_an_address_shared_with_staff_or_another_client_brings_no_ones_mail(
    clock: FakeClock,
) -> None:
    """A client given an admin's address gets neither her account nor her mail; two clients
    sharing an address get none of its mail; a client with an address of her own gets hers,
    whatever its case."""
    now = clock()
    alice = await staff_user("alice", now)  # alice@lumen.example, an admin
    fake = await client_at("ALICE@lumen.example", "Fake", alice, now)
    anna = await client_at("couple@example.org", "Anna Berg", alice, now)
    ben = await client_at("Couple@example.org", "Ben Cole", alice, now)
    dora = await client_at("dora@example.org", "Dora Fox", alice, now)
    await mail_to("alice@lumen.example", "Security incident: 3 days left", now)
    await mail_to("couple@example.org", "Your gallery is ready", now)
    await mail_to("Dora@Example.org", "Your photos", now)

    faked = await tables_of("client", fake)
    assert "staff_user" not in faked and "outbox_message" not in faked
    assert [row["name"] for row in faked["client"]] == ["Fake"]
    for shared in (anna, ben):
        assert "outbox_message" not in await tables_of("client", shared)
    own = await tables_of("client", dora)
    assert [row["subject"] for row in own["outbox_message"]] == ["Your photos"]

    # Nor does Alice's own export take in the client made with her address.
    hers = await tables_of("staff", alice.id or 0)
    assert "outbox_message" in hers  # her own mail, to her own address
    outlined = {"id", "created_by", "created_at", "updated_at"}
    assert all(set(row) <= outlined for row in hers["client"])


async def test_a_staff_export_keeps_no_dates_of_the_galleries_she_made(
    clock: FakeClock,
) -> None:
    """The photographer's export shows the gallery she made, when, and that she made it; not
    the client's wedding day or when the gallery closes."""
    now = clock()
    olivia = await staff_user("olivia", now)
    anna = await client_at("anna@example.org", "Anna Berg", olivia, now)
    await galleries.create_gallery(
        anna,
        GalleryDetails(title="Wedding", event_date="2026-06-01", expires_on="2027-06-01"),
        actor=olivia,
        address="",
        now=now,
    )

    (gallery,) = (await tables_of("staff", olivia.id or 0))["gallery"]
    assert gallery["created_by"] == olivia.id and gallery["created_at"] == now
    assert set(gallery) <= {"id", "created_by", "created_at", "updated_at"}, gallery
