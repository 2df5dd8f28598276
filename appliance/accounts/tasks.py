"""Periodic housekeeping of the accounts domain: expired sessions and old throttle rows."""

from __future__ import annotations

import logging

from huey import Huey, crontab

from appliance.accounts import sessions, throttle
from appliance.clock import utcnow
from appliance.config import Settings

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(huey: Huey, settings: Settings) -> None:
    @huey.periodic_task(crontab(minute="*/10"), name="accounts.purge_expired")  # type: ignore[untyped-decorator]
    def purge_expired() -> None:
        from appliance.worker import run_async

        now = utcnow()
        ended = run_async(sessions.purge_expired(now, settings.security))
        forgotten = run_async(throttle.purge(now, settings.throttle))
        log.info("purged %d expired sessions and %d throttle rows", ended, forgotten)
