"""Maintenance windows: scheduled by admins, announced by e-mail ahead, shown as a banner while
they run, and not counted as downtime by the uptime arithmetic.

The parts:

- this module: a window as the pages, the status page and the uptime arithmetic read it;
- :mod:`appliance.monitoring.scheduling`: what admins type, checked, and their changes
  (schedule, change, cancel or end early);
- :mod:`appliance.monitoring.announcements`: the notices, reminders and cancellations by
  e-mail, queued by a periodic task;
- :mod:`appliance.monitoring.banner`: the cache the banner on every page reads.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from appliance.errors import NotFound
from appliance.monitoring.components import LABELS, label
from appliance.monitoring.tables import ComponentStatus, MaintenanceWindow

__all__ = [
    "COLUMNS",
    "MAX_DURATION",
    "REMINDER_BEFORE",
    "Maintenance",
    "MaintenanceInput",
    "active_maintenance",
    "decoded",
    "get_window",
    "known_components",
    "list_windows",
    "locked_window",
    "maintenance_between",
    "upcoming_maintenance",
    "window_of",
]

MAX_DURATION = dt.timedelta(days=7)
REMINDER_BEFORE = dt.timedelta(hours=24)


class MaintenanceInput(msgspec.Struct, frozen=True):
    """What an admin typed: times as ``YYYY-MM-DDTHH:MM`` (an HTML ``datetime-local`` value) in
    the studio's time zone. ``form_key`` is the one-time key of the form it came from."""

    title: str
    starts: str
    ends: str
    description: str = ""
    components: list[str] = msgspec.field(default_factory=list)
    notify_clients: bool = False
    form_key: str = ""


class Maintenance(msgspec.Struct, frozen=True):
    """A maintenance window as the pages and the status page show it (times in UTC)."""

    id: int
    title: str
    description: str
    components: list[str]
    starts_at: dt.datetime
    ends_at: dt.datetime
    notify_clients: bool
    revision: int
    notice_sent_at: dt.datetime | None
    reminder_sent_at: dt.datetime | None
    cancelled_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime

    def state(self, now: dt.datetime) -> str:
        """ "cancelled", "upcoming", "active" or "over"."""
        if self.cancelled_at is not None:
            return "cancelled"
        if now < self.starts_at:
            return "upcoming"
        return "active" if now < self.ends_at else "over"

    @property
    def component_labels(self) -> list[str]:
        return [label(component) for component in self.components]


def decoded(value: Any) -> Any:
    """A JSONB value as Python: Piccolo returns JSONB as text unless the query decodes it."""
    return msgspec.json.decode(value) if isinstance(value, str | bytes) else value


def window_of(row: dict[str, Any]) -> Maintenance:
    """The window of a row selected with :data:`COLUMNS`."""
    return Maintenance(
        id=row["id"],
        title=row["title"],
        description=row["description"],
        components=list(decoded(row["components"])),
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        notify_clients=row["notify_clients"],
        revision=row["revision"],
        notice_sent_at=row["notice_sent_at"],
        reminder_sent_at=row["reminder_sent_at"],
        cancelled_at=row["cancelled_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


COLUMNS = (
    MaintenanceWindow.id,
    MaintenanceWindow.title,
    MaintenanceWindow.description,
    MaintenanceWindow.components,
    MaintenanceWindow.starts_at,
    MaintenanceWindow.ends_at,
    MaintenanceWindow.notify_clients,
    MaintenanceWindow.revision,
    MaintenanceWindow.notice_sent_at,
    MaintenanceWindow.reminder_sent_at,
    MaintenanceWindow.cancelled_at,
    MaintenanceWindow.created_at,
    MaintenanceWindow.updated_at,
)


async def known_components() -> list[str]:
    """The components a window may name: every labelled one and every one the probes report
    (off-site repositories add ``offsite:<name>``)."""
    rows = await ComponentStatus.select(ComponentStatus.component).run()
    return list(dict.fromkeys([*LABELS, *sorted(row["component"] for row in rows)]))


async def get_window(window_id: int) -> Maintenance:
    row = (
        await MaintenanceWindow.select(*COLUMNS)
        .where(MaintenanceWindow.id == window_id)
        .first()
        .run()
    )
    if row is None:
        raise NotFound("There is no such maintenance window.")
    return window_of(row)


async def locked_window(window_id: int) -> Maintenance:
    """The window, locked for the caller's transaction."""
    rows = await MaintenanceWindow.raw(
        "SELECT id FROM maintenance_window WHERE id = {} FOR UPDATE", window_id
    ).run()
    if not rows:
        raise NotFound("There is no such maintenance window.")
    return await get_window(window_id)


async def list_windows(now: dt.datetime, *, past_days: int = 30) -> list[Maintenance]:
    """Windows that end after ``now - past_days`` (cancelled ones too), soonest first."""
    rows = (
        await MaintenanceWindow.select(*COLUMNS)
        .where(MaintenanceWindow.ends_at > now - dt.timedelta(days=past_days))
        .order_by(MaintenanceWindow.starts_at)
        .run()
    )
    return [window_of(row) for row in rows]


async def upcoming_maintenance(now: dt.datetime) -> list[Maintenance]:
    """Windows not cancelled that start after ``now``, soonest first (the status page)."""
    rows = (
        await MaintenanceWindow.select(*COLUMNS)
        .where(MaintenanceWindow.cancelled_at.is_null(), MaintenanceWindow.starts_at > now)
        .order_by(MaintenanceWindow.starts_at)
        .run()
    )
    return [window_of(row) for row in rows]


async def active_maintenance(now: dt.datetime) -> list[Maintenance]:
    """Windows not cancelled that run at ``now`` (start <= now < end), soonest end first."""
    rows = (
        await MaintenanceWindow.select(*COLUMNS)
        .where(
            MaintenanceWindow.cancelled_at.is_null(),
            MaintenanceWindow.starts_at <= now,
            MaintenanceWindow.ends_at > now,
        )
        .order_by(MaintenanceWindow.ends_at)
        .run()
    )
    return [window_of(row) for row in rows]


async def maintenance_between(start: dt.datetime, end: dt.datetime) -> list[Maintenance]:
    """Windows not cancelled that overlap ``[start, end)``, by start. Each carries its
    ``components``; an empty list means the window names no component (the whole appliance).

    The uptime arithmetic leaves these stretches out of the downtime it counts. A window ended
    early counts up to the moment it was ended; a cancelled one not at all.
    """
    rows = (
        await MaintenanceWindow.select(*COLUMNS)
        .where(
            MaintenanceWindow.cancelled_at.is_null(),
            MaintenanceWindow.starts_at < end,
            MaintenanceWindow.ends_at > start,
        )
        .order_by(MaintenanceWindow.starts_at)
        .run()
    )
    return [window_of(row) for row in rows]
