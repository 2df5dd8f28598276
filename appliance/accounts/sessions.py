"""Server-side staff sessions: creation, lookup with idle and absolute time-outs, rotation, ending.

The cookie holds 256 random bits; only their SHA-256 is stored, so a leaked database dump holds no
usable session. A new id is issued at every change of privilege (password accepted, second factor
accepted), which defeats session fixation.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from appliance.accounts.tables import StaffSession
from appliance.config import SecuritySettings
from appliance.tokens import new_token, token_digest

__all__ = [
    "SessionInfo",
    "create_session",
    "end_session",
    "end_user_sessions",
    "load_session",
    "rotate_session",
]

# last_seen_at is written at most this often, so browsing does not write on every request.
_TOUCH_EVERY = dt.timedelta(seconds=60)


class SessionInfo(msgspec.Struct, frozen=True):
    id: int
    user_id: int
    stage: str
    created_at: dt.datetime
    expires_at: dt.datetime
    # The account's row, read in the same query (see accounts.service.member_of).
    user: dict[str, Any] = msgspec.field(default_factory=dict)


async def create_session(
    user_id: int,
    stage: str,
    *,
    now: dt.datetime,
    settings: SecuritySettings,
    address: str,
    user_agent: str,
    expires_at: dt.datetime | None = None,
) -> str:
    """Store a new session and return the token for the cookie."""
    token = new_token()
    await StaffSession.insert(
        StaffSession(
            token_hash=token_digest(token),
            user=user_id,
            stage=stage,
            created_at=now,
            last_seen_at=now,
            expires_at=expires_at or now + dt.timedelta(hours=settings.session_absolute_hours),
            address=address[:64],
            user_agent=user_agent[:200],
        )
    ).run()
    return token


async def load_session(
    token: str, *, now: dt.datetime, settings: SecuritySettings
) -> SessionInfo | None:
    """The live session for ``token``; an idle or expired one is deleted and None returned."""
    if not token or len(token) > 100:
        return None
    # The account comes along in the same query: every staff request needs both.
    row = (
        await StaffSession.select(*StaffSession.all_columns(), *StaffSession.user.all_columns())
        .where(StaffSession.token_hash == token_digest(token))
        .output(nested=True)
        .first()
        .run()
    )
    if row is None:
        return None
    idle_limit = row["last_seen_at"] + dt.timedelta(minutes=settings.session_idle_minutes)
    if now >= row["expires_at"] or now >= idle_limit:
        await StaffSession.delete().where(StaffSession.id == row["id"]).run()
        return None
    if now - row["last_seen_at"] >= _TOUCH_EVERY:
        await (
            StaffSession.update({StaffSession.last_seen_at: now})
            .where(StaffSession.id == row["id"])
            .run()
        )
    return SessionInfo(
        id=row["id"],
        user_id=row["user"]["id"],
        stage=row["stage"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        user=row["user"],
    )


async def rotate_session(
    token: str,
    stage: str,
    *,
    now: dt.datetime,
    settings: SecuritySettings,
    address: str,
    user_agent: str,
) -> str:
    """Replace the session of ``token`` by a new id at ``stage``; the old id stops working."""
    old = (
        await StaffSession.delete()
        .where(StaffSession.token_hash == token_digest(token))
        .returning(StaffSession.user, StaffSession.expires_at)
        .run()
    )
    if not old:
        raise LookupError("session vanished during rotation")
    # The absolute time-out counts from the first sign-in step, so rotation cannot extend it.
    return await create_session(
        old[0]["user"],
        stage,
        now=now,
        settings=settings,
        address=address,
        user_agent=user_agent,
        expires_at=old[0]["expires_at"],
    )


async def end_session(token: str) -> None:
    """End the session of ``token`` (sign-out); unknown tokens are ignored."""
    await StaffSession.delete().where(StaffSession.token_hash == token_digest(token)).run()


async def end_user_sessions(user_id: int) -> int:
    """End every session of a user (password change, disabling); returns how many ended."""
    query = StaffSession.delete().where(StaffSession.user == user_id)
    return len(await query.returning(StaffSession.id).run())


async def purge_expired(now: dt.datetime, settings: SecuritySettings) -> int:
    """Delete sessions past either time-out; returns how many."""
    idle_cutoff = now - dt.timedelta(minutes=settings.session_idle_minutes)
    rows = (
        await StaffSession.delete()
        .where((StaffSession.expires_at <= now) | (StaffSession.last_seen_at <= idle_cutoff))
        .returning(StaffSession.id)
        .run()
    )
    return len(rows)
