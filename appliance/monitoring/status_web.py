"""The public status page."""

from __future__ import annotations

from litestar import Controller

__all__ = ["StatusController"]


class StatusController(Controller):
    path = "/status"
