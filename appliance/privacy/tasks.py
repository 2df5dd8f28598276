"""Periodic tasks of the privacy domain: the 72-hour deadline watch of the incident register and
the daily erasure purge."""

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

    # Daily, and hourly would do no harm: a run finds nothing due and returns. The grace period
    # is at most 29 days, so a request is purged within 30 days of being made.
    @huey.periodic_task(crontab(minute="17", hour="3"), name="privacy.purge_erasures")  # type: ignore[untyped-decorator]
    def purge_erasures() -> None:
        from appliance.privacy.ledger import copy_to_repositories
        from appliance.privacy.purge import purge_due
        from appliance.storage import open_store
        from appliance.worker import run_async

        finished = run_async(purge_due(settings, open_store(settings), utcnow()))
        if finished:
            log.info("purged %d erasure requests", finished)
        # The ledger's copy in each repository, for a new machine restoring from it.
        run_async(copy_to_repositories(settings))
