"""Admin → Incidents: service incidents with their updates, and maintenance windows."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.params import FromPath, FromQuery

from appliance.config import Settings
from appliance.errors import ApplianceError
from appliance.localtime import format_local, local_input
from appliance.monitoring import incidents, maintenance, scheduling
from appliance.monitoring.components import label
from appliance.setup import service as setup
from appliance.web.acting import acting
from appliance.web.auth import require_admin, signed_in
from appliance.web.form_keys import new_form_key
from appliance.web.pages import (
    FORM,
    banner_cache,
    client_address,
    error_context,
    form_list,
    redirect,
    render,
    status_of,
)
from appliance.web.requests import AnyRequest

__all__ = ["IncidentAdminController"]

PAGE = "/admin/incidents"
MAINTENANCE = f"{PAGE}/maintenance"
# Fixed texts a redirect may announce, so nothing from the request is reflected into the page.
NOTICES = {
    "opened": "Incident opened. It is on the status page now.",
    "updated": "Update published.",
    "resolved": "Incident resolved.",
    "scheduled": "Maintenance scheduled. Staff are told by e-mail when the notice is due.",
    "changed": "Maintenance changed.",
    "cancelled": "Maintenance cancelled. Everyone who was told gets a cancellation.",
    "ended": "Maintenance ended now. The banner is gone and the status page shows it over.",
}


class IncidentForm(msgspec.Struct):
    title: str = ""
    impact: str = "major"
    # One checkbox arrives as a string, several as a list.
    components: list[str] | str = msgspec.field(default_factory=list)
    message: str = ""
    # One-time key of the form shown (see appliance.monitoring.form_keys).
    form_key: str = ""


class UpdateForm(msgspec.Struct):
    state: str = ""
    message: str = ""


class MaintenanceForm(msgspec.Struct):
    title: str = ""
    description: str = ""
    starts: str = ""
    ends: str = ""
    components: list[str] | str = msgspec.field(default_factory=list)
    notify_clients: str = ""
    form_key: str = ""

    def to_input(self) -> maintenance.MaintenanceInput:
        return maintenance.MaintenanceInput(
            title=self.title,
            description=self.description,
            starts=self.starts,
            ends=self.ends,
            components=form_list(self.components),
            notify_clients=bool(self.notify_clients),
            form_key=self.form_key,
        )


def _zone(request: AnyRequest) -> str:
    settings: Settings = request.app.state.settings
    return settings.studio_zone


def _notice(done: str | None) -> str | None:
    return NOTICES.get(done or "")


class IncidentAdminController(Controller):
    path = PAGE
    guards = [require_admin]

    # --- incidents ---------------------------------------------------------------------------

    async def _index(
        self, request: AnyRequest, *, status_code: int = 200, **extra: Any
    ) -> Response[Any]:
        now: dt.datetime = request.app.state.clock()
        found = await incidents.list_incidents(now)
        context = {
            "open": [i for i in found if i.resolved_at is None],
            "resolved": [i for i in found if i.resolved_at is not None],
            "components": [(key, label(key)) for key in await maintenance.known_components()],
            "impacts": incidents.IMPACTS,
            "form": extra.pop("form", None) or IncidentForm(form_key=new_form_key()),
            "upcoming": await maintenance.upcoming_maintenance(now),
            "active": await maintenance.active_maintenance(now),
            "zone": _zone(request),
            "when": format_local,
            "listed": form_list,
            "now": now,
            **extra,
        }
        return render(request, "incidents/index.html", context, status_code=status_code)

    @get("/", name="admin_incidents")
    async def index(self, request: AnyRequest, done: FromQuery[str | None] = None) -> Response[Any]:
        return await self._index(request, notice=_notice(done))

    @post("/", name="admin_incidents_open")
    async def open_incident(
        self, request: AnyRequest, data: Annotated[IncidentForm, FORM]
    ) -> Response[Any]:
        try:
            created = await incidents.create_incident(
                title=data.title,
                impact=data.impact,
                components=form_list(data.components),
                message=data.message,
                form_key=data.form_key,
                known=await maintenance.known_components(),
                **await acting(request),
            )
        except ApplianceError as exc:
            return await self._index(
                request, status_code=status_of(exc), form=data, **error_context(exc)
            )
        return redirect(f"{PAGE}/{created.id}?done=opened")

    async def _incident(
        self,
        request: AnyRequest,
        incident_id: int,
        *,
        status_code: int = 200,
        **extra: Any,
    ) -> Response[Any]:
        context = {
            "incident": await incidents.get_incident(incident_id),
            "states": incidents.STATES,
            "form": extra.pop("form", UpdateForm()),
            "zone": _zone(request),
            "when": format_local,
            **extra,
        }
        return render(request, "incidents/show.html", context, status_code=status_code)

    @get("/{incident_id:int}", name="admin_incident")
    async def show(
        self,
        request: AnyRequest,
        incident_id: FromPath[int],
        done: FromQuery[str | None] = None,
    ) -> Response[Any]:
        return await self._incident(request, incident_id, notice=_notice(done))

    @post("/{incident_id:int}/updates", name="admin_incident_update")
    async def update(
        self,
        request: AnyRequest,
        incident_id: FromPath[int],
        data: Annotated[UpdateForm, FORM],
    ) -> Response[Any]:
        try:
            updated = await incidents.post_update(
                incident_id, state=data.state, message=data.message, **await acting(request)
            )
        except ApplianceError as exc:
            return await self._incident(
                request, incident_id, status_code=status_of(exc), form=data, **error_context(exc)
            )
        done = "resolved" if updated.resolved_at is not None else "updated"
        return redirect(f"{PAGE}/{incident_id}?done={done}")

    # --- maintenance windows -----------------------------------------------------------------

    async def _maintenance(
        self,
        request: AnyRequest,
        *,
        template: str = "incidents/maintenance.html",
        status_code: int = 200,
        **extra: Any,
    ) -> Response[Any]:
        now: dt.datetime = request.app.state.clock()
        settings: Settings = request.app.state.settings
        context = {
            "windows": await maintenance.list_windows(now),
            "components": [(key, label(key)) for key in await maintenance.known_components()],
            "form": extra.pop("form", None) or MaintenanceForm(form_key=new_form_key()),
            "zone": _zone(request),
            "when": format_local,
            "local_input": local_input,
            "listed": form_list,
            "notice_days": settings.monitoring.maintenance_notice_days,
            "now": now,
            **extra,
        }
        return render(request, template, context, status_code=status_code)

    @get("/maintenance", name="admin_maintenance")
    async def maintenance_page(
        self, request: AnyRequest, done: FromQuery[str | None] = None
    ) -> Response[Any]:
        return await self._maintenance(request, notice=_notice(done))

    @post("/maintenance", name="admin_maintenance_schedule")
    async def schedule(
        self, request: AnyRequest, data: Annotated[MaintenanceForm, FORM]
    ) -> Response[Any]:
        signed = await signed_in(request)
        now = request.app.state.clock()
        try:
            await scheduling.schedule_window(
                data.to_input(),
                zone=_zone(request),
                actor=signed.member.actor,
                address=client_address(request),
                now=now,
            )
        except ApplianceError as exc:
            return await self._maintenance(
                request, status_code=status_of(exc), form=data, **error_context(exc)
            )
        await banner_cache(request).refresh(now)
        return redirect(f"{MAINTENANCE}?done=scheduled")

    @get("/maintenance/{window_id:int}", name="admin_maintenance_edit")
    async def edit_page(self, request: AnyRequest, window_id: FromPath[int]) -> Response[Any]:
        window = await maintenance.get_window(window_id)
        zone = _zone(request)
        form = MaintenanceForm(
            title=window.title,
            description=window.description,
            starts=local_input(window.starts_at, zone),
            ends=local_input(window.ends_at, zone),
            components=window.components,
            notify_clients="on" if window.notify_clients else "",
        )
        return await self._maintenance(
            request, template="incidents/maintenance_edit.html", window=window, form=form
        )

    @post("/maintenance/{window_id:int}", name="admin_maintenance_change")
    async def change(
        self,
        request: AnyRequest,
        window_id: FromPath[int],
        data: Annotated[MaintenanceForm, FORM],
    ) -> Response[Any]:
        signed = await signed_in(request)
        now = request.app.state.clock()
        try:
            await scheduling.edit_window(
                window_id,
                data.to_input(),
                zone=_zone(request),
                actor=signed.member.actor,
                address=client_address(request),
                now=now,
            )
        except ApplianceError as exc:
            window = await maintenance.get_window(window_id)
            return await self._maintenance(
                request,
                template="incidents/maintenance_edit.html",
                status_code=status_of(exc),
                window=window,
                form=data,
                **error_context(exc),
            )
        await banner_cache(request).refresh(now)
        return redirect(f"{MAINTENANCE}?done=changed")

    @post("/maintenance/{window_id:int}/cancel", name="admin_maintenance_cancel")
    async def cancel(self, request: AnyRequest, window_id: FromPath[int]) -> Response[Any]:
        signed = await signed_in(request)
        settings: Settings = request.app.state.settings
        now = request.app.state.clock()
        studio = await setup.get_studio()
        try:
            _, outcome, _ = await scheduling.cancel_window(
                window_id,
                settings_language=settings.notify.language,
                studio=studio.name if studio else "",
                zone=_zone(request),
                actor=signed.member.actor,
                address=client_address(request),
                now=now,
            )
        except ApplianceError as exc:
            return await self._maintenance(
                request, status_code=status_of(exc), **error_context(exc)
            )
        await banner_cache(request).refresh(now)
        return redirect(f"{MAINTENANCE}?done={outcome}")
