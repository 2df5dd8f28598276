"""Piccolo tables of the accounts domain."""

from __future__ import annotations

from piccolo.columns import (
    BigInt,
    Boolean,
    ForeignKey,
    Integer,
    OnDelete,
    Serial,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table

__all__ = ["LoginThrottle", "RecoveryCode", "StaffInvitation", "StaffSession", "StaffUser"]


class StaffUser(Table, tablename="staff_user"):
    """A person of the studio who signs in: an admin or a photographer."""

    id: Serial  # added by Piccolo; declared for the type checker

    username = Varchar(length=64, unique=True)  # always stored lower-case
    email = Varchar(length=254)
    display_name = Varchar(length=100)
    role = Varchar(length=20)
    password_hash = Text()
    is_active = Boolean(default=True)
    # The language of the e-mail this person receives; "" means the studio's default.
    language = Varchar(length=8, default="")
    totp_secret = Varchar(length=64, null=True, default=None)
    totp_confirmed_at = Timestamptz(null=True, default=None)
    # The time-step counter of the last accepted code: a code is accepted only for a later step,
    # which is what makes a replayed code useless.
    totp_last_counter = BigInt(null=True, default=None)
    # Wrong authenticator codes in a row, never reset by time: past a bound only a recovery
    # code (or an admin reset) signs in, so codes cannot be guessed slowly over months.
    second_factor_failures = Integer(default=0)
    password_changed_at = Timestamptz()
    created_at = Timestamptz()
    last_login_at = Timestamptz(null=True, default=None)


class RecoveryCode(Table, tablename="staff_recovery_code"):
    """A single-use second factor; only a salted hash is stored."""

    id: Serial  # added by Piccolo; declared for the type checker

    user = ForeignKey(StaffUser, on_delete=OnDelete.cascade)
    code_hash = Varchar(length=128)
    used_at = Timestamptz(null=True, default=None)


class StaffSession(Table, tablename="staff_session"):
    """A server-side session; the cookie carries a random id whose SHA-256 is stored here."""

    id: Serial  # added by Piccolo; declared for the type checker

    token_hash = Varchar(length=64, unique=True)
    user = ForeignKey(StaffUser, on_delete=OnDelete.cascade)
    stage = Varchar(length=16)  # "second_factor", "enrol" or "full"
    created_at = Timestamptz()
    last_seen_at = Timestamptz()
    expires_at = Timestamptz()
    address = Varchar(length=64)
    user_agent = Varchar(length=200)


class StaffInvitation(Table, tablename="staff_invitation"):
    """An expiring, single-use link: an invitation to join, or an admin-driven password reset."""

    id: Serial  # added by Piccolo; declared for the type checker

    token_hash = Varchar(length=64, unique=True)
    kind = Varchar(length=16)  # "invite" or "reset"
    email = Varchar(length=254)
    role = Varchar(length=20)
    user = ForeignKey(StaffUser, null=True, default=None, on_delete=OnDelete.cascade)
    created_by = ForeignKey(StaffUser, null=True, default=None, on_delete=OnDelete.set_null)
    created_at = Timestamptz()
    expires_at = Timestamptz()
    used_at = Timestamptz(null=True, default=None)


class LoginThrottle(Table, tablename="login_throttle"):
    """Failed sign-ins per key ("account:<name>" or "address:<ip>"), shared by every process."""

    id: Serial  # added by Piccolo; declared for the type checker

    key = Varchar(length=200, unique=True)
    failures = Integer(default=0)
    window_started_at = Timestamptz()
    blocked_until = Timestamptz(null=True, default=None)
