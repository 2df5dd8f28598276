"""Worker tasks of the exports domain: build the exports asked for, delete the expired ones."""

from __future__ import annotations

import logging

from huey import Huey, crontab

from appliance.clock import utcnow
from appliance.config import Settings

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(huey: Huey, settings: Settings) -> None:
    # Every minute: a requested export is ready a minute or two later. The database is the
    # queue (a conditional UPDATE claims each job), so two runs never build the same export.
    @huey.periodic_task(crontab(minute="*"), name="exports.run_pending")  # type: ignore[untyped-decorator]
    def run_pending() -> None:
        from appliance.exports.service import run_pending as run
        from appliance.storage import open_store
        from appliance.worker import run_async

        built = run_async(run(settings, open_store(settings), utcnow()))
        if built:
            log.info("built %d data exports", built)

    @huey.periodic_task(crontab(minute="*/10"), name="exports.expire")  # type: ignore[untyped-decorator]
    def expire() -> None:
        from appliance.exports.service import expire_exports
        from appliance.storage import open_store
        from appliance.worker import run_async

        removed = run_async(expire_exports(open_store(settings), utcnow()))
        if removed:
            log.info("deleted %d expired data exports", removed)
