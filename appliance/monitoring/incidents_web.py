"""Admin → Incidents: service incidents and maintenance windows."""

from __future__ import annotations

from litestar import Controller

__all__ = ["IncidentAdminController"]


class IncidentAdminController(Controller):
    path = "/admin/incidents"
