"""Admins' changes to maintenance windows: what they typed, checked, then scheduled, changed,
cancelled, or ended early. Every change is audit-logged; the e-mails it causes are queued by
:mod:`appliance.monitoring.announcements`."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from asyncpg.exceptions import UniqueViolationError

from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.errors import Conflict, InvalidInput
from appliance.localtime import parse_local_time
from appliance.monitoring.announcements import send_cancellations
from appliance.monitoring.components import clean_components
from appliance.monitoring.maintenance import (
    MAX_DURATION,
    Maintenance,
    MaintenanceInput,
    get_window,
    known_components,
    locked_window,
)
from appliance.monitoring.tables import MaintenanceWindow
from appliance.validation import clean_multiline, clean_text
from appliance.web.form_keys import clean_form_key

__all__ = ["cancel_window", "edit_window", "schedule_window"]

TITLE_MAX = 200
DESCRIPTION_MAX = 4000
# How far ahead a window may be scheduled: far enough for any plan, near enough that a typo in
# the year is caught.
MAX_AHEAD = dt.timedelta(days=366)


async def _clean(
    data: MaintenanceInput, *, zone: str, now: dt.datetime, current: Maintenance | None = None
) -> dict[str, Any]:
    title = clean_text(data.title, field="title", max_length=TITLE_MAX, required=False)
    if not title:
        raise InvalidInput("Give the maintenance a title.", field="title")
    starts_at = parse_local_time(data.starts, zone, field="starts")
    ends_at = parse_local_time(data.ends, zone, field="ends")
    # A running window keeps its start (it may be extended or shortened); a new start must
    # lie ahead, or nobody could have been told.
    moved = current is None or starts_at != current.starts_at
    if moved and current is not None and current.starts_at <= now:
        raise InvalidInput(
            "This maintenance has begun; its start can no longer change.", field="starts"
        )
    if moved and starts_at <= now:
        raise InvalidInput("The start is in the past. Choose a time ahead.", field="starts")
    if starts_at - now > MAX_AHEAD:
        raise InvalidInput("Schedule maintenance at most a year ahead.", field="starts")
    if ends_at <= starts_at:
        raise InvalidInput("The end must come after the start.", field="ends")
    if ends_at <= now:
        raise InvalidInput("The end is in the past.", field="ends")
    if ends_at - starts_at > MAX_DURATION:
        raise InvalidInput(
            "A maintenance window may last at most 7 days. Split longer work.", field="ends"
        )
    components = clean_components(data.components, await known_components())
    return {
        "title": title,
        "description": clean_multiline(
            data.description, field="description", max_length=DESCRIPTION_MAX
        ),
        "components": components,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "notify_clients": bool(data.notify_clients),
    }


def _audit_details(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": values["title"],
        "starts_at": values["starts_at"].isoformat(),
        "ends_at": values["ends_at"].isoformat(),
        "components": values["components"],
        "notify_clients": values["notify_clients"],
    }


async def _by_form_key(key: str | None) -> Maintenance | None:
    if key is None:
        return None
    row = (
        await MaintenanceWindow.select(MaintenanceWindow.id)
        .where(MaintenanceWindow.form_key == key)
        .first()
        .run()
    )
    return await get_window(row["id"]) if row else None


async def schedule_window(
    data: MaintenanceInput, *, zone: str, actor: Actor, address: str, now: dt.datetime
) -> Maintenance:
    """Schedule a window (announced by the next run of the notice task). The same form sent
    again (its ``form_key``) returns the window it scheduled and schedules nothing."""
    key = clean_form_key(data.form_key)
    earlier = await _by_form_key(key)
    if earlier is not None:
        return earlier
    values = await _clean(data, zone=zone, now=now)
    try:
        async with MaintenanceWindow._meta.db.transaction():
            row = MaintenanceWindow(
                **values, form_key=key, created_by=actor.id, created_at=now, updated_at=now
            )
            await row.save().run()
            await audit.record(
                "maintenance.scheduled",
                actor=actor,
                target=f"maintenance:{row.id}",
                address=address,
                details=_audit_details(values),
                at=now,
            )
    except UniqueViolationError:
        # The same form, sent twice at the same moment: the other request scheduled it.
        earlier = await _by_form_key(key)
        if earlier is None:
            raise
        return earlier
    return await get_window(int(row.id))


async def edit_window(
    window_id: int,
    data: MaintenanceInput,
    *,
    zone: str,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> Maintenance:
    """Change a window that has not ended. A change of what people were told (times, title,
    components) makes a new revision, which is announced again; switching "tell clients" on
    after the notice went out has the next run send that notice to the clients only."""
    async with MaintenanceWindow._meta.db.transaction():
        current = await locked_window(window_id)
        state = current.state(now)
        if state == "cancelled":
            raise Conflict("This maintenance was cancelled; schedule a new one.")
        if state == "over":
            raise Conflict("This maintenance is over and can no longer change.")
        values = await _clean(data, zone=zone, now=now, current=current)
        changed = (
            values["starts_at"] != current.starts_at
            or values["ends_at"] != current.ends_at
            or values["title"] != current.title
            or values["components"] != current.components
        )
        update: dict[Any, Any] = {
            MaintenanceWindow.title: values["title"],
            MaintenanceWindow.description: values["description"],
            MaintenanceWindow.components: values["components"],
            MaintenanceWindow.starts_at: values["starts_at"],
            MaintenanceWindow.ends_at: values["ends_at"],
            MaintenanceWindow.notify_clients: values["notify_clients"],
            MaintenanceWindow.updated_at: now,
        }
        if changed:
            update[MaintenanceWindow.revision] = current.revision + 1
            update[MaintenanceWindow.notice_sent_at] = None
            update[MaintenanceWindow.reminder_sent_at] = None
        elif values["notify_clients"] and not current.notify_clients:
            # The notice is due again for this revision: those who had it are skipped.
            update[MaintenanceWindow.notice_sent_at] = None
        await MaintenanceWindow.update(update).where(MaintenanceWindow.id == window_id).run()
        await audit.record(
            "maintenance.changed",
            actor=actor,
            target=f"maintenance:{window_id}",
            address=address,
            details={**_audit_details(values), "announced_again": changed},
            at=now,
        )
    return await get_window(window_id)


async def cancel_window(
    window_id: int,
    *,
    settings_language: str,
    studio: str,
    zone: str,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> tuple[Maintenance, Literal["cancelled", "ended"], int]:
    """Cancel a window that has not begun: everyone told about it gets a cancellation, and it
    never counts as maintenance. A running window is ended now instead: the part that ran
    stays maintenance, nobody is mailed (the banner goes and the status page shows it over).
    Returns the window, what happened and the number of cancellations queued."""
    async with MaintenanceWindow._meta.db.transaction():
        current = await locked_window(window_id)
        state = current.state(now)
        if state == "cancelled":
            raise Conflict("This maintenance is already cancelled.")
        if state == "over":
            raise Conflict("This maintenance is over; there is nothing to cancel.")
        queued = 0
        update: dict[Any, Any] = {MaintenanceWindow.updated_at: now, MaintenanceWindow.told: []}
        if state == "active":
            outcome: Literal["cancelled", "ended"] = "ended"
            update[MaintenanceWindow.ends_at] = now
        else:
            outcome = "cancelled"
            update[MaintenanceWindow.cancelled_at] = now
            # Inside the row lock and the transaction: a cancellation is queued exactly once,
            # or, when anything fails, not at all and the window stays scheduled.
            queued = await send_cancellations(
                current, language=settings_language, studio=studio, zone=zone, now=now
            )
        await MaintenanceWindow.update(update).where(MaintenanceWindow.id == window_id).run()
        if outcome == "ended":
            await audit.record(
                "maintenance.ended",
                actor=actor,
                target=f"maintenance:{window_id}",
                address=address,
                details={"title": current.title, "planned_end": current.ends_at.isoformat()},
                at=now,
            )
        else:
            await audit.record(
                "maintenance.cancelled",
                actor=actor,
                target=f"maintenance:{window_id}",
                address=address,
                details={"title": current.title, "cancellations": queued},
                at=now,
            )
    return await get_window(window_id), outcome, queued
