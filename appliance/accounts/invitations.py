"""Expiring, single-use links: invitations for new staff and admin-driven password resets."""

from __future__ import annotations

import datetime as dt

import msgspec

from appliance.accounts import sessions, throttle
from appliance.accounts.passwords import UNUSABLE_HASH
from appliance.accounts.service import (
    StaffMember,
    clean_role,
    create_user,
    refuse_if_being_erased,
    set_password,
)
from appliance.accounts.tables import StaffInvitation, StaffUser
from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.config import Settings
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.privacy.erasure import erased_staff_ids
from appliance.tokens import new_token, token_digest
from appliance.validation import clean_email

__all__ = [
    "PendingLink",
    "accept_invitation",
    "complete_reset",
    "inspect_link",
    "invite",
    "list_pending",
    "revoke",
    "start_reset",
]


class PendingLink(msgspec.Struct, frozen=True):
    id: int
    kind: str
    email: str
    role: str
    user_id: int | None
    created_at: dt.datetime
    expires_at: dt.datetime


async def invite(
    email: str,
    role: str,
    *,
    actor: StaffMember,
    address: str,
    settings: Settings,
    now: dt.datetime,
) -> str:
    """Create an invitation; returns the token for the link (shown once, stored hashed)."""
    email = clean_email(email)
    role = clean_role(role)
    token = new_token()
    async with StaffInvitation._meta.db.transaction(allow_nested=True):
        await StaffInvitation.insert(
            StaffInvitation(
                token_hash=token_digest(token),
                kind="invite",
                email=email,
                role=role,
                created_by=actor.id,
                created_at=now,
                expires_at=now + dt.timedelta(hours=settings.security.invitation_hours),
            )
        ).run()
        await audit.record(
            "user.invite",
            actor=actor.actor,
            # Lower case, as the erasure finds a person's entries by their address.
            target=f"email:{email.lower()}",
            address=address,
            details={"role": role},
            at=now,
        )
    return token


async def start_reset(
    user_id: int,
    *,
    reset_2fa: bool,
    actor: Actor,
    address: str,
    settings: Settings,
    now: dt.datetime,
) -> str:
    """A reset by an admin (or by studio IT with the CLI): sessions end, a link is returned.

    The old password keeps working until the link is used (so a mistaken reset locks nobody
    out), unless two-factor is reset as well, in which case it is enrolled afresh at next sign-in.
    """
    row = await StaffUser.select().where(StaffUser.id == user_id).first().run()
    if row is None:
        raise NotFound("No such user.")
    await refuse_if_being_erased(user_id, row["username"])
    token = new_token()
    async with StaffInvitation._meta.db.transaction(allow_nested=True):
        # Only the newest reset link of a user works.
        await (
            StaffInvitation.update({StaffInvitation.used_at: now})
            .where(StaffInvitation.user == user_id)
            .where(StaffInvitation.kind == "reset")
            .where(StaffInvitation.used_at.is_null())
            .run()
        )
        await StaffInvitation.insert(
            StaffInvitation(
                token_hash=token_digest(token),
                kind="reset",
                email=row["email"],
                role=row["role"],
                user=user_id,
                created_by=actor.id,
                created_at=now,
                expires_at=now + dt.timedelta(hours=settings.security.invitation_hours),
            )
        ).run()
        if reset_2fa:
            # The old password stops working too: with the second factor gone, whoever knew
            # that password could otherwise enrol an authenticator of their own before the
            # owner uses the link. Only the reset link leads back in.
            await (
                StaffUser.update(
                    {
                        StaffUser.totp_secret: None,
                        StaffUser.totp_confirmed_at: None,
                        StaffUser.totp_last_counter: None,
                        StaffUser.second_factor_failures: 0,
                        StaffUser.password_hash: UNUSABLE_HASH,
                    }
                )
                .where(StaffUser.id == user_id)
                .run()
            )
        await throttle.clear(throttle.account_key(row["username"]))
        ended = await sessions.end_user_sessions(user_id)
        await audit.record(
            "user.reset",
            actor=actor,
            target=f"user:{row['username']}",
            address=address,
            details={"reset_2fa": reset_2fa, "sessions_ended": ended},
            at=now,
        )
    return token


async def inspect_link(token: str, *, kind: str, now: dt.datetime) -> PendingLink:
    """The pending link for ``token``; NotFound when unknown, Conflict when used or expired."""
    if not token or len(token) > 100:
        raise NotFound("This link is not valid.")
    row = (
        await StaffInvitation.select()
        .where(StaffInvitation.token_hash == token_digest(token))
        .where(StaffInvitation.kind == kind)
        .first()
        .run()
    )
    if row is None:
        raise NotFound("This link is not valid.")
    if row["used_at"] is not None:
        raise Conflict("This link was already used. Ask an admin for a new one.")
    if row["expires_at"] <= now:
        raise Conflict("This link has expired. Ask an admin for a new one.")
    if row["user"] is not None and row["user"] in await erased_staff_ids():
        # A reset link made before the erasure was asked for: it must not let the person in.
        raise Conflict("This link no longer works: the account is being deleted.")
    return PendingLink(
        id=row["id"],
        kind=row["kind"],
        email=row["email"],
        role=row["role"],
        user_id=row["user"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )


async def _claim(link: PendingLink, now: dt.datetime) -> None:
    """Mark the link used; only one request can win (conditional UPDATE)."""
    claimed = (
        await StaffInvitation.update({StaffInvitation.used_at: now})
        .where(StaffInvitation.id == link.id)
        .where(StaffInvitation.used_at.is_null())
        .where(StaffInvitation.expires_at > now)
        .returning(StaffInvitation.id)
        .run()
    )
    if not claimed:
        raise Conflict("This link was already used. Ask an admin for a new one.")


async def accept_invitation(
    token: str,
    *,
    username: str,
    display_name: str,
    password: str,
    confirm: str,
    address: str,
    settings: Settings,
    now: dt.datetime,
) -> StaffMember:
    """Create the invited account; the invitation is used up in the same transaction."""
    if password != confirm:
        raise InvalidInput("The two passwords differ.", field="confirm")
    link = await inspect_link(token, kind="invite", now=now)
    async with StaffInvitation._meta.db.transaction(allow_nested=True):
        await _claim(link, now)
        return await create_user(
            username=username,
            email=link.email,
            display_name=display_name,
            role=link.role,
            password=password,
            settings=settings,
            now=now,
            actor=Actor(id=None, name=f"invitation:{link.id}"),
            address=address,
        )


async def complete_reset(
    token: str,
    *,
    password: str,
    confirm: str,
    address: str,
    settings: Settings,
    now: dt.datetime,
) -> None:
    if password != confirm:
        raise InvalidInput("The two passwords differ.", field="confirm")
    link = await inspect_link(token, kind="reset", now=now)
    row = await StaffUser.select().where(StaffUser.id == link.user_id).first().run()
    if row is None:
        raise NotFound("This link is not valid.")
    async with StaffInvitation._meta.db.transaction(allow_nested=True):
        await _claim(link, now)
        await set_password(row, password, settings=settings, now=now)
        await sessions.end_user_sessions(row["id"])
        await throttle.clear(throttle.account_key(row["username"]))
        await audit.record(
            "password.reset",
            actor=Actor(id=row["id"], name=row["username"]),
            target=f"user:{row['username']}",
            address=address,
            at=now,
        )


async def list_pending(now: dt.datetime) -> list[PendingLink]:
    """Invitations and reset links that are neither used nor expired, newest first."""
    rows = (
        await StaffInvitation.select()
        .where(StaffInvitation.used_at.is_null())
        .where(StaffInvitation.expires_at > now)
        .order_by(StaffInvitation.created_at, ascending=False)
        .run()
    )
    return [
        PendingLink(
            id=row["id"],
            kind=row["kind"],
            email=row["email"],
            role=row["role"],
            user_id=row["user"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
        )
        for row in rows
    ]


async def revoke(link_id: int, *, actor: StaffMember, address: str, now: dt.datetime) -> None:
    """Make a pending invitation or reset link stop working."""
    async with StaffInvitation._meta.db.transaction(allow_nested=True):
        rows = (
            await StaffInvitation.update({StaffInvitation.used_at: now})
            .where(StaffInvitation.id == link_id)
            .where(StaffInvitation.used_at.is_null())
            .returning(StaffInvitation.email, StaffInvitation.kind)
            .run()
        )
        if not rows:
            raise NotFound("No such pending link.")
        await audit.record(
            "user.invite.revoke",
            actor=actor.actor,
            target=f"email:{rows[0]['email'].lower()}",
            address=address,
            details={"kind": rows[0]["kind"]},
            at=now,
        )
