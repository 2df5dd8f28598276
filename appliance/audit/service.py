"""Append entries to the hash-chained audit log and verify the chain.

Each entry stores the hash of its predecessor and a hash over all of its own fields, so an entry
that is altered no longer matches its hash, and one that is removed breaks the link of the entry
after it (and leaves a hole in ``seq``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import msgspec

from appliance.audit.tables import AuditEntry
from appliance.clock import utcnow

__all__ = [
    "GENESIS_HASH",
    "Actor",
    "AuditRecord",
    "ChainReport",
    "list_entries",
    "record",
    "verify_chain",
]

GENESIS_HASH = "0" * 64
# Appends are serialised with this transaction-scoped advisory lock so `seq` has no gaps and two
# processes never chain onto the same predecessor.
_APPEND_LOCK_ID = 0x61756469740A
_VERIFY_BATCH = 1000


class Actor(msgspec.Struct, frozen=True):
    """Who did it: a staff user, or a label such as ``anonymous`` or ``system``."""

    id: int | None
    name: str


ANONYMOUS = Actor(id=None, name="anonymous")


class AuditRecord(msgspec.Struct, frozen=True):
    seq: int
    at: dt.datetime
    actor: str
    action: str
    outcome: str
    target: str
    address: str
    details: dict[str, Any]


class ChainReport(msgspec.Struct, frozen=True):
    """The result of a verification: ``first_bad_seq`` is None when the chain is intact."""

    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.first_bad_seq is None


def _entry_hash(
    *,
    seq: int,
    at: dt.datetime,
    actor_id: int | None,
    actor: str,
    action: str,
    outcome: str,
    target: str,
    address: str,
    details: str,
    prev_hash: str,
) -> str:
    canonical = json.dumps(
        [
            seq,
            at.astimezone(dt.UTC).isoformat(),
            actor_id,
            actor,
            action,
            outcome,
            target,
            address,
            details,
            prev_hash,
        ],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def record(
    action: str,
    *,
    actor: Actor,
    outcome: str = "success",
    target: str = "",
    address: str = "",
    details: dict[str, Any] | None = None,
    at: dt.datetime | None = None,
) -> int:
    """Append one entry; runs inside the caller's transaction when there is one. Returns its seq.

    ``details`` must never carry a secret (passwords, tokens, codes): only what a reviewer needs.
    """
    db = AuditEntry._meta.db
    body = json.dumps(details or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    async with db.transaction(allow_nested=True):
        await AuditEntry.raw("SELECT pg_advisory_xact_lock({})", _APPEND_LOCK_ID)
        last = (
            await AuditEntry.select(AuditEntry.seq, AuditEntry.entry_hash)
            .order_by(AuditEntry.seq, ascending=False)
            .first()
            .run()
        )
        seq = last["seq"] + 1 if last else 1
        prev_hash = last["entry_hash"] if last else GENESIS_HASH
        at = (at or utcnow()).astimezone(dt.UTC)
        fields: dict[str, Any] = {
            "seq": seq,
            "at": at,
            "actor_id": actor.id,
            "actor": actor.name[:100],
            "action": action[:64],
            "outcome": outcome[:16],
            "target": target[:200],
            "address": address[:64],
            "details": body,
            "prev_hash": prev_hash,
        }
        await AuditEntry.insert(AuditEntry(**fields, entry_hash=_entry_hash(**fields))).run()
    return seq


async def verify_chain() -> ChainReport:
    """Walk the whole log in order and report the first entry that was altered or removed."""
    expected_seq = 1
    prev_hash = GENESIS_HASH
    checked = 0
    while True:
        rows = (
            await AuditEntry.select()
            .where(AuditEntry.seq >= expected_seq)
            .order_by(AuditEntry.seq)
            .limit(_VERIFY_BATCH)
            .run()
        )
        if not rows:
            return ChainReport(checked=checked)
        for row in rows:
            if row["seq"] != expected_seq:
                return ChainReport(
                    checked=checked,
                    first_bad_seq=expected_seq,
                    problem=f"entry {expected_seq} is missing (next present is {row['seq']})",
                )
            if row["prev_hash"] != prev_hash:
                return ChainReport(
                    checked=checked,
                    first_bad_seq=row["seq"],
                    problem=f"entry {row['seq']} does not link to the entry before it",
                )
            fields: dict[str, Any] = {
                key: row[key]
                for key in (
                    "seq",
                    "at",
                    "actor_id",
                    "actor",
                    "action",
                    "outcome",
                    "target",
                    "address",
                    "details",
                    "prev_hash",
                )
            }
            if _entry_hash(**fields) != row["entry_hash"]:
                return ChainReport(
                    checked=checked,
                    first_bad_seq=row["seq"],
                    problem=f"entry {row['seq']} was altered (its hash no longer matches)",
                )
            prev_hash = row["entry_hash"]
            expected_seq += 1
            checked += 1


async def list_entries(*, before_seq: int | None = None, limit: int = 50) -> list[AuditRecord]:
    """Newest first, for the admin page; ``before_seq`` pages further back."""
    query = AuditEntry.select().order_by(AuditEntry.seq, ascending=False).limit(limit)
    if before_seq is not None:
        query = query.where(AuditEntry.seq < before_seq)
    return [
        AuditRecord(
            seq=row["seq"],
            at=row["at"],
            actor=row["actor"],
            action=row["action"],
            outcome=row["outcome"],
            target=row["target"],
            address=row["address"],
            details=json.loads(row["details"] or "{}"),
        )
        for row in await query.run()
    ]
