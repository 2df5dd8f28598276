"""The studio's clients: create, edit, search, archive and restore.

Every change is audited in the same transaction. The audit entry names the fields that
changed, never their values: the audit log is kept for good, personal data is not.
Staff pages ask with ``hide_erased=True``: a client whose erasure is pending is gone for them at
once (policy §8); the erasure and privacy-request pages ask without it, to cancel or answer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import msgspec

from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.clients.tables import Client
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.notify.languages import clean_language
from appliance.privacy.erasure import erased_client_ids, is_erased
from appliance.validation import clean_email, clean_text

__all__ = [
    "ClientDetails",
    "ClientPage",
    "ClientRecord",
    "archive_client",
    "create_client",
    "get_client",
    "get_clients",
    "restore_client",
    "search_clients",
    "update_client",
]

PAGE_SIZE = 50
_PHONE_CHARS = set("0123456789+-() ./")


class ClientDetails(msgspec.Struct, frozen=True):
    """What staff type about a client (validated by :func:`_clean`)."""

    name: str
    email: str = ""
    phone: str = ""
    postal_address: str = ""
    notes: str = ""
    language: str = ""  # of the e-mail the client receives; "" is the studio's default


class ClientRecord(msgspec.Struct, frozen=True):
    id: int
    name: str
    email: str
    phone: str
    postal_address: str
    notes: str
    status: str
    language: str
    created_at: dt.datetime
    updated_at: dt.datetime
    archived_at: dt.datetime | None

    @property
    def archived(self) -> bool:
        return self.status == "archived"


class ClientPage(msgspec.Struct, frozen=True):
    clients: list[ClientRecord]
    total: int
    offset: int


def _record(row: dict[str, Any]) -> ClientRecord:
    return ClientRecord(
        id=row["id"],
        name=row["name"],
        email=row["email"],
        phone=row["phone"],
        postal_address=row["postal_address"],
        notes=row["notes"],
        status=row["status"],
        language=row["language"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        archived_at=row["archived_at"],
    )


def _clean(details: ClientDetails) -> ClientDetails:
    phone = clean_text(details.phone, field="phone", max_length=40, required=False)
    if phone and not set(phone) <= _PHONE_CHARS:
        raise InvalidInput("Use digits, spaces and + - ( ) . / only.", field="phone")
    return ClientDetails(
        name=clean_text(details.name, field="name", max_length=120),
        email=clean_email(details.email, field="email", required=False),
        phone=phone,
        postal_address=_clean_multiline(details.postal_address, "postal_address", 500),
        notes=_clean_multiline(details.notes, "notes", 5000),
        language=clean_language(details.language[:16]),
    )


def _clean_multiline(value: str, field: str, max_length: int) -> str:
    """Text that may span lines: line breaks are kept, other control characters refused."""
    lines = value.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cleaned = [
        clean_text(line, field=field, max_length=max_length, required=False) for line in lines
    ]
    text = "\n".join(cleaned).strip()
    if len(text) > max_length:
        raise InvalidInput(f"Use at most {max_length} characters.", field=field)
    return text


async def get_client(client_id: int, *, hide_erased: bool = False) -> ClientRecord:
    """The client; with ``hide_erased`` a client being erased is NotFound, as if already gone."""
    row = await Client.select().where(Client.id == client_id).first().run()
    if row is None or (hide_erased and await is_erased("client", client_id)):
        raise NotFound("There is no such client.")
    return _record(row)


async def get_clients(client_ids: Iterable[int]) -> dict[int, ClientRecord]:
    """The clients with these ids that exist, by id: one query however many are asked for."""
    wanted = sorted(set(client_ids))
    if not wanted:
        return {}
    rows = await Client.select().where(Client.id.is_in(wanted)).run()
    return {row["id"]: _record(row) for row in rows}


async def create_client(
    details: ClientDetails, *, actor: Actor, address: str, now: dt.datetime
) -> ClientRecord:
    clean = _clean(details)
    async with Client._meta.db.transaction(allow_nested=True):
        rows = await Client.insert(
            Client(
                name=clean.name,
                email=clean.email,
                phone=clean.phone,
                postal_address=clean.postal_address,
                notes=clean.notes,
                language=clean.language,
                created_by=actor.id,
                created_at=now,
                updated_at=now,
            )
        ).returning(*Client.all_columns())
        record = _record(rows[0])
        await audit.record(
            "client.create", actor=actor, target=f"client:{record.id}", address=address, at=now
        )
    return record


async def update_client(
    client_id: int, details: ClientDetails, *, actor: Actor, address: str, now: dt.datetime
) -> ClientRecord:
    clean = _clean(details)
    before = await get_client(client_id)
    changed = [
        field
        for field in ("name", "email", "phone", "postal_address", "notes", "language")
        if getattr(before, field) != getattr(clean, field)
    ]
    if not changed:
        return before
    async with Client._meta.db.transaction(allow_nested=True):
        await (
            Client.update(
                {
                    Client.name: clean.name,
                    Client.email: clean.email,
                    Client.phone: clean.phone,
                    Client.postal_address: clean.postal_address,
                    Client.notes: clean.notes,
                    Client.language: clean.language,
                    Client.updated_at: now,
                }
            )
            .where(Client.id == client_id)
            .run()
        )
        await audit.record(
            "client.update",
            actor=actor,
            target=f"client:{client_id}",
            address=address,
            details={"fields": changed},
            at=now,
        )
    return await get_client(client_id)


async def _set_status(
    client_id: int, status: str, *, actor: Actor, address: str, now: dt.datetime
) -> ClientRecord:
    async with Client._meta.db.transaction(allow_nested=True):
        changed = (
            await Client.update(
                {
                    Client.status: status,
                    Client.archived_at: now if status == "archived" else None,
                    Client.updated_at: now,
                }
            )
            .where(Client.id == client_id)
            .where(Client.status != status)
            .returning(Client.id)
            .run()
        )
        if not changed:
            await get_client(client_id)  # NotFound when it does not exist at all
            raise Conflict(f"This client is already {status}.")
        action = "client.archive" if status == "archived" else "client.restore"
        await audit.record(
            action, actor=actor, target=f"client:{client_id}", address=address, at=now
        )
    return await get_client(client_id)


async def archive_client(
    client_id: int, *, actor: Actor, address: str, now: dt.datetime
) -> ClientRecord:
    """Hide a client from the everyday list; nothing is deleted (erasure is its own process)."""
    return await _set_status(client_id, "archived", actor=actor, address=address, now=now)


async def restore_client(
    client_id: int, *, actor: Actor, address: str, now: dt.datetime
) -> ClientRecord:
    return await _set_status(client_id, "active", actor=actor, address=address, now=now)


def _like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` literally anywhere (its wildcards escaped)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_clients(
    query: str = "",
    *,
    archived: bool = False,
    offset: int = 0,
    limit: int = PAGE_SIZE,
    hide_erased: bool = False,
) -> ClientPage:
    """Active (or archived) clients whose name, e-mail or phone contains ``query``, by name;
    with ``hide_erased`` without the clients being erased (one query for their ids)."""
    text = clean_text(query, field="q", max_length=100, required=False)
    where: Any = Client.status == ("archived" if archived else "active")
    erased = await erased_client_ids() if hide_erased else set()
    if erased:
        where = where & Client.id.not_in(sorted(erased))
    if text:
        pattern = _like_pattern(text)
        where = where & (
            Client.name.ilike(pattern) | Client.email.ilike(pattern) | Client.phone.ilike(pattern)
        )
    total = await Client.count().where(where).run()
    rows = (
        await Client.select()
        .where(where)
        .order_by(Client.name)
        .order_by(Client.id)
        .offset(max(0, offset))
        .limit(min(limit, PAGE_SIZE))
        .run()
    )
    return ClientPage(clients=[_record(row) for row in rows], total=int(total), offset=offset)
