"""Arranging a gallery's photos: the cover, the order within a set, moving and deleting.

Changes to one gallery run under its row lock (:func:`service.lock_gallery`) and renumber the
positions of a set as a whole, so two staff members arranging at once cannot leave two photos
on one place. Each change is audited in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import logging

from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.errors import InvalidInput, NotFound
from appliance.galleries.service import list_sets, lock_gallery
from appliance.galleries.tables import Gallery, Photo
from appliance.storage.base import ObjectStore, StorageError

__all__ = ["delete_photo", "move_photo", "move_to_set", "set_cover", "sort_set"]

log = logging.getLogger(__name__)

SORT_KEYS = {"name": Photo.filename, "uploaded": Photo.id}


async def _photo(gallery_id: int, photo_id: int) -> dict[str, object]:
    row = (
        await Photo.select(
            Photo.id,
            Photo.gallery_set,
            Photo.status,
            Photo.original_key,
            Photo.thumb_key,
            Photo.preview_key,
        )
        .where((Photo.id == photo_id) & (Photo.gallery == gallery_id))
        .first()
        .run()
    )
    if row is None:
        raise NotFound("There is no such photo in this gallery.")
    return row


async def _check_set(gallery_id: int, set_id: int) -> None:
    if set_id not in {item.id for item in await list_sets(gallery_id)}:
        raise NotFound("There is no such set in this gallery.")


async def _set_order(set_id: int) -> list[int]:
    rows = (
        await Photo.select(Photo.id)
        .where(Photo.gallery_set == set_id)
        .order_by(Photo.position)
        .order_by(Photo.id)
        .run()
    )
    return [row["id"] for row in rows]


async def _renumber(order: list[int]) -> None:
    for position, photo_id in enumerate(order):
        await Photo.update({Photo.position: position}).where(Photo.id == photo_id).run()


async def set_cover(
    gallery_id: int, photo_id: int | None, *, actor: Actor, address: str, now: dt.datetime
) -> None:
    """Make a ready photo the gallery's cover (shown first to clients); None clears it."""
    async with Gallery._meta.db.transaction(allow_nested=True):
        await lock_gallery(gallery_id)
        if photo_id is not None:
            photo = await _photo(gallery_id, photo_id)
            if photo["status"] != "ready":
                raise InvalidInput("Only a processed photo can be the cover.", field="photo")
        await (
            Gallery.update({Gallery.cover_photo: photo_id, Gallery.updated_at: now})
            .where(Gallery.id == gallery_id)
            .run()
        )
        await audit.record(
            "gallery.cover",
            actor=actor,
            target=f"gallery:{gallery_id}",
            address=address,
            details={"photo": photo_id},
            at=now,
        )


async def move_photo(
    gallery_id: int,
    photo_id: int,
    direction: str,
    *,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> None:
    """Move a photo one place "up" (earlier) or "down" within its set."""
    if direction not in ("up", "down"):
        raise InvalidInput("Move a photo up or down.", field="direction")
    async with Gallery._meta.db.transaction(allow_nested=True):
        await lock_gallery(gallery_id)
        photo = await _photo(gallery_id, photo_id)
        order = await _set_order(int(str(photo["gallery_set"])))
        index = order.index(photo_id)
        target = index - 1 if direction == "up" else index + 1
        if not 0 <= target < len(order):
            return
        order[index], order[target] = order[target], order[index]
        await _renumber(order)
        await audit.record(
            "gallery.photo.move",
            actor=actor,
            target=f"gallery:{gallery_id}",
            address=address,
            details={"photo": photo_id, "to": target},
            at=now,
        )


async def sort_set(
    gallery_id: int, set_id: int, key: str, *, actor: Actor, address: str, now: dt.datetime
) -> None:
    """Put a set's photos in file-name or upload order."""
    if key not in SORT_KEYS:
        raise InvalidInput("Sort by name or by upload.", field="key")
    async with Gallery._meta.db.transaction(allow_nested=True):
        await lock_gallery(gallery_id)
        await _check_set(gallery_id, set_id)
        rows = (
            await Photo.select(Photo.id)
            .where(Photo.gallery_set == set_id)
            .order_by(SORT_KEYS[key])
            .order_by(Photo.id)
            .run()
        )
        await _renumber([row["id"] for row in rows])
        await audit.record(
            "gallery.set.sort",
            actor=actor,
            target=f"gallery:{gallery_id}",
            address=address,
            details={"set": set_id, "by": key},
            at=now,
        )


async def move_to_set(
    gallery_id: int,
    photo_id: int,
    set_id: int,
    *,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> None:
    """Move a photo to the end of another set of the same gallery."""
    async with Gallery._meta.db.transaction(allow_nested=True):
        await lock_gallery(gallery_id)
        photo = await _photo(gallery_id, photo_id)
        await _check_set(gallery_id, set_id)
        source = int(str(photo["gallery_set"]))
        if source == set_id:
            return
        target_order = await _set_order(set_id)
        await Photo.update({Photo.gallery_set: set_id}).where(Photo.id == photo_id).run()
        await _renumber([*target_order, photo_id])
        await _renumber(await _set_order(source))
        await audit.record(
            "gallery.photo.set",
            actor=actor,
            target=f"gallery:{gallery_id}",
            address=address,
            details={"photo": photo_id, "set": set_id},
            at=now,
        )


async def delete_photo(
    gallery_id: int,
    photo_id: int,
    store: ObjectStore,
    *,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> None:
    """Remove a photo: its row first (clients stop seeing it at once), then its files.

    A file that cannot be deleted now is logged and left for the store's clean-up; the
    reverse order could leave a row whose file is gone.
    """
    async with Gallery._meta.db.transaction(allow_nested=True):
        await lock_gallery(gallery_id)
        photo = await _photo(gallery_id, photo_id)
        await Photo.delete().where(Photo.id == photo_id).run()
        await (
            Gallery.update({Gallery.cover_photo: None})
            .where((Gallery.id == gallery_id) & (Gallery.cover_photo == photo_id))
            .run()
        )
        await _renumber(await _set_order(int(str(photo["gallery_set"]))))
        await audit.record(
            "gallery.photo.delete",
            actor=actor,
            target=f"gallery:{gallery_id}",
            address=address,
            details={"photo": photo_id},
            at=now,
        )
    for column in ("original_key", "thumb_key", "preview_key"):
        key = str(photo[column] or "")
        if not key:
            continue
        try:
            await store.delete(key)
        except StorageError as exc:
            log.warning("photo %s deleted, its file %s not (yet): %s", photo_id, column, exc)
