"""Maintenance announcements by e-mail, queued by a periodic task (``send_due_notices``):

1. ``monitoring.maintenance_notice_days`` before the start (or at once when scheduled later than
   that) every active staff member with an e-mail address gets a notice, and, when the admin
   chose it, every client with an active share link;
2. 24 hours before the start everyone it concerns then gets a reminder, unless the notice
   went out within those 24 hours (the notice then was the reminder);
3. a window whose time, title or components change gets a new revision and is announced again;
4. when "tell clients" is switched on after the notice went out, the next run sends the notice
   of the same revision to those not told yet (the clients), and nobody gets it twice;
5. a window cancelled before it starts sends a cancellation to everyone who was told
   (``told``); one ended early sends nothing (the banner and the status page show it over).

Each person is written to in their own language (a staff member's, the client's of a share
link), else in the studio's default; ``told`` remembers it for the cancellation.

Each mail is keyed ``maintenance:<id>:r<revision>:<kind>:<recipient digest>`` in the outbox and
each window is handled under a row lock, so a task that runs twice sends nothing twice.

``told`` holds e-mail addresses only as long as something may still be sent to them: it is
emptied when a window is cancelled, and by the next run after a window ends.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from typing import Any, Literal

import msgspec

from appliance.clients import service as clients
from appliance.galleries import service as galleries
from appliance.galleries import sharing
from appliance.localtime import format_local
from appliance.monitoring.maintenance import REMINDER_BEFORE, Maintenance, decoded, locked_window
from appliance.monitoring.tables import MaintenanceWindow
from appliance.notify.languages import language_for
from appliance.notify.messages import queue_email

__all__ = [
    "NoticeReport",
    "Recipient",
    "forget_told",
    "recipients",
    "send_cancellations",
    "send_due_notices",
    "told",
]

log = logging.getLogger(__name__)

Audience = Literal["staff", "client"]
Kind = Literal["notice", "reminder", "cancelled"]


class Recipient(msgspec.Struct, frozen=True):
    """Someone a window concerns; ``revision`` is the revision whose notice they got (-1: not
    known, for a record from before revisions were remembered; the outbox key still keeps
    them from a second copy); ``language`` is their own ("": the studio's default)."""

    email: str
    audience: Audience
    revision: int = -1
    language: str = ""


class NoticeReport(msgspec.Struct):
    """What one run of ``send_due_notices`` queued."""

    notices: int = 0
    reminders: int = 0
    forgotten: int = 0


def _digest(email: str) -> str:
    return hashlib.sha256(email.lower().encode()).hexdigest()[:24]


async def told(window_id: int) -> list[Recipient]:
    """Everyone a notice or reminder of the window reached."""
    row = (
        await MaintenanceWindow.select(MaintenanceWindow.told)
        .where(MaintenanceWindow.id == window_id)
        .first()
        .run()
    )
    items = decoded(row["told"]) if row else []
    return [
        Recipient(
            email=item["email"],
            audience=item["audience"],
            revision=item.get("revision", -1),
            language=item.get("language", ""),
        )
        for item in items
    ]


async def _remember(window_id: int, people: dict[str, Recipient], **more: Any) -> None:
    update: dict[Any, Any] = {
        MaintenanceWindow.told: [msgspec.to_builtins(person) for person in people.values()]
    }
    update.update({getattr(MaintenanceWindow, name): value for name, value in more.items()})
    await MaintenanceWindow.update(update).where(MaintenanceWindow.id == window_id).run()


async def recipients(window: Maintenance, now: dt.datetime) -> list[Recipient]:
    """Active staff with an e-mail address, then (when chosen) the e-mail addresses of active
    share links of published galleries (the link's own address, else its client's); each
    address once, staff first. Each in their own language: a staff member's, or the language
    of the link's client."""
    found: dict[str, Recipient] = {}
    for email, language in await _staff():
        found.setdefault(email.lower(), Recipient(email=email, audience="staff", language=language))
    if window.notify_clients:
        for email, language in await _client_addresses(now):
            found.setdefault(
                email.lower(), Recipient(email=email, audience="client", language=language)
            )
    return list(found.values())


async def _staff() -> list[tuple[str, str]]:
    """``(e-mail, language)`` of every active staff member with an address."""
    from appliance.accounts.service import list_members

    return [
        (m.email.strip(), m.language)
        for m in await list_members()
        if m.is_active and m.email.strip()
    ]


async def _client_addresses(now: dt.datetime) -> list[tuple[str, str]]:
    """``(e-mail, language)`` of every active link of a published gallery: the link's own
    address, else its client's; the language is always the client's."""
    addresses: list[tuple[str, str]] = []
    of_client: dict[int, clients.ClientRecord] = {}
    for gallery in await galleries.list_galleries(status="published"):
        if gallery.expired(now.date()):
            continue
        for link in await sharing.list_links(gallery.id):
            if link.state(now) != "active":
                continue
            if gallery.client_id not in of_client:
                of_client[gallery.client_id] = await clients.get_client(gallery.client_id)
            client = of_client[gallery.client_id]
            email = link.email.strip() or client.email.strip()
            if email:
                addresses.append((email, client.language))
    return addresses


async def _queue(
    window: Maintenance,
    person: Recipient,
    *,
    kind: Kind,
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
            "starts": format_local(window.starts_at, zone),
            "ends": format_local(window.ends_at, zone),
        },
        language=language_for(person.language, language),
        source="monitoring",
        now=now,
        dedupe_key=f"maintenance:{window.id}:{revision}{kind}:{_digest(person.email)}",
    )


async def send_cancellations(
    window: Maintenance, *, language: str, studio: str, zone: str, now: dt.datetime
) -> int:
    """A cancellation to everyone told about ``window``; the number queued. Called inside the
    window's lock and the transaction that cancels it."""
    queued = 0
    for person in await told(window.id):
        sent = await _queue(
            window, person, kind="cancelled", language=language, studio=studio, zone=zone, now=now
        )
        queued += sent is not None
    return queued


async def forget_told(now: dt.datetime) -> int:
    """Empty ``told`` of every window that ended or was cancelled (nothing more is sent for
    it); the number of windows emptied."""
    rows = await MaintenanceWindow.raw(
        "UPDATE maintenance_window SET told = '[]'::jsonb"
        " WHERE (ends_at <= {} OR cancelled_at IS NOT NULL) AND told <> '[]'::jsonb"
        " RETURNING id",
        now,
    ).run()
    return len(rows)


async def send_due_notices(
    *, notice_days: int, language: str, studio: str, zone: str, now: dt.datetime
) -> NoticeReport:
    """Queue the notices and reminders that are due (see the module's docstring)."""
    report = NoticeReport(forgotten=await forget_told(now))
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
            window = await locked_window(row["id"])
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
    """The notice of this revision to everyone it concerns now who has not had it; inside the
    window's lock."""
    known = {person.email.lower(): person for person in await told(window.id)}
    queued = 0
    for person in await recipients(window, now):
        before = known.get(person.email.lower())
        if before is not None and before.revision == window.revision:
            continue  # told of this very revision already (clients were added since)
        sent = await _queue(
            window,
            person,
            kind="notice",
            language=language,
            studio=studio,
            zone=zone,
            now=now,
            changed=window.revision > 0 and before is not None,
        )
        queued += sent is not None
        audience = before.audience if before is not None else person.audience
        known[person.email.lower()] = Recipient(
            email=person.email,
            audience=audience,
            revision=window.revision,
            language=person.language,
        )
    more: dict[str, Any] = {"notice_sent_at": now}
    # A notice within the last day before the start is the reminder too.
    if window.starts_at - REMINDER_BEFORE <= now:
        more["reminder_sent_at"] = now
    await _remember(window.id, known, **more)
    log.info("maintenance %d: notice queued for %d people", window.id, queued)
    return queued


async def _remind(
    window: Maintenance, *, language: str, studio: str, zone: str, now: dt.datetime
) -> int:
    """The reminder to everyone the window concerns now (staff who left since the notice are
    not reminded, staff who joined are); inside the window's lock."""
    known = {person.email.lower(): person for person in await told(window.id)}
    queued = 0
    for person in await recipients(window, now):
        sent = await _queue(
            window, person, kind="reminder", language=language, studio=studio, zone=zone, now=now
        )
        queued += sent is not None
        before = known.get(person.email.lower())
        if before is None:
            before = Recipient(
                email=person.email, audience=person.audience, revision=window.revision
            )
        # A cancellation follows in the language this reminder went out in.
        known[person.email.lower()] = msgspec.structs.replace(before, language=person.language)
    await _remember(window.id, known, reminder_sent_at=now)
    log.info("maintenance %d: reminder queued for %d people", window.id, queued)
    return queued
