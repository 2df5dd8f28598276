"""Admin → Erasure: delete a client, a staff account or the whole studio, cancel within the
grace period, and the deletion records that remain as proof."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.params import FromPath, QueryParameter

from appliance.accounts.tables import StaffUser
from appliance.clients.tables import Client
from appliance.errors import ApplianceError, InvalidInput, NotFound
from appliance.privacy import erasure, purge
from appliance.setup import service as setup
from appliance.validation import parse_id
from appliance.web.auth import require_admin, signed_in
from appliance.web.pages import FORM, NO_STORE, error_context, redirect, render, status_of
from appliance.web.requests import AnyRequest

__all__ = ["ErasureController"]

PAGE = "/admin/erasure"


class ErasureForm(msgspec.Struct):
    kind: str = ""
    subject_id: str = ""
    confirm: str = ""  # the studio's name, typed, when the whole studio goes


async def _subject_name(kind: str, subject_id: int | None) -> str:
    """What the admin knows the person by, for the confirmation only (never stored)."""
    if kind == "studio":
        studio = await setup.get_studio()
        return studio.name if studio else ""
    if kind == "client":
        row = await Client.select(Client.name).where(Client.id == subject_id).first().run()
    elif kind == "staff":
        row = (
            await StaffUser.select(StaffUser.display_name.as_alias("name"))
            .where(StaffUser.id == subject_id)
            .first()
            .run()
        )
    else:
        raise InvalidInput("Choose a client, a staff account or the whole studio.")
    if row is None:
        raise NotFound(f"There is no {kind} #{subject_id}.")
    return str(row["name"])


def _subject_id(kind: str, raw: str) -> int | None:
    return None if kind == "studio" else parse_id(raw, field="subject_id")


class ErasureController(Controller):
    path = PAGE
    guards = [require_admin]

    def _page(
        self, request: AnyRequest, template: str, context: dict[str, Any], status_code: int = 200
    ) -> Response[Any]:
        return render(
            request, f"erasure/{template}", context, status_code=status_code, headers=NO_STORE
        )

    @get("/", name="erasure_requests")
    async def index(
        self, request: AnyRequest, done: Annotated[str, QueryParameter(max_length=20)] = ""
    ) -> Response[Any]:
        return self._page(
            request,
            "index.html",
            {
                "requests": await erasure.list_requests(),
                "now": request.app.state.clock(),
                "done": done,
            },
        )

    @get("/new", name="erasure_confirm")
    async def confirm(
        self,
        request: AnyRequest,
        kind: Annotated[str, QueryParameter(max_length=8)] = "",
        subject: Annotated[str, QueryParameter(max_length=12)] = "",
    ) -> Response[Any]:
        return await self._confirmation(request, ErasureForm(kind=kind, subject_id=subject))

    async def _confirmation(
        self, request: AnyRequest, form: ErasureForm, exc: ApplianceError | None = None
    ) -> Response[Any]:
        signed = await signed_in(request)
        try:
            subject_id = _subject_id(form.kind, form.subject_id)
            name = await _subject_name(form.kind, subject_id)
        except ApplianceError as problem:
            return self._page(request, "refused.html", error_context(problem), status_of(problem))
        keep = signed.member.id if form.kind == "studio" else None
        context = {
            "form": form,
            "name": name,
            "what": await purge.preview(form.kind, subject_id, keep),
            "grace_days": request.app.state.settings.privacy.erasure_grace_days,
        }
        if exc is not None:
            context |= error_context(exc)
        return self._page(request, "confirm.html", context, status_of(exc) if exc else 200)

    @post("/", name="erasure_request")
    async def create(
        self, request: AnyRequest, data: Annotated[ErasureForm, FORM]
    ) -> Response[Any]:
        signed = await signed_in(request)
        try:
            subject_id = _subject_id(data.kind, data.subject_id)
            if data.kind == "studio":
                name = await _subject_name("studio", None)
                if not name or data.confirm.strip() != name:
                    raise InvalidInput(
                        "Type the studio's name exactly to delete the whole studio.",
                        field="confirm",
                    )
            await erasure.request_erasure(
                request.app.state.settings,
                kind=data.kind,  # type: ignore[arg-type]  # checked by request_erasure
                subject_id=subject_id,
                actor=signed.member.username,
                actor_id=signed.member.id,
                source="staff",
                now=request.app.state.clock(),
            )
        except ApplianceError as exc:
            return await self._confirmation(request, data, exc)
        return redirect(f"{PAGE}?done=requested")

    @post("/{request_id:int}/cancel", name="erasure_cancel")
    async def cancel(self, request: AnyRequest, request_id: FromPath[int]) -> Response[Any]:
        signed = await signed_in(request)
        try:
            await erasure.cancel_erasure(
                request.app.state.settings,
                request_id,
                actor=signed.member.actor,
                now=request.app.state.clock(),
            )
        except ApplianceError as exc:
            return self._page(request, "refused.html", error_context(exc), status_of(exc))
        return redirect(f"{PAGE}?done=cancelled")
