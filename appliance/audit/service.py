"""Append entries to the hash-chained audit log and verify the chain.

Each entry stores the hash of its predecessor and a hash over all of its own fields, so an entry
that is altered no longer matches its hash, and one that is removed breaks the link of the entry
after it (and leaves a hole in ``seq``).

Entries of hash version 2 hash the SHA-256 of their actor, target, address and details rather
than the values: :func:`erase_person` can blank those (a staff member's name, address, e-mail)
when the person is erased, and the chain still verifies. An entry not erased must still match
its digests, so altering a value is caught as before.
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
    "ERASED",
    "GENESIS_HASH",
    "Actor",
    "AuditRecord",
    "ChainReport",
    "erase_person",
    "list_entries",
    "record",
    "verify_chain",
]

GENESIS_HASH = "0" * 64
# Appends are serialised with this transaction-scoped advisory lock so `seq` has no gaps and two
# processes never chain onto the same predecessor.
_APPEND_LOCK_ID = 0x61756469740A
_VERIFY_BATCH = 1000
HASH_VERSION = 2
ERASED = "erased"  # what an erased actor and target read afterwards
_ERASABLE = ("actor", "target", "address", "details")


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


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _hash_v2(fields: dict[str, Any], digests: dict[str, str]) -> str:
    """Version 2: the erasable fields enter the hash as their digests, marked as such."""
    return _entry_hash(
        **{
            **fields,
            **{name: f"sha256:{digests[name]}" for name in _ERASABLE},
        }
    )


def _row_hash(row: dict[str, Any]) -> tuple[str, str | None]:
    """The hash a stored row should have, and a problem found before hashing (a value that no
    longer matches its digest, in an entry not erased)."""
    fields = {key: row[key] for key in _HASHED}
    if row.get("hash_version", 1) < HASH_VERSION:
        return _entry_hash(**fields), None
    digests = {name: row[f"{name}_digest"] for name in _ERASABLE}
    if row["erased_at"] is None:
        changed = [name for name in _ERASABLE if _digest(row[name]) != digests[name]]
        if changed:
            return "", f"its {changed[0]} was altered"
    elif (row["actor"], row["target"], row["address"], row["details"]) != (
        ERASED,
        ERASED,
        "",
        "{}",
    ):
        return "", "an erased entry holds values again"
    return _hash_v2(fields, digests), None


_HASHED = (
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
        digests = {name: _digest(fields[name]) for name in _ERASABLE}
        await AuditEntry.insert(
            AuditEntry(
                **fields,
                entry_hash=_hash_v2(fields, digests),
                hash_version=HASH_VERSION,
                actor_digest=digests["actor"],
                target_digest=digests["target"],
                address_digest=digests["address"],
                details_digest=digests["details"],
            )
        ).run()
    return seq


async def erase_person(*, actor_id: int | None, targets: list[str], now: dt.datetime) -> int:
    """Blank actor, target, address and details of every version 2 entry made by
    ``actor_id`` or about one of ``targets`` (e.g. ``user:carla``); returns how many.

    The entries themselves stay, with their action, outcome and time: the log still shows
    that something was done, no longer by or to whom. Version 1 entries cannot be erased
    without breaking the chain and keep their values.
    """
    about = AuditEntry.target.is_in(targets) if targets else AuditEntry.id < 0
    by = AuditEntry.actor_id == actor_id if actor_id is not None else AuditEntry.id < 0
    rows = (
        await AuditEntry.update(
            {
                AuditEntry.actor: ERASED,
                AuditEntry.target: ERASED,
                AuditEntry.address: "",
                AuditEntry.details: "{}",
                AuditEntry.erased_at: now,
            }
        )
        .where(
            (AuditEntry.hash_version == HASH_VERSION)
            & AuditEntry.erased_at.is_null()
            & (about | by)
        )
        .returning(AuditEntry.id)
        .run()
    )
    return len(rows)


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
            expected, problem = _row_hash(row)
            if problem is not None or expected != row["entry_hash"]:
                why = problem or "its hash no longer matches"
                return ChainReport(
                    checked=checked,
                    first_bad_seq=row["seq"],
                    problem=f"entry {row['seq']} was altered ({why})",
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
