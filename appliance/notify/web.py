"""Admin → Notifications: the SMTP relay, alert channels, and messages that failed."""

from __future__ import annotations

from litestar import Controller

__all__ = ["NotifyAdminController"]


class NotifyAdminController(Controller):
    path = "/admin/notifications"
