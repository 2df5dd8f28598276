"""Clients' privacy requests: received through a share link, answered by an admin within the
deadline of GDPR Art. 12(3).

A client asks for a copy of their data (Art. 15, 20), a correction (Art. 16) or deletion
(Art. 17). Asking again while a request of the same kind is open joins it (one more
submission) instead of opening a second one, so the deadline keeps running from the first.
Every step is written with its audit entry and its outbox messages in one transaction; the
audit entries name kinds and ids, never what the client typed.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Literal

import msgspec

from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.config import Settings
from appliance.errors import Conflict, InvalidInput, NotFound, TooManyAttempts
from appliance.localtime import format_duration, zone
from appliance.privacy_requests import deadlines, fulfilment, messages
from appliance.privacy_requests.tables import PrivacyRequest, PrivacyRequestSubmission
from appliance.validation import clean_multiline

__all__ = [
    "CLIENT",
    "KINDS",
    "MAX_NOTE",
    "MAX_PER_LINK",
    "MAX_TEXT",
    "Countdown",
    "Received",
    "RequestRecord",
    "Submission",
    "complete_correction",
    "countdown",
    "extend_request",
    "fulfil_request",
    "get_request",
    "list_requests",
    "list_submissions",
    "receive_request",
    "refuse_request",
    "settle_copies",
    "settle_deletions",
    "settle_requests",
]

log = logging.getLogger(__name__)

Kind = Literal["copy", "correction", "deletion"]
KINDS: dict[str, str] = {
    "copy": "A copy of the data",
    "correction": "A correction",
    "deletion": "Deletion",
}
STATUSES = {
    "open": "Open",
    "in_progress": "In progress",
    "done": "Answered",
    "refused": "Refused",
}
# Not answered yet, so the deadline runs: a copy request stays "in_progress" until its export
# is handed over (a download link made), and goes back to "open" when the export fails.
OPEN = ("open", "in_progress")
MAX_TEXT = 5_000  # what a client writes
MAX_NOTE = 5_000  # what an admin writes
# Requests through one link in a day: enough for a person, too few to flood the queue.
MAX_PER_LINK = 5
RATE_WINDOW = dt.timedelta(days=1)
CLIENT = Actor(id=None, name="client")
SYSTEM = Actor(id=None, name="system")
# Namespace of the transaction-scoped advisory lock taken per client: one client's requests
# are received and merged one at a time, so two at once never open two requests.
_LOCK_NAMESPACE = 0x7072


class RequestRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    client_id: int
    kind: str
    status: str
    received_at: dt.datetime
    timezone: str
    deadline_at: dt.datetime
    extended_at: dt.datetime | None
    extended_by: str
    extension_reason: str
    alerted: int
    answered_at: dt.datetime | None
    answered_by: str
    answer_note: str
    export_id: int | None
    erasure_id: int | None

    @property
    def kind_label(self) -> str:
        return KINDS.get(self.kind, self.kind)

    @property
    def status_label(self) -> str:
        return STATUSES.get(self.status, self.status)

    @property
    def due_on(self) -> dt.date:
        """The last day to answer, in the studio's calendar at receipt."""
        return deadlines.last_day(self.deadline_at, self.timezone)

    @property
    def received_on(self) -> dt.date:
        return self.received_at.astimezone(zone(self.timezone)).date()

    @property
    def can_extend(self) -> bool:
        return self.status in OPEN and self.extended_at is None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN


class Submission(msgspec.Struct, frozen=True):
    at: dt.datetime
    link_id: int
    details: str
    link_recipient: str = ""  # whom the studio gave the link, when it was used
    link_email: str = ""


class Received(msgspec.Struct, frozen=True):
    """What the client's form led to: the request, and whether it joined an open one."""

    request: RequestRecord
    merged: bool


class Countdown(msgspec.Struct, frozen=True):
    """The deadline as shown: ``state`` is running, overdue or answered."""

    state: str
    text: str


def countdown(request: RequestRecord, now: dt.datetime) -> Countdown:
    if not request.is_open:
        return Countdown("answered", request.status_label.lower())
    left = (request.deadline_at - now).total_seconds()
    if left >= 0:
        return Countdown("running", f"{format_duration(left)} left")
    return Countdown("overdue", f"overdue by {format_duration(-left)}")


def _record(row: dict[str, Any]) -> RequestRecord:
    values = {name: row[name] for name in RequestRecord.__struct_fields__ if name != "client_id"}
    return RequestRecord(client_id=row["client"], **values)


# --- reading -------------------------------------------------------------------------------


async def get_request(request_id: int) -> RequestRecord:
    row = await PrivacyRequest.select().where(PrivacyRequest.id == request_id).first().run()
    if row is None:
        raise NotFound("There is no such privacy request.")
    return _record(row)


async def list_requests(*, open_only: bool, limit: int = 200) -> list[RequestRecord]:
    """Open requests, the nearest deadline first; or answered ones, the latest first."""
    query = PrivacyRequest.select().limit(limit)
    if open_only:
        query = query.where(PrivacyRequest.status.is_in(list(OPEN))).order_by(
            PrivacyRequest.deadline_at
        )
    else:
        query = query.where(PrivacyRequest.status.not_in(list(OPEN))).order_by(
            PrivacyRequest.answered_at, ascending=False
        )
    return [_record(row) for row in await query.order_by(PrivacyRequest.id).run()]


async def list_submissions(request_id: int) -> list[Submission]:
    rows = (
        await PrivacyRequestSubmission.select()
        .where(PrivacyRequestSubmission.request == request_id)
        .order_by(PrivacyRequestSubmission.at)
        .order_by(PrivacyRequestSubmission.id)
        .run()
    )
    return [
        Submission(
            row["at"], row["link_id"], row["details"], row["link_recipient"], row["link_email"]
        )
        for row in rows
    ]


# --- receiving -----------------------------------------------------------------------------


def _clean_details(kind: str, details: str) -> str:
    if kind not in KINDS:
        raise InvalidInput("Choose what you would like the studio to do.", field="kind")
    text = clean_multiline(details, field="details", max_length=MAX_TEXT)
    if kind == "correction" and not text:
        raise InvalidInput("Tell the studio what is wrong and what is right.", field="details")
    return text


async def _check_rate(link_id: int, now: dt.datetime) -> None:
    since = now - RATE_WINDOW
    rows = (
        await PrivacyRequestSubmission.select(PrivacyRequestSubmission.at)
        .where(PrivacyRequestSubmission.link_id == link_id, PrivacyRequestSubmission.at > since)
        .order_by(PrivacyRequestSubmission.at)
        .run()
    )
    if len(rows) >= MAX_PER_LINK:
        wait = int((rows[0]["at"] + RATE_WINDOW - now).total_seconds()) + 1
        raise TooManyAttempts(
            f"You have sent {MAX_PER_LINK} requests today. Your requests have reached the "
            "studio; try again tomorrow, or write to the studio.",
            retry_after=max(wait, 1),
        )


async def receive_request(
    settings: Settings,
    *,
    client_id: int,
    link_id: int,
    kind: str,
    details: str,
    address: str,
    now: dt.datetime,
    link_recipient: str = "",
    link_email: str = "",
) -> Received:
    """Record what a client asked through share link ``link_id`` (given to ``link_recipient``
    at ``link_email``: kept, since whoever holds a link can ask). An open request of the same
    kind joins this one; a new one tells the admins and acknowledges receipt to the client
    (when the studio has their e-mail address). At most :data:`MAX_PER_LINK` a day per link."""
    text = _clean_details(kind, details)
    async with PrivacyRequest._meta.db.transaction(allow_nested=True):
        await PrivacyRequest.raw(
            "SELECT pg_advisory_xact_lock({}, {})", _LOCK_NAMESPACE, client_id
        ).run()
        await _check_rate(link_id, now)
        row = (
            await PrivacyRequest.select()
            .where(
                PrivacyRequest.client == client_id,
                PrivacyRequest.kind == kind,
                PrivacyRequest.status.is_in(list(OPEN)),
            )
            .first()
            .run()
        )
        merged = row is not None
        if row is None:
            zone_name = settings.studio_zone
            rows = (
                await PrivacyRequest.insert(
                    PrivacyRequest(
                        client=client_id,
                        kind=kind,
                        received_at=now,
                        timezone=zone_name,
                        deadline_at=deadlines.first_deadline(now, zone_name),
                    )
                )
                .returning(*PrivacyRequest.all_columns())
                .run()
            )
            row = rows[0]
        request = _record(row)
        await PrivacyRequestSubmission.insert(
            PrivacyRequestSubmission(
                request=request.id,
                link_id=link_id,
                link_recipient=link_recipient[:120],
                link_email=link_email[:254],
                details=text,
                at=now,
            )
        ).run()
        await audit.record(
            "privacy_request.merge" if merged else "privacy_request.receive",
            actor=CLIENT,
            target=f"privacy_request:{request.id}",
            address=address,
            details={"kind": kind, "client": client_id, "link": link_id},
            at=now,
        )
        if not merged:
            await messages.tell_staff(settings, request, "received", now)
            await messages.tell_client(settings, request, "received", now)
    return Received(request, merged)


# --- answering -----------------------------------------------------------------------------


async def _lock_open(request_id: int, statuses: tuple[str, ...] = ("open",)) -> RequestRecord:
    """The request, locked for this transaction; Conflict unless its status is one of
    ``statuses``."""
    rows = (
        await PrivacyRequest.select()
        .where(PrivacyRequest.id == request_id)
        .lock_rows("UPDATE")
        .run()
    )
    if not rows:
        raise NotFound("There is no such privacy request.")
    request = _record(rows[0])
    if request.status not in statuses:
        if request.status == "in_progress":
            raise Conflict("The client's data is being exported; this request is in progress.")
        raise Conflict(f"This request was already {request.status_label.lower()}.")
    return request


def _reason(value: str, *, field: str, missing: str) -> str:
    text = clean_multiline(value, field=field, max_length=MAX_NOTE)
    if not text:
        raise InvalidInput(missing, field=field)
    return text


async def _answer(
    settings: Settings,
    request: RequestRecord,
    *,
    status: str,
    note: str,
    actor: Actor,
    address: str,
    now: dt.datetime,
    started: dict[Any, Any] | None = None,
) -> RequestRecord:
    """Close ``request`` (locked by the caller's transaction), audit it, tell the client."""
    await (
        PrivacyRequest.update(
            {
                PrivacyRequest.status: status,
                PrivacyRequest.answered_at: now,
                PrivacyRequest.answered_by: actor.name[:100],
                PrivacyRequest.answered_by_id: actor.id,
                PrivacyRequest.answer_note: note,
                **(started or {}),
            }
        )
        .where(PrivacyRequest.id == request.id)
        .run()
    )
    answered = await get_request(request.id)
    details: dict[str, Any] = {"kind": request.kind, "client": request.client_id}
    if answered.export_id is not None:
        details["export"] = answered.export_id
    if answered.erasure_id is not None:
        details["erasure"] = answered.erasure_id
    details["in_time"] = now <= request.deadline_at
    await audit.record(
        "privacy_request.refuse" if status == "refused" else "privacy_request.answer",
        actor=actor,
        target=f"privacy_request:{request.id}",
        address=address,
        details=details,
        at=now,
    )
    await messages.tell_client(settings, answered, status, now)
    return answered


async def fulfil_request(
    settings: Settings, request_id: int, *, actor: Actor, address: str, now: dt.datetime
) -> RequestRecord:
    """Answer a copy request with an export, or a deletion request with an erasure. A copy is
    "in progress" until its export is handed over (see :func:`settle_copies`); a deletion is
    answered once its erasure has started (see :func:`_erase`)."""
    async with PrivacyRequest._meta.db.transaction(allow_nested=True):
        request = await _lock_open(request_id)
        if request.kind == "correction":
            raise Conflict("Correct the client's details, then mark the request as done.")
        if request.kind == "copy":
            job = await fulfilment.start_export(
                settings, client_id=request.client_id, actor=actor, address=address, now=now
            )
            await (
                PrivacyRequest.update(
                    {
                        PrivacyRequest.status: "in_progress",
                        PrivacyRequest.export_id: job,
                        PrivacyRequest.answer_note: "",
                    }
                )
                .where(PrivacyRequest.id == request.id)
                .run()
            )
            await audit.record(
                "privacy_request.start",
                actor=actor,
                target=f"privacy_request:{request.id}",
                address=address,
                details={"kind": request.kind, "client": request.client_id, "export": job},
                at=now,
            )
            return await get_request(request.id)
    return await _erase(settings, request, actor=actor, address=address, now=now)


async def _erase(
    settings: Settings, request: RequestRecord, *, actor: Actor, address: str, now: dt.datetime
) -> RequestRecord:
    """Answer a deletion request with an erasure of the client.

    Steps: (1) the erasure, in a transaction of its own: once it commits, it writes a line to
    the erasure ledger, which a restore from backup replays; inside a transaction that could
    still roll back, that line would outlive the erasure and a later restore would erase the
    client anyway. (2) The answer, in a second transaction that checks the request is still
    open. When (2) fails, the erasure stands and the request stays open: answering it again
    finds the same erasure (a second one for the client returns the open one) and answers it.
    """
    if PrivacyRequest._meta.db.transaction_exists():
        raise RuntimeError("a deletion request is answered outside any transaction")
    erasure = await fulfilment.start_erasure(
        settings, client_id=request.client_id, actor=actor.name, actor_id=actor.id, now=now
    )
    async with PrivacyRequest._meta.db.transaction():
        request = await _lock_open(request.id)
        return await _answer(
            settings,
            request,
            status="done",
            note="",
            actor=actor,
            address=address,
            now=now,
            started={PrivacyRequest.erasure_id: erasure},
        )


async def complete_correction(
    settings: Settings,
    request_id: int,
    note: str,
    *,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> RequestRecord:
    """Mark a correction request done once the client's details were edited; ``note`` says
    what was changed (kept with the request, not in the audit log)."""
    text = _reason(note, field="note", missing="Note what was corrected.")
    async with PrivacyRequest._meta.db.transaction(allow_nested=True):
        request = await _lock_open(request_id)
        if request.kind != "correction":
            raise Conflict("Only a correction request is marked done by hand.")
        return await _answer(
            settings, request, status="done", note=text, actor=actor, address=address, now=now
        )


async def refuse_request(
    settings: Settings,
    request_id: int,
    reason: str,
    *,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> RequestRecord:
    """Refuse a request; Art. 12(4): the client is told why, and that they may complain to a
    supervisory authority."""
    text = _reason(reason, field="refusal", missing="Give the reason the client will be told.")
    async with PrivacyRequest._meta.db.transaction(allow_nested=True):
        request = await _lock_open(request_id, OPEN)
        return await _answer(
            settings, request, status="refused", note=text, actor=actor, address=address, now=now
        )


async def extend_request(
    settings: Settings,
    request_id: int,
    reason: str,
    *,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> RequestRecord:
    """Extend the deadline once by two months (Art. 12(3): the request's complexity or their
    number); the reason is recorded and the client told. Only before the first month ends."""
    text = _reason(reason, field="reason", missing="Give the reason the client will be told.")
    async with PrivacyRequest._meta.db.transaction(allow_nested=True):
        request = await _lock_open(request_id, OPEN)
        if request.extended_at is not None:
            raise Conflict("The deadline was extended once already; it cannot be extended again.")
        if now > request.deadline_at:
            raise Conflict(
                "The month for answering has passed: the client had to be told of an extension "
                "within it. Answer the request now."
            )
        await (
            PrivacyRequest.update(
                {
                    PrivacyRequest.deadline_at: deadlines.extended_deadline(
                        request.deadline_at, request.timezone
                    ),
                    PrivacyRequest.extended_at: now,
                    PrivacyRequest.extended_by: actor.name[:100],
                    PrivacyRequest.extension_reason: text,
                    PrivacyRequest.alerted: 0,  # the alerts start over for the new deadline
                }
            )
            .where(PrivacyRequest.id == request_id)
            .run()
        )
        extended = await get_request(request_id)
        await audit.record(
            "privacy_request.extend",
            actor=actor,
            target=f"privacy_request:{request_id}",
            address=address,
            details={"kind": request.kind, "client": request.client_id},
            at=now,
        )
        await messages.tell_client(settings, extended, "extended", now)
    return extended


# --- the deadline watch --------------------------------------------------------------------

SOON, OVERDUE = 1, 2


def _due_alert(request: RequestRecord, days_before: int, now: dt.datetime) -> int | None:
    if now >= request.deadline_at:
        stage = OVERDUE
    elif now >= deadlines.alert_at(request.deadline_at, days_before):
        stage = SOON
    else:
        return None
    return stage if stage > request.alerted else None


async def check_deadlines(settings: Settings, now: dt.datetime) -> int:
    """Queue the alerts of open requests: once ``privacy.request_alert_days`` before the
    deadline, once when it has passed. Each is claimed with a conditional UPDATE in the
    transaction that queues it, so any number of runs send it once; with nobody to alert,
    nothing is claimed and the next run tries again. Returns the messages queued. Copy
    requests whose export was handed over or failed, and deletion requests whose erasure was
    cancelled, are settled first."""
    await settle_requests(settings, now)
    days = settings.privacy.request_alert_days
    rows = (
        await PrivacyRequest.select()
        .where(
            PrivacyRequest.status.is_in(list(OPEN)),
            PrivacyRequest.alerted < OVERDUE,
            PrivacyRequest.deadline_at <= now + dt.timedelta(days=days),
        )
        .run()
    )
    # A client being erased has left the queue: nobody could answer the alert. Nothing is
    # claimed, so the alert still comes if the erasure is cancelled.
    erased = await fulfilment.clients_being_erased() if rows else set()
    due = [
        (request, stage)
        for request in map(_record, rows)
        if request.client_id not in erased and (stage := _due_alert(request, days, now))
    ]
    queued = 0
    for request, stage in due:
        async with PrivacyRequest._meta.db.transaction(allow_nested=True):
            claimed = (
                await PrivacyRequest.update({PrivacyRequest.alerted: stage})
                .where(
                    PrivacyRequest.id == request.id,
                    PrivacyRequest.status.is_in(list(OPEN)),
                    PrivacyRequest.alerted < stage,
                    # An extension meanwhile moved the deadline: this alert is not due.
                    PrivacyRequest.deadline_at == request.deadline_at,
                )
                .returning(PrivacyRequest.id)
                .run()
            )
            if not claimed:
                continue
            event = "overdue" if stage == OVERDUE else "soon"
            sent = await messages.tell_staff(settings, request, event, now)
            if not sent:
                log.warning(
                    "privacy request %d: the %s alert reaches nobody (no alert channel, no "
                    "admin with an e-mail address); trying again on the next run",
                    request.id,
                    event,
                )
                await (
                    PrivacyRequest.update({PrivacyRequest.alerted: request.alerted})
                    .where(PrivacyRequest.id == request.id)
                    .run()
                )
                continue
            await audit.record(
                "privacy_request.deadline_alert",
                actor=SYSTEM,
                target=f"privacy_request:{request.id}",
                details={"alert": event},
                at=now,
            )
        queued += sent
    return queued


# --- copies: answered when the export is handed over ---------------------------------------


async def settle_copies(settings: Settings, now: dt.datetime) -> int:
    """Close each copy request whose export has a download link (the client can have it now)
    and reopen each whose export failed or expired unused, so the deadline watch keeps it in
    front of the admins. Returns how many changed."""
    from appliance.exports.service import get_export

    rows = (
        await PrivacyRequest.select(PrivacyRequest.id, PrivacyRequest.export_id)
        .where(PrivacyRequest.status == "in_progress")
        .run()
    )
    changed = 0
    for row in rows:
        try:
            job = await get_export(row["export_id"] or 0, hide_erased=False)
            # A link once made counts even after the export expired (the expiry keeps the
            # link's hash): the client had their copy, so the request is answered, not lost.
            handed_over, lost = job.has_link, job.state in ("failed", "expired")
            why = job.error or f"The export {job.state} before a download link was made."
        except NotFound:
            handed_over, lost, why = False, True, "The export was deleted."
        if not handed_over and not lost:
            continue
        async with PrivacyRequest._meta.db.transaction(allow_nested=True):
            try:
                request = await _lock_open(row["id"], ("in_progress",))
            except Conflict:
                continue  # settled meanwhile
            changed += 1
            if handed_over:
                note = "The export is ready and its download link was made."
                await _answer(
                    settings, request, status="done", note=note, actor=SYSTEM, address="", now=now
                )
                continue
            await _reopen(request, why, {"export": row["export_id"]}, now)
    return changed


async def _reopen(
    request: RequestRecord,
    note: str,
    started: dict[str, Any],
    now: dt.datetime,
    answered: dict[Any, Any] | None = None,
) -> None:
    """Open ``request`` (locked by the caller's transaction) again with ``note`` saying why:
    the work it ``started`` elsewhere failed or was undone."""
    await (
        PrivacyRequest.update(
            {
                PrivacyRequest.status: "open",
                PrivacyRequest.answer_note: note[:MAX_NOTE],
                **(answered or {}),
            }
        )
        .where(PrivacyRequest.id == request.id)
        .run()
    )
    await audit.record(
        "privacy_request.reopen",
        actor=SYSTEM,
        target=f"privacy_request:{request.id}",
        details={"kind": request.kind, "client": request.client_id, **started},
        at=now,
    )


# --- deletions: open again when their erasure is cancelled ---------------------------------


async def settle_requests(settings: Settings, now: dt.datetime) -> int:
    """Bring requests in line with the work they started elsewhere: :func:`settle_copies` and
    :func:`settle_deletions`. Returns how many changed."""
    return await settle_copies(settings, now) + await settle_deletions(now)


async def settle_deletions(now: dt.datetime) -> int:
    """Reopen each answered deletion request whose erasure an admin cancelled in its grace
    period: the client was told their data goes, and it stays, so the request is in front of
    the admins again, its deadline running, to be answered anew (or refused with a reason).
    Returns how many changed. Only requests of clients not yet purged exist to be found: the
    purge takes a client's requests with it."""
    rows = (
        await PrivacyRequest.select(PrivacyRequest.id, PrivacyRequest.erasure_id)
        .where(
            PrivacyRequest.status == "done",
            PrivacyRequest.kind == "deletion",
            PrivacyRequest.erasure_id.is_not_null(),
        )
        .run()
    )
    changed = 0
    for row in rows:
        erasure = await fulfilment.erasure_of(row["erasure_id"])
        if erasure is None or erasure.state != "cancelled" or erasure.cancelled_at is None:
            continue
        async with PrivacyRequest._meta.db.transaction(allow_nested=True):
            try:
                request = await _lock_open(row["id"], ("done",))
            except Conflict:
                continue  # settled meanwhile
            if request.erasure_id != erasure.id:
                continue  # answered again meanwhile, with another erasure
            changed += 1
            day = erasure.cancelled_at.astimezone(zone(request.timezone)).date()
            note = f"The erasure (#{erasure.id}) was cancelled on {day.isoformat()}."
            # No longer answered: the answer was undone with the erasure.
            answered = {
                PrivacyRequest.answered_at: None,
                PrivacyRequest.answered_by: "",
                PrivacyRequest.answered_by_id: None,
            }
            await _reopen(request, note, {"erasure": erasure.id}, now, answered)
    return changed
