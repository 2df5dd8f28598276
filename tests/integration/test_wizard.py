"""The first-run setup wizard over HTTP."""

from __future__ import annotations

import httpx

from appliance.config import Settings
from tests.conftest import FakeClock
from tests.integration.flows import csrf_of, run_wizard, sign_in, submit, totp_code


async def test_wizard_end_to_end_then_sign_in_with_totp(
    client: httpx.AsyncClient, settings: Settings, clock: FakeClock
) -> None:
    """A person completes the wizard, then signs in with password and authenticator code."""
    admin = await run_wizard(client, settings, clock())
    assert len(admin.recovery_codes) == 10
    assert len(set(admin.recovery_codes)) == 10
    client.cookies.clear()
    clock.advance(seconds=30)
    response = await sign_in(
        client, admin.username, admin.password, code=totp_code(admin.secret, clock())
    )
    assert response.status_code == 303 and response.headers["location"] == "/"
    home = await client.get("/")
    assert home.status_code == 200
    assert "Studio Lumen" in home.text and "Olivia Owner" in home.text


async def _studio_rows() -> int:
    from appliance.setup.tables import Studio

    return int(await Studio.count().run())


async def test_wrong_setup_token_is_refused_and_audited(
    client: httpx.AsyncClient, settings: Settings, clock: FakeClock
) -> None:
    """A wrong, over-long or empty token gets 403 with a message and an audit entry."""
    from appliance.audit.service import list_entries
    from appliance.setup import service

    await service.issue_setup_token(settings, clock())
    for token in ("wrong", "x" * 1000, ""):
        response = await submit(client, "/setup", {"token": token})
        assert response.status_code == 403, token
        assert "This setup token is not valid" in response.text
        assert 'aria-invalid="true"' in response.text  # the field is marked
    clock.advance(hours=2)
    link = await client.get("/setup?token=guess")
    assert link.status_code == 403
    failures = [e for e in await list_entries() if e.action == "setup.token"]
    assert len(failures) == 4 and {e.outcome for e in failures} == {"failure"}
    assert (await client.get("/setup/studio")).headers["location"] == "/setup"


async def test_only_the_newest_token_works_and_it_expires(
    client: httpx.AsyncClient, settings: Settings, clock: FakeClock
) -> None:
    """Issuing a new token retires the old one; a token older than setup_token_hours fails."""
    from appliance.setup import service

    old = await service.issue_setup_token(settings, clock())
    new = await service.issue_setup_token(settings, clock())
    assert (await client.get(f"/setup?token={old}")).status_code == 403
    clock.advance(hours=settings.security.setup_token_hours, seconds=1)
    assert (await client.get(f"/setup?token={new}")).status_code == 403


async def test_wizard_pages_need_the_token_cookie(
    client: httpx.AsyncClient, settings: Settings, clock: FakeClock
) -> None:
    """Without the token nobody reaches a step or changes anything, even with a CSRF token."""
    from appliance.setup import service

    await service.issue_setup_token(settings, clock())
    for path in ("/setup/studio", "/setup/admin", "/setup/two-factor"):
        assert (await client.get(path)).headers["location"] == "/setup"
    page = await client.get("/setup")
    posted = await client.post(
        "/setup/studio",
        data={
            "studio_name": "Mine now",
            "contact_email": "a@b.example",
            "_csrf": csrf_of(page.text),
        },
    )
    assert posted.headers["location"] == "/setup"
    assert await _studio_rows() == 0


async def test_bad_wizard_values_are_refused_with_field_and_reason(
    client: httpx.AsyncClient, settings: Settings, clock: FakeClock
) -> None:
    """Each malformed or over-long value answers 400 naming the field; nothing is stored."""
    from appliance.setup import service

    token = await service.issue_setup_token(settings, clock())
    await client.get(f"/setup?token={token}")
    studio_cases = [
        ({"studio_name": "", "contact_email": "a@b.example"}, "studio_name", "required"),
        ({"studio_name": "S" * 121, "contact_email": "a@b.example"}, "studio_name", "at most 120"),
        ({"studio_name": "Stu\x00dio", "contact_email": "a@b.example"}, "studio_name", "control"),
        ({"studio_name": "Studio", "contact_email": "not-an-email"}, "contact_email", "e-mail"),
        (
            {"studio_name": "Studio", "contact_email": "a@b.example", "contact_phone": "call me"},
            "contact_phone",
            "digits",
        ),
    ]
    for form, field, reason in studio_cases:
        response = await submit(client, "/setup/studio", form)
        assert response.status_code == 400, form
        assert f'id="f-{field}" name="{field}"' in response.text
        assert f'aria-describedby="f-{field}-error"' in response.text, field
        assert reason in response.text, (reason, form)
    assert await _studio_rows() == 0
    good = {"studio_name": "Studio <b>Lumen</b>", "contact_email": "a@b.example"}
    assert (await submit(client, "/setup/studio", good)).status_code == 303
    password = "quiet harbour lantern 42 maple"
    base = {
        "username": "owner",
        "display_name": "Olivia",
        "email": "o@b.example",
        "password": password,
        "confirm": password,
    }
    admin_cases = [
        ({"username": "o"}, "username", "3 to 32 characters"),
        ({"username": "bad name!"}, "username", "3 to 32 characters"),
        ({"email": "x" * 300 + "@b.example"}, "email", "at most 254"),
        ({"display_name": "\u200bOlivia"}, "display_name", "invisible"),
        ({"password": "short", "confirm": "short"}, "password", "at least 12"),
        ({"password": "olivia12345678", "confirm": "olivia12345678"}, "password", "easy to guess"),
        ({"password": "p" * 300, "confirm": "p" * 300}, "password", "at most 256"),
        ({"confirm": "something else entirely"}, "confirm", "differ"),
    ]
    for change, field, reason in admin_cases:
        response = await submit(client, "/setup/admin", {**base, **change})
        assert response.status_code == 400, change
        assert reason in response.text, (reason, change)
        assert f'aria-describedby="f-{field}-error"' in response.text, field
        assert password not in response.text  # passwords are never echoed back
    from appliance.accounts.tables import StaffUser

    assert await StaffUser.count().run() == 0
    # The studio name is shown escaped wherever it appears.
    done = await submit(client, "/setup/admin", base)
    assert done.headers["location"] == "/setup/two-factor"
    page = await client.get("/setup/two-factor")
    assert "<b>Lumen</b>" not in page.text


async def test_wrong_code_at_the_last_step_keeps_the_wizard_open(
    client: httpx.AsyncClient, settings: Settings, clock: FakeClock
) -> None:
    """A wrong authenticator code answers 400; the wizard stays open and the secret unchanged."""
    from appliance.setup import service

    token = await service.issue_setup_token(settings, clock())
    await client.get(f"/setup?token={token}")
    await submit(client, "/setup/studio", {"studio_name": "S", "contact_email": "a@b.example"})
    password = "quiet harbour lantern 42 maple"
    await submit(
        client,
        "/setup/admin",
        {
            "username": "owner",
            "display_name": "O",
            "email": "o@b.example",
            "password": password,
            "confirm": password,
        },
    )
    first = await client.get("/setup/two-factor")
    response = await submit(client, "/setup/two-factor", {"code": "12ab56"})
    assert response.status_code == 400 and "does not match" in response.text
    assert not await service.is_setup_complete()
    again = await client.get("/setup/two-factor")
    secret = 'id="totp-secret">'
    assert again.text.split(secret)[1][:32] == first.text.split(secret)[1][:32]


async def test_finished_wizard_never_runs_again(
    client: httpx.AsyncClient, settings: Settings, clock: FakeClock
) -> None:
    """After set-up every wizard page and form redirects to sign-in, and no token is issued."""
    from appliance.accounts.tables import StaffUser
    from appliance.setup import service

    await run_wizard(client, settings, clock())
    assert await service.issue_setup_token(settings, clock()) is None
    for path in (
        "/setup",
        "/setup?token=anything",
        "/setup/studio",
        "/setup/admin",
        "/setup/two-factor",
    ):
        response = await client.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/login", path
    page = await client.get("/login")
    for path in ("/setup/studio", "/setup/admin", "/setup/two-factor", "/setup"):
        response = await client.post(
            path,
            data={
                "username": "intruder",
                "password": "quiet harbour lantern 42 maple",
                "confirm": "quiet harbour lantern 42 maple",
                "display_name": "I",
                "email": "i@b.example",
                "studio_name": "Taken",
                "contact_email": "i@b.example",
                "code": "123456",
                "token": "x",
                "_csrf": csrf_of(page.text),
            },
        )
        assert response.headers["location"] == "/login", path
    assert await StaffUser.count().run() == 1
    studio = await service.get_studio()
    assert studio is not None and studio.name == "Studio Lumen"


async def test_guessing_setup_tokens_is_throttled(
    client: httpx.AsyncClient, settings: Settings, clock: FakeClock
) -> None:
    """Rapid wrong tokens from one address get 429 and stop being audited; the right token
    still works (so junk sent from another site cannot lock the installer out)."""
    from appliance.audit.service import list_entries
    from appliance.setup import service

    token = await service.issue_setup_token(settings, clock())
    for number in range(settings.throttle.free_failures + 1):
        assert (await client.get(f"/setup?token=guess{number}")).status_code == 403
    for number in range(5):
        blocked = await client.get(f"/setup?token=more{number}")
        assert blocked.status_code == 429 and "Too many" in blocked.text
        assert int(blocked.headers["retry-after"]) >= 1
    entries = [e for e in await list_entries() if e.action == "setup.token"]
    assert len(entries) == settings.throttle.free_failures + 1
    assert (await client.get(f"/setup?token={token}")).status_code == 303
