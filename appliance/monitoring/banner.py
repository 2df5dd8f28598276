"""The cache the maintenance banner on every page reads."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

from appliance.monitoring.maintenance import COLUMNS, Maintenance, window_of
from appliance.monitoring.tables import MaintenanceWindow

__all__ = ["BannerCache"]

log = logging.getLogger(__name__)


class BannerCache:
    """The windows that had not ended when last loaded, at most ``ttl`` seconds old.

    Pages are rendered synchronously, so they read this cache and never the database; which
    window runs is decided at render time from the clock, so a window announced ahead shows
    from its first minute even when the cache was loaded before it began. Admins' changes
    reload it at once in their process; other processes see them within ``ttl``.
    """

    def __init__(self, ttl: float = 30.0) -> None:
        self.ttl = ttl
        self._windows: list[Maintenance] = []
        self._loaded_at = float("-inf")
        self._loading: asyncio.Task[None] | None = None

    @property
    def stale(self) -> bool:
        return time.monotonic() - self._loaded_at >= self.ttl

    async def refresh(self, now: dt.datetime) -> None:
        rows = (
            await MaintenanceWindow.select(*COLUMNS)
            .where(MaintenanceWindow.cancelled_at.is_null(), MaintenanceWindow.ends_at > now)
            .order_by(MaintenanceWindow.starts_at)
            .run()
        )
        self._windows = [window_of(row) for row in rows]
        self._loaded_at = time.monotonic()

    async def refresh_if_stale(self, now: dt.datetime) -> None:
        """Reload when stale; a failure is logged, never raised (see ``_quiet_refresh``)."""
        if self.stale:
            await self._quiet_refresh(now)

    def refresh_soon(self, now: dt.datetime) -> None:
        """Start a reload in the background when stale (for callers that cannot wait)."""
        if not self.stale or (self._loading is not None and not self._loading.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._loading = loop.create_task(self._quiet_refresh(now))

    async def _quiet_refresh(self, now: dt.datetime) -> None:
        try:
            await self.refresh(now)
        except Exception:  # a banner is never worth a failed page
            # Keep what was loaded and wait a full ``ttl`` before trying again, so a database
            # that is down is not asked once more for every page of the error.
            self._loaded_at = time.monotonic()
            log.warning("the maintenance banner could not be loaded", exc_info=True)

    def active(self, now: dt.datetime) -> Maintenance | None:
        """The running window that ends last (the one people wait for)."""
        running = [w for w in self._windows if w.starts_at <= now < w.ends_at]
        return max(running, key=lambda w: w.ends_at) if running else None

    def upcoming(self, now: dt.datetime, within: dt.timedelta) -> Maintenance | None:
        """The next window that starts within ``within`` of ``now``."""
        ahead = [w for w in self._windows if now < w.starts_at <= now + within]
        return ahead[0] if ahead else None
