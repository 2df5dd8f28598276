"""Piccolo tables of the audit domain."""

from __future__ import annotations

from piccolo.columns import BigInt, Integer, Serial, Text, Timestamptz, Varchar
from piccolo.table import Table

__all__ = ["AuditEntry"]


class AuditEntry(Table, tablename="audit_entry"):
    """One recorded action. ``entry_hash`` covers every other field and ``prev_hash``.

    ``seq`` has no gaps (assigned under a lock), so a removed entry shows as a hole as well as a
    broken link. A database trigger refuses UPDATE, DELETE and TRUNCATE, except the erasure
    of a version 2 or 3 entry's actor, target, address, details and salt.
    """

    id: Serial  # added by Piccolo; declared for the type checker

    seq = BigInt(unique=True)
    at = Timestamptz()
    actor_id = Integer(null=True, default=None)  # no foreign key: entries outlive accounts
    actor = Varchar(length=100)
    action = Varchar(length=64)
    outcome = Varchar(length=16)
    target = Varchar(length=200)
    address = Varchar(length=64)
    details = Text()
    prev_hash = Varchar(length=64)
    entry_hash = Varchar(length=64)
    # Version 2 hashes the SHA-256 of actor, target, address and details instead of the
    # values, so an erasure (GDPR Art. 17) can blank those and the chain still verifies; the
    # database allows only that change, each field only towards blank (``erased_at`` marks
    # it). Version 3 keys those digests with ``salt`` (random, per entry), nulled at erasure so
    # a digest left behind cannot be brute-forced. Version 1 entries hash the values themselves.
    hash_version = Integer(default=1)
    actor_digest = Varchar(length=64, default="")
    target_digest = Varchar(length=64, default="")
    address_digest = Varchar(length=64, default="")
    details_digest = Varchar(length=64, default="")
    erased_at = Timestamptz(null=True, default=None)
    salt = Varchar(length=64, null=True, default=None)
