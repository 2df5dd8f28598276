"""Periodic tasks of this domain."""

from __future__ import annotations

from huey import Huey

from appliance.config import Settings

__all__ = ["register"]


def register(huey: Huey, settings: Settings) -> None:
    return None
