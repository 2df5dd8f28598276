"""What the admins' home page asks them to look at, gathered from each domain's service.

Each notice names the problem in a sentence and links the page where it is dealt with. Only
what needs a person goes here: a component that is down or degraded, messages that could not
be delivered, e-mail waiting for a relay, a security incident whose 72 hours are running,
backups that fail or whose password was never stored.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

from appliance.backups import admin as backups
from appliance.config import Settings
from appliance.localtime import format_local
from appliance.monitoring import uptime
from appliance.notify import admin as notify
from appliance.privacy import service as privacy

__all__ = ["Notice", "for_admins", "for_member"]


class Notice(msgspec.Struct, frozen=True):
    level: Literal["error", "notice"]
    text: str
    href: str
    link: str


async def for_admins(settings: Settings, now: dt.datetime) -> list[Notice]:
    """The notices of every domain, the most urgent first."""
    notices = [
        *await _security_incidents(now),
        *await _components(settings, now),
        *await _backups(),
        *await _outbox(settings, now),
    ]
    return sorted(notices, key=lambda notice: notice.level != "error")


async def for_member(settings: Settings, member_id: int) -> list[Notice]:
    """What every staff member is asked to do: confirm a new version of the privacy policy."""
    from appliance.policies import service as policies

    version = await policies.pending_acknowledgement(member_id)
    if version is None:
        return []
    return [
        Notice(
            "notice",
            f"Version {version.number} of the studio's privacy policy was published on "
            f"{format_local(version.published_at, settings.studio_zone)}: read it and confirm "
            "that you have.",
            "/privacy",
            "Read the privacy policy",
        )
    ]


async def _security_incidents(now: dt.datetime) -> list[Notice]:
    notices = []
    for incident in await privacy.list_incidents():
        countdown = privacy.countdown(incident, now)
        if countdown is None or countdown.state not in ("running", "overdue"):
            continue
        notices.append(
            Notice(
                "error",
                f"Security incident #{incident.id}: the supervisory authority must be told "
                f"within 72 hours of detection ({countdown.text}).",
                f"/admin/security-incidents/{incident.id}",
                "Open the incident",
            )
        )
    return notices


async def _components(settings: Settings, now: dt.datetime) -> list[Notice]:
    current = await uptime.load_now(
        now,
        stale_seconds=settings.monitoring.worker_stale_seconds,
        round_seconds=settings.monitoring.probe_interval_seconds,
    )
    zone = settings.studio_zone
    notices = []
    for component in current.components:
        if component.state not in ("down", "degraded"):
            continue
        since = f" since {format_local(component.since, zone)}" if component.since else ""
        notices.append(
            Notice(
                "error" if component.state == "down" else "notice",
                f"{component.label} is {component.state}{since}.",
                "/admin/monitoring",
                "Open Monitoring",
            )
        )
    return notices


async def _backups() -> list[Notice]:
    state = await backups.attention()
    notices = []
    if not state.password_stored:
        notices.append(
            Notice(
                "notice",
                "Backups: store the repository password somewhere safe, then confirm it. "
                "Without it no backup can be read.",
                "/admin/backups",
                "Open Backups",
            )
        )
    if state.failing:
        notices.append(
            Notice(
                "error",
                f"Backups need attention: {', '.join(state.failing)}.",
                "/admin/backups",
                "Open Backups",
            )
        )
    return notices


async def _outbox(settings: Settings, now: dt.datetime) -> list[Notice]:
    outbox = await notify.outbox_overview(settings, now)
    notices = []
    failed = outbox.counts.get("failed", 0)
    if failed:
        notices.append(
            Notice(
                "error",
                f"{failed} message{'s' if failed != 1 else ''} could not be delivered.",
                "/admin/notifications",
                "Open Notifications",
            )
        )
    if outbox.emails_waiting_for_relay:
        waiting = outbox.emails_waiting_for_relay
        notices.append(
            Notice(
                "notice",
                f"{waiting} e-mail{'s' if waiting != 1 else ''} wait{'s' if waiting == 1 else ''}"
                " for an SMTP relay to be set.",
                "/admin/notifications",
                "Set the relay",
            )
        )
    return notices
