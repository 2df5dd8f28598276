"""Periodic housekeeping of the galleries domain: uploads that were never finished, and
share-link visits whose browser cookie has expired."""

from __future__ import annotations

import datetime as dt
import logging

from huey import Huey, crontab

from appliance.clock import utcnow
from appliance.config import Settings

__all__ = ["ABANDONED_AFTER", "register"]

log = logging.getLogger(__name__)

ABANDONED_AFTER = dt.timedelta(days=7)


def register(huey: Huey, settings: Settings) -> None:
    @huey.periodic_task(crontab(minute="17"), name="galleries.purge_abandoned_uploads")  # type: ignore[untyped-decorator]
    def purge_abandoned_uploads() -> None:
        from appliance.galleries.uploads import purge_abandoned
        from appliance.storage import open_store
        from appliance.worker import run_async

        removed = run_async(
            purge_abandoned(open_store(settings), utcnow(), older_than=ABANDONED_AFTER)
        )
        log.info("removed %d abandoned uploads", removed)

    @huey.periodic_task(crontab(minute="23"), name="galleries.purge_share_visits")  # type: ignore[untyped-decorator]
    def purge_share_visits() -> None:
        from appliance.galleries.sharing import purge_visits
        from appliance.worker import run_async

        removed = run_async(purge_visits(utcnow()))
        log.info("removed %d expired share-link visits", removed)
