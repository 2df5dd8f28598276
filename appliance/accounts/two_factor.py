"""The second factor: TOTP enrolment, recovery codes, and checking a code at sign-in.

Every code that is accepted is used up with a conditional UPDATE, so a code cannot be used
twice, not even by two requests racing each other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from typing import Any

import msgspec

from appliance.accounts import totp
from appliance.accounts.service import recheck_password
from appliance.accounts.tables import RecoveryCode, StaffUser
from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.config import ThrottleSettings
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.tokens import same

__all__ = [
    "MAX_CODE_FAILURES",
    "RECOVERY_CODE_COUNT",
    "Claim",
    "TotpEnrolment",
    "begin_enrolment",
    "check_enrolment_code",
    "claim_code",
    "confirm_enrolment",
    "enable_totp",
    "regenerate_recovery_codes",
]

RECOVERY_CODE_COUNT = 10
# Wrong authenticator codes in a row after which only a recovery code signs in.
MAX_CODE_FAILURES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread
_RECOVERY_CODE = re.compile(r"^[a-z0-9]{4}(-?[a-z0-9]{4}){3}$")


class TotpEnrolment(msgspec.Struct, frozen=True):
    secret: str
    uri: str
    qr_data_uri: str


class Claim(msgspec.Struct, frozen=True):
    """The outcome of a second-factor code: ``method`` when accepted, else ``reason``."""

    method: str | None = None  # "totp" or "recovery code"
    reason: str | None = None
    recovery_codes_left: int | None = None


async def _user_row(user_id: int) -> dict[str, Any]:
    row = await StaffUser.select().where(StaffUser.id == user_id).first().run()
    if row is None:
        raise NotFound("No such user.")
    return row


def _hash_recovery(code: str, salt: str | None = None) -> str:
    salt = salt or secrets.token_hex(16)
    digest = hashlib.sha256(f"{salt}:{code.replace('-', '')}".encode()).hexdigest()
    return f"{salt}${digest}"


def _recovery_matches(code: str, stored: str) -> bool:
    salt, _, _ = stored.partition("$")
    return same(stored, _hash_recovery(code, salt))


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


async def claim_code(row: dict[str, Any], code: str, now: dt.datetime) -> Claim:
    """Accept and use up a TOTP code for a later time step than the last, or a recovery code."""
    digits = totp.normalise_code(code)
    if digits is not None:
        if row["second_factor_failures"] >= MAX_CODE_FAILURES:
            return Claim(reason="too many wrong codes in a row")
        step = totp.matching_step(row["totp_secret"], digits, now)
        if step is None:
            await (
                StaffUser.update(
                    {StaffUser.second_factor_failures: StaffUser.second_factor_failures + 1}
                )
                .where(StaffUser.id == row["id"])
                .run()
            )
            return Claim(reason="wrong code")
        claimed = (
            await StaffUser.update(
                {StaffUser.totp_last_counter: step, StaffUser.second_factor_failures: 0}
            )
            .where(StaffUser.id == row["id"])
            .where(StaffUser.totp_last_counter.is_null() | (StaffUser.totp_last_counter < step))
            .returning(StaffUser.id)
            .run()
        )
        return Claim(method="totp") if claimed else Claim(reason="replayed code")
    recovery = code.strip().lower()
    if not _RECOVERY_CODE.fullmatch(recovery):
        return Claim(reason="malformed code")
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
        return Claim(reason="wrong recovery code")
    claimed = (
        await RecoveryCode.update({RecoveryCode.used_at: now})
        .where(RecoveryCode.id == match)
        .where(RecoveryCode.used_at.is_null())
        .returning(RecoveryCode.id)
        .run()
    )
    if not claimed:
        return Claim(reason="reused recovery code")
    # A recovery code proves the person: the run of wrong authenticator codes is over.
    await (
        StaffUser.update({StaffUser.second_factor_failures: 0})
        .where(StaffUser.id == row["id"])
        .run()
    )
    return Claim(method="recovery code", recovery_codes_left=len(unused) - 1)


async def begin_enrolment(user_id: int, *, issuer: str) -> TotpEnrolment:
    """The secret to enrol (the same one on reload, until confirmed) with its QR code."""
    row = await _user_row(user_id)
    if row["totp_confirmed_at"] is not None:
        raise Conflict("Two-factor authentication is already set up for this account.")
    if row["totp_secret"] is None:
        await (
            StaffUser.update({StaffUser.totp_secret: totp.new_secret()})
            .where(StaffUser.id == user_id)
            .where(StaffUser.totp_secret.is_null())
            .run()
        )
        # Re-read: a second tab may have stored its secret first; both must show the same one.
        row = await _user_row(user_id)
    secret = row["totp_secret"]
    uri = totp.provisioning_uri(secret, account=row["username"], issuer=issuer or "Fotostudio")
    return TotpEnrolment(secret=secret, uri=uri, qr_data_uri=totp.qr_data_uri(uri))


async def check_enrolment_code(user_id: int, code: str, *, address: str, now: dt.datetime) -> int:
    """The time step of the first code from the app; a wrong code is audited and refused.

    Runs outside any transaction of the caller, so the audit entry of a failure is kept.
    """
    row = await _user_row(user_id)
    if row["totp_secret"] is None:
        raise Conflict("Start the set-up of two-factor authentication again.")
    if row["totp_confirmed_at"] is not None:
        raise Conflict("Two-factor authentication is already set up for this account.")
    digits = totp.normalise_code(code)
    step = totp.matching_step(row["totp_secret"], digits, now) if digits else None
    if step is None:
        await audit.record(
            "2fa.enrol",
            actor=Actor(id=row["id"], name=row["username"]),
            outcome="failure",
            target=f"user:{row['username']}",
            address=address,
            details={"reason": "wrong code"},
            at=now,
        )
        raise InvalidInput(
            "That code does not match. Check the time on your phone and enter the current code.",
            field="code",
        )
    return step


async def enable_totp(user_id: int, step: int, *, address: str, now: dt.datetime) -> list[str]:
    """Switch 2FA on at ``step`` and return ten fresh recovery codes (shown once, kept hashed)."""
    row = await _user_row(user_id)
    async with StaffUser._meta.db.transaction(allow_nested=True):
        confirmed = (
            await StaffUser.update(
                {
                    StaffUser.totp_confirmed_at: now,
                    StaffUser.totp_last_counter: step,
                    StaffUser.second_factor_failures: 0,
                }
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
            actor=Actor(id=row["id"], name=row["username"]),
            target=f"user:{row['username']}",
            address=address,
            at=now,
        )
    return codes


async def confirm_enrolment(
    user_id: int, code: str, *, address: str, now: dt.datetime
) -> list[str]:
    """Check the first code from the app, then switch 2FA on; returns the recovery codes."""
    step = await check_enrolment_code(user_id, code, address=address, now=now)
    return await enable_totp(user_id, step, address=address, now=now)


async def regenerate_recovery_codes(
    user_id: int, password: str, *, address: str, rules: ThrottleSettings, now: dt.datetime
) -> list[str]:
    """New codes replace all old ones; asks for the password again."""
    row = await _user_row(user_id)
    if row["totp_confirmed_at"] is None:
        raise Conflict("Set up two-factor authentication first.")
    await recheck_password(row, password, field="password", address=address, rules=rules, now=now)
    async with StaffUser._meta.db.transaction(allow_nested=True):
        codes = await _replace_recovery_codes(user_id)
        await audit.record(
            "2fa.recovery_codes",
            actor=Actor(id=row["id"], name=row["username"]),
            target=f"user:{row['username']}",
            address=address,
            at=now,
        )
    return codes
