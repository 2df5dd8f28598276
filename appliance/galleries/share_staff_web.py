"""Staff pages for a gallery's share links: create one per recipient, withdraw, read the log."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.params import FromPath

from appliance.errors import ApplianceError, NotFound
from appliance.galleries import service, sharing
from appliance.galleries.sharing import LinkOptions
from appliance.web.acting import acting
from appliance.web.auth import require_staff
from appliance.web.pages import FORM, error_context, redirect, render, status_of
from appliance.web.requests import AnyRequest

__all__ = ["ShareLinkController", "public_base"]


def public_base(request: AnyRequest) -> str:
    """The address clients reach the appliance at: ``server.public_url``, else this request's."""
    configured = request.app.state.settings.server.public_url
    return (configured or f"{request.url.scheme}://{request.url.netloc}").rstrip("/")


class LinkForm(msgspec.Struct):
    recipient: str = ""
    email: str = ""
    password: str = ""
    pin: str = ""
    expires_on: str = ""
    # Checkboxes: present ("on") when ticked, absent when not.
    download_web: str = ""
    download_original: str = ""
    favourites: str = ""

    def options(self) -> LinkOptions:
        return LinkOptions(
            recipient=self.recipient,
            email=self.email,
            password=self.password,
            pin=self.pin,
            expires_on=self.expires_on,
            can_download_web=bool(self.download_web),
            can_download_original=bool(self.download_original),
            can_favourite=bool(self.favourites),
        )


class ShareLinkController(Controller):
    path = "/galleries/{gallery_id:int}/shares"
    guards = [require_staff]

    @post("/", name="share_create")
    async def create(
        self, request: AnyRequest, gallery_id: FromPath[int], data: Annotated[LinkForm, FORM]
    ) -> Response[Any]:
        gallery = await service.get_gallery(gallery_id, hide_erased=True)
        try:
            link, token = await sharing.create_link(
                gallery_id, data.options(), **await acting(request)
            )
        except ApplianceError as exc:
            # The secrets typed are not sent back into the page.
            form = msgspec.structs.replace(data, password="", pin="")
            return render(
                request,
                "galleries/share_form.html",
                {"gallery": gallery, "form": form, **error_context(exc)},
                status_code=status_of(exc),
            )
        return render(
            request,
            "galleries/share_created.html",
            {"gallery": gallery, "link": link, "url": f"{public_base(request)}/s/{token}"},
            status_code=201,
        )

    @get("/new", name="share_new")
    async def new(self, request: AnyRequest, gallery_id: FromPath[int]) -> Response[Any]:
        gallery = await service.get_gallery(gallery_id, hide_erased=True)
        form = LinkForm(download_web="on", favourites="on")
        return render(request, "galleries/share_form.html", {"gallery": gallery, "form": form})

    @get("/{link_id:int}", name="share_log")
    async def log(
        self, request: AnyRequest, gallery_id: FromPath[int], link_id: FromPath[int]
    ) -> Response[Any]:
        """One link: its settings and its access log (who opened, viewed, downloaded what)."""
        gallery = await service.get_gallery(gallery_id, hide_erased=True)
        link = await sharing.get_link(link_id)
        if link.gallery_id != gallery_id:
            raise NotFound("There is no such share link.")
        photos = {photo.id: photo.filename for photo in await service.list_photos(gallery_id)}
        return render(
            request,
            "galleries/share_log.html",
            {
                "gallery": gallery,
                "link": link,
                "events": await sharing.list_events(link_id),
                "photos": photos,
                "now": request.app.state.clock(),
            },
        )

    @post("/{link_id:int}/revoke", name="share_revoke")
    async def revoke(
        self, request: AnyRequest, gallery_id: FromPath[int], link_id: FromPath[int]
    ) -> Response[Any]:
        await service.get_gallery(gallery_id, hide_erased=True)
        await sharing.revoke_link(gallery_id, link_id, **await acting(request))
        return redirect(f"/galleries/{gallery_id}#shares")
