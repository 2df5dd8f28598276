"""The audit log: append-only in the database, hash-chained, and verified by the CLI."""

from __future__ import annotations

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
