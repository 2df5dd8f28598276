"""The client's side of a share link: the gallery, one photo, favourites, downloads, the ZIP.

Every page here starts from the token in the path (:func:`sharing.open_link`), so a withdrawn
or expired link stops working on the next request. A browser holds a visitor cookie; its visit
row remembers whether the link's password and download PIN were entered. Photo bytes come from
``/media/share/<link>/...`` (``media_web``), which checks the same things again per file.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import Controller, MediaType, Response, get, post
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream

from appliance.errors import ApplianceError, Conflict, Forbidden, NotFound, TooManyAttempts
from appliance.galleries import media, selections, service, sharing
from appliance.galleries.page_cache import (
    CSRF_PLACEHOLDER,
    CachedPage,
    PageCache,
    accepts_gzip,
)
from appliance.galleries.selections import SelectionRecord
from appliance.galleries.service import GalleryRecord, PhotoSummary, SetRecord
from appliance.galleries.share_staff_web import public_base
from appliance.galleries.sharing import LinkRecord, Visit
from appliance.galleries.zipstream import ZipEntry, safe_entry_name, stream_zip
from appliance.setup import service as studio
from appliance.tokens import new_token
from appliance.web.access import record_access
from appliance.web.cookies import make_cookie, read_cookie
from appliance.web.csrf import CSRF_FIELD, csrf_token
from appliance.web.pages import (
    FORM,
    client_address,
    error_context,
    maintenance_banner,
    maintenance_banner_key,
    redirect,
    render,
    retry_after,
    status_of,
)
from appliance.web.requests import AnyConnection, AnyRequest

__all__ = ["VISITOR_COOKIE", "ShareController", "visitor_value"]

log = logging.getLogger(__name__)

VISITOR_COOKIE = "fs_visitor"
VISITOR_DAYS = 30
ZIP_SIZES = ("web", "original")
# "Download all" streams read the whole gallery from the store; a few per link (in each web
# process) are plenty for its recipient and keep one link from saturating disk and uplink.
MAX_ZIPS_PER_LINK = 2
MAX_PAGE = 10_000
STUDIO_NAME_SECONDS = 60.0


def visitor_value(connection: AnyConnection) -> str:
    """The visitor value this browser sent, or "" when it has none (or a malformed one)."""
    value = read_cookie(connection, VISITOR_COOKIE)
    return value if sharing.TOKEN_PATTERN.fullmatch(value) else ""


class PasswordForm(msgspec.Struct):
    password: str = ""


class PinForm(msgspec.Struct):
    pin: str = ""


class ListForm(msgspec.Struct):
    name: str = ""


class ChooseForm(msgspec.Struct):
    chosen: str = ""  # "1" put on, "0" take off, "" flip
    back: str = "grid"


class SendForm(msgspec.Struct):
    note: str = ""


@dataclass(frozen=True)
class Opened:
    """A link opened by this request: the link, its gallery and this browser's visit."""

    token: str
    link: LinkRecord
    gallery: GalleryRecord
    visit: Visit
    now: dt.datetime
    selection_version: int = 0

    @property
    def base(self) -> str:
        return f"/s/{self.token}"


async def _open(request: AnyRequest, token: str, *, create: bool = False) -> Opened:
    """Open the link for this request. Only pages a person opens by the link (``create``) make
    a visit (and the visitor cookie) for a browser new to it; forms, downloads and the page's
    own requests need the visit that page made."""
    now = request.app.state.clock()
    visitor = visitor_value(request)
    opening = await sharing.open_link(token, now, visitor=visitor)
    address = client_address(request)
    visit = opening.visit
    if visit is None:
        if not create:
            raise Forbidden(
                "Open the gallery's link again. If this keeps happening, allow cookies for "
                "this site: the gallery needs one to remember you."
            )
        if not visitor:
            visitor = new_token()
            cookie = make_cookie(
                request, VISITOR_COOKIE, visitor, max_age=VISITOR_DAYS * 86400, samesite="lax"
            )
            request.state.setdefault("set_cookies", []).append(cookie)
        visit = await sharing.start_visit(opening.link, visitor, address=address, now=now)
    else:
        await sharing.seen(visit, address=address, now=now)
    return Opened(
        token=token,
        link=opening.link,
        gallery=opening.gallery,
        visit=visit,
        now=now,
        selection_version=opening.selection_version,
    )


def _redirect(request: AnyRequest, path: str) -> Response[Any]:
    """303 to ``path``, with the cookies this request queued (a new visitor cookie)."""
    return redirect(path, cookies=request.state.get("set_cookies", []))


def _unlocked(opened: Opened) -> None:
    if not opened.visit.unlocked:
        raise Forbidden("Enter the gallery's password first.")


def _media(request: AnyRequest, opened: Opened, photo_id: int, variant: str) -> str:
    return media.media_url(
        request.app.state.secret_key,
        scope=media.share_scope(opened.link.id),
        photo_id=photo_id,
        variant=variant,
        now=opened.now,
    )


def _urls(request: AnyRequest, opened: Opened, photo: PhotoSummary) -> dict[str, str]:
    """The file URLs of one photo that this link allows."""
    link = opened.link
    urls = {
        "thumb": _media(request, opened, photo.id, "thumb"),
        "preview": _media(request, opened, photo.id, "preview"),
    }
    if link.can_download_web:
        urls["download"] = urls["preview"] + "&dl=1"
    if link.can_download_original:
        urls["original"] = _media(request, opened, photo.id, "original")
    return urls


async def _ready_photos(gallery: GalleryRecord) -> tuple[list[SetRecord], list[PhotoSummary]]:
    """The sets with ready photos and those photos, in the order the client sees them: set by
    set, each in its order, the cover photo first in its set."""
    sets = await service.list_sets(gallery.id)
    photos = [photo for photo in await service.list_photos(gallery.id) if photo.status == "ready"]
    position = {item.id: index for index, item in enumerate(sets)}
    cover = gallery.cover_photo_id
    # Stable: within a set the photos keep their own order.
    photos.sort(key=lambda photo: (position.get(photo.set_id, 0), photo.id != cover))
    used = {photo.set_id for photo in photos}
    return [item for item in sets if item.id in used], photos


def _groups(
    sets: list[SetRecord], photos: list[PhotoSummary]
) -> list[tuple[SetRecord, list[PhotoSummary]]]:
    """Consecutive photos of one set together, for a heading and a grid each."""
    names = {item.id: item for item in sets}
    groups: list[tuple[SetRecord, list[PhotoSummary]]] = []
    for photo in photos:
        if not groups or groups[-1][0].id != photo.set_id:
            groups.append((names[photo.set_id], []))
        groups[-1][1].append(photo)
    return groups


def _active_list(lists: list[SelectionRecord], wanted: int | None) -> SelectionRecord | None:
    for item in lists:
        if item.id == wanted:
            return item
    return lists[0] if lists else None


async def _studio_name(request: AnyRequest) -> str:
    """The studio's name, read at most once a minute (it heads every client page)."""
    cached: tuple[float, str] | None = request.app.state.get("studio_name")
    if cached is not None and time.monotonic() - cached[0] < STUDIO_NAME_SECONDS:
        return cached[1]
    profile = await studio.get_studio()
    name = profile.name if profile else "Fotostudio"
    request.app.state["studio_name"] = (time.monotonic(), name)
    return name


class ShareController(Controller):
    path = "/s"

    async def _password_page(
        self,
        request: AnyRequest,
        opened: Opened,
        *,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> Response[Any]:
        return render(
            request,
            "share/password.html",
            {
                "opened": opened,
                "studio_name": await _studio_name(request),
                **extra,
            },
            status_code=status_code,
            headers=headers,
        )

    async def _gallery_page(
        self,
        request: AnyRequest,
        opened: Opened,
        *,
        list_id: int | None = None,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> Response[Any]:
        context = await self._gallery_context(request, opened, list_id=list_id)
        context.update(extra)
        return render(
            request, "share/gallery.html", context, status_code=status_code, headers=headers
        )

    async def _gallery_context(
        self, request: AnyRequest, opened: Opened, *, list_id: int | None, page: int = 1
    ) -> dict[str, Any]:
        sets, photos = await _ready_photos(opened.gallery)
        lists = await selections.lists_of(opened.link, now=opened.now)
        active = _active_list(lists, list_id)
        per_page = request.app.state.settings.sharing.photos_per_page
        start = (page - 1) * per_page
        shown = photos[start : start + per_page]
        urls = {photo.id: {"thumb": _media(request, opened, photo.id, "thumb")} for photo in shown}
        cover = next((p for p in photos if p.id == opened.gallery.cover_photo_id), None)
        return {
            "opened": opened,
            "studio_name": await _studio_name(request),
            "sets": sets,
            "photos": photos,
            "groups": _groups(sets, shown),
            "page": page,
            "next_page": page + 1 if start + per_page < len(photos) else None,
            "remaining": max(len(photos) - start - per_page, 0),
            "cover_url": _media(request, opened, cover.id, "preview") if cover else None,
            "urls": urls,
            "lists": lists,
            "active": active,
            "chosen": set(active.photo_ids) if active else set(),
            "pin_needed": opened.link.has_pin and not opened.visit.pin_ok,
            **maintenance_banner(request),
        }

    async def _cached_gallery(
        self, request: AnyRequest, opened: Opened, *, list_id: int | None, page_number: int
    ) -> Response[Any]:
        """The gallery page from the page cache, rendered on a miss; only the CSRF token is
        this request's own."""
        cache: PageCache = request.app.state.page_cache
        key = (
            opened.token,  # never reused, unlike an id (another database, a restore)
            opened.gallery.version,
            opened.selection_version,
            list_id,
            page_number,
            media.url_window(opened.now),
            opened.link.has_pin and not opened.visit.pin_ok,
            await _studio_name(request),
            maintenance_banner_key(request),
        )
        page = cache.get(key)
        if page is None:
            context = await self._gallery_context(
                request, opened, list_id=list_id, page=page_number
            )
            engine = request.app.template_engine
            assert engine is not None  # the app is built with a template config
            template = engine.get_template("share/gallery.html")
            page = CachedPage(
                template.render(
                    **context, csrf_value=CSRF_PLACEHOLDER, csrf_field=CSRF_FIELD, signed=None
                )
            )
            cache.put(key, page)
        token = csrf_token(request)
        headers = {"Vary": "Accept-Encoding"}
        if accepts_gzip(request.headers.get("accept-encoding", "")):
            body = page.gzipped(token)
            headers["Content-Encoding"] = "gzip"
        else:
            body = page.plain(token)
        return Response(
            body,
            media_type=MediaType.HTML,
            headers=headers,
            cookies=request.state.get("set_cookies", []),
        )

    @get("/{token:str}", name="share")
    async def show(
        self,
        request: AnyRequest,
        token: FromPath[str],
        list_id: Annotated[int | None, QueryParameter(name="list", ge=1)] = None,
        sent: Annotated[int | None, QueryParameter(ge=0, le=1)] = None,
        page: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 1,
    ) -> Response[Any]:
        opened = await _open(request, token, create=True)
        if not opened.visit.unlocked:
            return await self._password_page(request, opened)
        if sent:
            notice = "Your selection was sent to the studio. Thank you!"
            return await self._gallery_page(request, opened, list_id=list_id, notice=notice)
        if list_id is not None and list_id not in {
            item.id for item in await selections.lists_of(opened.link)
        }:
            list_id = None  # someone else's or made up: the default list, and one cache entry
        return await self._cached_gallery(request, opened, list_id=list_id, page_number=page)

    @get("/{token:str}/tiles", name="share_tiles", media_type=MediaType.JSON)
    async def tiles(
        self,
        request: AnyRequest,
        token: FromPath[str],
        page: Annotated[int, QueryParameter(ge=2, le=MAX_PAGE)],
        list_id: Annotated[int | None, QueryParameter(name="list", ge=1)] = None,
    ) -> dict[str, Any]:
        """The photos of page ``page`` for the script that loads them as the client scrolls."""
        opened = await _open(request, token)
        _unlocked(opened)
        sets, photos = await _ready_photos(opened.gallery)
        per_page = request.app.state.settings.sharing.photos_per_page
        start = (page - 1) * per_page
        shown = photos[start : start + per_page]
        lists = await selections.lists_of(opened.link)
        active = _active_list(lists, list_id)
        chosen = set(active.photo_ids) if active else set()
        return {
            "sets": {str(item.id): item.name for item in sets},
            "tiles": [
                {
                    "id": photo.id,
                    "set": photo.set_id,
                    "name": photo.filename,
                    "thumb": _media(request, opened, photo.id, "thumb"),
                    "chosen": photo.id in chosen,
                }
                for photo in shown
            ],
            "next": page + 1 if start + per_page < len(photos) else None,
        }

    async def _enter(self, request: AnyRequest, token: str, kind: str, value: str) -> Response[Any]:
        """Check the password (then show the gallery) or the download PIN (then downloads)."""
        opened = await _open(request, token)
        if kind == "pin":
            _unlocked(opened)
        try:
            await sharing.enter_secret(
                opened.link,
                opened.visit,
                kind,
                value,
                address=client_address(request),
                now=opened.now,
                rules=request.app.state.settings.throttle,
            )
        except ApplianceError as exc:
            page = self._password_page if kind == "password" else self._gallery_page
            return await page(
                request,
                opened,
                status_code=status_of(exc),
                headers=retry_after(exc),
                **error_context(exc),
            )
        return _redirect(request, opened.base if kind == "password" else f"{opened.base}#pin")

    @post("/{token:str}/unlock", name="share_unlock")
    async def unlock(
        self, request: AnyRequest, token: FromPath[str], data: Annotated[PasswordForm, FORM]
    ) -> Response[Any]:
        return await self._enter(request, token, "password", data.password)

    @post("/{token:str}/pin", name="share_pin")
    async def pin(
        self, request: AnyRequest, token: FromPath[str], data: Annotated[PinForm, FORM]
    ) -> Response[Any]:
        return await self._enter(request, token, "pin", data.pin)

    @get("/{token:str}/p/{photo_id:int}", name="share_photo")
    async def photo(
        self,
        request: AnyRequest,
        token: FromPath[str],
        photo_id: FromPath[int],
        list_id: Annotated[int | None, QueryParameter(name="list", ge=1)] = None,
    ) -> Response[Any]:
        """One photo large, for browsers without JavaScript (the lightbox does this in place)."""
        opened = await _open(request, token, create=True)
        if not opened.visit.unlocked:
            return _redirect(request, opened.base)
        _, photos = await _ready_photos(opened.gallery)
        index = next((i for i, photo in enumerate(photos) if photo.id == photo_id), None)
        if index is None:
            raise NotFound("There is no such photo in this gallery.")
        lists = await selections.lists_of(opened.link, now=opened.now)
        active = _active_list(lists, list_id)
        return render(
            request,
            "share/photo.html",
            {
                "opened": opened,
                "studio_name": await _studio_name(request),
                "photo": photos[index],
                "position": index + 1,
                "total": len(photos),
                "previous": photos[index - 1].id if index > 0 else None,
                "next": photos[index + 1].id if index + 1 < len(photos) else None,
                "urls": _urls(request, opened, photos[index]),
                "active": active,
                "chosen": set(active.photo_ids) if active else set(),
                "pin_needed": opened.link.has_pin and not opened.visit.pin_ok,
            },
        )

    @get("/{token:str}/urls", name="share_urls", media_type=MediaType.JSON)
    async def urls(
        self,
        request: AnyRequest,
        token: FromPath[str],
        list_id: Annotated[int | None, QueryParameter(name="list", ge=1)] = None,
    ) -> dict[str, Any]:
        """The file URLs of every photo, in page order: fetched by the lightbox when it first
        opens, and again when a page outlives the URLs' five minutes."""
        opened = await _open(request, token)
        _unlocked(opened)
        _, photos = await _ready_photos(opened.gallery)
        lists = await selections.lists_of(opened.link)
        active = _active_list(lists, list_id)
        return {
            "order": [photo.id for photo in photos],
            "names": [photo.filename for photo in photos],
            "chosen": sorted(active.photo_ids) if active else [],
            "photos": {str(photo.id): _urls(request, opened, photo) for photo in photos},
        }

    @post("/{token:str}/lists", name="share_list_create")
    async def create_list(
        self, request: AnyRequest, token: FromPath[str], data: Annotated[ListForm, FORM]
    ) -> Response[Any]:
        opened = await _open(request, token)
        _unlocked(opened)
        try:
            created = await selections.create_list(opened.link, data.name, now=opened.now)
        except ApplianceError as exc:
            return await self._gallery_page(
                request,
                opened,
                status_code=status_of(exc),
                headers=retry_after(exc),
                **error_context(exc),
            )
        return _redirect(request, f"{opened.base}?list={created.id}#lists")

    @post("/{token:str}/lists/{list_id:int}/photos/{photo_id:int}", name="share_choose")
    async def choose(
        self,
        request: AnyRequest,
        token: FromPath[str],
        list_id: FromPath[int],
        photo_id: FromPath[int],
        data: Annotated[ChooseForm, FORM],
    ) -> Response[Any]:
        """Mark or unmark a favourite: JSON for the page's script, a redirect for a form."""
        opened = await _open(request, token)
        _unlocked(opened)
        chosen = {"1": True, "0": False}.get(data.chosen)
        state = await selections.toggle(
            opened.link, list_id, photo_id, chosen=chosen, now=opened.now
        )
        if "application/json" in request.headers.get("accept", ""):
            lists = await selections.lists_of(opened.link)
            count = next((len(item.photo_ids) for item in lists if item.id == list_id), 0)
            return Response(
                {"chosen": state, "count": count}, media_type=MediaType.JSON, status_code=200
            )
        if data.back == "photo":
            return _redirect(request, f"{opened.base}/p/{photo_id}?list={list_id}")
        return _redirect(request, f"{opened.base}?list={list_id}#p{photo_id}")

    @post("/{token:str}/lists/{list_id:int}/send", name="share_send")
    async def send(
        self,
        request: AnyRequest,
        token: FromPath[str],
        list_id: FromPath[int],
        data: Annotated[SendForm, FORM],
    ) -> Response[Any]:
        opened = await _open(request, token)
        _unlocked(opened)
        try:
            await selections.send(
                opened.link,
                list_id,
                data.note,
                address=client_address(request),
                now=opened.now,
                studio_url=public_base(request),
                language=request.app.state.settings.notify.language,
            )
        except ApplianceError as exc:
            return await self._gallery_page(
                request,
                opened,
                list_id=list_id,
                status_code=status_of(exc),
                headers=retry_after(exc),
                **error_context(exc),
            )
        return _redirect(request, f"{opened.base}?list={list_id}&sent=1#lists")

    @get("/{token:str}/download", name="share_zip")
    async def download_all(
        self,
        request: AnyRequest,
        token: FromPath[str],
        size: Annotated[str, QueryParameter(max_length=10)] = "web",
        list_id: Annotated[int | None, QueryParameter(name="list", ge=1)] = None,
    ) -> Stream:
        """Every photo (or one list's) as one ZIP, streamed while it is read from the store."""
        opened = await _open(request, token)
        _unlocked(opened)
        link = opened.link
        if size not in ZIP_SIZES:
            raise NotFound("Choose the web size or the originals.")
        allowed = link.can_download_original if size == "original" else link.can_download_web
        if not allowed:
            raise Forbidden("This link does not allow downloading these files.")
        if link.has_pin and not opened.visit.pin_ok:
            raise Forbidden("Enter the download PIN first.")
        sets, photos = await _ready_photos(opened.gallery)
        if list_id is not None:
            lists = await selections.lists_of(link)
            active = _active_list(lists, list_id)
            if active is None or active.id != list_id:
                raise NotFound("There is no such list.")
            photos = [photo for photo in photos if photo.id in set(active.photo_ids)]
        if not photos:
            raise Conflict("There are no photos to download yet.")
        entries = await _zip_entries(request, opened, sets, photos, size)
        await sharing.record_event(
            link.id,
            "zip",
            now=opened.now,
            address=client_address(request),
            detail=f"{len(entries)} photos, {size}",
        )
        gallery_target = f"gallery:{opened.gallery.id}"  # staff using a client's link: audited
        await record_access(
            request,
            "gallery.download",
            gallery_target,
            link=link.id,
            photos=len(entries),
            size=size,
        )
        clock = request.app.state.clock

        async def still_shared(entry: ZipEntry) -> None:
            await sharing.active_link(link.id, clock())
            if not await media.still_ready(entry.ident, opened.gallery.id):
                raise NotFound("A photo was taken out of the gallery meanwhile. Download again.")

        # Checked and taken with no await between, so two requests cannot both pass.
        slots: dict[int, int] = request.app.state.zip_slots
        if slots.get(link.id, 0) >= MAX_ZIPS_PER_LINK:
            raise TooManyAttempts(
                "Downloads of this gallery are already running. Try again when they are done.",
                retry_after=60,
            )
        slots[link.id] = slots.get(link.id, 0) + 1
        return Stream(
            _guarded(stream_zip(entries, before_entry=still_shared), link.id, slots),
            media_type="application/zip",
            headers={
                "Content-Disposition": media.content_disposition(
                    "attachment", f"{opened.gallery.title}.zip"
                ),
                "Cache-Control": "no-store",
            },
        )


class DownloadStopped(Exception):
    """The link stopped working while its ZIP was being sent."""


async def _guarded(
    chunks: AsyncIterator[bytes], link_id: int, slots: dict[int, int]
) -> AsyncIterator[bytes]:
    """Pass the archive on; once the link stops, break the connection off (rather than end
    the archive early) so the browser reports the download as failed, not as complete. The
    link's download slot is given back however the download ends."""
    try:
        async for chunk in chunks:
            if chunk:
                yield chunk
    except NotFound as exc:
        log.info("ZIP download of share link %s stopped: %s", link_id, exc.message)
        raise DownloadStopped(exc.message) from None
    finally:
        slots[link_id] -= 1
        if not slots[link_id]:
            del slots[link_id]


async def _zip_entries(
    request: AnyRequest,
    opened: Opened,
    sets: list[SetRecord],
    photos: list[PhotoSummary],
    size: str,
) -> list[ZipEntry]:
    store = request.app.state.store
    folders = {item.id: item.name for item in sets} if len(sets) > 1 else {}
    keys = await media.gallery_keys(
        opened.gallery.id, "original" if size == "original" else "preview"
    )
    taken: set[str] = set()
    entries = []
    for photo in photos:
        if photo.id not in keys:
            continue
        name = safe_entry_name(
            folders.get(photo.set_id),
            photo.filename,
            taken=taken,
            fallback=f"photo-{photo.id}",
            extension="" if size == "original" else ".jpg",
        )

        def chunks(key: str = keys[photo.id]) -> AsyncIterator[bytes]:
            return store.get(key)  # type: ignore[no-any-return]

        # An original's size is known; a preview is far below the 4 GB where ZIP64 starts.
        known = photo.size if size == "original" else 0
        entries.append(
            ZipEntry(
                name=name, size=known, modified=photo.created_at, chunks=chunks, ident=photo.id
            )
        )
    return entries
