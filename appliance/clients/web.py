"""Pages for the studio's clients: the list with search, a client's page, create and edit.

A client whose erasure is pending is gone from all of them (404), though only the purge
deletes the data: Admin → Erasure still shows it, so an admin can cancel.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.params import FromPath, QueryParameter

from appliance.clients import service
from appliance.clients.service import ClientDetails
from appliance.errors import ApplianceError
from appliance.galleries import service as gallery_service
from appliance.galleries import sharing
from appliance.notify import languages
from appliance.web.access import record_access
from appliance.web.acting import acting
from appliance.web.auth import require_staff
from appliance.web.pages import FORM, error_context, redirect, render, status_of
from appliance.web.requests import AnyRequest

__all__ = ["ClientController"]


class ClientForm(msgspec.Struct):
    name: str = ""
    email: str = ""
    phone: str = ""
    postal_address: str = ""
    notes: str = ""
    language: str = ""

    def details(self) -> ClientDetails:
        return ClientDetails(
            name=self.name,
            email=self.email,
            phone=self.phone,
            postal_address=self.postal_address,
            notes=self.notes,
            language=self.language,
        )


def _form(
    request: AnyRequest, form: ClientForm, client: service.ClientRecord | None
) -> dict[str, Any]:
    """What the client form shows: the values, the client edited (None: a new one), and the
    languages on offer."""
    default = request.app.state.settings.notify.language
    return {"form": form, "client": client, "languages": languages.choices(default)}


class ClientController(Controller):
    path = "/clients"
    guards = [require_staff]

    @get("/", name="clients")
    async def index(
        self,
        request: AnyRequest,
        q: Annotated[str, QueryParameter(max_length=100)] = "",
        archived: Annotated[bool, QueryParameter()] = False,
        offset: Annotated[int, QueryParameter(ge=0, le=1_000_000)] = 0,
    ) -> Response[Any]:
        try:
            page = await service.search_clients(
                q, archived=archived, offset=offset, hide_erased=True
            )
        except ApplianceError as exc:
            page = service.ClientPage(clients=[], total=0, offset=0)
            return render(
                request,
                "clients/index.html",
                {"page": page, "q": "", "archived": archived, **error_context(exc)},
                status_code=status_of(exc),
            )
        return render(
            request,
            "clients/index.html",
            {"page": page, "q": q, "archived": archived, "page_size": service.PAGE_SIZE},
        )

    @get("/new", name="client_new")
    async def new(self, request: AnyRequest) -> Response[Any]:
        return render(request, "clients/form.html", _form(request, ClientForm(), None))

    @post("/new", name="client_create")
    async def create(self, request: AnyRequest, data: Annotated[ClientForm, FORM]) -> Response[Any]:
        try:
            record = await service.create_client(data.details(), **await acting(request))
        except ApplianceError as exc:
            return render(
                request,
                "clients/form.html",
                {**_form(request, data, None), **error_context(exc)},
                status_code=status_of(exc),
            )
        return redirect(f"/clients/{record.id}")

    @get("/{client_id:int}", name="client")
    async def show(self, request: AnyRequest, client_id: FromPath[int]) -> Response[Any]:
        record = await service.get_client(client_id, hide_erased=True)
        await record_access(request, "client.view", f"client:{client_id}", page="show")
        galleries = await gallery_service.list_for_client(client_id)
        links = {gallery.id: await sharing.list_links(gallery.id) for gallery in galleries}
        return render(
            request,
            "clients/show.html",
            {
                "client": record,
                "language_names": languages.LANGUAGE_NAMES,
                "galleries": galleries,
                "links": links,
                "now": request.app.state.clock(),
            },
        )

    @get("/{client_id:int}/edit", name="client_edit")
    async def edit(self, request: AnyRequest, client_id: FromPath[int]) -> Response[Any]:
        record = await service.get_client(client_id, hide_erased=True)
        await record_access(request, "client.view", f"client:{client_id}", page="edit")
        form = ClientForm(
            name=record.name,
            email=record.email,
            phone=record.phone,
            postal_address=record.postal_address,
            notes=record.notes,
            language=record.language,
        )
        return render(request, "clients/form.html", _form(request, form, record))

    @post("/{client_id:int}/edit", name="client_update")
    async def update(
        self, request: AnyRequest, client_id: FromPath[int], data: Annotated[ClientForm, FORM]
    ) -> Response[Any]:
        record = await service.get_client(client_id, hide_erased=True)
        try:
            await service.update_client(client_id, data.details(), **await acting(request))
        except ApplianceError as exc:
            return render(
                request,
                "clients/form.html",
                {**_form(request, data, record), **error_context(exc)},
                status_code=status_of(exc),
            )
        return redirect(f"/clients/{client_id}")

    @post("/{client_id:int}/archive", name="client_archive")
    async def archive(self, request: AnyRequest, client_id: FromPath[int]) -> Response[Any]:
        await service.get_client(client_id, hide_erased=True)
        await service.archive_client(client_id, **await acting(request))
        return redirect(f"/clients/{client_id}")

    @post("/{client_id:int}/restore", name="client_restore")
    async def restore(self, request: AnyRequest, client_id: FromPath[int]) -> Response[Any]:
        await service.get_client(client_id, hide_erased=True)
        await service.restore_client(client_id, **await acting(request))
        return redirect(f"/clients/{client_id}")
