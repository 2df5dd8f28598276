"""Maintenance windows: scheduled by admins, announced by e-mail ahead, shown as a banner while
they run, and not counted as downtime by the uptime arithmetic.

Announcements (``send_due_notices``, run by a periodic task):

1. ``monitoring.maintenance_notice_days`` before the start (or at once when scheduled later than
   that) every active staff member with an e-mail address gets a notice, and, when the admin
   chose it, every client with an active share link;
2. 24 hours before the start everyone it concerns then gets a reminder, unless the notice
   went out within those 24 hours (the notice then was the reminder);
3. a window whose time, title or components change gets a new revision and is announced again;
4. a cancelled window sends a cancellation to everyone who was told (``told``).

Each mail is keyed ``maintenance:<id>:r<revision>:<kind>:<recipient digest>`` in the outbox and
each window is handled under a row lock, so a task that runs twice sends nothing twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import re
import time
import unicodedata
import zoneinfo
from typing import Any, Literal

import msgspec

from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.clients import service as clients
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.galleries import service as galleries
from appliance.galleries import sharing
from appliance.monitoring.components import LABELS, label
from appliance.monitoring.tables import ComponentStatus, MaintenanceWindow
from appliance.notify.messages import queue_email

__all__ = [
    "MAX_DURATION",
    "REMINDER_BEFORE",
    "BannerCache",
    "Maintenance",
    "MaintenanceInput",
    "NoticeReport",
    "Recipient",
    "active_maintenance",
    "cancel_window",
    "edit_window",
    "format_when",
    "get_window",
    "known_components",
    "list_windows",
    "maintenance_between",
    "schedule_window",
    "send_due_notices",
    "upcoming_maintenance",
]

log = logging.getLogger(__name__)

MAX_DURATION = dt.timedelta(days=7)
REMINDER_BEFORE = dt.timedelta(hours=24)
TITLE_MAX = 200
DESCRIPTION_MAX = 4000
# How far ahead a window may be scheduled: far enough for any plan, near enough that a typo in
# the year is caught.
MAX_AHEAD = dt.timedelta(days=366)
_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}$")

Audience = Literal["staff", "client"]


class MaintenanceInput(msgspec.Struct, frozen=True):
    """What an admin typed: times as ``YYYY-MM-DDTHH:MM`` (an HTML ``datetime-local`` value) in
    the studio's time zone."""

    title: str
    starts: str
    ends: str
    description: str = ""
    components: list[str] = msgspec.field(default_factory=list)
    notify_clients: bool = False


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


class Recipient(msgspec.Struct, frozen=True):
    email: str
    audience: Audience


class NoticeReport(msgspec.Struct):
    """What one run of ``send_due_notices`` queued."""

    notices: int = 0
    reminders: int = 0


def _window(row: dict[str, Any]) -> Maintenance:
    return Maintenance(
        id=row["id"],
        title=row["title"],
        description=row["description"],
        components=list(_json(row["components"])),
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


def _json(value: Any) -> Any:
    # Piccolo returns JSONB as text unless the query asks for it decoded.
    return msgspec.json.decode(value) if isinstance(value, str | bytes) else value


_COLUMNS = (
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


# --- times -----------------------------------------------------------------------------------


def format_when(moment: dt.datetime, zone: str) -> str:
    """``2026-12-01 14:00 CET (13:00 UTC)``; just ``... 13:00 UTC`` when the zone is UTC."""
    utc = moment.astimezone(dt.UTC)
    local = moment.astimezone(zoneinfo.ZoneInfo(zone))
    if local.utcoffset() == dt.timedelta(0) and zone in ("UTC", "Etc/UTC"):
        return f"{utc:%Y-%m-%d %H:%M} UTC"
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()} ({utc:%H:%M} UTC)"


def _parse_local(value: str, zone: str, field: str) -> dt.datetime:
    """A ``datetime-local`` value in ``zone``, as UTC; a clear message when it is not one."""
    text = value.strip()
    if not text:
        raise InvalidInput("Enter a date and time.", field=field)
    if not _LOCAL_TIME.match(text):
        raise InvalidInput("Enter the time as YYYY-MM-DD HH:MM.", field=field)
    try:
        naive = dt.datetime.fromisoformat(text.replace(" ", "T"))
    except ValueError:
        raise InvalidInput("This date does not exist.", field=field) from None
    local = naive.replace(tzinfo=zoneinfo.ZoneInfo(zone))
    # A wall-clock time skipped by a daylight-saving change does not survive the round trip.
    if local.astimezone(dt.UTC).astimezone(local.tzinfo).replace(tzinfo=None) != naive:
        raise InvalidInput("This time does not exist in the studio's time zone.", field=field)
    return local.astimezone(dt.UTC)


def local_input(moment: dt.datetime, zone: str) -> str:
    """The ``datetime-local`` value of ``moment`` in ``zone`` (for a form shown again)."""
    return f"{moment.astimezone(zoneinfo.ZoneInfo(zone)):%Y-%m-%dT%H:%M}"


# --- validation ------------------------------------------------------------------------------


async def known_components() -> list[str]:
    """The components a window may name: every labelled one and every one the probes report
    (off-site repositories add ``offsite:<name>``)."""
    rows = await ComponentStatus.select(ComponentStatus.component).run()
    return list(dict.fromkeys([*LABELS, *sorted(row["component"] for row in rows)]))


def _clean_description(value: str) -> str:
    text = value.replace("\r\n", "\n").strip()
    if len(text) > DESCRIPTION_MAX:
        raise InvalidInput(f"Use at most {DESCRIPTION_MAX} characters.", field="description")
    if any(
        unicodedata.category(char) in {"Cc", "Cf", "Cs"} and char not in "\n\t" for char in text
    ):
        raise InvalidInput("Remove the invisible or control characters.", field="description")
    return text


async def _clean(
    data: MaintenanceInput, *, zone: str, now: dt.datetime, current: Maintenance | None = None
) -> dict[str, Any]:
    title = data.title.strip()
    if not title:
        raise InvalidInput("Give the maintenance a title.", field="title")
    if len(title) > TITLE_MAX:
        raise InvalidInput(f"Use at most {TITLE_MAX} characters.", field="title")
    if any(unicodedata.category(char) in {"Cc", "Cf", "Cs"} for char in title):
        raise InvalidInput("Remove the invisible or control characters.", field="title")
    starts_at = _parse_local(data.starts, zone, "starts")
    ends_at = _parse_local(data.ends, zone, "ends")
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
    allowed = await known_components()
    components = list(dict.fromkeys(item.strip() for item in data.components if item.strip()))
    unknown = [item for item in components if item not in allowed]
    if unknown:
        raise InvalidInput(
            f"Unknown component: {unknown[0][:64]!r}. Choose from the list.", field="components"
        )
    return {
        "title": title,
        "description": _clean_description(data.description),
        "components": components,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "notify_clients": bool(data.notify_clients),
    }


# --- admins' changes -------------------------------------------------------------------------


async def get_window(window_id: int) -> Maintenance:
    row = (
        await MaintenanceWindow.select(*_COLUMNS)
        .where(MaintenanceWindow.id == window_id)
        .first()
        .run()
    )
    if row is None:
        raise NotFound("There is no such maintenance window.")
    return _window(row)


async def _locked(window_id: int) -> Maintenance:
    """The window, locked for the caller's transaction."""
    rows = await MaintenanceWindow.raw(
        "SELECT id FROM maintenance_window WHERE id = {} FOR UPDATE", window_id
    ).run()
    if not rows:
        raise NotFound("There is no such maintenance window.")
    return await get_window(window_id)


def _audit_details(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": values["title"],
        "starts_at": values["starts_at"].isoformat(),
        "ends_at": values["ends_at"].isoformat(),
        "components": values["components"],
        "notify_clients": values["notify_clients"],
    }


async def schedule_window(
    data: MaintenanceInput, *, zone: str, actor: Actor, address: str, now: dt.datetime
) -> Maintenance:
    """Schedule a window (announced by the next run of the notice task)."""
    values = await _clean(data, zone=zone, now=now)
    async with MaintenanceWindow._meta.db.transaction():
        row = MaintenanceWindow(**values, created_by=actor.id, created_at=now, updated_at=now)
        await row.save().run()
        await audit.record(
            "maintenance.scheduled",
            actor=actor,
            target=f"maintenance:{row.id}",
            address=address,
            details=_audit_details(values),
            at=now,
        )
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
    components) makes a new revision, which is announced again."""
    async with MaintenanceWindow._meta.db.transaction():
        current = await _locked(window_id)
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
) -> tuple[Maintenance, int]:
    """Cancel a window that has not ended; everyone told about it gets a cancellation.
    Returns the window and the number of cancellations queued."""
    async with MaintenanceWindow._meta.db.transaction():
        current = await _locked(window_id)
        state = current.state(now)
        if state == "cancelled":
            raise Conflict("This maintenance is already cancelled.")
        if state == "over":
            raise Conflict("This maintenance is over; there is nothing to cancel.")
        told = await _told(window_id)
        # Inside the row lock and the transaction: a cancellation is queued exactly once,
        # or, when anything fails, not at all and the window stays scheduled.
        queued = 0
        for person in told:
            queued += (
                await _queue(
                    current,
                    person,
                    kind="cancelled",
                    language=settings_language,
                    studio=studio,
                    zone=zone,
                    now=now,
                )
                is not None
            )
        await (
            MaintenanceWindow.update(
                {MaintenanceWindow.cancelled_at: now, MaintenanceWindow.updated_at: now}
            )
            .where(MaintenanceWindow.id == window_id)
            .run()
        )
        await audit.record(
            "maintenance.cancelled",
            actor=actor,
            target=f"maintenance:{window_id}",
            address=address,
            details={"title": current.title, "cancellations": queued},
            at=now,
        )
    return await get_window(window_id), queued


# --- queries (admin pages and the status page) -----------------------------------------------


async def list_windows(now: dt.datetime, *, past_days: int = 30) -> list[Maintenance]:
    """Windows that end after ``now - past_days`` (cancelled ones too), soonest first."""
    rows = (
        await MaintenanceWindow.select(*_COLUMNS)
        .where(MaintenanceWindow.ends_at > now - dt.timedelta(days=past_days))
        .order_by(MaintenanceWindow.starts_at)
        .run()
    )
    return [_window(row) for row in rows]


async def upcoming_maintenance(now: dt.datetime) -> list[Maintenance]:
    """Windows not cancelled that start after ``now``, soonest first (the status page)."""
    rows = (
        await MaintenanceWindow.select(*_COLUMNS)
        .where(MaintenanceWindow.cancelled_at.is_null(), MaintenanceWindow.starts_at > now)
        .order_by(MaintenanceWindow.starts_at)
        .run()
    )
    return [_window(row) for row in rows]


async def active_maintenance(now: dt.datetime) -> list[Maintenance]:
    """Windows not cancelled that run at ``now`` (start <= now < end), soonest end first."""
    rows = (
        await MaintenanceWindow.select(*_COLUMNS)
        .where(
            MaintenanceWindow.cancelled_at.is_null(),
            MaintenanceWindow.starts_at <= now,
            MaintenanceWindow.ends_at > now,
        )
        .order_by(MaintenanceWindow.ends_at)
        .run()
    )
    return [_window(row) for row in rows]


async def maintenance_between(start: dt.datetime, end: dt.datetime) -> list[Maintenance]:
    """Windows not cancelled that overlap ``[start, end)``, by start. Each carries its
    ``components``; an empty list means the window names no component (the whole appliance).

    The uptime arithmetic leaves these stretches out of the downtime it counts.
    """
    rows = (
        await MaintenanceWindow.select(*_COLUMNS)
        .where(
            MaintenanceWindow.cancelled_at.is_null(),
            MaintenanceWindow.starts_at < end,
            MaintenanceWindow.ends_at > start,
        )
        .order_by(MaintenanceWindow.starts_at)
        .run()
    )
    return [_window(row) for row in rows]


# --- announcements ---------------------------------------------------------------------------


def _digest(email: str) -> str:
    return hashlib.sha256(email.lower().encode()).hexdigest()[:24]


async def _told(window_id: int) -> list[Recipient]:
    row = (
        await MaintenanceWindow.select(MaintenanceWindow.told)
        .where(MaintenanceWindow.id == window_id)
        .first()
        .run()
    )
    items = _json(row["told"]) if row else []
    return [Recipient(email=item["email"], audience=item["audience"]) for item in items]


async def recipients(window: Maintenance, now: dt.datetime) -> list[Recipient]:
    """Active staff with an e-mail address, then (when chosen) the e-mail addresses of active
    share links of published galleries (the link's own address, else its client's); each
    address once, staff first."""
    found: dict[str, Recipient] = {}
    for member in await _staff():
        found.setdefault(member.lower(), Recipient(email=member, audience="staff"))
    if window.notify_clients:
        for email in await _client_addresses(now):
            found.setdefault(email.lower(), Recipient(email=email, audience="client"))
    return list(found.values())


async def _staff() -> list[str]:
    from appliance.accounts.service import list_members

    return [m.email.strip() for m in await list_members() if m.is_active and m.email.strip()]


async def _client_addresses(now: dt.datetime) -> list[str]:
    addresses: list[str] = []
    client_email: dict[int, str] = {}
    for gallery in await galleries.list_galleries(status="published"):
        if gallery.expired(now.date()):
            continue
        for link in await sharing.list_links(gallery.id):
            if link.state(now) != "active":
                continue
            email = link.email.strip()
            if not email:
                if gallery.client_id not in client_email:
                    client = await clients.get_client(gallery.client_id)
                    client_email[gallery.client_id] = client.email.strip()
                email = client_email[gallery.client_id]
            if email:
                addresses.append(email)
    return addresses


async def _queue(
    window: Maintenance,
    person: Recipient,
    *,
    kind: Literal["notice", "reminder", "cancelled"],
    language: str,
    studio: str,
    zone: str,
    now: dt.datetime,
    changed: bool = False,
) -> int | None:
    revision = "" if kind == "cancelled" else f"r{window.revision}:"
    return await queue_email(
        to=person.email,
        template=f"maintenance_{kind}",
        context={
            "studio": studio,
            "audience": person.audience,
            "changed": changed,
            "title": window.title,
            "description": window.description,
            "components": window.component_labels,
            "starts": format_when(window.starts_at, zone),
            "ends": format_when(window.ends_at, zone),
        },
        language=language,
        source="monitoring",
        now=now,
        dedupe_key=f"maintenance:{window.id}:{revision}{kind}:{_digest(person.email)}",
    )


async def send_due_notices(
    *, notice_days: int, language: str, studio: str, zone: str, now: dt.datetime
) -> NoticeReport:
    """Queue the notices and reminders that are due (see the module's docstring)."""
    report = NoticeReport()
    lead = max(dt.timedelta(days=notice_days), REMINDER_BEFORE)
    due = (
        await MaintenanceWindow.select(MaintenanceWindow.id)
        .where(
            MaintenanceWindow.cancelled_at.is_null(),
            MaintenanceWindow.ends_at > now,
            MaintenanceWindow.starts_at <= now + lead,
            MaintenanceWindow.notice_sent_at.is_null()
            | MaintenanceWindow.reminder_sent_at.is_null(),
        )
        .order_by(MaintenanceWindow.starts_at)
        .run()
    )
    for row in due:
        async with MaintenanceWindow._meta.db.transaction():
            window = await _locked(row["id"])
            if window.state(now) in ("cancelled", "over"):
                continue
            if window.notice_sent_at is None:
                report.notices += await _announce(
                    window, language=language, studio=studio, zone=zone, now=now
                )
            elif window.reminder_sent_at is None and window.starts_at - REMINDER_BEFORE <= now:
                report.reminders += await _remind(
                    window, language=language, studio=studio, zone=zone, now=now
                )
    return report


async def _announce(
    window: Maintenance, *, language: str, studio: str, zone: str, now: dt.datetime
) -> int:
    """The notice of this revision to everyone it concerns now; inside the window's lock."""
    told = {person.email.lower(): person for person in await _told(window.id)}
    queued = 0
    people = await recipients(window, now)
    for person in people:
        changed = window.revision > 0 and person.email.lower() in told
        sent = await _queue(
            window,
            person,
            kind="notice",
            language=language,
            studio=studio,
            zone=zone,
            now=now,
            changed=changed,
        )
        queued += sent is not None
        told.setdefault(person.email.lower(), person)
    update: dict[Any, Any] = {
        MaintenanceWindow.notice_sent_at: now,
        MaintenanceWindow.told: [msgspec.to_builtins(person) for person in told.values()],
    }
    # A notice within the last day before the start is the reminder too.
    if window.starts_at - REMINDER_BEFORE <= now:
        update[MaintenanceWindow.reminder_sent_at] = now
    await MaintenanceWindow.update(update).where(MaintenanceWindow.id == window.id).run()
    log.info("maintenance %d: notice queued for %d people", window.id, queued)
    return queued


async def _remind(
    window: Maintenance, *, language: str, studio: str, zone: str, now: dt.datetime
) -> int:
    """The reminder to everyone the window concerns now (staff who left since the notice are
    not reminded, staff who joined are); inside the window's lock."""
    told = {person.email.lower(): person for person in await _told(window.id)}
    queued = 0
    for person in await recipients(window, now):
        sent = await _queue(
            window, person, kind="reminder", language=language, studio=studio, zone=zone, now=now
        )
        queued += sent is not None
        told.setdefault(person.email.lower(), person)
    await (
        MaintenanceWindow.update(
            {
                MaintenanceWindow.reminder_sent_at: now,
                MaintenanceWindow.told: [msgspec.to_builtins(p) for p in told.values()],
            }
        )
        .where(MaintenanceWindow.id == window.id)
        .run()
    )
    log.info("maintenance %d: reminder queued for %d people", window.id, queued)
    return queued


# --- the banner ------------------------------------------------------------------------------


class BannerCache:
    """The windows that had not ended when last loaded, at most ``ttl`` seconds old.

    Pages are rendered synchronously, so they read this cache and never the database; which
    window runs is decided at render time from the clock, so a window announced ahead shows
    from its first minute even when the cache was loaded before it began. Admins' changes
    reload it at once in their process; other processes see them within ``ttl``.
    """

    def __init__(self, ttl: float = 30.0) -> None:
        self.ttl = ttl
        self._windows: list[Maintenance] = []
        self._loaded_at = float("-inf")
        self._loading: asyncio.Task[None] | None = None

    @property
    def stale(self) -> bool:
        return time.monotonic() - self._loaded_at >= self.ttl

    async def refresh(self, now: dt.datetime) -> None:
        rows = (
            await MaintenanceWindow.select(*_COLUMNS)
            .where(MaintenanceWindow.cancelled_at.is_null(), MaintenanceWindow.ends_at > now)
            .order_by(MaintenanceWindow.starts_at)
            .run()
        )
        self._windows = [_window(row) for row in rows]
        self._loaded_at = time.monotonic()

    async def refresh_if_stale(self, now: dt.datetime) -> None:
        """Reload when stale; a failure is logged, never raised (see ``_quiet_refresh``)."""
        if self.stale:
            await self._quiet_refresh(now)

    def refresh_soon(self, now: dt.datetime) -> None:
        """Start a reload in the background when stale (for callers that cannot wait)."""
        if not self.stale or (self._loading is not None and not self._loading.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._loading = loop.create_task(self._quiet_refresh(now))

    async def _quiet_refresh(self, now: dt.datetime) -> None:
        try:
            await self.refresh(now)
        except Exception:  # a banner is never worth a failed page
            # Keep what was loaded and wait a full ``ttl`` before trying again, so a database
            # that is down is not asked once more for every page of the error.
            self._loaded_at = time.monotonic()
            log.warning("the maintenance banner could not be loaded", exc_info=True)

    def active(self, now: dt.datetime) -> Maintenance | None:
        """The running window that ends last (the one people wait for)."""
        running = [w for w in self._windows if w.starts_at <= now < w.ends_at]
        return max(running, key=lambda w: w.ends_at) if running else None

    def upcoming(self, now: dt.datetime, within: dt.timedelta) -> Maintenance | None:
        """The next window that starts within ``within`` of ``now``."""
        ahead = [w for w in self._windows if now < w.starts_at <= now + within]
        return ahead[0] if ahead else None
