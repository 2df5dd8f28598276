"""Admin → Monitoring: components with their details, uptime for every window and the last 12
calendar months against the target, the 90-day bars, and the monthly SLA report as PDF or CSV."""

from __future__ import annotations

import datetime as dt
from typing import Any

from litestar import Controller, Response, get
from litestar.params import FromQuery

from appliance.config import Settings
from appliance.localtime import format_duration
from appliance.monitoring.report import export_month_report
from appliance.monitoring.status_web import STATE_WORDS, active_windows, banner, component_rows
from appliance.monitoring.svg import percent
from appliance.monitoring.uptime import (
    OVERALL,
    WINDOWS,
    budget,
    load_now,
    load_record,
    month_bounds,
    months_before,
)
from appliance.setup import service as setup
from appliance.web.acting import acting
from appliance.web.auth import require_admin
from appliance.web.pages import NO_STORE, render
from appliance.web.requests import AnyRequest

__all__ = ["MonitoringAdminController"]


def _sla_duration(seconds: float) -> str:
    """The page's figures add up to the budget, so they keep their seconds."""
    return format_duration(seconds, exact=True)


PAGE = "/admin/monitoring"
MONTHS_SHOWN = 12
# Probe details may name hosts and paths: no copy of the page may stay in a cache.


async def _context(settings: Settings, now: dt.datetime) -> dict[str, Any]:
    months = months_before(now, MONTHS_SHOWN)
    oldest = month_bounds(*months[-1])[0]
    record = await load_record(now, min(oldest, now - WINDOWS["90d"]))
    current = await load_now(
        now,
        stale_seconds=settings.monitoring.worker_stale_seconds,
        round_seconds=settings.monitoring.probe_interval_seconds,
        latency=True,
    )
    target = settings.monitoring.sla_target_percent
    rows = component_rows(record, current, with_detail=True)
    keys = [row.component for row in rows]
    this_month = record.month(OVERALL, now.year, now.month)
    return {
        "now": now,
        "target": target,
        "banner": banner(current, active_windows(record)),
        "rows": rows,
        "current": {c.component: c for c in current.components},
        "windows": list(WINDOWS),
        "uptime": {key: record.windows(key) for key in keys},
        "months": [
            {
                "name": dt.date(year, month, 1).strftime("%Y-%m"),
                "figures": {key: record.month(key, year, month) for key in keys},
            }
            for year, month in months
        ],
        "budget": budget(target, *month_bounds(now.year, now.month), this_month.down),
        "this_month": this_month,
        "state_words": STATE_WORDS,
        "percent": percent,
        "duration": _sla_duration,
        "report_month": now.strftime("%Y-%m"),
        "last_backup_at": current.last_backup_at,
        "last_drill_at": current.last_drill_at,
        "worker_beat_at": current.worker_beat_at,
    }


class MonitoringAdminController(Controller):
    path = PAGE
    guards = [require_admin]

    @get("/", name="admin_monitoring")
    async def page(self, request: AnyRequest) -> Response[Any]:
        context = await _context(request.app.state.settings, request.app.state.clock())
        return render(request, "monitoring/admin.html", context, headers=NO_STORE)

    @get("/report", name="admin_monitoring_report")
    async def report(
        self,
        request: AnyRequest,
        month: FromQuery[str | None] = None,
        format: FromQuery[str | None] = None,
    ) -> Response[bytes]:
        settings: Settings = request.app.state.settings
        studio = await setup.get_studio()
        found = await export_month_report(
            month,
            format,
            target_percent=settings.monitoring.sla_target_percent,
            studio=studio.name if studio else "",
            **await acting(request),
        )
        return Response(
            found.body,
            media_type=found.media_type,
            headers={
                **NO_STORE,
                "Content-Disposition": f'attachment; filename="{found.filename}"',
            },
        )
