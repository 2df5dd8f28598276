"""Erasure requests (policy §8, GDPR Art. 17): a person made unreachable at once, purged later.

:func:`request_erasure` switches the person off in one transaction: a client's share links are
revoked and the client is no longer listed; a staff member's sessions end and sign-in is
refused. The purge for good (:mod:`appliance.privacy.purge`) runs after
``privacy.erasure_grace_days``; until then an admin may cancel, which restores exactly what was
switched off. Erasure crosses every domain by design, so this module writes other domains'
tables directly rather than through their services (which would each need an "erase" verb).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

import asyncpg
import msgspec

from appliance.accounts.tables import StaffSession, StaffUser
from appliance.audit.service import Actor, record
from appliance.clients.tables import Client
from appliance.config import Settings
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.galleries.tables import Gallery, ShareLink
from appliance.privacy import ledger
from appliance.privacy.tables import ErasureRequest as ErasureRow

__all__ = [
    "KINDS",
    "ErasureRequest",
    "cancel_erasure",
    "erased_client_ids",
    "erased_staff_ids",
    "get_request",
    "is_erased",
    "list_requests",
    "request_erasure",
]

Kind = Literal["client", "staff", "studio"]
KINDS: tuple[Kind, ...] = ("client", "staff", "studio")
# A request in these states has switched the person off; "cancelled" has given them back.
ERASING = ("pending", "purging", "done")
# Not carried out yet: the person is still in the database, switched off.
OPEN = ("pending", "purging")


class ErasureRequest(msgspec.Struct, frozen=True):
    """A request as admins see it: ids, times and counts, never the person's data."""

    id: int
    kind: str
    subject_id: int | None
    state: str
    source: str
    requested_at: dt.datetime
    purge_after: dt.datetime
    purged_at: dt.datetime | None
    cancelled_at: dt.datetime | None
    counts: dict[str, int]

    @property
    def subject(self) -> str:
        return "the whole studio" if self.kind == "studio" else f"{self.kind} #{self.subject_id}"


def _request(row: dict[str, Any]) -> ErasureRequest:
    progress = _json(row["progress"])
    return ErasureRequest(
        id=row["id"],
        kind=row["kind"],
        subject_id=row["subject_id"],
        state=row["state"],
        source=row["source"],
        requested_at=row["requested_at"],
        purge_after=row["purge_after"],
        purged_at=row["purged_at"],
        cancelled_at=row["cancelled_at"],
        counts=dict(progress.get("counts", {})),
    )


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return dict(json.loads(value or "{}"))
    return dict(value or {})


def open_key(kind: str, subject_id: int | None) -> str:
    return "studio" if kind == "studio" else f"{kind}:{subject_id}"


async def _check_subject(kind: Kind, subject_id: int | None) -> None:
    if kind not in KINDS:
        raise InvalidInput("Choose a client, a staff account or the whole studio.")
    if kind == "studio":
        if subject_id is not None:
            raise InvalidInput("The whole studio has no id.")
        return
    if subject_id is None or subject_id < 1:
        raise InvalidInput("Name the client or staff account to delete.")
    table = Client if kind == "client" else StaffUser
    if not await table.exists().where(table.id == subject_id).run():
        raise NotFound(f"There is no {kind} #{subject_id}.")


async def _check_staff(subject_id: int | None, actor_id: int | None) -> None:
    """An admin cannot erase themselves (they would lock themselves out mid-way), and the last
    active admin cannot be erased: nobody could cancel it or run the appliance afterwards."""
    if subject_id == actor_id:
        raise Conflict("You cannot delete your own account: another admin must do it.")
    target = (
        await StaffUser.select(StaffUser.role, StaffUser.is_active)
        .where(StaffUser.id == subject_id)
        .first()
        .run()
    )
    if target is None or target["role"] != "admin" or not target["is_active"]:
        return
    admins = (
        await StaffUser.count()
        .where(
            (StaffUser.role == "admin") & (StaffUser.is_active == True)  # noqa: E712 - SQL
        )
        .run()
    )
    if admins <= 1:
        raise Conflict("This is the only active admin: make another admin first.")


async def request_erasure(
    settings: Settings,
    *,
    kind: Kind,
    subject_id: int | None,
    actor: str,
    source: Literal["staff", "client"],
    now: dt.datetime,
    actor_id: int | None = None,
    from_ledger: bool = False,
) -> ErasureRequest:
    """Make the person unreachable now and schedule the purge; a second request for the same
    subject returns the open one unchanged.

    The request is also written to the erasure ledger, so the restore of a point taken before
    it makes it again (``from_ledger``: this is that restore, the ledger has it already).
    """
    await _check_subject(kind, subject_id)
    if kind == "staff" and not from_ledger:
        await _check_staff(subject_id, actor_id)
    key = open_key(kind, subject_id)
    purge_after = now + dt.timedelta(days=settings.privacy.erasure_grace_days)
    db = ErasureRow._meta.db
    async with db.transaction():
        existing = await ErasureRow.select().where(ErasureRow.open_key == key).first().run()
        if existing is not None:
            return _request(existing)
        undo = await _switch_off(kind, subject_id, now)
        try:
            rows = await ErasureRow.insert(
                ErasureRow(
                    kind=kind,
                    subject_id=subject_id,
                    open_key=key,
                    state="pending",
                    source=source,
                    requested_at=now,
                    requested_by=actor_id,
                    purge_after=purge_after,
                    undo=json.dumps(undo),
                    progress="{}",
                )
            ).run()
        except asyncpg.UniqueViolationError:
            # Two requests at once: the other one won; ours rolls back with its switch-off.
            raise Conflict("This erasure was just requested by someone else.") from None
        await record(
            "privacy.erasure_requested",
            actor=Actor(id=actor_id, name=actor),
            target=key,
            details={"source": source, "purge_after": purge_after.isoformat()},
            at=now,
        )
    if not from_ledger:
        made = {"id": rows[0]["id"], "kind": kind, "subject_id": subject_id}
        _to_ledger(settings, {**made, "requested_by": actor_id, "requested_at": now}, "requested")
    return await get_request(rows[0]["id"])


def _to_ledger(settings: Settings, row: dict[str, Any], state: str) -> None:
    """After the commit: a ledger line for a request that rolled back would erase someone."""
    ledger.append(
        settings,
        {
            "request_id": row["id"],
            "kind": row["kind"],
            "subject_id": row["subject_id"],
            "keep_staff": row["requested_by"] if row["kind"] == "studio" else None,
            "requested_at": row["requested_at"].astimezone(dt.UTC).isoformat(),
            "state": state,
        },
    )


async def _switch_off(kind: Kind, subject_id: int | None, now: dt.datetime) -> dict[str, Any]:
    """Revoke what reaches the person's data; return what a cancellation must give back."""
    links = ShareLink.select(ShareLink.id).where(ShareLink.revoked_at.is_null())
    users = StaffUser.select(StaffUser.id, StaffUser.is_active)
    if kind == "client":
        galleries = Gallery.select(Gallery.id).where(Gallery.client == subject_id)
        links = links.where(ShareLink.gallery.is_in(galleries))
        users = users.where(StaffUser.id == -1)
    elif kind == "staff":
        links = links.where(ShareLink.id == -1)
        # Locked: enabling the account or changing its role at this moment waits for this
        # transaction and is then refused (see accounts.service), instead of undoing it.
        users = users.where(StaffUser.id == subject_id).lock_rows()
    else:
        # The whole studio: every link goes; staff keep their sign-in until the purge, so an
        # admin can still cancel (the purge keeps the admin who asked, see purge.py).
        users = users.where(StaffUser.id == -1)
    link_ids = [row["id"] for row in await links.run()]
    active = [row["id"] for row in await users.run() if row["is_active"]]
    if link_ids:
        await (
            ShareLink.update({ShareLink.revoked_at: now}).where(ShareLink.id.is_in(link_ids)).run()
        )
    if active:
        await StaffUser.update({StaffUser.is_active: False}).where(StaffUser.id.is_in(active)).run()
        await StaffSession.delete().where(StaffSession.user.is_in(active)).run()
    return {"links": link_ids, "active_users": active}


async def cancel_erasure(
    settings: Settings, request_id: int, *, actor: Actor, now: dt.datetime
) -> ErasureRequest:
    """Within the grace period only: give back exactly what the request switched off."""
    db = ErasureRow._meta.db
    async with db.transaction():
        rows = await ErasureRow.raw(
            "UPDATE erasure_request SET state = 'cancelled', open_key = NULL, cancelled_at = {}, "
            "cancelled_by = {} WHERE id = {} AND state = 'pending' AND purge_after > {} "
            "RETURNING *",
            now,
            actor.id,
            request_id,
            now,
        )
        if not rows:
            found = await ErasureRow.select().where(ErasureRow.id == request_id).first().run()
            if found is None:
                raise NotFound("There is no such erasure request.")
            raise Conflict("The grace period is over or the request is settled: nothing to cancel.")
        undo = _json(rows[0]["undo"])
        if undo.get("links"):
            await (
                ShareLink.update({ShareLink.revoked_at: None})
                .where(ShareLink.id.is_in(undo["links"]))
                .run()
            )
        if undo.get("active_users"):
            await (
                StaffUser.update({StaffUser.is_active: True})
                .where(StaffUser.id.is_in(undo["active_users"]))
                .run()
            )
        await record(
            "privacy.erasure_cancelled",
            actor=actor,
            target=open_key(rows[0]["kind"], rows[0]["subject_id"]),
            at=now,
        )
    _to_ledger(settings, rows[0], "cancelled")  # a restore must not make it again
    return _request(rows[0])


async def get_request(request_id: int) -> ErasureRequest:
    row = await ErasureRow.select().where(ErasureRow.id == request_id).first().run()
    if row is None:
        raise NotFound("There is no such erasure request.")
    return _request(row)


async def list_requests(limit: int = 200) -> list[ErasureRequest]:
    rows = (
        await ErasureRow.select()
        .order_by(ErasureRow.requested_at, ascending=False)
        .limit(limit)
        .run()
    )
    return [_request(row) for row in rows]


async def _erased(kind: str) -> set[int]:
    rows = (
        await ErasureRow.select(ErasureRow.subject_id)
        .where((ErasureRow.kind == kind) & ErasureRow.state.is_in(list(ERASING)))
        .run()
    )
    return {row["subject_id"] for row in rows if row["subject_id"] is not None}


async def erased_client_ids() -> set[int]:
    """Clients being or already erased (every client while the whole studio is): other domains
    leave them out of lists and answers."""
    if await _studio_erasing():
        return {row["id"] for row in await Client.select(Client.id).run()}
    return await _erased("client")


async def _studio_erasing() -> bool:
    """Only while the whole studio's erasure is open: once it is done, everyone it reached is
    gone (and a restore of an older point erases them again from the ledger), so the clients
    and staff created since are the studio's new ones, not people being erased."""
    return bool(
        await ErasureRow.exists()
        .where((ErasureRow.kind == "studio") & ErasureRow.state.is_in(list(OPEN)))
        .run()
    )


async def erased_staff_ids() -> set[int]:
    """Staff accounts with an erasure of their own, open or carried out. The whole studio's
    erasure is left out on purpose: it keeps staff signed in until its purge, so that an admin
    can still cancel it."""
    return await _erased("staff")


async def is_erased(kind: Literal["client", "staff"], subject_id: int) -> bool:
    """True while a request for this person is open or after it was carried out, and for
    everyone once the whole studio is being erased."""
    if await _studio_erasing():
        return True
    return subject_id in await _erased(kind)
