"""Favourites: named selection lists a recipient keeps under their share link, and sends.

Each link starts with one list, "Favourites", made on first use; the recipient may add more
("For the album", "Prints"). Sending a list stamps it and shows it to the studio on the
gallery page and the home page, with the file names ready to paste into an editing program's
filter. A list may be changed and sent again; the studio sees the newest version.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from appliance.accounts import service as accounts
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.galleries.sharing import LinkRecord, record_event
from appliance.galleries.tables import Gallery, Photo, SelectionItem, SelectionList, ShareLink
from appliance.notify.languages import language_for
from appliance.notify.messages import queue_email
from appliance.notify.tables import OutboxMessage
from appliance.validation import clean_text

__all__ = [
    "DEFAULT_LIST",
    "MAX_LISTS",
    "ReceivedSelection",
    "SelectionRecord",
    "create_list",
    "lists_of",
    "received",
    "send",
    "toggle",
]

DEFAULT_LIST = "Favourites"
MAX_LISTS = 20
MAX_NOTE = 2000


class SelectionRecord(msgspec.Struct, frozen=True):
    id: int
    name: str
    note: str
    sent_at: dt.datetime | None
    photo_ids: list[int]


class ReceivedSelection(msgspec.Struct, frozen=True):
    """A sent list as the studio sees it."""

    id: int
    gallery_id: int
    gallery_title: str
    recipient: str
    name: str
    note: str
    sent_at: dt.datetime
    filenames: list[str]


def _can_favourite(link: LinkRecord) -> None:
    if not link.can_favourite:
        raise Conflict("Favourites are switched off for this link.")


async def lists_of(link: LinkRecord, *, now: dt.datetime | None = None) -> list[SelectionRecord]:
    """The link's lists in the order they were made; with ``now``, "Favourites" is made
    when the link has none yet."""
    lists = (
        await SelectionList.select(
            SelectionList.id, SelectionList.name, SelectionList.note, SelectionList.sent_at
        )
        .where(SelectionList.link == link.id)
        .order_by(SelectionList.id)
        .run()
    )
    if not lists and now is not None and link.can_favourite:
        async with SelectionList._meta.db.transaction(allow_nested=True):
            # Under the link's row lock, so two first visits at once make one list, not two.
            await ShareLink.raw("SELECT id FROM share_link WHERE id = {} FOR UPDATE", link.id)
            await SelectionList.raw(
                "INSERT INTO selection_list (link, name, note, created_at)"
                " SELECT {}, {}, '', {} WHERE NOT EXISTS"
                " (SELECT 1 FROM selection_list WHERE link = {})",
                link.id,
                DEFAULT_LIST,
                now,
                link.id,
            )
        return await lists_of(link)
    items = (
        await SelectionItem.select(SelectionItem.selection, SelectionItem.photo)
        .where(SelectionItem.selection.is_in([row["id"] for row in lists] or [0]))
        .order_by(SelectionItem.id)
        .run()
    )
    chosen: dict[int, list[int]] = {}
    for item in items:
        chosen.setdefault(item["selection"], []).append(item["photo"])
    return [
        SelectionRecord(
            id=row["id"],
            name=row["name"],
            note=row["note"],
            sent_at=row["sent_at"],
            photo_ids=chosen.get(row["id"], []),
        )
        for row in lists
    ]


async def _own_list(link: LinkRecord, list_id: int) -> SelectionRecord:
    for item in await lists_of(link):
        if item.id == list_id:
            return item
    raise NotFound("There is no such list.")


async def create_list(link: LinkRecord, name: str, *, now: dt.datetime) -> SelectionRecord:
    _can_favourite(link)
    clean = clean_text(name, field="name", max_length=60)
    async with SelectionList._meta.db.transaction(allow_nested=True):
        # Serialise per link, so two tabs cannot both pass the limit and the name check.
        await ShareLink.raw("SELECT id FROM share_link WHERE id = {} FOR UPDATE", link.id)
        existing = await lists_of(link)
        if len(existing) >= MAX_LISTS:
            raise Conflict(f"You can keep at most {MAX_LISTS} lists.")
        if any(item.name.casefold() == clean.casefold() for item in existing):
            raise InvalidInput("You already have a list of that name.", field="name")
        rows = await SelectionList.insert(
            SelectionList(link=link.id, name=clean, created_at=now)
        ).returning(SelectionList.id)
    return await _own_list(link, rows[0]["id"])


async def toggle(
    link: LinkRecord, list_id: int, photo_id: int, *, chosen: bool | None, now: dt.datetime
) -> bool:
    """Put a photo on a list or take it off (``chosen`` None flips it); returns the new state.

    Only a ready photo of the link's own gallery can be chosen.
    """
    _can_favourite(link)
    await _own_list(link, list_id)
    photo = (
        await Photo.select(Photo.id)
        .where((Photo.id == photo_id) & (Photo.gallery == link.gallery_id))
        .where(Photo.status == "ready")
        .first()
        .run()
    )
    if photo is None:
        raise NotFound("There is no such photo in this gallery.")
    key = f"{list_id}:{photo_id}"
    present = await SelectionItem.exists().where(SelectionItem.item_key == key).run()
    want = (not present) if chosen is None else chosen
    if want and not present:
        await SelectionItem.raw(
            "INSERT INTO selection_item (selection, photo, item_key, created_at)"
            " VALUES ({}, {}, {}, {}) ON CONFLICT (item_key) DO NOTHING",
            list_id,
            photo_id,
            key,
            now,
        )
    elif not want and present:
        await SelectionItem.delete().where(SelectionItem.item_key == key).run()
    return want


async def send(
    link: LinkRecord,
    list_id: int,
    note: str,
    *,
    address: str,
    now: dt.datetime,
    studio_url: str,
    language: str,
) -> SelectionRecord:
    """Send a list to the studio (again, after a change); the gallery's photographer is told
    by e-mail (the active admins when the gallery has no active photographer), each in their
    own language, else in ``language`` (the studio's default)."""
    _can_favourite(link)
    selection = await _own_list(link, list_id)
    if not selection.photo_ids:
        raise Conflict("This list is empty. Mark some photos first.")
    clean_note = clean_text(
        note.replace("\r\n", "\n").replace("\n", " "),
        field="note",
        max_length=MAX_NOTE,
        required=False,
    )
    await (
        SelectionList.update({SelectionList.sent_at: now, SelectionList.note: clean_note})
        .where(SelectionList.id == list_id)
        .run()
    )
    await record_event(
        link.id,
        "selection_sent",
        now=now,
        address=address,
        detail=f"{selection.name}: {len(selection.photo_ids)} photos",
    )
    sent = await _own_list(link, list_id)
    await _tell_the_studio(link, sent, studio_url=studio_url, language=language, now=now)
    return sent


async def _tell_the_studio(
    link: LinkRecord,
    selection: SelectionRecord,
    *,
    studio_url: str,
    language: str,
    now: dt.datetime,
) -> None:
    gallery = (
        await Gallery.select(Gallery.title, Gallery.created_by, Gallery.client)
        .where(Gallery.id == link.gallery_id)
        .first()
        .run()
    )
    if gallery is None:
        return
    owner = await accounts.get_member(gallery["created_by"]) if gallery["created_by"] else None
    if owner is not None and owner.is_active and owner.email:
        people = [owner]
    else:
        people = [m for m in await accounts.list_members() if m.is_active and m.role == "admin"]
    for person in people:
        if not person.email:
            continue
        queued = await queue_email(
            to=person.email,
            template="selection_received",
            context={
                "name": person.display_name,
                "recipient": link.recipient,
                "list_name": selection.name,
                "count": len(selection.photo_ids),
                "note": selection.note,
                "gallery_title": gallery["title"],
                "gallery_url": f"{studio_url}/galleries/{link.gallery_id}#selections",
            },
            language=language_for(person.language, language),
            source="galleries",
            now=now,
            # Sent again after a change is a new message; the same send twice is one.
            dedupe_key=f"selection:{selection.id}:{now.isoformat()}:{person.id}",
        )
        if queued is not None and gallery["client"] is not None:
            # Addressed to staff but about the client (their name, their note): the client's
            # erasure deletes it by this reference, since the recipient is not theirs.
            about = f"client:{gallery['client']}"
            await (
                OutboxMessage.update({OutboxMessage.about: about})
                .where(OutboxMessage.id == queued)
                .run()
            )


async def received(
    *, gallery_id: int | None = None, since: dt.datetime | None = None
) -> list[ReceivedSelection]:
    """Sent lists, newest first: of one gallery, or of all since a time (for the home page)."""
    query = SelectionList.select(
        SelectionList.id,
        SelectionList.name,
        SelectionList.note,
        SelectionList.sent_at,
        SelectionList.link.recipient.as_alias("recipient"),
        SelectionList.link.gallery.as_alias("gallery_id"),
        SelectionList.link._.gallery._.title.as_alias("gallery_title"),
    ).where(SelectionList.sent_at.is_not_null())
    if gallery_id is not None:
        query = query.where(SelectionList.link.gallery == gallery_id)
    if since is not None:
        query = query.where(SelectionList.sent_at >= since)
    rows = await query.order_by(SelectionList.sent_at, ascending=False).limit(200).run()
    names: dict[int, list[str]] = {}
    if rows:
        items = (
            await SelectionItem.select(
                SelectionItem.selection, SelectionItem.photo.filename.as_alias("filename")
            )
            .where(SelectionItem.selection.is_in([row["id"] for row in rows]))
            .order_by(SelectionItem.photo.filename)
            .run()
        )
        for item in items:
            names.setdefault(item["selection"], []).append(item["filename"])
    return [
        ReceivedSelection(
            id=row["id"],
            gallery_id=row["gallery_id"],
            gallery_title=row["gallery_title"],
            recipient=row["recipient"],
            name=row["name"],
            note=row["note"],
            sent_at=row["sent_at"],
            filenames=names.get(row["id"], []),
        )
        for row in rows
    ]
