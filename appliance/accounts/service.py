"""Staff accounts: creation, sign-in with two factors, enrolment, passwords, roles.

Every state change writes an audit entry in the same transaction, so a change without its entry
(or an entry without its change) never exists.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from typing import Any

import msgspec

from appliance.accounts import sessions, throttle, totp
from appliance.accounts.passwords import check_strength, hash_password, verify_password
from appliance.accounts.tables import RecoveryCode, StaffUser
from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.config import Settings
from appliance.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    TooManyAttempts,
    Unauthenticated,
)
from appliance.validation import clean_email, clean_text, clean_username

__all__ = [
    "ROLES",
    "SignIn",
    "StaffMember",
    "TotpEnrolment",
    "begin_totp_enrolment",
    "change_password",
    "confirm_totp_enrolment",
    "create_user",
    "find_member",
    "get_member",
    "list_members",
    "regenerate_recovery_codes",
    "set_active",
    "set_role",
    "sign_in",
    "verify_second_factor",
]

ROLES = ("admin", "photographer")
_ADMIN_LOCK_ID = 0x61646D696E73
RECOVERY_CODE_COUNT = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread
_RECOVERY_CODE = re.compile(r"^[a-z0-9]{4}(-?[a-z0-9]{4}){3}$")


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

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def actor(self) -> Actor:
        return Actor(id=self.id, name=self.username)


class SignIn(msgspec.Struct, frozen=True):
    """The outcome of a correct password: who, and which step comes next."""

    user_id: int
    stage: str  # "second_factor", "enrol" (must set up TOTP first) or "full"


class TotpEnrolment(msgspec.Struct, frozen=True):
    secret: str
    uri: str
    qr_data_uri: str


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
    )


async def get_member(user_id: int) -> StaffMember | None:
    row = await StaffUser.select().where(StaffUser.id == user_id).first().run()
    return _member(row) if row else None


async def find_member(username: str) -> StaffMember | None:
    row = (
        await StaffUser.select().where(StaffUser.username == username.strip().lower()).first().run()
    )
    return _member(row) if row else None


async def list_members() -> list[StaffMember]:
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
    password_hash = hash_password(password)
    async with StaffUser._meta.db.transaction(allow_nested=True):
        if await StaffUser.exists().where(StaffUser.username == username).run():
            raise InvalidInput("This user name is taken.", field="username")
        rows = (
            await StaffUser.insert(
                StaffUser(
                    username=username,
                    email=email,
                    display_name=display_name,
                    role=role,
                    password_hash=password_hash,
                    password_changed_at=now,
                    created_at=now,
                )
            )
            .returning(*StaffUser.all_columns())
            .run()
        )
        member = _member(rows[0])
        await audit.record(
            "user.create",
            actor=actor,
            target=f"user:{member.username}",
            address=address,
            details={"role": role},
            clock=lambda: now,
        )
    return member


async def sign_in(
    username: str,
    password: str,
    *,
    address: str,
    settings: Settings,
    now: dt.datetime,
    require_2fa_for_all: bool,
) -> SignIn:
    """Check a password under throttling; unknown names cost and answer the same as wrong ones."""
    keys = [throttle.account_key(username), throttle.address_key(address)]
    name = username.strip().lower()[:64]
    try:
        await throttle.check(keys, now)
    except TooManyAttempts:
        await audit.record(
            "login",
            actor=audit.ANONYMOUS,
            outcome="refused",
            target=f"user:{name}",
            address=address,
            details={"reason": "throttled"},
            clock=lambda: now,
        )
        raise
    row = await StaffUser.select().where(StaffUser.username == name).first().run() if name else None
    password_ok = verify_password(password, row["password_hash"] if row else None)
    if row is None or not password_ok or not row["is_active"]:
        for key in keys:
            await throttle.record_failure(key, now, settings.throttle)
        await audit.record(
            "login",
            actor=audit.ANONYMOUS,
            outcome="failure",
            target=f"user:{name}",
            address=address,
            details={"reason": "wrong user name or password"},
            clock=lambda: now,
        )
        raise Unauthenticated("The user name or password is wrong.")
    if row["totp_confirmed_at"] is not None:
        stage = "second_factor"
    elif row["role"] == "admin" or require_2fa_for_all:
        stage = "enrol"
    else:
        stage = "full"
    if stage == "full":
        # Failures are forgotten only when sign-in is complete: a right password alone must not
        # reset the count, or someone who knows it could guess second-factor codes forever.
        await throttle.clear(keys[0])
    await _record_login_step(row, stage, address=address, now=now)
    return SignIn(user_id=row["id"], stage=stage)


async def _record_login_step(
    row: dict[str, Any], stage: str, *, address: str, now: dt.datetime
) -> None:
    actor = Actor(id=row["id"], name=row["username"])
    if stage == "full":
        await (
            StaffUser.update({StaffUser.last_login_at: now}).where(StaffUser.id == row["id"]).run()
        )
        action = "login"
    else:
        action = "login.password"
    await audit.record(
        action,
        actor=actor,
        target=f"user:{row['username']}",
        address=address,
        details={"next": stage},
        clock=lambda: now,
    )


async def verify_second_factor(
    user_id: int, code: str, *, address: str, settings: Settings, now: dt.datetime
) -> None:
    """Accept a TOTP code for a later time step than the last one used, or an unused recovery code.

    Both checks claim what they accept with a conditional UPDATE, so a code cannot be used twice
    even by two requests racing each other.
    """
    row = await StaffUser.select().where(StaffUser.id == user_id).first().run()
    if row is None or not row["is_active"] or row["totp_secret"] is None:
        raise Unauthenticated("Sign in again.")
    keys = [throttle.account_key(row["username"]), throttle.address_key(address)]
    await throttle.check(keys, now)
    actor = Actor(id=row["id"], name=row["username"])
    reason = await _claim_second_factor(row, code, now)
    if reason is None:
        await throttle.clear(keys[0])
        await StaffUser.update({StaffUser.last_login_at: now}).where(StaffUser.id == user_id).run()
        await audit.record(
            "login",
            actor=actor,
            target=f"user:{row['username']}",
            address=address,
            details={"second_factor": "accepted"},
            clock=lambda: now,
        )
        return
    for key in keys:
        await throttle.record_failure(key, now, settings.throttle)
    await audit.record(
        "login.second_factor",
        actor=actor,
        outcome="failure",
        target=f"user:{row['username']}",
        address=address,
        details={"reason": reason},
        clock=lambda: now,
    )
    if reason == "replayed code":
        raise Unauthenticated(
            "This code was already used. Wait for the next code in your app.", field="code"
        )
    raise Unauthenticated("That code is not valid.", field="code")


async def _claim_second_factor(row: dict[str, Any], code: str, now: dt.datetime) -> str | None:
    """None when the code is accepted (and now used up), else the reason it is not."""
    digits = totp.normalise_code(code)
    if digits is not None:
        step = totp.matching_step(row["totp_secret"], digits, now)
        if step is None:
            return "wrong code"
        claimed = (
            await StaffUser.update({StaffUser.totp_last_counter: step})
            .where(StaffUser.id == row["id"])
            .where(StaffUser.totp_last_counter.is_null() | (StaffUser.totp_last_counter < step))
            .returning(StaffUser.id)
            .run()
        )
        return None if claimed else "replayed code"
    recovery = code.strip().lower()
    if not _RECOVERY_CODE.fullmatch(recovery):
        return "malformed code"
    unused = (
        await RecoveryCode.select(RecoveryCode.id, RecoveryCode.code_hash)
        .where(RecoveryCode.user == row["id"])
        .where(RecoveryCode.used_at.is_null())
        .run()
    )
    match = None
    for candidate in unused:
        if _recovery_matches(recovery, candidate["code_hash"]):
            match = candidate["id"]
    if match is None:
        return "wrong recovery code"
    claimed = (
        await RecoveryCode.update({RecoveryCode.used_at: now})
        .where(RecoveryCode.id == match)
        .where(RecoveryCode.used_at.is_null())
        .returning(RecoveryCode.id)
        .run()
    )
    return None if claimed else "reused recovery code"


def _hash_recovery(code: str, salt: str | None = None) -> str:
    salt = salt or secrets.token_hex(16)
    digest = hashlib.sha256(f"{salt}:{code.replace('-', '')}".encode()).hexdigest()
    return f"{salt}${digest}"


def _recovery_matches(code: str, stored: str) -> bool:
    salt, _, _ = stored.partition("$")
    return hmac.compare_digest(_hash_recovery(code, salt), stored)


def _new_recovery_codes() -> list[str]:
    # 16 characters of a 31-letter alphabet: about 79 bits each, so a fast salted hash suffices.
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(16))
        codes.append("-".join(raw[i : i + 4] for i in range(0, 16, 4)))
    return codes


async def _replace_recovery_codes(user_id: int) -> list[str]:
    codes = _new_recovery_codes()
    await RecoveryCode.delete().where(RecoveryCode.user == user_id).run()
    await RecoveryCode.insert(
        *[RecoveryCode(user=user_id, code_hash=_hash_recovery(code)) for code in codes]
    ).run()
    return codes


async def begin_totp_enrolment(user_id: int, *, issuer: str) -> TotpEnrolment:
    """The secret to enrol (the same one on reload, until confirmed) with its QR code."""
    row = await StaffUser.select().where(StaffUser.id == user_id).first().run()
    if row is None:
        raise NotFound("No such user.")
    if row["totp_confirmed_at"] is not None:
        raise Conflict("Two-factor authentication is already set up for this account.")
    secret = row["totp_secret"]
    if secret is None:
        secret = totp.new_secret()
        await (
            StaffUser.update({StaffUser.totp_secret: secret})
            .where(StaffUser.id == user_id)
            .where(StaffUser.totp_secret.is_null())
            .run()
        )
        # Re-read: a second tab may have stored its secret first; both must show the same one.
        fresh = (
            await StaffUser.select(StaffUser.totp_secret)
            .where(StaffUser.id == user_id)
            .first()
            .run()
        )
        assert fresh is not None
        secret = fresh["totp_secret"]
    uri = totp.provisioning_uri(secret, account=row["username"], issuer=issuer or "Fotostudio")
    return TotpEnrolment(secret=secret, uri=uri, qr_data_uri=totp.qr_data_uri(uri))


async def confirm_totp_enrolment(
    user_id: int, code: str, *, address: str, now: dt.datetime
) -> list[str]:
    """Check the first code from the app, switch 2FA on and return ten fresh recovery codes.

    The codes are returned once and only their hashes are kept.
    """
    row = await StaffUser.select().where(StaffUser.id == user_id).first().run()
    if row is None or row["totp_secret"] is None:
        raise Conflict("Start the set-up of two-factor authentication again.")
    if row["totp_confirmed_at"] is not None:
        raise Conflict("Two-factor authentication is already set up for this account.")
    digits = totp.normalise_code(code)
    step = totp.matching_step(row["totp_secret"], digits, now) if digits else None
    actor = Actor(id=row["id"], name=row["username"])
    if step is None:
        await audit.record(
            "2fa.enrol",
            actor=actor,
            outcome="failure",
            target=f"user:{row['username']}",
            address=address,
            details={"reason": "wrong code"},
            clock=lambda: now,
        )
        raise InvalidInput(
            "That code does not match. Check the time on your phone and enter the current code.",
            field="code",
        )
    async with StaffUser._meta.db.transaction(allow_nested=True):
        confirmed = (
            await StaffUser.update(
                {StaffUser.totp_confirmed_at: now, StaffUser.totp_last_counter: step}
            )
            .where(StaffUser.id == user_id)
            .where(StaffUser.totp_confirmed_at.is_null())
            .returning(StaffUser.id)
            .run()
        )
        if not confirmed:
            raise Conflict("Two-factor authentication is already set up for this account.")
        codes = await _replace_recovery_codes(user_id)
        await audit.record(
            "2fa.enrol",
            actor=actor,
            target=f"user:{row['username']}",
            address=address,
            clock=lambda: now,
        )
    return codes


async def regenerate_recovery_codes(
    user_id: int, password: str, *, address: str, now: dt.datetime
) -> list[str]:
    """New codes replace all old ones; asks for the password again."""
    row = await StaffUser.select().where(StaffUser.id == user_id).first().run()
    if row is None or row["totp_confirmed_at"] is None:
        raise Conflict("Set up two-factor authentication first.")
    if not verify_password(password, row["password_hash"]):
        raise InvalidInput("The password is wrong.", field="password")
    async with StaffUser._meta.db.transaction(allow_nested=True):
        codes = await _replace_recovery_codes(user_id)
        await audit.record(
            "2fa.recovery_codes",
            actor=Actor(id=row["id"], name=row["username"]),
            target=f"user:{row['username']}",
            address=address,
            clock=lambda: now,
        )
    return codes


async def change_password(
    user_id: int,
    current: str,
    new: str,
    *,
    address: str,
    settings: Settings,
    now: dt.datetime,
) -> None:
    """Replace the password and end every session of the user (the caller starts a new one)."""
    row = await StaffUser.select().where(StaffUser.id == user_id).first().run()
    if row is None:
        raise NotFound("No such user.")
    if not verify_password(current, row["password_hash"]):
        raise InvalidInput("The current password is wrong.", field="current_password")
    async with StaffUser._meta.db.transaction(allow_nested=True):
        await set_password(row, new, settings=settings, now=now)
        await sessions.end_user_sessions(user_id)
        await audit.record(
            "password.change",
            actor=Actor(id=row["id"], name=row["username"]),
            target=f"user:{row['username']}",
            address=address,
            clock=lambda: now,
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
    await (
        StaffUser.update(
            {StaffUser.password_hash: hash_password(new), StaffUser.password_changed_at: now}
        )
        .where(StaffUser.id == row["id"])
        .run()
    )


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
    role = clean_role(role)
    target = await get_member(user_id)
    if target is None:
        raise NotFound("No such user.")
    if target.role == role:
        return target
    async with StaffUser._meta.db.transaction(allow_nested=True):
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
            clock=lambda: now,
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
            clock=lambda: now,
        )
    member = await get_member(user_id)
    assert member is not None
    return member
