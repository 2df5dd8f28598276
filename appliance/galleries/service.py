"""Galleries and their sets: create, edit, publish, archive, and arrange the sets.

Every change is audited in the same transaction. A new gallery starts as a draft with one set,
"Highlights"; a gallery always keeps at least one set. Staff pages ask with ``hide_erased=True``:
the galleries of a client whose erasure is pending are gone for them at once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.clients import service as clients
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.galleries.tables import Gallery, GallerySet, Photo, PhotoJob, PhotoUpload
from appliance.privacy.erasure import erased_client_ids, is_erased
from appliance.setup import service as setup
from appliance.validation import clean_text

__all__ = [
    "STATUSES",
    "GalleryDetails",
    "GalleryRecord",
    "PhotoSummary",
    "SetRecord",
    "add_set",
    "create_gallery",
    "delete_set",
    "gallery_from_row",
    "get_gallery",
    "list_for_client",
    "list_galleries",
    "list_photos",
    "list_sets",
    "lock_gallery",
    "move_set",
    "rename_set",
    "set_status",
    "update_gallery",
    "watermark_text",
]

STATUSES = ("draft", "published", "archived")
DEFAULT_SET = "Highlights"
MAX_SETS = 50


class GalleryDetails(msgspec.Struct, frozen=True):
    """What staff type about a gallery; dates as ISO strings from the form ("" for none)."""

    title: str
    description: str = ""
    event_date: str = ""
    expires_on: str = ""
    watermark: bool = False


class GalleryRecord(msgspec.Struct, frozen=True):
    id: int
    client_id: int
    client_name: str
    title: str
    description: str
    event_date: dt.date | None
    status: str
    expires_on: dt.date | None
    created_at: dt.datetime
    updated_at: dt.datetime
    published_at: dt.datetime | None
    cover_photo_id: int | None = None
    watermark: bool = False
    version: int = 0  # raised by the database on any change (the client's page cache key)

    def expired(self, today: dt.date) -> bool:
        return self.expires_on is not None and self.expires_on < today


class PhotoSummary(msgspec.Struct, frozen=True):
    id: int
    set_id: int
    filename: str
    content_type: str
    size: int
    width: int
    height: int
    status: str
    created_at: dt.datetime
    failure: str = ""  # why the derivatives could not be made, for staff


class SetRecord(msgspec.Struct, frozen=True):
    id: int
    name: str
    position: int


_COLUMNS = (
    Gallery.id,
    Gallery.client,
    Gallery.client.name.as_alias("client_name"),
    Gallery.title,
    Gallery.description,
    Gallery.event_date,
    Gallery.status,
    Gallery.expires_on,
    Gallery.created_at,
    Gallery.updated_at,
    Gallery.published_at,
    Gallery.cover_photo,
    Gallery.watermark,
    Gallery.version,
)


def gallery_from_row(row: dict[str, Any]) -> GalleryRecord:
    """A gallery from a row with the columns of ``_COLUMNS`` (or a query aliased to them)."""
    return GalleryRecord(
        id=row["id"],
        client_id=row["client"],
        client_name=row["client_name"],
        title=row["title"],
        description=row["description"],
        event_date=row["event_date"],
        status=row["status"],
        expires_on=row["expires_on"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        published_at=row["published_at"],
        cover_photo_id=row["cover_photo"],
        watermark=row["watermark"],
        version=row["version"],
    )


def _date(value: str, field: str) -> dt.date | None:
    value = value.strip()
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidInput("Enter a date as YYYY-MM-DD.", field=field) from None


def _clean(
    details: GalleryDetails, today: dt.date, *, old_expiry: dt.date | None = None
) -> dict[str, Any]:
    expires_on = _date(details.expires_on, "expires_on")
    # A past expiry date makes no sense for a new date; an unchanged old one may stay.
    if expires_on is not None and expires_on < today and expires_on != old_expiry:
        raise InvalidInput("Choose a date from today on, or leave it empty.", field="expires_on")
    return {
        "title": clean_text(details.title, field="title", max_length=120),
        "description": clean_text(
            details.description, field="description", max_length=2000, required=False
        ),
        "event_date": _date(details.event_date, "event_date"),
        "expires_on": expires_on,
        "watermark": details.watermark,
    }


async def get_gallery(gallery_id: int, *, hide_erased: bool = False) -> GalleryRecord:
    """The gallery; with ``hide_erased`` one whose client is being erased is NotFound."""
    row = await Gallery.select(*_COLUMNS).where(Gallery.id == gallery_id).first().run()
    if row is None or (hide_erased and await is_erased("client", row["client"])):
        raise NotFound("There is no such gallery.")
    return gallery_from_row(row)


async def list_galleries(
    *, status: str | None = None, hide_erased: bool = False
) -> list[GalleryRecord]:
    """Every gallery (or those of one status), newest first; with ``hide_erased`` without
    those of clients being erased (one query for their ids)."""
    query = Gallery.select(*_COLUMNS).order_by(Gallery.created_at, ascending=False)
    erased = await erased_client_ids() if hide_erased else set()
    if erased:
        query = query.where(Gallery.client.not_in(sorted(erased)))
    if status is not None:
        if status not in STATUSES:
            raise InvalidInput(f"Choose one of: {', '.join(STATUSES)}.", field="status")
        query = query.where(Gallery.status == status)
    return [gallery_from_row(row) for row in await query.run()]


async def list_for_client(client_id: int) -> list[GalleryRecord]:
    """A client's galleries, newest first (for the client's page)."""
    rows = (
        await Gallery.select(*_COLUMNS)
        .where(Gallery.client == client_id)
        .order_by(Gallery.created_at, ascending=False)
        .run()
    )
    return [gallery_from_row(row) for row in rows]


async def create_gallery(
    client_id: int, details: GalleryDetails, *, actor: Actor, address: str, now: dt.datetime
) -> GalleryRecord:
    """A draft gallery for an active client, with its first set."""
    client = await clients.get_client(client_id)
    if client.archived:
        raise Conflict("This client is archived. Restore the client first.")
    values = _clean(details, now.date())
    async with Gallery._meta.db.transaction(allow_nested=True):
        rows = await Gallery.insert(
            Gallery(client=client_id, **values, created_by=actor.id, created_at=now, updated_at=now)
        ).returning(Gallery.id)
        gallery_id = rows[0]["id"]
        await GallerySet.insert(GallerySet(gallery=gallery_id, name=DEFAULT_SET, position=0)).run()
        await audit.record(
            "gallery.create",
            actor=actor,
            target=f"gallery:{gallery_id}",
            address=address,
            details={"client": client_id},
            at=now,
        )
    return await get_gallery(gallery_id)


async def update_gallery(
    gallery_id: int, details: GalleryDetails, *, actor: Actor, address: str, now: dt.datetime
) -> GalleryRecord:
    before = await get_gallery(gallery_id)
    values = _clean(details, now.date(), old_expiry=before.expires_on)
    changed = [key for key, value in values.items() if getattr(before, key) != value]
    if not changed:
        return before
    async with Gallery._meta.db.transaction(allow_nested=True):
        update: dict[Any, Any] = {**values, "updated_at": now}
        await Gallery.update(update).where(Gallery.id == gallery_id).run()
        if "watermark" in changed:
            await _remake_previews(gallery_id, now)
        await audit.record(
            "gallery.update",
            actor=actor,
            target=f"gallery:{gallery_id}",
            address=address,
            details={"fields": changed},
            at=now,
        )
    return await get_gallery(gallery_id)


async def watermark_text(*, gallery_id: int, photo_id: int) -> str | None:
    """The text on a photo's preview: the studio's name when its gallery asks for a watermark
    (the derivative job's :class:`~appliance.galleries.derivatives.WatermarkLookup`)."""
    row = await Gallery.select(Gallery.watermark).where(Gallery.id == gallery_id).first().run()
    if row is None or not row["watermark"]:
        return None
    studio = await setup.get_studio()
    return f"© {studio.name}" if studio and studio.name else "©"


async def _remake_previews(gallery_id: int, now: dt.datetime) -> None:
    """Queue new derivatives for every processed photo (the watermark changed)."""
    await PhotoJob.raw(
        "INSERT INTO photo_job (photo, state, attempts, last_error, not_before, updated_at)"
        " SELECT id, 'queued', 0, '', {}, {} FROM photo WHERE gallery = {} AND status = 'ready'",
        now,
        now,
        gallery_id,
    )


async def set_status(
    gallery_id: int, status: str, *, actor: Actor, address: str, now: dt.datetime
) -> GalleryRecord:
    """Publish, archive, or take back to draft."""
    if status not in STATUSES:
        raise InvalidInput(f"Choose one of: {', '.join(STATUSES)}.", field="status")
    before = await get_gallery(gallery_id)
    if before.status == status:
        raise Conflict(f"This gallery is already {status}.")
    if status == "published" and before.expired(now.date()):
        raise Conflict("This gallery has expired. Change its expiry date first.")
    values: dict[Any, Any] = {Gallery.status: status, Gallery.updated_at: now}
    if status == "published":
        values[Gallery.published_at] = now
    async with Gallery._meta.db.transaction(allow_nested=True):
        await Gallery.update(values).where(Gallery.id == gallery_id).run()
        await audit.record(
            f"gallery.{status}",
            actor=actor,
            target=f"gallery:{gallery_id}",
            address=address,
            details={"from": before.status},
            at=now,
        )
    return await get_gallery(gallery_id)


async def list_sets(gallery_id: int) -> list[SetRecord]:
    rows = (
        await GallerySet.select(GallerySet.id, GallerySet.name, GallerySet.position)
        .where(GallerySet.gallery == gallery_id)
        .order_by(GallerySet.position)
        .order_by(GallerySet.id)
        .run()
    )
    return [SetRecord(id=row["id"], name=row["name"], position=row["position"]) for row in rows]


async def list_photos(gallery_id: int) -> list[PhotoSummary]:
    """A gallery's photos, set by set, in their order within each set."""
    rows = (
        await Photo.select(
            Photo.id,
            Photo.gallery_set,
            Photo.filename,
            Photo.content_type,
            Photo.size,
            Photo.width,
            Photo.height,
            Photo.status,
            Photo.created_at,
            Photo.failure,
        )
        .where(Photo.gallery == gallery_id)
        .order_by(Photo.gallery_set)
        .order_by(Photo.position)
        .order_by(Photo.id)
        .run()
    )
    return [
        PhotoSummary(
            id=row["id"],
            set_id=row["gallery_set"],
            filename=row["filename"],
            content_type=row["content_type"],
            size=row["size"],
            width=row["width"],
            height=row["height"],
            status=row["status"],
            created_at=row["created_at"],
            failure=row["failure"],
        )
        for row in rows
    ]


async def _own_set(gallery_id: int, set_id: int) -> SetRecord:
    for item in await list_sets(gallery_id):
        if item.id == set_id:
            return item
    raise NotFound("There is no such set in this gallery.")


async def lock_gallery(gallery_id: int) -> None:
    """Serialise changes to one gallery's sets (positions are renumbered as a whole)."""
    rows = await Gallery.raw("SELECT id FROM gallery WHERE id = {} FOR UPDATE", gallery_id)
    if not rows:
        raise NotFound("There is no such gallery.")


async def _renumber(gallery_id: int, order: list[int]) -> None:
    for position, set_id in enumerate(order):
        await (
            GallerySet.update({GallerySet.position: position}).where(GallerySet.id == set_id).run()
        )


async def add_set(
    gallery_id: int, name: str, *, actor: Actor, address: str, now: dt.datetime
) -> SetRecord:
    clean = clean_text(name, field="set_name", max_length=80)
    async with Gallery._meta.db.transaction(allow_nested=True):
        await lock_gallery(gallery_id)
        existing = await list_sets(gallery_id)
        if len(existing) >= MAX_SETS:
            raise Conflict(f"A gallery has at most {MAX_SETS} sets.")
        if any(item.name.casefold() == clean.casefold() for item in existing):
            raise InvalidInput("This gallery already has a set of that name.", field="set_name")
        rows = await GallerySet.insert(
            GallerySet(gallery=gallery_id, name=clean, position=len(existing))
        ).returning(GallerySet.id)
        await audit.record(
            "gallery.set.add",
            actor=actor,
            target=f"gallery:{gallery_id}",
            address=address,
            details={"set": rows[0]["id"]},
            at=now,
        )
    return await _own_set(gallery_id, rows[0]["id"])


async def rename_set(
    gallery_id: int, set_id: int, name: str, *, actor: Actor, address: str, now: dt.datetime
) -> SetRecord:
    clean = clean_text(name, field="set_name", max_length=80)
    async with Gallery._meta.db.transaction(allow_nested=True):
        await lock_gallery(gallery_id)
        await _own_set(gallery_id, set_id)
        others = [s for s in await list_sets(gallery_id) if s.id != set_id]
        if any(item.name.casefold() == clean.casefold() for item in others):
            raise InvalidInput("This gallery already has a set of that name.", field="set_name")
        await GallerySet.update({GallerySet.name: clean}).where(GallerySet.id == set_id).run()
        await audit.record(
            "gallery.set.rename",
            actor=actor,
            target=f"gallery:{gallery_id}",
            address=address,
            details={"set": set_id},
            at=now,
        )
    return await _own_set(gallery_id, set_id)


async def move_set(
    gallery_id: int,
    set_id: int,
    direction: str,
    *,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> list[SetRecord]:
    """Move a set one place "up" or "down"; at an end it stays where it is."""
    if direction not in ("up", "down"):
        raise InvalidInput("Move a set up or down.", field="direction")
    async with Gallery._meta.db.transaction(allow_nested=True):
        await lock_gallery(gallery_id)
        await _own_set(gallery_id, set_id)
        order = [item.id for item in await list_sets(gallery_id)]
        index = order.index(set_id)
        target = index - 1 if direction == "up" else index + 1
        if 0 <= target < len(order):
            order[index], order[target] = order[target], order[index]
            await _renumber(gallery_id, order)
            await audit.record(
                "gallery.set.move",
                actor=actor,
                target=f"gallery:{gallery_id}",
                address=address,
                details={"set": set_id, "to": target},
                at=now,
            )
    return await list_sets(gallery_id)


async def delete_set(
    gallery_id: int, set_id: int, *, actor: Actor, address: str, now: dt.datetime
) -> None:
    """Remove an (empty) set; the last set of a gallery stays."""
    async with Gallery._meta.db.transaction(allow_nested=True):
        await lock_gallery(gallery_id)
        await _own_set(gallery_id, set_id)
        remaining = [item.id for item in await list_sets(gallery_id) if item.id != set_id]
        if not remaining:
            raise Conflict("A gallery keeps at least one set.")
        if await Photo.exists().where(Photo.gallery_set == set_id).run():
            raise Conflict("This set has photos. Move or delete them first.")
        if await PhotoUpload.exists().where(PhotoUpload.gallery_set == set_id).run():
            raise Conflict("Photos are being uploaded into this set. Try again when they are in.")
        await GallerySet.delete().where(GallerySet.id == set_id).run()
        await _renumber(gallery_id, remaining)
        await audit.record(
            "gallery.set.delete",
            actor=actor,
            target=f"gallery:{gallery_id}",
            address=address,
            details={"set": set_id},
            at=now,
        )
