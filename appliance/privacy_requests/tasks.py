"""Periodic task of clients' privacy requests: the Art. 12(3) deadline watch."""

from __future__ import annotations

import logging

from huey import Huey, crontab

from appliance.clock import utcnow
from appliance.config import Settings

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(huey: Huey, settings: Settings) -> None:
    # Hourly: the alerts are days apart, and the check is one query over open requests.
    @huey.periodic_task(crontab(minute="7"), name="privacy_requests.check_deadlines")  # type: ignore[untyped-decorator]
    def check_deadlines() -> None:
        from appliance.privacy_requests.service import check_deadlines as check
        from appliance.worker import run_async

        queued = run_async(check(settings, utcnow()))
        if queued:
            log.info("queued %d privacy-request deadline alerts", queued)
