"""The first-run setup wizard over HTTP."""

from __future__ import annotations

import httpx

from appliance.config import Settings
from tests.conftest import FakeClock
from tests.integration.flows import run_wizard, sign_in, totp_code


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
