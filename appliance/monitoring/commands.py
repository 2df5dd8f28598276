"""``appliance status``: the state of every component, uptime, incidents and the outbox, for
studio IT at a terminal (and for scripts: ``--json``, exit 1 while anything is down)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import click

from appliance.cli import Context, database
from appliance.config import Settings

__all__ = ["status"]


async def _gather(settings: Settings, now: dt.datetime) -> dict[str, Any]:
    from appliance.db.engine import configure, connection_pool
    from appliance.monitoring import incidents, uptime
    from appliance.notify import admin as notify

    configure(settings.database.url)
    async with connection_pool():
        current = await uptime.load_now(
            now,
            stale_seconds=settings.monitoring.worker_stale_seconds,
            round_seconds=settings.monitoring.probe_interval_seconds,
        )
        record = await uptime.load_record(now, now - uptime.WINDOWS["90d"])
        open_incidents = [
            i for i in await incidents.current_incidents(now) if i.resolved_at is None
        ]
        outbox = await notify.outbox_overview(settings, now)
    overall = record.windows(uptime.OVERALL)
    return {
        "checked_at": now.isoformat(),
        "worker_heartbeat": _iso(current.worker_beat_at),
        "components": [
            {
                "component": c.component,
                "label": c.label,
                "state": c.state,
                "since": _iso(c.since),
                "detail": c.detail,
            }
            for c in current.components
        ],
        "uptime_percent": {name: figures.percent for name, figures in overall.items()},
        "sla_target_percent": settings.monitoring.sla_target_percent,
        "open_incidents": [
            {"id": i.id, "title": i.title, "state": i.state} for i in open_incidents
        ],
        "outbox": outbox.counts,
        "emails_waiting_for_relay": outbox.emails_waiting_for_relay,
        "last_backup": _iso(current.last_backup_at),
        "last_drill": _iso(current.last_drill_at),
    }


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _print(report: dict[str, Any]) -> None:
    width = max((len(c["label"]) for c in report["components"]), default=10)
    if not report["components"]:
        click.echo("No probe has run yet: is the worker running?")
    for c in report["components"]:
        since = f"since {c['since'][:16].replace('T', ' ')} UTC" if c["since"] else ""
        line = f"{c['label']:<{width}}  {c['state']:<8}  {since}"
        click.echo(line.rstrip())
        if c["state"] != "up" and c["detail"]:
            click.echo(f"{'':<{width}}  {c['detail']}")
    figures = ", ".join(
        f"{name} {'-' if value is None else f'{value:.3f}%'}"
        for name, value in report["uptime_percent"].items()
    )
    click.echo(f"\nUptime (target {report['sla_target_percent']}%): {figures}")
    for incident in report["open_incidents"]:
        click.echo(f"Open incident #{incident['id']} ({incident['state']}): {incident['title']}")
    counts = report["outbox"]
    click.echo(
        f"Outbox: {counts.get('pending', 0)} pending, {counts.get('failed', 0)} failed"
        + (
            f", {report['emails_waiting_for_relay']} e-mails waiting for an SMTP relay"
            if report["emails_waiting_for_relay"]
            else ""
        )
    )
    click.echo(
        f"Last backup: {report['last_backup'] or 'none'}; "
        f"last passed drill: {report['last_drill'] or 'none'}"
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def status(obj: Context, as_json: bool) -> None:
    """Components, uptime, open incidents and the outbox; exit 1 while anything is down."""
    from appliance.clock import utcnow

    with database(obj.settings) as (settings, _):
        report = asyncio.run(_gather(settings, utcnow()))
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print(report)
    if any(c["state"] == "down" for c in report["components"]):
        raise SystemExit(1)
