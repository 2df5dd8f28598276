"""Server-side sessions: cookie flags, id rotation, time-outs, and ending them."""

from __future__ import annotations

import httpx
from litestar import Litestar

from appliance.config import Settings
from tests.conftest import FakeClock, make_client
from tests.integration.flows import Admin, sign_in, submit, totp_code

COOKIE = "__Host-fs_session"
NEW_PASSWORD = "amber tidewater carousel 58 fern"


def issued(response: httpx.Response) -> str:
    """The session id a response sets (from its Set-Cookie header, not the client's jar)."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{COOKIE}="):
            return header.split(";")[0].split("=", 1)[1]
    raise AssertionError("no session cookie set")


def use_cookie(client: httpx.AsyncClient, value: str) -> None:
    """Make the client present exactly this session id from now on."""
    for cookie in list(client.cookies.jar):
        if cookie.name == COOKIE:
            client.cookies.jar.clear(cookie.domain, cookie.path, cookie.name)
    client.cookies.set(COOKIE, value)


async def signed_in(client: httpx.AsyncClient, admin: Admin, clock: FakeClock) -> str:
    response = await sign_in(
        client, admin.username, admin.password, code=totp_code(admin.secret, clock())
    )
    assert response.headers["location"] == "/"
    return issued(response)


async def test_session_cookie_flags_over_tls(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Over TLS the cookie is __Host- prefixed, Secure, HttpOnly, SameSite=Lax, Path=/."""
    response = await submit(
        client, "/login", {"username": admin.username, "password": admin.password}
    )
    header = next(
        value for value in response.headers.get_list("set-cookie") if value.startswith(COOKIE)
    )
    flags = {part.strip().lower() for part in header.split(";")[1:]}
    assert {"secure", "httponly", "path=/", "samesite=lax"} <= flags
    assert not any(flag.startswith("domain") for flag in flags)


async def test_plain_http_on_a_lan_address_drops_secure_and_prefix(
    app: Litestar, admin: Admin
) -> None:
    """Over plain HTTP to a non-loopback host the cookie is not Secure (a browser would drop it)."""
    transport = httpx.ASGITransport(app=app, client=("192.0.2.50", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://appliance.test") as lan:
        page = await lan.get("/login")
        header = page.headers["set-cookie"]
        assert header.startswith("fs_csrf=")
        assert "secure" not in header.lower()


async def test_session_id_rotates_at_password_and_at_second_factor(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """A planted cookie is never promoted: each sign-in step issues a new id, old ids die."""
    use_cookie(client, "planted-by-attacker")
    first = await submit(client, "/login", {"username": admin.username, "password": admin.password})
    after_password = issued(first)
    assert after_password != "planted-by-attacker"
    use_cookie(client, after_password)
    second = await submit(client, "/login/two-factor", {"code": totp_code(admin.secret, clock())})
    after_second = issued(second)
    assert after_second != after_password
    use_cookie(client, after_second)
    assert (await client.get("/")).status_code == 200
    # The half-signed-in id of the first step is gone, not promoted.
    use_cookie(client, after_password)
    assert (await client.get("/")).headers["location"] == "/login"


async def test_idle_session_times_out(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, settings: Settings
) -> None:
    """No request for session_idle_minutes ends the session; activity keeps it alive."""
    await signed_in(client, admin, clock)
    idle = settings.security.session_idle_minutes
    clock.advance(minutes=idle - 1)
    assert (await client.get("/")).status_code == 200
    clock.advance(minutes=idle - 1)
    assert (await client.get("/")).status_code == 200
    clock.advance(minutes=idle, seconds=1)
    assert (await client.get("/")).headers["location"] == "/login"


async def test_absolute_time_out_ends_even_an_active_session(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, settings: Settings
) -> None:
    """Activity does not stretch a session beyond session_absolute_hours."""
    await signed_in(client, admin, clock)
    step = settings.security.session_idle_minutes - 1
    elapsed = 0
    while elapsed < settings.security.session_absolute_hours * 60 - step:
        clock.advance(minutes=step)
        elapsed += step
        assert (await client.get("/")).status_code == 200, elapsed
    clock.advance(minutes=step)
    assert (await client.get("/")).headers["location"] == "/login"


async def test_logout_ends_the_session_on_the_server(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """After sign-out the old cookie value no longer opens anything."""
    token = await signed_in(client, admin, clock)
    response = await submit(client, "/", {}, action="/logout")
    assert response.headers["location"] == "/login"
    use_cookie(client, token)
    assert (await client.get("/")).headers["location"] == "/login"


async def test_password_change_ends_every_session(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """Changing the password signs out other browsers; this browser continues with a new id."""
    async with make_client(app, "192.0.2.30") as laptop:
        await signed_in(laptop, admin, clock)
        clock.advance(seconds=30)
        old = await signed_in(client, admin, clock)
        response = await submit(
            client,
            "/account",
            {"current_password": admin.password, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
            action="/account/password",
        )
        assert response.status_code == 200 and "password was changed" in response.text
        assert issued(response) != old
        assert (await client.get("/")).status_code == 200
        assert (await laptop.get("/")).headers["location"] == "/login"
    client.cookies.clear()
    clock.advance(seconds=30)
    refused = await sign_in(client, admin.username, admin.password)
    assert refused.status_code == 401
    accepted = await sign_in(client, admin.username, NEW_PASSWORD)
    assert accepted.headers["location"] == "/login/two-factor"


async def test_password_change_with_wrong_current_password_changes_nothing(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """A wrong current password or a weak new one answers 400 naming the field."""
    await signed_in(client, admin, clock)
    cases = [
        (
            {"current_password": "wrong", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
            "current password is wrong",
        ),
        (
            {"current_password": admin.password, "password": "short", "confirm": "short"},
            "at least 12 characters",
        ),
        (
            {
                "current_password": admin.password,
                "password": "Password1234!",
                "confirm": "Password1234!",
            },
            "too easy to guess",
        ),
        (
            {"current_password": admin.password, "password": NEW_PASSWORD, "confirm": "other"},
            "differ",
        ),
    ]
    for form, message in cases:
        response = await submit(client, "/account", form, action="/account/password")
        assert response.status_code == 400, form
        assert message in response.text
    client.cookies.clear()
    clock.advance(seconds=30)
    again = await sign_in(client, admin.username, admin.password)
    assert again.headers["location"] == "/login/two-factor"


async def test_disabling_a_user_ends_their_sessions_at_once(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """A disabled photographer's open browser loses access on its very next request."""
    from tests.integration.test_sign_in import _user_id, invite_photographer

    path = await invite_photographer(client, admin, clock)
    password = "velvet compass orchard 77 river"
    async with make_client(app, "192.0.2.20") as pia:
        await submit(
            pia,
            path,
            {"username": "pia", "display_name": "Pia", "password": password, "confirm": password},
        )
        await sign_in(pia, "pia", password)
        assert (await pia.get("/")).status_code == 200
        pia_id = _user_id((await client.get("/admin/users")).text, "pia")
        response = await submit(
            client, "/admin/users", {"active": "0"}, action=f"/admin/users/{pia_id}/active"
        )
        assert "disabled" in response.text
        assert (await pia.get("/")).headers["location"] == "/login"
        again = await sign_in(pia, "pia", password)
        assert again.status_code == 401


async def test_last_admin_cannot_be_disabled_or_demoted(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """The studio always keeps one active admin: such a request answers 4xx and changes nothing."""
    from tests.integration.test_sign_in import _user_id

    await signed_in(client, admin, clock)
    owner_id = _user_id((await client.get("/admin/users")).text, "owner")
    demote = await submit(
        client, "/admin/users", {"role": "photographer"}, action=f"/admin/users/{owner_id}/role"
    )
    assert demote.status_code == 409 and "at least one active admin" in demote.text
    disable = await submit(
        client, "/admin/users", {"active": "0"}, action=f"/admin/users/{owner_id}/active"
    )
    assert disable.status_code == 403
    assert (await client.get("/admin/users")).status_code == 200


async def test_sign_out_is_audited(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Signing out writes an entry with the actor and address."""
    from appliance.audit.service import list_entries

    await signed_in(client, admin, clock)
    await submit(client, "/", {}, action="/logout")
    entry = (await list_entries())[0]
    assert (entry.action, entry.actor, entry.address) == ("logout", "owner", "192.0.2.10")
