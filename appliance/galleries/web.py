"""Staff pages for galleries: the list, a gallery with its sets, create, edit, publish.

The galleries of a client whose erasure is pending are gone from all of them (404) until an
admin cancels it.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.params import FromPath, QueryParameter

from appliance.clients import service as clients
from appliance.errors import ApplianceError, InvalidInput
from appliance.galleries import media, photos, selections, service, sharing, uploads
from appliance.galleries.service import GalleryDetails
from appliance.web.access import record_access
from appliance.web.acting import acting
from appliance.web.auth import require_staff
from appliance.web.pages import FORM, error_context, redirect, render, status_of
from appliance.web.requests import AnyRequest

__all__ = ["GalleryController"]


class GalleryForm(msgspec.Struct):
    title: str = ""
    description: str = ""
    event_date: str = ""
    expires_on: str = ""
    watermark: str = ""  # a checkbox: "on" when ticked

    def details(self) -> GalleryDetails:
        return GalleryDetails(
            title=self.title,
            description=self.description,
            event_date=self.event_date,
            expires_on=self.expires_on,
            watermark=bool(self.watermark),
        )


class StatusForm(msgspec.Struct):
    status: str = ""


class SetForm(msgspec.Struct):
    set_name: str = ""


class MoveForm(msgspec.Struct):
    direction: str = ""


class CoverForm(msgspec.Struct):
    photo: str = ""  # a photo id, or "" to clear the cover


class SortForm(msgspec.Struct):
    key: str = ""


class PhotoSetForm(msgspec.Struct):
    set_id: int = 0


class GalleryController(Controller):
    path = "/galleries"
    guards = [require_staff]

    async def _page(
        self, request: AnyRequest, gallery_id: int, *, status_code: int = 200, **extra: Any
    ) -> Response[Any]:
        gallery = await service.get_gallery(gallery_id, hide_erased=True)
        photos = await service.list_photos(gallery_id)
        now = request.app.state.clock()
        thumbs = {
            photo.id: media.media_url(
                request.app.state.secret_key,
                scope="staff",
                photo_id=photo.id,
                variant="thumb",
                now=now,
            )
            for photo in photos
            if photo.status == "ready"
        }
        context = {
            "gallery": gallery,
            "sets": await service.list_sets(gallery_id),
            "photos": photos,
            "thumbs": thumbs,
            "today": request.app.state.clock().date(),
            "statuses": service.STATUSES,
            "links": await sharing.list_links(gallery_id),
            "duplicates": await uploads.duplicates(gallery_id),
            "received": await selections.received(gallery_id=gallery_id),
            "now": now,
            **extra,
        }
        return render(request, "galleries/show.html", context, status_code=status_code)

    async def _act(self, request: AnyRequest, gallery_id: int, action: Any) -> Response[Any]:
        """Run a change; on success back to the gallery, on refusal the page with the reason."""
        await service.get_gallery(gallery_id, hide_erased=True)  # NotFound: no change at all
        try:
            await action(**await acting(request))
        except ApplianceError as exc:
            return await self._page(
                request, gallery_id, status_code=status_of(exc), **error_context(exc)
            )
        return redirect(f"/galleries/{gallery_id}")

    @get("/", name="galleries")
    async def index(
        self, request: AnyRequest, status: Annotated[str | None, QueryParameter()] = None
    ) -> Response[Any]:
        galleries = await service.list_galleries(status=status or None, hide_erased=True)
        return render(
            request,
            "galleries/index.html",
            {
                "galleries": galleries,
                "status": status,
                "statuses": service.STATUSES,
                "today": request.app.state.clock().date(),
            },
        )

    @get("/new", name="gallery_new")
    async def new(
        self, request: AnyRequest, client: Annotated[int, QueryParameter(ge=1)]
    ) -> Response[Any]:
        record = await clients.get_client(client, hide_erased=True)
        return render(
            request,
            "galleries/form.html",
            {"form": GalleryForm(), "gallery": None, "client": record},
        )

    @post("/new", name="gallery_create")
    async def create(
        self,
        request: AnyRequest,
        client: Annotated[int, QueryParameter(ge=1)],
        data: Annotated[GalleryForm, FORM],
    ) -> Response[Any]:
        record = await clients.get_client(client, hide_erased=True)
        try:
            gallery = await service.create_gallery(client, data.details(), **await acting(request))
        except ApplianceError as exc:
            return render(
                request,
                "galleries/form.html",
                {"form": data, "gallery": None, "client": record, **error_context(exc)},
                status_code=status_of(exc),
            )
        return redirect(f"/galleries/{gallery.id}")

    @get("/{gallery_id:int}", name="gallery")
    async def show(self, request: AnyRequest, gallery_id: FromPath[int]) -> Response[Any]:
        response = await self._page(request, gallery_id)
        # After the page is built, so a gallery that does not exist (404) logs nothing.
        await record_access(request, "gallery.view", f"gallery:{gallery_id}", page="show")
        return response

    @get("/{gallery_id:int}/edit", name="gallery_edit")
    async def edit(self, request: AnyRequest, gallery_id: FromPath[int]) -> Response[Any]:
        gallery = await service.get_gallery(gallery_id, hide_erased=True)
        await record_access(request, "gallery.view", f"gallery:{gallery_id}", page="edit")
        form = GalleryForm(
            title=gallery.title,
            description=gallery.description,
            event_date=gallery.event_date.isoformat() if gallery.event_date else "",
            expires_on=gallery.expires_on.isoformat() if gallery.expires_on else "",
            watermark="on" if gallery.watermark else "",
        )
        return render(
            request, "galleries/form.html", {"form": form, "gallery": gallery, "client": None}
        )

    @post("/{gallery_id:int}/edit", name="gallery_update")
    async def update(
        self, request: AnyRequest, gallery_id: FromPath[int], data: Annotated[GalleryForm, FORM]
    ) -> Response[Any]:
        gallery = await service.get_gallery(gallery_id, hide_erased=True)
        try:
            await service.update_gallery(gallery_id, data.details(), **await acting(request))
        except ApplianceError as exc:
            return render(
                request,
                "galleries/form.html",
                {"form": data, "gallery": gallery, "client": None, **error_context(exc)},
                status_code=status_of(exc),
            )
        return redirect(f"/galleries/{gallery_id}")

    @post("/{gallery_id:int}/status", name="gallery_status")
    async def status(
        self, request: AnyRequest, gallery_id: FromPath[int], data: Annotated[StatusForm, FORM]
    ) -> Response[Any]:
        async def change(**kwargs: Any) -> None:
            await service.set_status(gallery_id, data.status, **kwargs)

        return await self._act(request, gallery_id, change)

    @post("/{gallery_id:int}/sets", name="gallery_set_add")
    async def add_set(
        self, request: AnyRequest, gallery_id: FromPath[int], data: Annotated[SetForm, FORM]
    ) -> Response[Any]:
        async def change(**kwargs: Any) -> None:
            await service.add_set(gallery_id, data.set_name, **kwargs)

        return await self._act(request, gallery_id, change)

    @post("/{gallery_id:int}/sets/{set_id:int}/rename", name="gallery_set_rename")
    async def rename_set(
        self,
        request: AnyRequest,
        gallery_id: FromPath[int],
        set_id: FromPath[int],
        data: Annotated[SetForm, FORM],
    ) -> Response[Any]:
        async def change(**kwargs: Any) -> None:
            await service.rename_set(gallery_id, set_id, data.set_name, **kwargs)

        return await self._act(request, gallery_id, change)

    @post("/{gallery_id:int}/sets/{set_id:int}/move", name="gallery_set_move")
    async def move_set(
        self,
        request: AnyRequest,
        gallery_id: FromPath[int],
        set_id: FromPath[int],
        data: Annotated[MoveForm, FORM],
    ) -> Response[Any]:
        async def change(**kwargs: Any) -> None:
            await service.move_set(gallery_id, set_id, data.direction, **kwargs)

        return await self._act(request, gallery_id, change)

    @post("/{gallery_id:int}/sets/{set_id:int}/delete", name="gallery_set_delete")
    async def delete_set(
        self, request: AnyRequest, gallery_id: FromPath[int], set_id: FromPath[int]
    ) -> Response[Any]:
        async def change(**kwargs: Any) -> None:
            await service.delete_set(gallery_id, set_id, **kwargs)

        return await self._act(request, gallery_id, change)

    @post("/{gallery_id:int}/cover", name="gallery_cover")
    async def cover(
        self, request: AnyRequest, gallery_id: FromPath[int], data: Annotated[CoverForm, FORM]
    ) -> Response[Any]:
        async def change(**kwargs: Any) -> None:
            if data.photo and not (data.photo.isdigit() and len(data.photo) < 12):
                raise InvalidInput("Choose a photo of this gallery.", field="photo")
            await photos.set_cover(gallery_id, int(data.photo) if data.photo else None, **kwargs)

        return await self._act(request, gallery_id, change)

    @post("/{gallery_id:int}/photos/{photo_id:int}/move", name="gallery_photo_move")
    async def move_photo(
        self,
        request: AnyRequest,
        gallery_id: FromPath[int],
        photo_id: FromPath[int],
        data: Annotated[MoveForm, FORM],
    ) -> Response[Any]:
        async def change(**kwargs: Any) -> None:
            await photos.move_photo(gallery_id, photo_id, data.direction, **kwargs)

        return await self._act(request, gallery_id, change)

    @post("/{gallery_id:int}/photos/{photo_id:int}/set", name="gallery_photo_set")
    async def photo_set(
        self,
        request: AnyRequest,
        gallery_id: FromPath[int],
        photo_id: FromPath[int],
        data: Annotated[PhotoSetForm, FORM],
    ) -> Response[Any]:
        async def change(**kwargs: Any) -> None:
            await photos.move_to_set(gallery_id, photo_id, data.set_id, **kwargs)

        return await self._act(request, gallery_id, change)

    @post("/{gallery_id:int}/photos/{photo_id:int}/delete", name="gallery_photo_delete")
    async def delete_photo(
        self, request: AnyRequest, gallery_id: FromPath[int], photo_id: FromPath[int]
    ) -> Response[Any]:
        async def change(**kwargs: Any) -> None:
            await photos.delete_photo(gallery_id, photo_id, request.app.state.store, **kwargs)

        return await self._act(request, gallery_id, change)

    @post("/{gallery_id:int}/sets/{set_id:int}/sort", name="gallery_set_sort")
    async def sort_set(
        self,
        request: AnyRequest,
        gallery_id: FromPath[int],
        set_id: FromPath[int],
        data: Annotated[SortForm, FORM],
    ) -> Response[Any]:
        async def change(**kwargs: Any) -> None:
            await photos.sort_set(gallery_id, set_id, data.key, **kwargs)

        return await self._act(request, gallery_id, change)
