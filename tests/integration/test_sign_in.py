"""Signing in with password and second factor: TOTP replay, recovery codes, enrolment, roles."""

from __future__ import annotations

import httpx
from litestar import Litestar

from appliance.audit.service import list_entries
from appliance.config import Settings
from tests.conftest import FakeClock, make_client
from tests.integration.flows import Admin, csrf_of, sign_in, submit, totp_code


async def test_password_alone_does_not_reach_staff_pages(
    client: httpx.AsyncClient, admin: Admin
) -> None:
    """After the password the session is only half signed in: pages still send to sign-in."""
    response = await sign_in(client, admin.username, admin.password)
    assert response.headers["location"] == "/login/two-factor"
    for path in ("/", "/account", "/admin/users"):
        page = await client.get(path)
        assert page.status_code == 303 and page.headers["location"] == "/login", path


async def test_wrong_totp_code_is_refused_and_audited(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """A wrong code gets 401 with a message, changes nothing, and is recorded."""
    wrong = "000000" if totp_code(admin.secret, clock()) != "000000" else "111111"
    response = await sign_in(client, admin.username, admin.password, code=wrong)
    assert response.status_code == 401
    assert "That code is not valid." in response.text
    assert (await client.get("/")).headers["location"] == "/login"
    failures = [e for e in await list_entries() if e.action == "login.second_factor"]
    assert failures and failures[0].outcome == "failure"
    assert failures[0].details == {"reason": "wrong code"}


async def test_totp_code_cannot_be_replayed(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """A code accepted once is refused on a second sign-in, even from another browser."""
    code = totp_code(admin.secret, clock())
    first = await sign_in(client, admin.username, admin.password, code=code)
    assert first.headers["location"] == "/"
    async with make_client(app, "192.0.2.99") as other:
        replay = await sign_in(other, admin.username, admin.password, code=code)
        assert replay.status_code == 401
        assert "already used" in replay.text
        assert (await other.get("/")).headers["location"] == "/login"
    reasons = [e.details.get("reason") for e in await list_entries()]
    assert "replayed code" in reasons


async def test_enrolment_code_cannot_be_reused_to_sign_in(
    client: httpx.AsyncClient, settings: Settings, clock: FakeClock
) -> None:
    """The code that confirmed the authenticator in the wizard does not also sign in."""
    from tests.integration.flows import run_wizard

    admin = await run_wizard(client, settings, clock())
    client.cookies.clear()
    response = await sign_in(
        client, admin.username, admin.password, code=totp_code(admin.secret, clock())
    )
    assert response.status_code == 401 and "already used" in response.text


async def test_recovery_code_signs_in_once(client: httpx.AsyncClient, admin: Admin) -> None:
    """A recovery code replaces the TOTP code once; the same code is refused the second time."""
    code = admin.recovery_codes[3]
    response = await sign_in(client, admin.username, admin.password, code=code.upper())
    assert response.headers["location"] == "/"
    client.cookies.clear()
    again = await sign_in(client, admin.username, admin.password, code=code)
    assert again.status_code == 401
    entries = await list_entries()
    assert any(e.details.get("reason") == "wrong recovery code" for e in entries)


async def test_malformed_second_factor_values_get_a_message(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Over-long, empty and non-code values are refused with 401 and a message, never a 500."""
    for value in ("", "12345", "x" * 5000, "<script>", "1234567"):
        await sign_in(client, admin.username, admin.password)
        response = await submit(client, "/login/two-factor", {"code": value})
        assert response.status_code == 401, value
        assert "That code is not valid." in response.text
        assert "<script>" not in response.text
        client.cookies.clear()
        clock.advance(hours=2)  # past the throttle window, so each value is judged alone


async def test_unknown_user_and_wrong_password_get_the_same_answer(
    client: httpx.AsyncClient, admin: Admin
) -> None:
    """No difference between a wrong password and an unknown name, in status or text."""
    wrong = await sign_in(client, admin.username, "not the password at all")
    unknown = await sign_in(client, "nobody-here", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    message = "The user name or password is wrong."
    assert message in wrong.text and message in unknown.text
    actions = [(e.action, e.outcome) for e in await list_entries()]
    assert actions.count(("login", "failure")) == 2


async def test_successful_sign_in_is_audited_with_address(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """A sign-in writes the actor, the client address and the outcome to the audit log."""
    await sign_in(client, admin.username, admin.password, code=totp_code(admin.secret, clock()))
    entry = next(e for e in await list_entries() if e.action == "login")
    assert entry.actor == "owner" and entry.outcome == "success"
    assert entry.address == "192.0.2.10"


async def invite_photographer(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, email: str = "pia@lumen.example"
) -> str:
    """Sign the admin in, create an invitation, return its path; the admin stays signed in."""
    await sign_in(client, admin.username, admin.password, code=totp_code(admin.secret, clock()))
    response = await submit(
        client,
        "/admin/users",
        {"email": email, "role": "photographer"},
        action="/admin/users/invite",
    )
    assert response.status_code == 200, response.text
    start = response.text.index("/invite/")
    return response.text[start : response.text.index('"', start)]


async def test_photographer_joins_by_invitation_and_reaches_no_admin_page(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """An invited photographer signs in without 2FA (not required) and gets 403 on admin pages."""
    path = await invite_photographer(client, admin, clock)
    async with make_client(app, "192.0.2.20") as pia:
        joined = await submit(
            pia,
            path,
            {
                "username": "pia",
                "display_name": "Pia Photographer",
                "password": "velvet compass orchard 77 river",
                "confirm": "velvet compass orchard 77 river",
            },
        )
        assert joined.status_code == 200 and "Account created" in joined.text
        response = await sign_in(pia, "pia", "velvet compass orchard 77 river")
        assert response.headers["location"] == "/"
        assert (await pia.get("/")).status_code == 200
        for page in ("/admin/users", "/admin/settings", "/admin/audit"):
            refused = await pia.get(page)
            assert refused.status_code == 403, page
            assert "Only an admin" in refused.text
        token = csrf_of((await pia.get("/account")).text)
        forged = await pia.post(
            "/admin/users/1/role", data={"role": "photographer", "_csrf": token}
        )
        assert forged.status_code == 403
    assert not [e for e in await list_entries() if e.action == "user.role"]


async def test_invitation_link_works_once(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """A used invitation answers 410 with a message and creates no second account."""
    path = await invite_photographer(client, admin, clock)
    form = {
        "username": "pia",
        "display_name": "Pia",
        "password": "velvet compass orchard 77 river",
        "confirm": "velvet compass orchard 77 river",
    }
    async with make_client(app, "192.0.2.20") as pia:
        assert (await submit(pia, path, form)).status_code == 200
        again = await pia.get(path)
        assert again.status_code == 410 and "already used" in again.text
        token = csrf_of((await pia.get("/login")).text)
        second = await pia.post(path, data={**form, "username": "pia2", "_csrf": token})
        assert second.status_code == 410
    users = await client.get("/admin/users")
    assert "pia2" not in users.text


async def test_expired_invitation_is_refused(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, settings: Settings
) -> None:
    """After invitation_hours the link answers 410 and the form cannot be used."""
    path = await invite_photographer(client, admin, clock)
    clock.advance(hours=settings.security.invitation_hours, seconds=1)
    async with make_client(app, "192.0.2.20") as pia:
        page = await pia.get(path)
        assert page.status_code == 410 and "expired" in page.text


async def test_unknown_invitation_token_is_not_found(client: httpx.AsyncClient) -> None:
    """A made-up or over-long token answers 404 with a message."""
    for token in ("made-up", "x" * 500):
        page = await client.get(f"/invite/{token}")
        assert page.status_code == 404 and "not valid" in page.text


async def test_admin_must_enrol_2fa_before_anything_else(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """An admin without TOTP (after a 2FA reset) is sent to enrolment and reaches nothing else."""
    path = await invite_photographer(client, admin, clock, email="ada@lumen.example")
    # invite_photographer invites a photographer; promote after joining
    async with make_client(app, "192.0.2.21") as ada:
        password = "granite meadow whistle 19 copper"
        await submit(
            ada,
            path,
            {"username": "ada", "display_name": "Ada", "password": password, "confirm": password},
        )
        users = await client.get("/admin/users")
        ada_id = _user_id(users.text, "ada")
        promoted = await submit(
            client, "/admin/users", {"role": "admin"}, action=f"/admin/users/{ada_id}/role"
        )
        assert "ada is now admin" in promoted.text
        response = await sign_in(ada, "ada", password)
        assert response.headers["location"] == "/login/enrol"
        assert (await ada.get("/")).headers["location"] == "/login"
        assert (await ada.get("/admin/users")).headers["location"] == "/login"
        page = await ada.get("/login/enrol")
        import re

        secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
        assert secret
        done = await ada.post(
            "/login/enrol",
            data={"code": totp_code(secret.group(1), clock()), "_csrf": csrf_of(page.text)},
        )
        assert done.status_code == 200 and "recovery-codes" in done.text
        assert (await ada.get("/admin/users")).status_code == 200


def _user_id(html: str, username: str) -> int:
    import re

    for match in re.finditer(r'action="/admin/users/(\d+)/role".*?Role of (\S+)<', html, re.S):
        if match.group(2) == username:
            return int(match.group(1))
    raise AssertionError(f"{username} not listed")


async def test_setting_can_require_2fa_for_photographers_too(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """With "require 2FA for everyone" on, a photographer without TOTP must enrol first."""
    path = await invite_photographer(client, admin, clock)
    saved = await submit(
        client,
        "/admin/settings",
        {
            "studio_name": "Studio Lumen",
            "contact_email": "hello@lumen.example",
            "contact_phone": "",
            "require_2fa_for_all": "1",
        },
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    password = "velvet compass orchard 77 river"
    async with make_client(app, "192.0.2.20") as pia:
        await submit(
            pia,
            path,
            {"username": "pia", "display_name": "Pia", "password": password, "confirm": password},
        )
        response = await sign_in(pia, "pia", password)
        assert response.headers["location"] == "/login/enrol"
        assert (await pia.get("/")).headers["location"] == "/login"


async def test_bad_settings_values_change_nothing(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """An invalid studio e-mail on the settings page answers 400 and keeps the old values."""
    await sign_in(client, admin.username, admin.password, code=totp_code(admin.secret, clock()))
    response = await submit(
        client,
        "/admin/settings",
        {"studio_name": "X" * 500, "contact_email": "hello@lumen.example"},
    )
    assert response.status_code == 400 and "at most 120" in response.text
    response = await submit(
        client, "/admin/settings", {"studio_name": "Fine", "contact_email": "nope"}
    )
    assert response.status_code == 400
    assert "Studio Lumen" in (await client.get("/admin/settings")).text
    assert not [e for e in await list_entries() if e.action == "settings.change"]


async def test_bad_invitation_values_are_refused(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """An unknown role or a malformed e-mail answers 400 and creates no link."""
    await sign_in(client, admin.username, admin.password, code=totp_code(admin.secret, clock()))
    for form, message in (
        ({"email": "pia@lumen.example", "role": "superuser"}, "Choose one of"),
        ({"email": "not an address", "role": "photographer"}, "e-mail address"),
        ({"email": "a@b.example" + "x" * 300, "role": "photographer"}, "at most 254"),
    ):
        response = await submit(client, "/admin/users", form, action="/admin/users/invite")
        assert response.status_code == 400, form
        assert message in response.text
        assert "/invite/" not in response.text
    assert not [e for e in await list_entries() if e.action == "user.invite"]
