"""Signing in: the password step, the second factor, and signing out.

Each step counts as a failure against its throttle keys before anything is checked and is
refunded when it turns out right (see :mod:`appliance.accounts.throttle`). The account's key is
left out when the browser carries this account's device cookie: an attacker elsewhere can then
slow down guesses at the account without locking its owner out of their usual browser.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Literal

import msgspec

from appliance.accounts import sessions, throttle, two_factor
from appliance.accounts.passwords import verify_password_async
from appliance.accounts.tables import StaffUser
from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.config import Settings
from appliance.errors import Unauthenticated

__all__ = ["SignIn", "Stage", "sign_in", "sign_out", "verify_second_factor"]

log = logging.getLogger(__name__)

Stage = Literal["second_factor", "enrol", "full"]


class SignIn(msgspec.Struct, frozen=True):
    """The outcome of a correct password: who, and which step comes next."""

    user_id: int
    stage: Stage  # "enrol": the account must set up TOTP before anything else


def _keys(username: str, address: str, *, trusted: bool) -> list[str]:
    keys = [throttle.address_key(address)]
    if not trusted:
        keys.append(throttle.account_key(username))
    return keys


async def _audit_blocks(
    attempt: throttle.Attempt, *, target: str, address: str, now: dt.datetime
) -> None:
    """One entry when a failure starts a block (not one for every refused request after it)."""
    for key, seconds in attempt.blocked.items():
        await audit.record(
            "login.blocked",
            actor=audit.ANONYMOUS,
            outcome="refused",
            target=target,
            address=address,
            details={"by": key.partition(":")[0], "seconds": seconds},
            at=now,
        )


async def sign_in(
    username: str,
    password: str,
    *,
    address: str,
    settings: Settings,
    now: dt.datetime,
    require_2fa_for_all: bool,
    device_user_id: int | None = None,
) -> SignIn:
    """Check a password under throttling; unknown names cost and answer the same as wrong ones.

    ``device_user_id`` is the account this browser's device cookie vouches for, if any.
    """
    name = username.strip().lower()[:64]
    row = await StaffUser.select().where(StaffUser.username == name).first().run() if name else None
    trusted = row is not None and row["id"] == device_user_id
    attempt = await throttle.reserve(_keys(name, address, trusted=trusted), now, settings.throttle)
    password_ok = await verify_password_async(password, row["password_hash"] if row else None)
    # An unknown name is recorded as such: people type passwords into the name field.
    target = f"user:{name}" if row is not None else "user:(unknown)"
    if row is None or not password_ok or not row["is_active"]:
        await audit.record(
            "login",
            actor=audit.ANONYMOUS,
            outcome="failure",
            target=target,
            address=address,
            details={"reason": "wrong user name or password"},
            at=now,
        )
        await _audit_blocks(attempt, target=target, address=address, now=now)
        raise Unauthenticated("The user name or password is wrong.")
    stage: Stage
    if row["totp_confirmed_at"] is not None:
        stage = "second_factor"
    elif row["role"] == "admin" or require_2fa_for_all:
        stage = "enrol"
    else:
        stage = "full"
    # Failures are forgotten only when sign-in is complete: a right password alone must not
    # reset the count, or someone who knows it could guess second-factor codes forever.
    forget = (throttle.account_key(name),) if stage == "full" else ()
    await throttle.refund(attempt, settings.throttle, forget=forget)
    actor = Actor(id=row["id"], name=row["username"])
    async with StaffUser._meta.db.transaction(allow_nested=True):
        if stage == "full":
            await (
                StaffUser.update({StaffUser.last_login_at: now})
                .where(StaffUser.id == row["id"])
                .run()
            )
        await audit.record(
            "login" if stage == "full" else "login.password",
            actor=actor,
            target=f"user:{row['username']}",
            address=address,
            details={"next": stage},
            at=now,
        )
    return SignIn(user_id=row["id"], stage=stage)


async def verify_second_factor(
    user_id: int,
    code: str,
    *,
    address: str,
    settings: Settings,
    now: dt.datetime,
    device_user_id: int | None = None,
) -> None:
    """Accept a TOTP code for a later time step than the last one used, or an unused recovery
    code; anything else is a failure counted like a wrong password."""
    row: dict[str, Any] | None = (
        await StaffUser.select().where(StaffUser.id == user_id).first().run()
    )
    if row is None or not row["is_active"] or row["totp_secret"] is None:
        raise Unauthenticated("Sign in again.")
    username = row["username"]
    keys = _keys(username, address, trusted=row["id"] == device_user_id)
    attempt = await throttle.reserve(keys, now, settings.throttle)
    claim = await two_factor.claim_code(row, code, now)
    actor = Actor(id=row["id"], name=username)
    if claim.method is not None:
        await throttle.refund(attempt, settings.throttle, forget=(throttle.account_key(username),))
        details: dict[str, Any] = {"second_factor": claim.method}
        if claim.recovery_codes_left is not None:
            details["recovery_codes_left"] = claim.recovery_codes_left
        async with StaffUser._meta.db.transaction(allow_nested=True):
            await (
                StaffUser.update({StaffUser.last_login_at: now})
                .where(StaffUser.id == user_id)
                .run()
            )
            await audit.record(
                "login",
                actor=actor,
                target=f"user:{username}",
                address=address,
                details=details,
                at=now,
            )
        return
    await audit.record(
        "login.second_factor",
        actor=actor,
        outcome="failure",
        target=f"user:{username}",
        address=address,
        details={"reason": claim.reason},
        at=now,
    )
    await _audit_blocks(attempt, target=f"user:{username}", address=address, now=now)
    if claim.reason == "replayed code":
        raise Unauthenticated(
            "This code was already used. Wait for the next code in your app.", field="code"
        )
    if claim.reason == "too many wrong codes in a row":
        raise Unauthenticated(
            "Too many wrong codes in a row. Sign in with one of your recovery codes, or ask an "
            "admin to reset your two-factor authentication.",
            field="code",
        )
    raise Unauthenticated("That code is not valid.", field="code")


async def sign_out(token: str, *, actor: Actor, address: str, now: dt.datetime) -> None:
    """End the session of ``token`` and record it."""
    async with StaffUser._meta.db.transaction(allow_nested=True):
        await sessions.end_session(token)
        await audit.record(
            "logout", actor=actor, target=f"user:{actor.name}", address=address, at=now
        )
