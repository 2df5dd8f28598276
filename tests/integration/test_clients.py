"""The studio's clients: create, edit, search, archive, restore, over HTTP, with audit entries."""

from __future__ import annotations

import re

import httpx
from litestar import Litestar

from appliance.audit.service import list_entries
from appliance.clients.tables import Client
from tests.conftest import FakeClock, make_client
from tests.integration.flows import Admin, sign_in, submit, totp_code

ANNA = {
    "name": "Anna Berg",
    "email": "anna@example.org",
    "phone": "+49 170 1234567",
    "postal_address": "Hauptstr. 1\n10115 Berlin",
    "notes": "Wedding 2027-06-12.\nPrefers film look.",
}
BEN = {
    "name": "Ben Okafor",
    "email": "ben@example.net",
    "phone": "",
    "postal_address": "",
    "notes": "",
}


async def signed_in_owner(client: httpx.AsyncClient, admin: Admin, clock: FakeClock) -> None:
    response = await sign_in(
        client, admin.username, admin.password, code=totp_code(admin.secret, clock())
    )
    assert response.headers["location"] == "/"


async def create(client: httpx.AsyncClient, form: dict[str, str]) -> int:
    response = await submit(client, "/clients/new", form)
    assert response.status_code == 303, response.text
    match = re.fullmatch(r"/clients/(\d+)", response.headers["location"])
    assert match
    return int(match.group(1))


async def test_created_client_is_shown_with_its_details(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """A new client's page shows every detail, escaped, with line breaks kept."""
    await signed_in_owner(client, admin, clock)
    anna = await create(client, {**ANNA, "notes": "Likes <b>bold</b> colours\nand gold."})
    page = await client.get(f"/clients/{anna}")
    assert page.status_code == 200
    for text in ("Anna Berg", "anna@example.org", "+49 170 1234567", "10115 Berlin"):
        assert text in page.text
    assert "&lt;b&gt;bold&lt;/b&gt;" in page.text and "<b>bold</b>" not in page.text
    row = await Client.select().where(Client.id == anna).first().run()
    assert row is not None and row["postal_address"] == "Hauptstr. 1\n10115 Berlin"
    # Changes only: opening the page wrote a client.view entry after the create.
    entry = next(e for e in await list_entries() if not e.action.endswith(".view"))
    assert (entry.action, entry.actor, entry.target) == ("client.create", "owner", f"client:{anna}")


async def test_search_finds_by_name_email_or_phone_and_escapes_wildcards(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Search matches parts of name, e-mail or phone; % and _ are literal characters."""
    await signed_in_owner(client, admin, clock)
    await create(client, ANNA)
    await create(client, BEN)
    for query, expected in (
        ("berg", ["Anna Berg"]),
        ("example.net", ["Ben Okafor"]),
        ("1234567", ["Anna Berg"]),
        ("OKAF", ["Ben Okafor"]),
        ("%", []),
        ("_", []),
        ("", ["Anna Berg", "Ben Okafor"]),
    ):
        page = await client.get("/clients", params={"q": query})
        assert page.status_code == 200
        names = re.findall(r'<a href="/clients/\d+">([^<]+)</a>', page.text)
        assert names == expected, (query, names)


async def test_edit_records_which_fields_changed_but_not_their_values(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """The audit entry of an edit names the changed fields; personal data stays out of it."""
    await signed_in_owner(client, admin, clock)
    anna = await create(client, ANNA)
    response = await submit(
        client,
        f"/clients/{anna}/edit",
        {**ANNA, "phone": "+49 30 9876543", "notes": "Moved to Hamburg."},
    )
    assert response.headers["location"] == f"/clients/{anna}"
    entry = (await list_entries())[0]
    assert entry.action == "client.update"
    assert entry.details == {"fields": ["phone", "notes"]}
    assert "Hamburg" not in repr(entry) and "9876543" not in repr(entry)
    unchanged = await submit(
        client,
        f"/clients/{anna}/edit",
        {**ANNA, "phone": "+49 30 9876543", "notes": "Moved to Hamburg."},
    )
    assert unchanged.status_code == 303
    assert [e.action for e in await list_entries()].count("client.update") == 1


async def test_bad_values_are_refused_with_field_and_reason(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Empty or over-long names, bad e-mail or phone, control characters: 400, nothing stored."""
    await signed_in_owner(client, admin, clock)
    cases = [
        ({"name": ""}, "name", "required"),
        ({"name": "A" * 121}, "name", "at most 120"),
        ({"email": "not-mail"}, "email", "e-mail address"),
        ({"phone": "call me"}, "phone", "digits"),
        ({"notes": "bell\x07"}, "notes", "control"),
        ({"notes": "x" * 5001}, "notes", "at most 5000"),
        ({"postal_address": "\u202eevil"}, "postal_address", "invisible"),
    ]
    for change, field, reason in cases:
        response = await submit(client, "/clients/new", {**ANNA, **change})
        assert response.status_code == 400, change
        assert reason in response.text, (reason, response.text[-2000:])
        assert f'aria-describedby="f-{field}-error"' in response.text
    assert await Client.count().run() == 0


async def test_archive_hides_a_client_and_restore_brings_it_back(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Archived clients leave the everyday list, appear under Archived, and can be restored."""
    await signed_in_owner(client, admin, clock)
    anna = await create(client, ANNA)
    await submit(client, f"/clients/{anna}", {}, action=f"/clients/{anna}/archive")
    assert "Anna Berg" not in (await client.get("/clients")).text
    assert "Anna Berg" in (await client.get("/clients?archived=true")).text
    again = await submit(client, f"/clients/{anna}", {}, action=f"/clients/{anna}/archive")
    assert again.status_code == 409 and "already archived" in again.text
    await submit(client, f"/clients/{anna}", {}, action=f"/clients/{anna}/restore")
    assert "Anna Berg" in (await client.get("/clients")).text
    actions = [e.action for e in await list_entries() if not e.action.endswith(".view")]
    assert actions[:2] == ["client.restore", "client.archive"]


async def test_clients_need_a_signed_in_staff_member(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """Anonymous or half-signed-in visitors reach no client page; unknown ids answer 404."""
    for path in ("/clients", "/clients/new", "/clients/1", "/clients/1/edit"):
        assert (await client.get(path)).headers["location"] == "/login"
    await sign_in(client, admin.username, admin.password)  # password only, no second factor
    assert (await client.get("/clients")).headers["location"] == "/login"
    async with make_client(app, "192.0.2.44") as owner:
        await signed_in_owner(owner, admin, clock)
        missing = await owner.get("/clients/99999")
        assert missing.status_code == 404 and "no such client" in missing.text
        bad = await owner.get("/clients?offset=-1")
        assert bad.status_code == 400
