"""Steps a person takes through the pages, shared by the integration tests.

TOTP codes are computed here from RFC 6238 with hashlib alone, independently of the code under
test (which uses pyotp).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass, field

import httpx

from appliance.config import Settings
from appliance.setup import service as setup_service

_CSRF = re.compile(r'name="_csrf" value="([^"]+)"')
_SECRET = re.compile(r'id="totp-secret">([A-Z2-7]+)<')
_CODES = re.compile(r"<li><code>([a-z0-9-]{19})</code></li>")

ADMIN_PASSWORD = "quiet harbour lantern 42 maple"


def totp_code(secret: str, when: dt.datetime, *, offset_steps: int = 0) -> str:
    """RFC 6238 TOTP with SHA-1, 30 s steps, 6 digits."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    counter = int(when.timestamp()) // 30 + offset_steps
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    start = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[start : start + 4])[0] & 0x7FFFFFFF
    return f"{number % 1_000_000:06d}"


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, f"the page has no CSRF field: {html[:3000]}"
    return match.group(1)


async def submit(
    client: httpx.AsyncClient, page: str, data: dict[str, str], *, action: str | None = None
) -> httpx.Response:
    """Open ``page``, take its CSRF token, and post ``data`` to ``action`` (default: the page)."""
    opened = await client.get(page)
    assert opened.status_code == 200, (page, opened.status_code)
    return await client.post(action or page, data={**data, "_csrf": csrf_of(opened.text)})


@dataclass
class Admin:
    username: str = "owner"
    password: str = ADMIN_PASSWORD
    secret: str = ""
    recovery_codes: list[str] = field(default_factory=list)


async def run_wizard(
    client: httpx.AsyncClient, settings: Settings, now: dt.datetime, admin: Admin | None = None
) -> Admin:
    """The whole wizard over HTTP, as a person does it with the printed link."""
    admin = admin or Admin()
    token = await setup_service.issue_setup_token(settings, now)
    assert token
    opened = await client.get(f"/setup?token={token}")
    assert opened.status_code == 303 and opened.headers["location"] == "/setup/studio"
    response = await submit(
        client,
        "/setup/studio",
        {
            "studio_name": "Studio Lumen",
            "contact_email": "hello@lumen.example",
            "contact_phone": "+49 30 1234567",
        },
    )
    assert response.headers.get("location") == "/setup/admin", response.text
    response = await submit(
        client,
        "/setup/admin",
        {
            "username": admin.username,
            "display_name": "Olivia Owner",
            "email": "owner@lumen.example",
            "password": admin.password,
            "confirm": admin.password,
        },
    )
    assert response.headers.get("location") == "/setup/two-factor", response.text
    page = await client.get("/setup/two-factor")
    secret = _SECRET.search(page.text)
    assert secret, "the enrolment page shows no secret"
    admin.secret = secret.group(1)
    response = await client.post(
        "/setup/two-factor",
        data={"code": totp_code(admin.secret, now), "_csrf": csrf_of(page.text)},
    )
    assert response.status_code == 200, response.text
    admin.recovery_codes = _CODES.findall(response.text)
    return admin


async def sign_in(
    client: httpx.AsyncClient, username: str, password: str, *, code: str | None = None
) -> httpx.Response:
    """Password step, then (when ``code`` is given) the second step; returns the last response."""
    response = await submit(client, "/login", {"username": username, "password": password})
    if code is None or response.headers.get("location") != "/login/two-factor":
        return response
    return await submit(client, "/login/two-factor", {"code": code})
