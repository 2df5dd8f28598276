"""Append entries to the hash-chained audit log and verify the chain.

Each entry stores the hash of its predecessor and a hash over all of its own fields, so an entry
that is altered no longer matches its hash, and one that is removed breaks the link of the entry
after it (and leaves a hole in ``seq``).

Entries of hash version 2 and 3 hash digests of their actor, target, address and details
rather than the values: :func:`erase_person` can blank those (a staff member's name, address,
e-mail) when the person is erased, and the chain still verifies. An entry not erased must still
match its digests, so altering a value is caught as before. Version 2 digests are plain SHA-256,
which a short value (an IPv4 address) gives away to brute force; version 3 digests are keyed by
a random salt of the entry's own, nulled with the values, so what stays cannot be guessed back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
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
HASH_VERSION = 3
ERASED = "erased"  # what an erased actor and target read afterwards
_ERASABLE = ("actor", "target", "address", "details")
_BLANK = {"actor": ERASED, "target": ERASED, "address": "", "details": "{}"}
_SALT_BYTES = 32


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


def _digest(value: str, salt: str | None = None) -> str:
    """Plain SHA-256 for version 2; HMAC-SHA256 keyed by the entry's salt for version 3."""
    if salt is None:
        return hashlib.sha256(value.encode()).hexdigest()
    return hmac.new(bytes.fromhex(salt), value.encode(), hashlib.sha256).hexdigest()


def _hash_digests(fields: dict[str, Any], digests: dict[str, str], version: int) -> str:
    """Versions 2 and 3: the erasable fields enter the hash as their digests, marked as such."""
    mark = "sha256" if version == 2 else "hmac-sha256"
    return _entry_hash(
        **{
            **fields,
            **{name: f"{mark}:{digests[name]}" for name in _ERASABLE},
        }
    )


def _row_hash(row: dict[str, Any]) -> tuple[str, str | None]:
    """The hash a stored row should have, and a problem found before hashing.

    An entry not erased must match its digests. An erased one (``erased_at`` set) always has
    actor and address blanked; its target and details may be kept (an entry made *by* an erased
    staff member keeps what it was about). Its hash is then checked over the stored digests,
    never recomputed from the values: a version 2 entry's kept values must still match their
    digests, a version 3 entry's cannot be checked any more because its salt is gone.
    """
    fields = {key: row[key] for key in _HASHED}
    version = row.get("hash_version", 1)
    if version < 2:  # version 1 hashes the values
        return _entry_hash(**fields), None
    digests = {name: row[f"{name}_digest"] for name in _ERASABLE}
    salt = row.get("salt")
    if row["erased_at"] is None:
        if version >= 3 and salt is None:
            return "", "its salt is missing"
        changed = [name for name in _ERASABLE if _digest(row[name], salt) != digests[name]]
        if changed:
            return "", f"its {changed[0]} was altered"
    elif (row["actor"], row["address"]) != (ERASED, "") or salt is not None:
        return "", "an erased entry holds values again"
    elif version == 2:  # unsalted: kept values can still be checked
        changed = [
            name
            for name in ("target", "details")
            if row[name] != _BLANK[name] and _digest(row[name]) != digests[name]
        ]
        if changed:
            return "", f"its {changed[0]} was altered"
    return _hash_digests(fields, digests, version), None


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
        salt = secrets.token_hex(_SALT_BYTES)
        digests = {name: _digest(fields[name], salt) for name in _ERASABLE}
        await AuditEntry.insert(
            AuditEntry(
                **fields,
                entry_hash=_hash_digests(fields, digests, HASH_VERSION),
                hash_version=HASH_VERSION,
                salt=salt,
                actor_digest=digests["actor"],
                target_digest=digests["target"],
                address_digest=digests["address"],
                details_digest=digests["details"],
            )
        ).run()
    return seq


async def erase_person(
    *,
    actor_id: int | None,
    targets: list[str],
    now: dt.datetime,
    mentions: list[str] | None = None,
) -> int:
    """Erase a person from every entry of version 2 or later; returns how many entries changed.

    Entries about one of ``targets`` (e.g. ``user:carla``, ``client:7``, matched in any case)
    lose actor, target, address and details. Entries made by ``actor_id`` lose the actor's name
    and address only: what they did stays with its target (a client's trail of who opened their
    record), and their details go only when they name the person (one of ``mentions``,
    case-insensitive). The salt goes with the first erasure, so a kept digest cannot be guessed
    back.

    The entries themselves stay, with their action, outcome and time. Version 1 entries
    cannot be erased without breaking the chain and keep their values.
    """
    # Each field only ever moves towards its blank value, so an entry made by one erased
    # person and about another is erased by both purges, in either order.
    erased = 0
    if targets:
        rows = await AuditEntry.raw(
            "UPDATE audit_entry SET actor = {}, target = {}, address = '', details = {},"
            " salt = NULL, erased_at = coalesce(erased_at, {})"
            " WHERE hash_version >= 2 AND lower(target) = ANY({}) RETURNING id",
            ERASED,
            ERASED,
            _BLANK["details"],
            now,
            # Any case: an entry may hold an address as it was typed (Carla.Reyes@...) while
            # the purge collects addresses in lower case; user names are lower case already.
            [target.lower() for target in targets],
        )
        erased += len(rows)
    if actor_id is not None:
        rows = await AuditEntry.raw(
            "UPDATE audit_entry SET actor = {}, address = '', salt = NULL,"
            " erased_at = coalesce(erased_at, {}),"
            " details = CASE WHEN EXISTS (SELECT 1 FROM unnest({}::text[]) AS m"
            "  WHERE strpos(lower(details), lower(m)) > 0) THEN {} ELSE details END"
            " WHERE hash_version >= 2 AND actor_id = {}"
            " AND (actor <> {} OR address <> '' OR salt IS NOT NULL"
            "  OR EXISTS (SELECT 1 FROM unnest({}::text[]) AS m"
            "   WHERE strpos(lower(details), lower(m)) > 0))"
            " RETURNING id",
            ERASED,
            now,
            [m for m in mentions or [] if m],
            _BLANK["details"],
            actor_id,
            ERASED,
            [m for m in mentions or [] if m],
        )
        erased += len(rows)
    return erased


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
