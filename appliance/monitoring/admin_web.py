"""Admin → Monitoring: components, uptime against the target, the monthly SLA report."""

from __future__ import annotations

from litestar import Controller

__all__ = ["MonitoringAdminController"]


class MonitoringAdminController(Controller):
    path = "/admin/monitoring"
