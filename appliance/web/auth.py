"""Who is signed in: the session cookie, the staff member behind it, and the guards on pages."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.handlers.base import BaseRouteHandler

from appliance.accounts import service as accounts
from appliance.accounts import sessions
from appliance.accounts.service import StaffMember
from appliance.web.cookies import read_cookie
from appliance.web.requests import AnyConnection

__all__ = [
    "SESSION_COOKIE",
    "AdminRequired",
    "LoginRequired",
    "Signed",
    "current_staff",
    "require_admin",
    "require_staff",
]

SESSION_COOKIE = "fs_session"


class LoginRequired(Exception):
    """No full session: the page answers with a redirect to the sign-in page."""


class AdminRequired(Exception):
    """Signed in, but not an admin: 403."""


@dataclass(frozen=True)
class Signed:
    """A live session and its (active) staff member."""

    token: str
    session: sessions.SessionInfo
    member: StaffMember


async def current_staff(connection: AnyConnection) -> Signed | None:
    """The session of this request at any stage, looked up once per request."""
    state = connection.state
    if "signed" in state:
        cached: Signed | None = state["signed"]
        return cached
    signed = None
    token = read_cookie(connection, SESSION_COOKIE)
    if token:
        app_state = connection.app.state
        info = await sessions.load_session(
            token, now=app_state.clock(), settings=app_state.settings.security
        )
        if info is not None:
            member = await accounts.get_member(info.user_id)
            if member is not None and member.is_active:
                signed = Signed(token=token, session=info, member=member)
    state["signed"] = signed
    return signed


async def require_staff(connection: AnyConnection, _: BaseRouteHandler) -> None:
    signed = await current_staff(connection)
    if signed is None or signed.session.stage != "full":
        raise LoginRequired()


async def require_admin(connection: AnyConnection, handler: BaseRouteHandler) -> None:
    await require_staff(connection, handler)
    signed = await current_staff(connection)
    assert signed is not None
    if not signed.member.is_admin:
        raise AdminRequired()
