"""Photo files behind signed short-lived URLs: for staff (the session) and for share links.

The signature only proves that this appliance made the URL within the last five minutes; who
may fetch it is decided again on every request: a signed-in staff member, or a share link that
still works, opened (and unlocked) by this very browser, whose permissions cover the variant.
Staff get no file of a client whose erasure is pending (their share links are revoked already).
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream

from appliance.errors import Forbidden
from appliance.galleries import media, service, sharing
from appliance.galleries.share_web import visitor_value
from appliance.storage.base import ObjectStore
from appliance.web.access import record_access
from appliance.web.auth import require_staff
from appliance.web.pages import client_address
from appliance.web.requests import AnyRequest

__all__ = ["ShareMediaController", "StaffMediaController"]

_EXPIRES = QueryParameter(ge=0, le=2**40)
_SIGNATURE = QueryParameter(min_length=64, max_length=64)


async def _stream(store: ObjectStore, found: dict[str, Any], *, attachment: bool) -> Stream:
    # Checked before the answer starts: a missing object is a 404, not a cut-off 200.
    info = await store.stat(found["key"])
    name = found["filename"]
    if found["content_type"] == "image/jpeg" and not name.lower().endswith((".jpg", ".jpeg")):
        name = name.rsplit(".", 1)[0] + ".jpg"  # a web-size copy of a PNG or TIFF is a JPEG
    disposition = "attachment" if attachment else "inline"
    return Stream(
        store.get(found["key"]),
        media_type=found["content_type"],
        headers={
            "Content-Length": str(info.size),
            "Cache-Control": "private, max-age=300",
            "Content-Disposition": media.content_disposition(disposition, name),
        },
    )


async def _record_download(
    request: AnyRequest, found: dict[str, Any], photo_id: int, **details: Any
) -> None:
    target = f"gallery:{found['gallery_id']}"
    await record_access(request, "photo.download", target, photo=photo_id, **details)


class StaffMediaController(Controller):
    path = "/media/staff"
    guards = [require_staff]  # re-authorised on every request, whatever the URL says

    @get("/{photo_id:int}/{variant:str}", name="staff_media")
    async def file(
        self,
        request: AnyRequest,
        photo_id: FromPath[int],
        variant: FromPath[str],
        e: Annotated[int, _EXPIRES],
        s: Annotated[str, _SIGNATURE],
    ) -> Stream:
        media.verify_media_url(
            request.app.state.secret_key,
            scope="staff",
            photo_id=photo_id,
            variant=variant,
            expires=e,
            signature=s,
            now=request.app.state.clock(),
        )
        found = await media.photo_file(photo_id, variant)
        await service.get_gallery(found["gallery_id"], hide_erased=True)
        original = variant == "original"
        response = await _stream(request.app.state.store, found, attachment=original)
        if original:  # thumbnails and previews are parts of pages, which are logged
            await _record_download(request, found, photo_id)
        return response


class ShareMediaController(Controller):
    path = "/media/share"

    @get("/{link_id:int}/{photo_id:int}/{variant:str}", name="share_media")
    async def file(
        self,
        request: AnyRequest,
        link_id: FromPath[int],
        photo_id: FromPath[int],
        variant: FromPath[str],
        e: Annotated[int, _EXPIRES],
        s: Annotated[str, _SIGNATURE],
        dl: Annotated[int, QueryParameter(ge=0, le=1)] = 0,
    ) -> Stream:
        now = request.app.state.clock()
        media.verify_media_url(
            request.app.state.secret_key,
            scope=media.share_scope(link_id),
            photo_id=photo_id,
            variant=variant,
            expires=e,
            signature=s,
            now=now,
        )
        opening = await sharing.active_link(link_id, now, visitor=visitor_value(request))
        link, gallery, visit = opening.link, opening.gallery, opening.visit
        if visit is None or not visit.unlocked:
            raise Forbidden("Open the gallery's link again to see this photo.")
        download = variant == "original" or bool(dl)
        if download:
            allowed = link.can_download_original if variant == "original" else link.can_download_web
            if not allowed or variant == "thumb":
                raise Forbidden("This link does not allow downloading this file.")
            if link.has_pin and not visit.pin_ok:
                raise Forbidden("Enter the download PIN first.")
        found = await media.photo_file(photo_id, variant, gallery_id=gallery.id)
        if download or variant == "preview":
            kind = "downloaded" if download else "viewed"
            detail = "original" if variant == "original" else ("web size" if download else "")
            await sharing.record_event(
                link.id,
                kind,
                now=now,
                address=client_address(request),
                photo_id=photo_id,
                detail=detail,
            )
        response = await _stream(request.app.state.store, found, attachment=download)
        if download:  # by a member of staff using a client's link: logged as theirs
            await _record_download(request, found, photo_id, link=link.id, variant=variant)
        return response
