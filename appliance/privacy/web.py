"""Admin → Security incidents: the register of policy §6 and GDPR Art. 33."""

from __future__ import annotations

from litestar import Controller

__all__ = ["SecurityIncidentController"]


class SecurityIncidentController(Controller):
    path = "/admin/security-incidents"
