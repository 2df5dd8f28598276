"""The admin's view of the audit log, newest first, with the chain's state."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Response, get
from litestar.params import QueryParameter

from appliance.audit import service
from appliance.web.auth import require_admin
from appliance.web.pages import render
from appliance.web.requests import AnyRequest

__all__ = ["AuditController"]

PAGE_SIZE = 50


class AuditController(Controller):
    path = "/admin/audit"
    guards = [require_admin]

    @get("/", name="admin_audit")
    async def page(
        self,
        request: AnyRequest,
        before: Annotated[int | None, QueryParameter(ge=1)] = None,
    ) -> Response[Any]:
        entries = await service.list_entries(before_seq=before, limit=PAGE_SIZE)
        older = entries[-1].seq if len(entries) == PAGE_SIZE else None
        return render(request, "admin/audit.html", {"entries": entries, "older": older})
