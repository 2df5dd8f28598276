"""The audit log: append-only in the database, hash-chained, and verified by the CLI."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys

import asyncpg
import httpx
import pytest

from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.config import Settings
from tests.conftest import FakeClock
from tests.integration.flows import Admin, sign_in, totp_code


async def _write_entries(count: int) -> None:
    for number in range(count):
        await audit.record(
            "test.action",
            actor=Actor(id=None, name=f"tester{number}"),
            target=f"thing:{number}",
            address="192.0.2.1",
            details={"n": number},
        )


async def _tamper(database_url: str, statement: str) -> None:
    """Change the log the way an intruder with superuser rights could (triggers switched off)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(statement)
    finally:
        await conn.close()


async def test_intact_chain_verifies(clean_db: None) -> None:
    """Entries written in sequence verify as intact and are numbered without gaps."""
    await _write_entries(5)
    report = await audit.verify_chain()
    assert report.intact and report.checked == 5
    assert [e.seq for e in await audit.list_entries()] == [5, 4, 3, 2, 1]


async def test_update_and_delete_are_refused_by_the_database(
    clean_db: None, database_url: str
) -> None:
    """The table refuses UPDATE, DELETE and TRUNCATE even from the application's own role."""
    await _write_entries(2)
    conn = await asyncpg.connect(database_url)
    try:
        for statement in (
            "UPDATE audit_entry SET actor = 'x'",
            "DELETE FROM audit_entry",
            "TRUNCATE audit_entry",
        ):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(statement)
    finally:
        await conn.close()
    assert (await audit.verify_chain()).checked == 2


async def test_altered_entry_is_reported(clean_db: None, database_url: str) -> None:
    """Changing any field of entry 3 makes verification name entry 3."""
    await _write_entries(5)
    await _tamper(database_url, "UPDATE audit_entry SET actor = 'someone else' WHERE seq = 3")
    report = await audit.verify_chain()
    assert report.first_bad_seq == 3 and "altered" in (report.problem or "")
    assert report.checked == 2


async def test_replaced_hash_is_reported(clean_db: None, database_url: str) -> None:
    """Overwriting the stored hash of entry 2 is reported at entry 2."""
    await _write_entries(4)
    await _tamper(database_url, "UPDATE audit_entry SET entry_hash = repeat('a', 64) WHERE seq = 2")
    report = await audit.verify_chain()
    assert report.first_bad_seq == 2  # its own hash no longer matches its fields


async def test_removed_entry_is_reported(clean_db: None, database_url: str) -> None:
    """Deleting entry 2 is reported as a missing entry 2."""
    await _write_entries(4)
    await _tamper(database_url, "DELETE FROM audit_entry WHERE seq = 2")
    report = await audit.verify_chain()
    assert report.first_bad_seq == 2 and "missing" in (report.problem or "")


async def test_removed_and_renumbered_entry_breaks_the_link(
    clean_db: None, database_url: str
) -> None:
    """Deleting entry 2 and renumbering the rest still fails: entry 2's link is wrong."""
    await _write_entries(4)
    await _tamper(database_url, "DELETE FROM audit_entry WHERE seq = 2")
    await _tamper(database_url, "UPDATE audit_entry SET seq = seq - 1 WHERE seq > 2")
    report = await audit.verify_chain()
    assert report.first_bad_seq == 2 and "does not link" in (report.problem or "")


def _verify_cli(settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APPLIANCE_DATABASE__URL": settings.database.url}
    return subprocess.run(
        [sys.executable, "-m", "appliance", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_cli_reports_the_first_altered_entry(
    clean_db: None, database_url: str, settings: Settings
) -> None:
    """`appliance audit verify` exits 0 when intact, 1 naming the entry when altered."""
    await _write_entries(3)
    intact = _verify_cli(settings)
    assert intact.returncode == 0 and "intact: 3 entries" in intact.stdout
    await _tamper(database_url, "UPDATE audit_entry SET details = '{}' WHERE seq = 2")
    broken = _verify_cli(settings)
    assert broken.returncode == 1
    assert "BROKEN at entry 2" in broken.stderr


async def test_security_events_reach_the_log(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """The wizard, enrolment, failed and successful sign-ins and setting changes are recorded."""
    await sign_in(client, admin.username, "wrong password!!")
    await sign_in(client, admin.username, admin.password, code=totp_code(admin.secret, clock()))
    from tests.integration.flows import submit

    await submit(
        client,
        "/admin/settings",
        {
            "studio_name": "Studio Lumen Berlin",
            "contact_email": "hello@lumen.example",
            "contact_phone": "",
            "require_2fa_for_all": "1",
        },
    )
    entries = await audit.list_entries(limit=100)
    actions = {(e.action, e.outcome) for e in entries}
    for expected in [
        ("setup.studio", "success"),
        ("user.create", "success"),
        ("2fa.enrol", "success"),
        ("setup.complete", "success"),
        ("login", "failure"),
        ("login", "success"),
        ("settings.change", "success"),
    ]:
        assert expected in actions, expected
    change = next(e for e in entries if e.action == "settings.change")
    assert change.actor == "owner" and change.address == "192.0.2.10"
    assert change.details["require_2fa_for_all"] == {"from": False, "to": True}
    assert change.details["contact_phone"] == {"from": "+49 30 1234567", "to": ""}
    assert (await audit.verify_chain()).intact
    # No secret ever lands in the log.
    for entry in entries:
        text = repr(entry)
        assert admin.password not in text and admin.secret not in text


async def test_admin_sees_the_log_and_bad_paging_is_refused(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """The audit page lists entries newest first; a negative page cursor answers 400."""
    await sign_in(client, admin.username, admin.password, code=totp_code(admin.secret, clock()))
    page = await client.get("/admin/audit")
    assert page.status_code == 200 and "setup.complete" in page.text
    assert page.text.index("login") < page.text.index("setup.complete")
    bad = await client.get("/admin/audit?before=-5")
    assert bad.status_code == 400 and "Traceback" not in bad.text


async def _entries(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch("SELECT * FROM audit_entry ORDER BY seq"))
    finally:
        await conn.close()


async def _append_version_2(actor: str, target: str, address: str) -> None:
    """An entry as the appliance wrote them before salts: unsalted SHA-256 digests."""
    from appliance.audit.tables import AuditEntry

    last = await AuditEntry.select().order_by(AuditEntry.seq, ascending=False).first().run()
    fields = {
        "seq": last["seq"] + 1 if last else 1,
        "at": dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
        "actor_id": 7,
        "actor": actor,
        "action": "client.view",
        "outcome": "success",
        "target": target,
        "address": address,
        "details": "{}",
        "prev_hash": last["entry_hash"] if last else audit.GENESIS_HASH,
    }
    digests = {name: hashlib.sha256(fields[name].encode()).hexdigest() for name in _FOUR}
    entry_hash = audit._entry_hash(
        **{**fields, **{name: f"sha256:{digests[name]}" for name in _FOUR}}
    )
    await AuditEntry.insert(
        AuditEntry(
            **fields,
            entry_hash=entry_hash,
            hash_version=2,
            **{f"{name}_digest": digests[name] for name in _FOUR},
        )
    ).run()


_FOUR = ("actor", "target", "address", "details")


async def test_salted_digests_cannot_be_guessed_back_after_erasure(
    clean_db: None, database_url: str
) -> None:
    """Two entries with the same values get different digests; after erasure the salt is gone,
    and the SHA-256 of the address alone is not the digest that stays."""
    for _ in range(2):
        await audit.record(
            "client.view", actor=Actor(id=3, name="dora"), target="client:1", address="192.0.2.9"
        )
    first, second = await _entries(database_url)
    assert first["hash_version"] == second["hash_version"] == 3
    assert first["address_digest"] != second["address_digest"]
    assert first["actor_digest"] != second["actor_digest"]
    assert len(first["salt"]) == 64 and first["salt"] != second["salt"]

    assert await audit.erase_person(actor_id=3, targets=[], now=dt.datetime.now(dt.UTC)) == 2
    for row in await _entries(database_url):
        assert row["salt"] is None and row["erased_at"] is not None
        assert (row["actor"], row["address"], row["target"]) == ("erased", "", "client:1")
        assert hashlib.sha256(b"192.0.2.9").hexdigest() != row["address_digest"]
        assert hashlib.sha256(b"dora").hexdigest() != row["actor_digest"]
    assert (await audit.verify_chain()).intact


async def test_erasing_version_2_and_3_entries_keeps_the_chain_verifiable(
    clean_db: None, database_url: str, settings: Settings
) -> None:
    """Entries from before salts and salted ones, erased by and about a person, still verify
    with `appliance audit verify`; a kept target of an unsalted entry is still checked."""
    await _append_version_2("carla", "client:1", "192.0.2.1")
    await _append_version_2("owner", "user:carla", "192.0.2.2")
    await audit.record("client.view", actor=Actor(id=7, name="carla"), target="client:2")
    await audit.record("user.update", actor=Actor(id=1, name="owner"), target="user:carla")
    now = dt.datetime.now(dt.UTC)
    assert await audit.erase_person(actor_id=None, targets=["user:carla"], now=now) == 2
    assert await audit.erase_person(actor_id=7, targets=[], now=now) == 2
    rows = await _entries(database_url)
    assert [(r["actor"], r["target"]) for r in rows] == [
        ("erased", "client:1"),
        ("erased", "erased"),
        ("erased", "client:2"),
        ("erased", "erased"),
    ]
    verified = _verify_cli(settings)
    assert verified.returncode == 0 and "intact: 4 entries" in verified.stdout, verified.stderr
    await _tamper(database_url, "UPDATE audit_entry SET target = 'client:9' WHERE seq = 1")
    report = await audit.verify_chain()
    assert report.first_bad_seq == 1 and "target" in (report.problem or "")


def _erasure_and(extra: str) -> str:
    """The erasure's own UPDATE with ``extra`` assignments appended."""
    erase = "actor = 'erased', address = '', salt = NULL, erased_at = now()"
    return f"UPDATE audit_entry SET {erase}{extra}"  # noqa: S608 - only this file's constants


async def test_the_trigger_lets_through_only_blanking_towards_erased(
    clean_db: None, database_url: str
) -> None:
    """An erasure may blank actor, address, salt, target and details and set erased_at; any
    other change, a kept salt, or a value put back after erasure is refused."""
    await audit.record(
        "client.view", actor=Actor(id=3, name="dora"), target="client:1", address="192.0.2.9"
    )
    refused = [
        "UPDATE audit_entry SET action = 'x'",
        _erasure_and(", action = 'client.edit'"),
        _erasure_and(", actor_id = 4"),
        _erasure_and(", entry_hash = repeat('0', 64)"),
        _erasure_and(", address_digest = repeat('0', 64)"),
        _erasure_and(", target = 'client:2'"),
        _erasure_and(", details = '{\"a\":1}'"),
        "UPDATE audit_entry SET actor = 'erased', address = '', erased_at = now()",
        "UPDATE audit_entry SET actor = 'erased', salt = NULL, erased_at = now()",
        "UPDATE audit_entry SET address = '', salt = NULL, erased_at = now()",
        "UPDATE audit_entry SET actor = 'erased', address = '', salt = NULL",
    ]
    conn = await asyncpg.connect(database_url)
    try:
        for statement in refused:
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(statement)
        await conn.execute(_erasure_and(""))
        for statement in (
            "UPDATE audit_entry SET actor = 'dora'",
            "UPDATE audit_entry SET erased_at = now() + interval '1 day'",
            "UPDATE audit_entry SET salt = repeat('a', 64)",
            "UPDATE audit_entry SET erased_at = NULL",
        ):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(statement)
        await conn.execute("UPDATE audit_entry SET target = 'erased'")  # a second erasure
    finally:
        await conn.close()
    (row,) = await _entries(database_url)
    assert (row["actor"], row["target"], row["salt"]) == ("erased", "erased", None)
    assert (await audit.verify_chain()).intact
