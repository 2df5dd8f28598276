"""Password resets: by an admin in the browser, and by studio IT on the server's console."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx
from litestar import Litestar

from appliance.audit.service import list_entries
from appliance.config import Settings
from appliance.privacy import erasure
from tests.conftest import FakeClock, make_client
from tests.integration.erasure_flows import carla
from tests.integration.erasure_flows import fresh_ledger as fresh_ledger  # autouse
from tests.integration.flows import Admin, sign_in, submit, totp_code
from tests.integration.test_sign_in import _user_id, invite_photographer


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


PIA_PASSWORD = "velvet compass orchard 77 river"
NEW_PASSWORD = "saffron glacier trumpet 31 oak"


async def test_admin_reset_ends_sessions_and_link_sets_a_new_password(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """The reset signs the user out at once; the link sets a new password and works once."""
    path = await invite_photographer(client, admin, clock)
    async with make_client(app, "192.0.2.20") as pia:
        await submit(
            pia,
            path,
            {
                "username": "pia",
                "display_name": "Pia",
                "password": PIA_PASSWORD,
                "confirm": PIA_PASSWORD,
            },
        )
        await sign_in(pia, "pia", PIA_PASSWORD)
        assert (await pia.get("/")).status_code == 200
        pia_id = _user_id((await client.get("/admin/users")).text, "pia")
        response = await submit(client, "/admin/users", {}, action=f"/admin/users/{pia_id}/reset")
        link = re.search(r'value="https://localhost(/reset/[\w-]+)"', response.text)
        assert link, response.text
        assert (await pia.get("/")).headers["location"] == "/login"
        weak = await submit(pia, link.group(1), {"password": "short", "confirm": "short"})
        assert weak.status_code == 400 and "at least 12" in weak.text
        done = await submit(pia, link.group(1), {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
        assert done.status_code == 200 and "Password changed" in done.text
        assert (await pia.get(link.group(1))).status_code == 410
        assert (await sign_in(pia, "pia", PIA_PASSWORD)).status_code == 401
        assert (await sign_in(pia, "pia", NEW_PASSWORD)).headers["location"] == "/"
    actions = [e.action for e in await list_entries(limit=200)]
    assert "user.reset" in actions and "password.reset" in actions


async def test_console_reset_recovers_a_locked_out_only_admin(
    client: httpx.AsyncClient, admin: Admin, settings: Settings, clock: FakeClock
) -> None:
    """`appliance staff reset owner --reset-2fa` prints a link; the admin then enrols afresh."""
    env = {
        **os.environ,
        "APPLIANCE_DATABASE__URL": settings.database.url,
        "APPLIANCE_SERVER__PUBLIC_URL": "https://localhost",
    }
    result = _cli("staff", "reset", "owner", "--reset-2fa", env=env)
    assert result.returncode == 0, result.stderr
    path = result.stdout.strip().removeprefix("https://localhost")
    assert path.startswith("/reset/")
    done = await submit(client, path, {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert done.status_code == 200
    response = await sign_in(client, "owner", NEW_PASSWORD)
    assert response.headers["location"] == "/login/enrol"  # the old authenticator is gone
    unknown = _cli("staff", "reset", "nobody", env=env)
    assert unknown.returncode == 1 and "no staff account named 'nobody'" in unknown.stderr
    # An account being erased gets no link, and the console says why (no stack trace).
    member = await carla(settings, clock())
    await erasure.request_erasure(
        settings,
        kind="staff",
        subject_id=member.id,
        actor="owner",
        actor_id=None,
        source="staff",
        now=clock(),
    )
    erased = _cli("staff", "reset", "carla", env=env)
    assert erased.returncode == 1 and "being deleted" in erased.stderr, erased.stderr
    assert "Traceback" not in erased.stderr and "/reset/" not in erased.stdout
    entry = next(e for e in await list_entries() if e.action == "user.reset")
    assert entry.actor == "cli" and entry.details["reset_2fa"] is True


async def test_reset_with_2fa_makes_the_old_password_useless(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """With "and two-factor" nobody can use the old password to enrol their own authenticator."""
    path = await invite_photographer(client, admin, clock, email="bo@lumen.example")
    async with make_client(app, "192.0.2.21") as bo:
        await submit(
            bo,
            path,
            {
                "username": "bob",
                "display_name": "Bob",
                "password": PIA_PASSWORD,
                "confirm": PIA_PASSWORD,
            },
        )
        bo_id = _user_id((await client.get("/admin/users")).text, "bob")
        response = await submit(
            client, "/admin/users", {"reset_2fa": "1"}, action=f"/admin/users/{bo_id}/reset"
        )
        link = re.search(r'value="https://localhost(/reset/[\w-]+)"', response.text)
        assert link
    async with make_client(app, "203.0.113.5") as attacker:
        stolen = await sign_in(attacker, "bob", PIA_PASSWORD)
        assert stolen.status_code == 401
        assert (await attacker.get("/login/enrol")).headers["location"] == "/login"
    async with make_client(app, "192.0.2.21") as bo:
        await submit(bo, link.group(1), {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
        assert (await sign_in(bo, "bob", NEW_PASSWORD)).headers["location"] == "/"


async def test_wrong_current_password_is_throttled_and_audited(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, settings: Settings
) -> None:
    """Guessing the password on the account page from a stolen session is slowed and recorded."""
    await sign_in(client, admin.username, admin.password, code=totp_code(admin.secret, clock()))
    form = {
        "current_password": "guess guess guess",
        "password": NEW_PASSWORD,
        "confirm": NEW_PASSWORD,
    }
    for _ in range(settings.throttle.free_failures + 1):
        response = await submit(client, "/account", form, action="/account/password")
        assert response.status_code == 400
    blocked = await submit(
        client, "/account", {**form, "current_password": admin.password}, action="/account/password"
    )
    assert blocked.status_code == 429
    checks = [e for e in await list_entries() if e.action == "password.check"]
    assert len(checks) == settings.throttle.free_failures + 1
    assert {e.outcome for e in checks} == {"failure"}
