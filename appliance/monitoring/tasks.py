"""Periodic tasks of the monitoring domain: maintenance notices and reminders."""

from __future__ import annotations

import logging

from huey import Huey, crontab

from appliance.clock import utcnow
from appliance.config import Settings

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(huey: Huey, settings: Settings) -> None:
    # Every five minutes: a notice is due days ahead and a reminder a day ahead, so a few
    # minutes late is on time; a run that overlaps the previous one sends nothing twice.
    @huey.periodic_task(crontab(minute="*/5"), name="monitoring.maintenance_notices")  # type: ignore[untyped-decorator]
    def maintenance_notices() -> None:
        from appliance.monitoring.announcements import send_due_notices
        from appliance.setup.service import get_studio
        from appliance.worker import run_async

        studio = run_async(get_studio())
        report = run_async(
            send_due_notices(
                notice_days=settings.monitoring.maintenance_notice_days,
                language=settings.notify.language,
                studio=studio.name if studio else "",
                zone=settings.studio_zone,
                now=utcnow(),
            )
        )
        if report.notices or report.reminders:
            log.info(
                "maintenance: %d notices and %d reminders queued",
                report.notices,
                report.reminders,
            )
