"""Who is signed in: the session cookie, the staff member behind it, and the guards on pages."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from litestar.handlers.base import BaseRouteHandler

from appliance.accounts import service as accounts
from appliance.accounts import sessions
from appliance.accounts.service import StaffMember
from appliance.tokens import same
from appliance.web.cookies import read_cookie
from appliance.web.requests import AnyConnection

__all__ = [
    "DEVICE_COOKIE",
    "DEVICE_DAYS",
    "SESSION_COOKIE",
    "AdminRequired",
    "LoginRequired",
    "SignedIn",
    "current_staff",
    "device_cookie_value",
    "device_user_id",
    "require_admin",
    "require_staff",
    "signed_in",
]

SESSION_COOKIE = "fs_session"
DEVICE_COOKIE = "fs_device"
DEVICE_DAYS = 180


def device_cookie_value(secret_key: str, user_id: int) -> str:
    """A signed note "this browser completed a sign-in of ``user_id``"; it grants nothing by
    itself, it only exempts the browser from that account's throttle (see accounts.signin)."""
    nonce = secrets.token_urlsafe(12)
    return f"{user_id}.{nonce}.{_device_signature(secret_key, user_id, nonce)}"


def device_user_id(connection: AnyConnection) -> int | None:
    """The account this browser's device cookie vouches for, when its signature holds."""
    value = read_cookie(connection, DEVICE_COOKIE)
    user, _, rest = value.partition(".")
    nonce, _, signature = rest.partition(".")
    if not (user.isdigit() and nonce and signature) or len(value) > 200:
        return None
    expected = _device_signature(connection.app.state.secret_key, int(user), nonce)
    return int(user) if same(expected, signature) else None


def _device_signature(secret_key: str, user_id: int, nonce: str) -> str:
    message = f"device:{user_id}:{nonce}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


class LoginRequired(Exception):
    """No full session: the page answers with a redirect to the sign-in page."""


class AdminRequired(Exception):
    """SignedIn in, but not an admin: 403."""


@dataclass(frozen=True)
class SignedIn:
    """A live session and its (active) staff member."""

    token: str
    session: sessions.SessionInfo
    member: StaffMember


async def current_staff(connection: AnyConnection) -> SignedIn | None:
    """The session of this request at any stage, looked up once per request."""
    state = connection.state
    if "signed" in state:
        cached: SignedIn | None = state["signed"]
        return cached
    signed = None
    token = read_cookie(connection, SESSION_COOKIE)
    if token:
        app_state = connection.app.state
        info = await sessions.load_session(
            token, now=app_state.clock(), settings=app_state.settings.security
        )
        if info is not None:
            member = accounts.member_of(info)
            if member is not None and member.is_active:
                signed = SignedIn(token=token, session=info, member=member)
    state["signed"] = signed
    return signed


async def signed_in(connection: AnyConnection) -> SignedIn:
    """The fully signed-in staff member of a request behind :func:`require_staff`."""
    signed = await current_staff(connection)
    if signed is None or signed.session.stage != "full":
        raise LoginRequired()
    return signed


async def require_staff(connection: AnyConnection, _: BaseRouteHandler) -> None:
    """Guard: only a fully signed-in staff member (both factors where required) passes."""
    signed = await current_staff(connection)
    if signed is None or signed.session.stage != "full":
        raise LoginRequired()


async def require_admin(connection: AnyConnection, handler: BaseRouteHandler) -> None:
    """Guard: only a fully signed-in admin passes; others get 403."""
    if not (await signed_in(connection)).member.is_admin:
        raise AdminRequired()
