"""Staff accounts: creation, look-up, passwords, roles, enabling and disabling.

Every state change writes an audit entry in the same transaction, so a change without its entry
(or an entry without its change) never exists.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import msgspec

from appliance.accounts import sessions, throttle
from appliance.accounts.passwords import (
    check_strength,
    hash_password_async,
    verify_password_async,
)
from appliance.accounts.tables import StaffUser
from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.config import Settings, ThrottleSettings
from appliance.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
)
from appliance.notify.languages import clean_language
from appliance.privacy.erasure import erased_staff_ids
from appliance.validation import clean_email, clean_text, clean_username

__all__ = [
    "ROLES",
    "StaffMember",
    "change_password",
    "clean_role",
    "create_user",
    "find_member",
    "get_member",
    "list_members",
    "member_of",
    "recheck_password",
    "refuse_if_being_erased",
    "set_active",
    "set_language",
    "set_password",
    "set_role",
]

ROLES = ("admin", "photographer")
_ADMIN_LOCK_ID = 0x61646D696E73


class StaffMember(msgspec.Struct, frozen=True):
    id: int
    username: str
    email: str
    display_name: str
    role: str
    is_active: bool
    totp_enabled: bool
    created_at: dt.datetime
    last_login_at: dt.datetime | None
    # The language of the e-mail this person receives; "" means the studio's default.
    language: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def actor(self) -> Actor:
        return Actor(id=self.id, name=self.username)


def _member(row: dict[str, Any]) -> StaffMember:
    return StaffMember(
        id=row["id"],
        username=row["username"],
        email=row["email"],
        display_name=row["display_name"],
        role=row["role"],
        is_active=row["is_active"],
        totp_enabled=row["totp_confirmed_at"] is not None,
        created_at=row["created_at"],
        last_login_at=row["last_login_at"],
        language=row["language"],
    )


def member_of(session: sessions.SessionInfo) -> StaffMember | None:
    """The account a session belongs to, from the row read along with the session."""
    return _member(session.user) if session.user else None


async def get_member(user_id: int) -> StaffMember | None:
    """The account with this id, active or not."""
    row = await StaffUser.select().where(StaffUser.id == user_id).first().run()
    return _member(row) if row else None


async def find_member(username: str) -> StaffMember | None:
    """The account with this user name (any case), active or not."""
    row = (
        await StaffUser.select().where(StaffUser.username == username.strip().lower()).first().run()
    )
    return _member(row) if row else None


async def list_members() -> list[StaffMember]:
    """Every account, by user name."""
    rows = await StaffUser.select().order_by(StaffUser.username).run()
    return [_member(row) for row in rows]


def clean_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"Choose one of: {', '.join(ROLES)}.", field="role")
    return role


async def create_user(
    *,
    username: str,
    email: str,
    display_name: str,
    role: str,
    password: str,
    settings: Settings,
    now: dt.datetime,
    actor: Actor,
    address: str,
    extra_words: tuple[str, ...] = (),
) -> StaffMember:
    """Validate everything, then insert the user and its audit entry together."""
    username = clean_username(username)
    email = clean_email(email)
    display_name = clean_text(display_name, field="display_name", max_length=100)
    role = clean_role(role)
    check_strength(
        password,
        min_length=settings.security.password_min_length,
        user_inputs=[username, email, display_name, *extra_words],
    )
    password_hash = await hash_password_async(password)
    taken = InvalidInput("This user name is taken.", field="username")
    async with StaffUser._meta.db.transaction(allow_nested=True):
        if await StaffUser.exists().where(StaffUser.username == username).run():
            raise taken
        try:
            rows = await StaffUser.insert(
                StaffUser(
                    username=username,
                    email=email,
                    display_name=display_name,
                    role=role,
                    password_hash=password_hash,
                    password_changed_at=now,
                    created_at=now,
                )
            ).returning(*StaffUser.all_columns())
        except asyncpg.UniqueViolationError:
            raise taken from None  # the same name claimed by a request racing this one
        member = _member(rows[0])
        await audit.record(
            "user.create",
            actor=actor,
            target=f"user:{member.username}",
            address=address,
            details={"role": role},
            at=now,
        )
    return member


async def recheck_password(
    row: dict[str, Any],
    password: str,
    *,
    field: str,
    address: str,
    rules: ThrottleSettings,
    now: dt.datetime,
) -> None:
    """Ask a signed-in person for their password again, throttled and audited like sign-in.

    Without this, someone holding a stolen session could guess the password at full speed on
    the account page and so keep access after the session ends.
    """
    key = f"recheck:{row['id']}"
    attempt = await throttle.reserve([key], now, rules)
    if await verify_password_async(password, row["password_hash"]):
        await throttle.refund(attempt, rules, forget=(key,))
        return
    await audit.record(
        "password.check",
        actor=Actor(id=row["id"], name=row["username"]),
        outcome="failure",
        target=f"user:{row['username']}",
        address=address,
        at=now,
    )
    raise InvalidInput(
        "The current password is wrong."
        if field == "current_password"
        else "The password is wrong.",
        field=field,
    )


async def change_password(
    user_id: int,
    current: str,
    new: str,
    confirm: str,
    *,
    address: str,
    settings: Settings,
    now: dt.datetime,
) -> None:
    """Replace the password and end every session of the user (the caller starts a new one)."""
    if new != confirm:
        raise InvalidInput("The two new passwords differ.", field="confirm")
    row = await StaffUser.select().where(StaffUser.id == user_id).first().run()
    if row is None:
        raise NotFound("No such user.")
    await recheck_password(
        row, current, field="current_password", address=address, rules=settings.throttle, now=now
    )
    async with StaffUser._meta.db.transaction(allow_nested=True):
        await set_password(row, new, settings=settings, now=now)
        await sessions.end_user_sessions(user_id)
        await audit.record(
            "password.change",
            actor=Actor(id=row["id"], name=row["username"]),
            target=f"user:{row['username']}",
            address=address,
            at=now,
        )


async def set_password(
    row: dict[str, Any], new: str, *, settings: Settings, now: dt.datetime
) -> None:
    """Check the strength of ``new`` and store its hash (no audit entry: callers write one)."""
    check_strength(
        new,
        min_length=settings.security.password_min_length,
        user_inputs=[row["username"], row["email"], row["display_name"]],
    )
    new_hash = await hash_password_async(new)
    await (
        StaffUser.update({StaffUser.password_hash: new_hash, StaffUser.password_changed_at: now})
        .where(StaffUser.id == row["id"])
        .run()
    )


async def refuse_if_being_erased(user_id: int, username: str) -> None:
    """An account being erased stays switched off until its purge: enabling it, changing its
    role or letting someone set its password would let the person back in during the grace
    period. Only cancelling the erasure gives the account back."""
    if user_id in await erased_staff_ids():
        raise Conflict(
            f"The account {username} is being deleted. To keep it, cancel its erasure under "
            "Admin → Erasure first."
        )


async def _lock_for_change(member: StaffMember) -> None:
    """Lock the account's row, then refuse it if it is being erased. The erasure locks the
    row too as it switches the account off, so a change racing it either waits and is refused,
    or goes first and is switched off with the rest."""
    await StaffUser.raw("SELECT id FROM staff_user WHERE id = {} FOR UPDATE", member.id)
    await refuse_if_being_erased(member.id, member.username)


async def _active_admin_count() -> int:
    """Active admins, counted under a transaction lock: two admins demoting each other at the
    same moment are serialised, so the second sees the first's change and is refused."""
    await StaffUser.raw("SELECT pg_advisory_xact_lock({})", _ADMIN_LOCK_ID)
    return int(
        await StaffUser.count()
        .where(StaffUser.role == "admin")
        .where(StaffUser.is_active.eq(True))
        .run()
    )


async def set_role(
    user_id: int, role: str, *, actor: StaffMember, address: str, now: dt.datetime
) -> StaffMember:
    """Change the role of an account; its sessions end so it signs in again under the new one."""
    role = clean_role(role)
    target = await get_member(user_id)
    if target is None:
        raise NotFound("No such user.")
    if target.role == role:
        return target
    async with StaffUser._meta.db.transaction(allow_nested=True):
        await _lock_for_change(target)
        if target.is_admin and target.is_active and await _active_admin_count() <= 1:
            raise Conflict("The studio needs at least one active admin.")
        await StaffUser.update({StaffUser.role: role}).where(StaffUser.id == user_id).run()
        # Privileges changed: make the user sign in again under the new role.
        await sessions.end_user_sessions(user_id)
        await audit.record(
            "user.role",
            actor=actor.actor,
            target=f"user:{target.username}",
            address=address,
            details={"from": target.role, "to": role},
            at=now,
        )
    member = await get_member(user_id)
    assert member is not None
    return member


async def set_active(
    user_id: int, active: bool, *, actor: StaffMember, address: str, now: dt.datetime
) -> StaffMember:
    """Enable or disable an account; disabling ends its sessions at once."""
    target = await get_member(user_id)
    if target is None:
        raise NotFound("No such user.")
    if not active and target.id == actor.id:
        raise Forbidden("You cannot disable your own account.")
    async with StaffUser._meta.db.transaction(allow_nested=True):
        if active:
            await _lock_for_change(target)
        if not active and target.is_admin and await _active_admin_count() <= 1:
            raise Conflict("The studio needs at least one active admin.")
        await StaffUser.update({StaffUser.is_active: active}).where(StaffUser.id == user_id).run()
        ended = 0 if active else await sessions.end_user_sessions(user_id)
        await audit.record(
            "user.enable" if active else "user.disable",
            actor=actor.actor,
            target=f"user:{target.username}",
            address=address,
            details={"sessions_ended": ended},
            at=now,
        )
    member = await get_member(user_id)
    assert member is not None
    return member


async def set_language(
    user_id: int, language: str, *, address: str, now: dt.datetime
) -> StaffMember:
    """Set the language of the e-mail a staff member receives (``""``: the studio's default)."""
    language = clean_language(language)
    target = await get_member(user_id)
    if target is None:
        raise NotFound("No such user.")
    if target.language == language:
        return target
    async with StaffUser._meta.db.transaction(allow_nested=True):
        await StaffUser.update({StaffUser.language: language}).where(StaffUser.id == user_id).run()
        await audit.record(
            "user.language",
            actor=target.actor,
            target=f"user:{target.username}",
            address=address,
            details={"from": target.language or "default", "to": language or "default"},
            at=now,
        )
    member = await get_member(user_id)
    assert member is not None
    return member
