"""Periodic tasks of the privacy domain: the 72-hour deadline watch of the incident register."""

from __future__ import annotations

import logging

from huey import Huey, crontab

from appliance.clock import utcnow
from appliance.config import Settings

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(huey: Huey, settings: Settings) -> None:
    # Every five minutes: an alert threshold is at most five minutes late, and the check is a
    # single query over a small table when nothing is due.
    @huey.periodic_task(crontab(minute="*/5"), name="privacy.check_deadlines")  # type: ignore[untyped-decorator]
    def check_deadlines() -> None:
        from appliance.privacy.service import check_deadlines as check
        from appliance.worker import run_async

        queued = run_async(check(settings, utcnow()))
        if queued:
            log.info("queued %d security-incident deadline alerts", queued)
