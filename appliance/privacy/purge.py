"""The purge for good of an erasure request, once its grace period is over.

Rows are found through Piccolo's app registry and foreign keys, not a hand-written list, so a
table added later that belongs to a client (a foreign key chain that cascades or restricts
back to ``client``) is purged without editing this module. Steps, each idempotent and recorded
in the request's ``progress`` so a purge killed half-way finishes on the next run:

1. ``collect``: the object keys (``*_key`` columns) and e-mail addresses of every row to go;
2. ``ledger``: the identifiers appended to the erasure ledger (outside the database), so a
   restore of an older recovery point erases the person again;
3. ``rows``: every row, children first, in one transaction; ``set null`` references cleared;
4. ``objects``: the objects in the store, and their copies in the backup mirror;
5. ``exports``: the person's exports;
6. ``outbox``: messages to their addresses;
7. ``audit``: audit entries about a person are blanked, entries made by a staff member lose
   their name and address (what they were about stays); the hash chain still verifies
   (:func:`appliance.audit.service.erase_person`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
from piccolo.columns import ForeignKey, OnDelete
from piccolo.table import Table

from appliance.accounts.tables import LoginThrottle, StaffInvitation, StaffUser
from appliance.accounts.throttle import account_key
from appliance.audit.service import erase_person
from appliance.backups.repositories import backup_dir
from appliance.clients.tables import Client
from appliance.config import Settings
from appliance.db.schema import quoted, registered_tables
from appliance.notify.tables import OutboxMessage
from appliance.privacy import holds, ledger
from appliance.privacy.tables import AffectedPerson
from appliance.privacy.tables import ErasureRequest as ErasureRow
from appliance.storage.base import ObjectStore, StorageError, check_key

__all__ = [
    "PURGE_LOCK",
    "Plan",
    "plan_for",
    "preview",
    "purge_due",
    "purge_request",
    "purge_subject",
]

log = logging.getLogger(__name__)
# The first key of the purge's advisory lock (the second is the request's id): "ERAS".
PURGE_LOCK = 0x45524153
STEPS = ("collect", "ledger", "rows", "objects", "exports", "outbox", "audit")
_ADDRESS_COLUMNS = ("email", "recipient")


@dataclass
class Plan:
    """What to delete for one subject: a WHERE clause per table, in deletion order."""

    where: dict[str, str] = field(default_factory=dict)
    order: list[type[Table]] = field(default_factory=list)  # children first
    clear: list[tuple[type[Table], str, str]] = field(default_factory=list)  # set-null refs


def _references(table: type[Table]) -> list[tuple[ForeignKey[Any], type[Table]]]:
    return [
        (column, column._foreign_key_meta.resolved_references)
        for column in table._meta.foreign_key_columns
    ]


def plan_for(root: type[Table], root_where: str) -> Plan:
    """Every row that hangs off ``root`` rows matching ``root_where``, through foreign keys
    that cascade or restrict (the child belongs to its parent); ``set null`` ones are only
    cleared, since such a child belongs to someone else."""
    tables = registered_tables()
    plan = Plan(where={root._meta.tablename: root_where})
    reached = [root]
    changed = True
    while changed:
        changed = False
        for table in tables:
            clauses = []
            for column, parent in _references(table):
                parent_where = plan.where.get(parent._meta.tablename)
                if parent_where is None or parent is table:
                    continue
                name = quoted(column._meta.db_column_name)  # "user" is a keyword
                parent_name = quoted(parent._meta.tablename)
                inner = f"{name} IN (SELECT id FROM {parent_name} WHERE {parent_where})"  # noqa: S608 - names from the table classes, ids are ints
                if column._foreign_key_meta.on_delete == OnDelete.set_null:
                    item = (table, name, inner)
                    if item not in plan.clear:
                        plan.clear.append(item)
                    continue
                clauses.append(inner)
            if not clauses or table is root:
                continue
            where = " OR ".join(f"({c})" for c in clauses)
            if plan.where.get(table._meta.tablename) != where:
                plan.where[table._meta.tablename] = where
                changed = True
                if table not in reached:
                    reached.append(table)
    plan.order = _children_first(reached)
    return plan


def _children_first(tables: list[type[Table]]) -> list[type[Table]]:
    ordered: list[type[Table]] = []

    def visit(table: type[Table], seen: set[str]) -> None:
        if table in ordered or table._meta.tablename in seen:
            return
        seen = seen | {table._meta.tablename}
        for child in tables:
            if any(parent is table for _, parent in _references(child)) and child is not table:
                visit(child, seen)
        ordered.append(table)

    for table in tables:
        visit(table, set())
    return ordered


def _upto(marks: dict[str, int] | None, table: type[Table]) -> str:
    """``id <= mark`` when re-applying: only ids that existed when the erasure was carried
    out. Everyone created after it (a restore, then new clients) is not the studio erased."""
    if marks is None:
        return "TRUE"
    return f"id <= {int(marks.get(f'{table._meta.tablename}_id_seq', 0))}"


def _subject_plans(
    kind: str,
    subject_id: int | None,
    keep_staff: int | None,
    marks: dict[str, int] | None = None,
) -> list[Plan]:
    if kind == "client":
        return [plan_for(Client, f"id = {int(subject_id or 0)}")]
    if kind == "staff":
        return [plan_for(StaffUser, f"id = {int(subject_id or 0)}")]
    # The whole studio: every client and every staff account but the admin who asked, who
    # keeps the appliance administrable until the server itself is wiped.
    staff_where = _upto(marks, StaffUser)
    if keep_staff is not None:
        staff_where += f" AND id <> {int(keep_staff)}"
    return [plan_for(Client, _upto(marks, Client)), plan_for(StaffUser, staff_where)]


async def preview(kind: str, subject_id: int | None, keep_staff: int | None) -> dict[str, int]:
    """Rows per table the purge would delete now: the confirmation page names what will go."""
    counts: dict[str, int] = {}
    for plan in _subject_plans(kind, subject_id, keep_staff):
        for table in plan.order:
            name = table._meta.tablename
            sql = f"SELECT count(*) AS n FROM {quoted(name)} WHERE {plan.where[name]}"  # noqa: S608 - as above
            n = int((await table.raw(sql))[0]["n"])
            if n:
                counts[name] = counts.get(name, 0) + n
    return counts


def _text_columns(table: type[Table], suffixes: Iterable[str]) -> list[str]:
    return [
        quoted(c._meta.db_column_name)
        for c in table._meta.columns
        if any(c._meta.db_column_name.endswith(s) for s in suffixes) and c.value_type is str
    ]


async def _collect(plans: list[Plan]) -> dict[str, list[str]]:
    keys: set[str] = set()
    addresses: set[str] = set()
    for plan in plans:
        for table in plan.order:
            where = plan.where[table._meta.tablename]
            kept = {quoted(name) for name in holds.key_columns(table)}  # held with the row
            for column in _text_columns(table, ("_key",)):
                if column in kept:
                    continue
                rows = await table.raw(
                    f"SELECT {column} AS v FROM {quoted(table._meta.tablename)} WHERE {where}"  # noqa: S608 - names from the table classes, ids are ints
                )
                keys |= {r["v"] for r in rows if r["v"]}
            for column in _text_columns(table, _ADDRESS_COLUMNS):
                rows = await table.raw(
                    f"SELECT {column} AS v FROM {quoted(table._meta.tablename)} WHERE {where}"  # noqa: S608 - names from the table classes, ids are ints
                )
                addresses |= {r["v"].strip().lower() for r in rows if r["v"] and "@" in r["v"]}
    staff: list[dict[str, Any]] = []
    clients: list[dict[str, Any]] = []
    for plan in plans:
        root = plan.order[-1] if plan.order else None
        if root is StaffUser:
            staff += await StaffUser.raw(
                f"SELECT id, username FROM staff_user WHERE {plan.where['staff_user']}"  # noqa: S608 - as above
            )
        elif root is Client:
            clients += await Client.raw(f"SELECT id FROM client WHERE {plan.where['client']}")  # noqa: S608 - as above
    client_ids = sorted(row["id"] for row in clients)
    return {
        "keys": sorted(keys),
        "emails": sorted(addresses),
        "staff": sorted(row["id"] for row in staff),
        "usernames": sorted(row["username"] for row in staff),
        "clients": client_ids,
        "about": [f"client:{n}" for n in client_ids] + await _requests_of(plans),
    }


async def _requests_of(plans: list[Plan]) -> list[str]:
    """Audit targets of the clients' privacy requests: those entries carry the client's
    address (they asked through their link)."""
    found = []
    for plan in plans:
        where = plan.where.get("privacy_request")
        if where is not None:
            rows = await Client.raw(f"SELECT id FROM privacy_request WHERE {where}")  # noqa: S608 - as above
            found += [f"privacy_request:{row['id']}" for row in rows]
    return found


async def _delete_staff_leftovers(progress: dict[str, Any]) -> None:
    """What keeps a staff member's name or address without a foreign key to their account:
    invitations (by address; an accepted one may no longer point at the user), the sign-in
    throttle's per-name key, and the names copied onto other domains' rows (blanked here, in
    the purge's transaction, rather than through an "erase" verb in each domain)."""
    usernames = list(progress.get("usernames", []))
    emails = list(progress.get("emails", []))
    if emails:
        await StaffInvitation.raw(
            "DELETE FROM staff_invitation WHERE lower(email) = ANY({})", emails
        )
    if not usernames:
        return
    keys = [account_key(name) for name in usernames]
    await LoginThrottle.delete().where(LoginThrottle.key.is_in(keys)).run()
    await StaffUser.raw(
        "UPDATE export_job SET requested_by_name = '' WHERE requested_by_name = ANY({})",
        usernames,
    )
    for column in ("answered_by", "extended_by"):
        await StaffUser.raw(
            f"UPDATE privacy_request SET {column} = '' WHERE {column} = ANY({{}})",  # noqa: S608 - a fixed column name
            usernames,
        )


async def _delete_rows(
    plans: list[Plan],
    gone: dict[str, list[int]],
    *,
    subject_id: int | None,
    zone: str,
    now: dt.datetime,
) -> dict[str, int]:
    counts: dict[str, int] = {}
    db = ErasureRow._meta.db
    async with db.transaction():
        for plan in plans:
            kind = "staff" if plan.order and plan.order[-1] is StaffUser else "client"
            for table, column, inner in plan.clear:
                name = quoted(table._meta.tablename)
                clear = f"UPDATE {name} SET {column} = NULL WHERE {inner}"  # noqa: S608 - as above
                await table.raw(clear)
            for table in plan.order:
                name = table._meta.tablename
                # Records the law obliges the studio to keep go onto legal hold as they go.
                held = await holds.delete_and_hold(
                    table,
                    plan.where[name],
                    kind=kind,
                    subject_id=subject_id or 0,
                    zone=zone,
                    now=now,
                )
                if held is not None:
                    deleted, kept = held
                    if kept:
                        label = f"{name} kept on legal hold"
                        counts[label] = counts.get(label, 0) + kept
                else:
                    rows = await table.raw(
                        f"WITH gone AS (DELETE FROM {quoted(name)} WHERE {plan.where[name]} "  # noqa: S608 - names from the table classes, ids are ints
                        "RETURNING 1) SELECT count(*) AS n FROM gone"
                    )
                    deleted = int(rows[0]["n"])
                if deleted:
                    counts[name] = counts.get(name, 0) + deleted
        # The incident register refers to people by kind ("client" or "staff") and id, not by
        # foreign key; the whole studio's erasure names the ids it collected.
        for person_kind, table in (("client", Client), ("staff", StaffUser)):
            ids = gone.get(table._meta.tablename, [])
            if ids:
                await (
                    AffectedPerson.delete()
                    .where(
                        (AffectedPerson.kind == person_kind) & AffectedPerson.person_id.is_in(ids)
                    )
                    .run()
                )
    return counts


async def _delete_objects(settings: Settings, store: ObjectStore, keys: list[str]) -> int:
    mirror = backup_dir(settings) / "mirror" / "objects"
    deleted = 0
    for key in keys:
        try:
            check_key(key)
        except (StorageError, ValueError):
            continue  # a column named *_key that holds no object key (a chunk's "12:3")
        await store.delete(key)
        with contextlib.suppress(FileNotFoundError):
            (mirror / key).unlink()  # the same object's copy: counted once, with the object
        deleted += 1
    return deleted


async def _delete_exports(store: ObjectStore, kind: str, subject_id: int | None) -> int:
    """Exports are the exports domain's; until it exists, its prefix is cleared here."""
    if kind not in ("client", "staff") or subject_id is None:
        return await store.delete_prefix("exports/")
    try:
        from appliance.exports.service import delete_exports_of
    except ImportError:
        return await store.delete_prefix(f"exports/{kind}/{subject_id}/")
    subject: Literal["client", "staff"] = "client" if kind == "client" else "staff"
    return int(await delete_exports_of(subject, subject_id, store=store))


async def _delete_outbox(emails: list[str], about: list[str], studio: bool) -> int:
    """Messages to the person's addresses, and those to staff about them (a client's
    favourites, with their name and note)."""
    if studio:
        query = OutboxMessage.delete().where(OutboxMessage.kind == "email")
        return len(await query.returning(OutboxMessage.id).run())
    rows = await OutboxMessage.raw(
        "DELETE FROM outbox_message WHERE lower(recipient) = ANY({}) OR about = ANY({})"
        " RETURNING id",
        emails,
        about,
    )
    return len(rows)


async def _erase_audit(progress: dict[str, Any], now: dt.datetime) -> int:
    targets = [f"user:{name}" for name in progress.get("usernames", [])]
    targets += [f"email:{address}" for address in progress.get("emails", [])]
    targets += progress.get("about", [])  # a client's requests, made from their address
    erased = await erase_person(actor_id=None, targets=targets, now=now)
    # What a staff member did stays with its target (a client's access trail); their name and
    # address go, and details only where they name them.
    mentions = list(progress.get("usernames", [])) + list(progress.get("emails", []))
    for staff_id in progress.get("staff", []):
        erased += await erase_person(actor_id=staff_id, targets=[], now=now, mentions=mentions)
    return erased


async def purge_subject(
    settings: Settings,
    store: ObjectStore,
    *,
    kind: str,
    subject_id: int | None,
    progress: dict[str, Any],
    now: dt.datetime,
    keep_staff: int | None = None,
    ledger_entry: dict[str, Any] | None = None,
    save: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    marks: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Run the steps not yet in ``progress["steps"]``; ``save`` persists progress after each.

    ``ledger_entry`` (without the keys, which step 1 finds) is appended in step 2; a re-run
    from the ledger itself passes none, and passes the entry's sequence ``marks`` instead: a
    re-applied erasure of the whole studio reaches only ids that existed when it was carried
    out, and leaves the outbox and exports of people created since alone.
    """
    steps: list[str] = progress.setdefault("steps", [])
    counts: dict[str, int] = progress.setdefault("counts", {})
    plans = _subject_plans(kind, subject_id, keep_staff, marks)
    studio_now = kind == "studio" and marks is None

    async def done(step: str) -> None:
        steps.append(step)
        if save is not None:
            await save(progress)

    if "collect" not in steps:
        progress.update(await _collect(plans))
        await done("collect")
    if "ledger" not in steps:
        if ledger_entry is not None:
            marks = await ledger.sequence_marks()
            keys = progress.get("keys", [])
            ledger.append(settings, {**ledger_entry, "keys": keys, "sequences": marks})
        await done("ledger")
    if "rows" not in steps:
        gone = {"client": progress.get("clients", []), "staff_user": progress.get("staff", [])}
        deleted = await _delete_rows(
            plans, gone, subject_id=subject_id, zone=settings.studio_zone, now=now
        )
        for name, n in deleted.items():
            counts[name] = counts.get(name, 0) + n
        await _delete_staff_leftovers(progress)
        await done("rows")
    if "objects" not in steps:
        counts["objects"] = await _delete_objects(settings, store, progress.get("keys", []))
        await done("objects")
    if "exports" not in steps:
        counts["exports"] = (
            await _delete_exports(store, kind, subject_id) if kind != "studio" or studio_now else 0
        )
        await done("exports")
    if "outbox" not in steps:
        emails = progress.get("emails", [])
        counts["outbox_message"] = await _delete_outbox(
            emails, progress.get("about", []), studio_now
        )
        await done("outbox")
    if "audit" not in steps:
        counts["audit_entries_erased"] = await _erase_audit(progress, now)
        await done("audit")
    return progress


async def purge_request(
    settings: Settings, store: ObjectStore, request_id: int, now: dt.datetime
) -> bool:
    """Purge one due request; False when it is not due, already settled, or being purged by
    another run right now.

    A session advisory lock on a connection of its own guards the run: "purging" alone cannot
    tell a run killed half-way (to be finished) from one still going (two runs would delete
    and count twice). The lock goes with the connection if the process dies.
    """
    lock = await asyncpg.connect(settings.database.url)
    try:
        if not await lock.fetchval("SELECT pg_try_advisory_lock($1, $2)", PURGE_LOCK, request_id):
            log.info("erasure request %s is being purged by another run", request_id)
            return False
        try:
            return await _purge_locked(settings, store, request_id, now)
        finally:
            await lock.execute("SELECT pg_advisory_unlock($1, $2)", PURGE_LOCK, request_id)
    finally:
        await lock.close()


async def _purge_locked(
    settings: Settings, store: ObjectStore, request_id: int, now: dt.datetime
) -> bool:
    rows = await ErasureRow.raw(
        "UPDATE erasure_request SET state = 'purging' WHERE id = {} "
        "AND state IN ('pending', 'purging') AND purge_after <= {} RETURNING *",
        request_id,
        now,
    )
    if not rows:
        return False
    row = rows[0]
    raw = row["progress"]
    progress = dict(json.loads(raw) if isinstance(raw, str) else raw or {})
    keep_staff = row["requested_by"] if row["kind"] == "studio" else None

    async def save(state: dict[str, Any]) -> None:
        await (
            ErasureRow.update({ErasureRow.progress: json.dumps(state)})
            .where(ErasureRow.id == request_id)
            .run()
        )

    await purge_subject(
        settings,
        store,
        kind=row["kind"],
        subject_id=row["subject_id"],
        progress=progress,
        now=now,
        keep_staff=keep_staff,
        ledger_entry={
            "request_id": row["id"],
            "kind": row["kind"],
            "subject_id": row["subject_id"],
            "keep_staff": keep_staff,
            "requested_at": row["requested_at"].astimezone(dt.UTC).isoformat(),
            "purged_at": now.astimezone(dt.UTC).isoformat(),
        },
        save=save,
    )
    # The deletion record keeps kinds and counts only: keys, addresses and names go.
    record = {"steps": progress["steps"], "counts": progress["counts"]}
    await (
        ErasureRow.update(
            {
                ErasureRow.state: "done",
                ErasureRow.open_key: None,
                ErasureRow.purged_at: now,
                ErasureRow.progress: json.dumps(record),
                ErasureRow.undo: "{}",
            }
        )
        .where(ErasureRow.id == request_id)
        .run()
    )
    return True


async def purge_due(settings: Settings, store: ObjectStore, now: dt.datetime) -> int:
    """The daily job: purge every request whose grace period is over (and any a killed run
    left half-done). Returns how many were finished."""
    due = (
        await ErasureRow.select(ErasureRow.id)
        .where(ErasureRow.state.is_in(["pending", "purging"]) & (ErasureRow.purge_after <= now))
        .order_by(ErasureRow.id)
        .run()
    )
    if ledger.reapply_pending(settings):
        # A restore whose re-application of the ledger failed: erase those people first.
        await ledger.reapply(settings, store, now)
    finished = 0
    for row in due:
        if await purge_request(settings, store, row["id"], now):
            finished += 1

    async def delete_objects(keys: list[str]) -> int:
        return await _delete_objects(settings, store, keys)

    if released := await holds.release_expired(delete_objects, now):
        log.info("deleted %d records whose legal hold expired", released)
    return finished
