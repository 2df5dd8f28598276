"""Pages of the exports domain: asking for an export, its state, a download link, the download.

Staff export their own data from their account page, admins any member of staff's, and any
staff member a client's. The download itself needs no session (a client receives the link):
the token is the key, looked up by its SHA-256.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get, post
from litestar.params import FromPath
from litestar.response import Stream

from appliance.audit.service import ANONYMOUS
from appliance.errors import ApplianceError, Forbidden, NotFound
from appliance.exports import service
from appliance.exports.records import PersonKind
from appliance.web.acting import acting
from appliance.web.auth import SignedIn, current_staff, require_staff, signed_in
from appliance.web.pages import NO_STORE, client_address, redirect, render, status_of
from appliance.web.requests import AnyRequest

__all__ = ["ExportController", "ExportDownloadController"]


def _may_export(signed: SignedIn, kind: PersonKind, subject_id: int) -> bool:
    """Clients: any staff member; staff: oneself, or an admin for anyone."""
    member = signed.member
    return kind == "client" or member.id == subject_id or member.role == "admin"


class ExportController(Controller):
    path = "/exports"
    guards = [require_staff]

    async def _request(
        self, request: AnyRequest, kind: PersonKind, subject_id: int
    ) -> Response[Any]:
        signed = await signed_in(request)
        if not _may_export(signed, kind, subject_id):
            raise Forbidden("Only an admin may export another member of staff's data.")
        job = await service.request_export(
            request.app.state.settings,
            kind=kind,
            subject_id=subject_id,
            source="staff",
            **await acting(request),
        )
        return redirect(f"/exports/{job.id}")

    @post("/client/{subject_id:int}", name="export_client")
    async def client(self, request: AnyRequest, subject_id: FromPath[int]) -> Response[Any]:
        return await self._request(request, "client", subject_id)

    @post("/staff/{subject_id:int}", name="export_staff")
    async def staff(self, request: AnyRequest, subject_id: FromPath[int]) -> Response[Any]:
        return await self._request(request, "staff", subject_id)

    async def _own(self, request: AnyRequest, export_id: int) -> service.ExportJob:
        job = await service.get_export(export_id)
        if not _may_export(await signed_in(request), job.kind, job.subject_id):
            raise NotFound("No such export.")
        return job

    @get("/{export_id:int}", name="export")
    async def show(self, request: AnyRequest, export_id: FromPath[int]) -> Response[Any]:
        job = await self._own(request, export_id)
        return render(
            request,
            "exports/show.html",
            {"job": job, "now": request.app.state.clock()},
            headers=NO_STORE,
        )

    @post("/{export_id:int}/link", name="export_link")
    async def link(self, request: AnyRequest, export_id: FromPath[int]) -> Response[Any]:
        job = await self._own(request, export_id)
        try:
            token = await service.issue_link(job.id, **await acting(request))
        except ApplianceError as exc:
            context = {"job": job, "now": request.app.state.clock(), "error": exc.message}
            return render(request, "exports/show.html", context, status_code=status_of(exc))
        base = request.app.state.settings.server.public_url.rstrip("/") or str(
            request.base_url
        ).rstrip("/")
        context = {
            "job": await service.get_export(job.id),
            "now": request.app.state.clock(),
            "link": f"{base}/export/{token}",
        }
        return render(request, "exports/show.html", context, headers=NO_STORE)


class ExportDownloadController(Controller):
    path = "/export"

    @get("/{token:str}", name="export_download")
    async def download(self, request: AnyRequest, token: FromPath[str]) -> Response[Any] | Stream:
        now = request.app.state.clock()
        headers = {**NO_STORE, "Referrer-Policy": "no-referrer"}
        try:
            row = await service.open_download(token, now)
            staff = await current_staff(request)
            actor = staff.member.actor if staff and staff.session.stage == "full" else ANONYMOUS
            info = await request.app.state.store.stat(row["object_key"])
            await service.count_download(row, actor=actor, now=now, address=client_address(request))
        except service.LinkExpired as exc:
            return render(
                request,
                "exports/gone.html",
                {"message": exc.message},
                status_code=410,
                headers=headers,
            )
        except NotFound:
            return render(
                request,
                "exports/gone.html",
                {"message": "This download link does not exist."},
                status_code=404,
                headers=headers,
            )
        name = f"data-export-{row['kind']}-{row['subject_id']}-{row['id']}.zip"
        return Stream(
            request.app.state.store.get(row["object_key"]),
            media_type="application/zip",
            headers={
                **headers,
                "Content-Length": str(info.size),
                "Content-Disposition": f'attachment; filename="{name}"',
            },
        )
