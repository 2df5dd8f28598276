"""Signed, short-lived URLs for photo files.

Bytes of a photo reach a browser only through such a URL. It names the photo, the variant and
who it was made for (``scope``: "staff", or "share-<link id>"), expires within
``URL_LIFETIME``, and is signed with the appliance's secret key; the handler checks the
signature, the expiry and, on every request, that the scope still allows it (a staff session,
or a share link that is not revoked).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from typing import Any

from appliance.errors import Forbidden, NotFound
from appliance.galleries.tables import Photo
from appliance.tokens import same

__all__ = [
    "URL_LIFETIME",
    "VARIANTS",
    "content_disposition",
    "gallery_keys",
    "media_url",
    "photo_file",
    "share_scope",
    "still_ready",
    "url_window",
    "verify_media_url",
]

URL_LIFETIME = dt.timedelta(minutes=5)
VARIANTS = {"thumb": "thumb_key", "preview": "preview_key", "original": "original_key"}


_SCOPE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _signature(secret_key: str, scope: str, photo_id: int, variant: str, expires: int) -> str:
    # The scope's alphabet has no ":", so the joined message cannot be read two ways.
    if not _SCOPE.fullmatch(scope):
        raise ValueError(f"invalid media scope {scope!r}")
    message = f"media:{scope}:{photo_id}:{variant}:{expires}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


def url_window(now: dt.datetime) -> int:
    """The minute a URL made at ``now`` belongs to: URLs of one minute are identical, so
    browsers can reuse cached images and pages can be cached (see page_cache)."""
    return int(now.timestamp()) // 60


def media_url(secret_key: str, *, scope: str, photo_id: int, variant: str, now: dt.datetime) -> str:
    """The URL of one variant of a photo, valid until URL_LIFETIME after the start of the
    minute of ``now`` (so between four and five minutes)."""
    expires = url_window(now) * 60 + int(URL_LIFETIME.total_seconds())
    signature = _signature(secret_key, scope, photo_id, variant, expires)
    kind, _, ident = scope.partition("-")
    path = f"/media/{kind}/{ident}" if ident else f"/media/{kind}"
    return f"{path}/{photo_id}/{variant}?e={expires}&s={signature}"


def share_scope(link_id: int) -> str:
    return f"share-{link_id}"


def verify_media_url(
    secret_key: str,
    *,
    scope: str,
    photo_id: int,
    variant: str,
    expires: int,
    signature: str,
    now: dt.datetime,
) -> None:
    """Raise Forbidden unless the signature is ours and the URL has not expired."""
    if variant not in VARIANTS:
        raise NotFound("There is no such file.")
    expected = _signature(secret_key, scope, photo_id, variant, expires)
    if not same(expected, signature):
        raise Forbidden("This link to a file is not valid.")
    if expires < now.timestamp() or expires > (now + URL_LIFETIME).timestamp() + 5:
        raise Forbidden("This link to a file has expired. Reload the page.")


async def photo_file(
    photo_id: int, variant: str, *, gallery_id: int | None = None
) -> dict[str, Any]:
    """The object key, type, name and gallery of a variant; NotFound while it does not exist yet.

    With ``gallery_id`` (a share link's gallery) only a ready photo of that gallery is found.
    """
    query = Photo.select(
        Photo.original_key,
        Photo.thumb_key,
        Photo.preview_key,
        Photo.content_type,
        Photo.filename,
        Photo.gallery,
    ).where(Photo.id == photo_id)
    if gallery_id is not None:
        query = query.where((Photo.gallery == gallery_id) & (Photo.status == "ready"))
    row = await query.first().run()
    if row is None or not row[VARIANTS[variant]]:
        raise NotFound("There is no such file (yet).")
    original = variant == "original"
    return {
        "key": row[VARIANTS[variant]],
        "content_type": row["content_type"] if original else "image/jpeg",
        "filename": row["filename"],
        "gallery_id": row["gallery"],
    }


async def gallery_keys(gallery_id: int, variant: str) -> dict[int, str]:
    """Photo id to object key of one variant, for every ready photo of a gallery."""
    column = getattr(Photo, VARIANTS[variant])
    rows = (
        await Photo.select(Photo.id, column)
        .where((Photo.gallery == gallery_id) & (Photo.status == "ready"))
        .run()
    )
    return {row["id"]: row[VARIANTS[variant]] for row in rows if row[VARIANTS[variant]]}


async def still_ready(photo_id: int, gallery_id: int) -> bool:
    """Whether a photo is still a ready photo of the gallery (checked before each ZIP entry)."""
    return bool(
        await Photo.exists()
        .where((Photo.id == photo_id) & (Photo.gallery == gallery_id))
        .where(Photo.status == "ready")
        .run()
    )


def content_disposition(disposition: str, filename: str) -> str:
    """A Content-Disposition value whose file name is plain ASCII letters, digits, dots, dashes
    and underscores: nothing in a name people chose can bend the header."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in filename)
    return f'{disposition}; filename="{safe or "download"}"'
