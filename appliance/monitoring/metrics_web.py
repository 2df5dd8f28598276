"""Prometheus metrics behind a token."""

from __future__ import annotations

from litestar import Controller

__all__ = ["MetricsController"]


class MetricsController(Controller):
    path = "/metrics"
