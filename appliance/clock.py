"""The one source of "now": every deadline is computed from it so tests can move time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

__all__ = ["Clock", "utcnow"]

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    """The current time in UTC, timezone-aware."""
    return dt.datetime.now(dt.UTC)
