"""The security-incident register: record, edit and close incidents, with their history, and
watch the 72-hour deadline for notifying the supervisory authority (GDPR Art. 33(1)).

Every change is written with its history entry (field, value before, value after) and its audit
entry in one transaction. The audit entry names the fields that changed, never their values:
the audit log is kept for good, while the register is the place for what happened.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import msgspec

from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.config import Settings
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.localtime import clean_zone, format_duration, format_utc, parse_local_time
from appliance.notify.admins import AdminNotice, Recipients, admin_recipients, tell_admins
from appliance.privacy.tables import (
    AffectedPerson,
    SecurityIncident,
    SecurityIncidentChange,
)
from appliance.validation import clean_multiline, clean_text, parse_count
from appliance.web.form_keys import clean_form_key

__all__ = [
    "ALERT_HOURS",
    "DEADLINE",
    "KINDS",
    "MAX_COUNT",
    "MAX_TEXT",
    "NO_NOTICE",
    "RISKS",
    "STATUSES",
    "Change",
    "Countdown",
    "Incident",
    "IncidentInput",
    "check_deadlines",
    "countdown",
    "create_incident",
    "get_incident",
    "list_changes",
    "list_incidents",
    "lock_incident",
    "log_change",
    "parse_time",
    "people_countdown",
    "update_incident",
]

log = logging.getLogger(__name__)

KINDS = {
    "leak": "Data leak",
    "unauthorised_access": "Unauthorised access",
    "accidental_deletion": "Accidental deletion",
    "other": "Other",
}
STATUSES = {"open": "Open", "contained": "Contained", "closed": "Closed"}
RISKS = {
    "none": "None (unlikely to result in a risk)",
    "low": "Low",
    "high": "High (Art. 34: the people must be told)",
}
# Art. 33(1): "without undue delay and, where feasible, not later than 72 hours after having
# become aware of it".
DEADLINE = dt.timedelta(hours=72)
# Hours after detection at which admins are alerted while the authority has not been told.
ALERT_HOURS = (24, 48, 66)
NO_NOTICE = "authority not notified: unlikely to result in a risk (Art. 33(1))"
MAX_TITLE = 200
MAX_TEXT = 10_000
MAX_COUNT = 1_000_000_000
# Detection "now" typed in a browser whose clock runs a little ahead is not in the future.
_CLOCK_SLACK = dt.timedelta(minutes=2)
_FIELDS = (
    "kind",
    "title",
    "description",
    "analysis",
    "measures",
    "status",
    "detected_at",
    "occurred_at",
    "timezone",
    "personal_data",
    "data_categories",
    "people_count",
    "records_count",
    "consequences",
    "risk",
)


class IncidentInput(msgspec.Struct, frozen=True, kw_only=True):
    """What an admin types; times as typed (``YYYY-MM-DDTHH:MM``) in ``timezone``."""

    kind: str
    title: str
    detected_at: str
    timezone: str = "UTC"
    occurred_at: str = ""
    description: str = ""
    analysis: str = ""
    measures: str = ""
    status: str = "open"
    personal_data: bool = False
    data_categories: str = ""
    people_count: str = ""
    records_count: str = ""
    consequences: str = ""
    risk: str = "low"


class Incident(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    kind: str
    title: str
    description: str
    analysis: str
    measures: str
    status: str
    detected_at: dt.datetime
    occurred_at: dt.datetime | None
    timezone: str
    personal_data: bool
    data_categories: str
    people_count: int | None
    records_count: int | None
    consequences: str
    risk: str
    authority_notified_at: dt.datetime | None
    alerted_hours: int
    closed_at: dt.datetime | None
    created_by: int | None
    created_at: dt.datetime
    updated_at: dt.datetime
    # The recorded decision not to notify the authority (Art. 33(1)); None while there is none.
    no_notice_at: dt.datetime | None = None
    no_notice_by: str = ""
    no_notice_reason: str = ""

    @property
    def kind_label(self) -> str:
        return KINDS.get(self.kind, self.kind)

    @property
    def deadline(self) -> dt.datetime | None:
        """When the authority must have been notified; None without personal data."""
        return self.detected_at + DEADLINE if self.personal_data else None

    @property
    def version(self) -> str:
        """What the edit form carries to find out whether someone saved in between."""
        return self.updated_at.astimezone(dt.UTC).isoformat()

    @property
    def must_tell_people(self) -> bool:
        """Art. 34(1) and policy §6: high risk to people whose personal data is involved."""
        return self.personal_data and self.risk == "high"


class Change(msgspec.Struct, frozen=True):
    at: dt.datetime
    action: str
    actor: str
    changes: dict[str, Any]


class Countdown(msgspec.Struct, frozen=True):
    """The 72-hour deadline as shown: ``state`` is running, overdue, met, late, decided (no
    notification needed, recorded as such) or done (everyone on the list was told)."""

    deadline: dt.datetime
    state: str
    text: str
    seconds_left: int


def countdown(incident: Incident, now: dt.datetime) -> Countdown | None:
    """The deadline for notifying the authority, as text; None without personal data."""
    deadline = incident.deadline
    if deadline is None:
        return None
    notified = incident.authority_notified_at
    if notified is not None:
        late = (notified - deadline).total_seconds()
        if late > 0:
            text = f"authority notified {format_duration(late)} late"
            return Countdown(deadline, "late", text, 0)
        return Countdown(deadline, "met", "authority notified in time", 0)
    if incident.no_notice_at is not None:
        return Countdown(deadline, "decided", NO_NOTICE, 0)
    return _running(deadline, now)


def _running(deadline: dt.datetime, now: dt.datetime) -> Countdown:
    left = int((deadline - now).total_seconds())
    if left >= 0:
        return Countdown(deadline, "running", f"{format_duration(left)} left", left)
    return Countdown(deadline, "overdue", f"overdue by {format_duration(-left)}", left)


def people_countdown(
    incident: Incident, untold: int, listed: int, now: dt.datetime
) -> Countdown | None:
    """The 72 hours policy §6 gives for telling the people when the risk to them is high:
    running while nobody is listed or anyone listed is untold; None when it does not apply."""
    if not incident.must_tell_people:
        return None
    deadline = incident.detected_at + DEADLINE
    if listed and not untold:
        return Countdown(deadline, "done", "everyone on the list was told", 0)
    return _running(deadline, now)


# --- cleaning what people type -------------------------------------------------------------


def parse_time(
    value: str, *, zone: str, field: str, now: dt.datetime, required: bool = True
) -> dt.datetime | None:
    """A time typed as ``YYYY-MM-DDTHH:MM`` (a browser's datetime-local) in ``zone``, or with
    an explicit offset; never in the future."""
    if not value.strip():
        if required:
            raise InvalidInput("Enter the date and time.", field=field)
        return None
    moment = parse_local_time(value, zone, field=field)
    if moment > now + _CLOCK_SLACK:
        raise InvalidInput("This time is in the future.", field=field)
    return moment


def _choice(value: str, options: dict[str, str], field: str) -> str:
    if value not in options:
        raise InvalidInput(f"Choose one of: {', '.join(options.values())}.", field=field)
    return value


def _clean(data: IncidentInput, now: dt.datetime) -> dict[str, Any]:
    zone_name = clean_zone(data.timezone)
    detected = parse_time(data.detected_at, zone=zone_name, field="detected_at", now=now)
    occurred = parse_time(
        data.occurred_at, zone=zone_name, field="occurred_at", now=now, required=False
    )
    if occurred is not None and detected is not None and occurred > detected:
        raise InvalidInput("It cannot have happened after it was detected.", field="occurred_at")
    values: dict[str, Any] = {
        "kind": _choice(data.kind, KINDS, "kind"),
        "title": clean_text(data.title, field="title", max_length=MAX_TITLE),
        "status": _choice(data.status, STATUSES, "status"),
        "risk": _choice(data.risk, RISKS, "risk"),
        "detected_at": detected,
        "occurred_at": occurred,
        "timezone": zone_name,
        "personal_data": bool(data.personal_data),
        "people_count": parse_count(data.people_count, field="people_count", maximum=MAX_COUNT),
        "records_count": parse_count(data.records_count, field="records_count", maximum=MAX_COUNT),
    }
    for name in ("description", "analysis", "measures", "data_categories", "consequences"):
        values[name] = clean_multiline(getattr(data, name), field=name, max_length=MAX_TEXT)
    if values["status"] == "closed":
        for name, label in (
            ("analysis", "the analysis is"),
            ("measures", "the corrective measures are"),
        ):
            if not values[name]:
                raise InvalidInput(
                    f"An incident is closed only once {label} written down.", field=name
                )
    return values


# --- reading -------------------------------------------------------------------------------


def _incident(row: dict[str, Any]) -> Incident:
    return Incident(**{name: row[name] for name in Incident.__struct_fields__})


async def get_incident(incident_id: int) -> Incident:
    row = await SecurityIncident.select().where(SecurityIncident.id == incident_id).first().run()
    if row is None:
        raise NotFound("There is no such security incident.")
    return _incident(row)


async def list_incidents() -> list[Incident]:
    """Every incident, the unclosed ones first, newest detection first."""
    rows = await SecurityIncident.select().order_by(SecurityIncident.detected_at, ascending=False)
    incidents = [_incident(row) for row in rows]
    return sorted(incidents, key=lambda incident: incident.status == "closed")


async def list_changes(incident_id: int) -> list[Change]:
    """The history of an incident, oldest first."""
    rows = (
        await SecurityIncidentChange.select()
        .where(SecurityIncidentChange.incident == incident_id)
        .order_by(SecurityIncidentChange.at)
        .order_by(SecurityIncidentChange.id)
        .output(load_json=True)
        .run()
    )
    return [
        Change(at=row["at"], action=row["action"], actor=row["actor"], changes=row["changes"])
        for row in rows
    ]


# --- writing -------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A value as it is kept in the history (JSON)."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    return value


# The audit log's name for each kind of entry in an incident's history.
_AUDIT_ACTIONS = {
    "created": "security_incident.create",
    "edited": "security_incident.update",
    "authority_notified": "security_incident.authority_notice",
    "no_notice_decided": "security_incident.no_notice_decide",
    "no_notice_withdrawn": "security_incident.no_notice_withdraw",
    "people_added": "security_incident.people_add",
    "person_removed": "security_incident.person_remove",
    "people_told": "security_incident.people_notify",
}


async def log_change(
    incident_id: int,
    action: str,
    history: dict[str, Any],
    *,
    audit_details: dict[str, Any],
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> None:
    """Write a change to an incident into its history and the audit log (inside the caller's
    transaction). ``history`` is what the register keeps (values included); the audit entry
    gets only ``audit_details``, since the audit log is kept for good and the register is the
    place for what happened and whom it concerns."""
    await SecurityIncidentChange.insert(
        SecurityIncidentChange(
            incident=incident_id,
            action=action,
            changes=json.dumps(history, ensure_ascii=False),
            actor=actor.name[:100],
            actor_id=actor.id,
            at=now,
        )
    ).run()
    await audit.record(
        _AUDIT_ACTIONS[action],
        actor=actor,
        target=f"security_incident:{incident_id}",
        address=address,
        details=audit_details,
        at=now,
    )


async def lock_incident(incident_id: int) -> Incident:
    """The incident, its row locked until the caller's transaction ends: changes to one
    incident (an edit, a submission, people added) happen one after another."""
    rows = (
        await SecurityIncident.select()
        .where(SecurityIncident.id == incident_id)
        .lock_rows("UPDATE")
        .run()
    )
    if not rows:
        raise NotFound("There is no such security incident.")
    return _incident(rows[0])


async def _by_form_key(key: str | None) -> Incident | None:
    if key is None:
        return None
    row = await SecurityIncident.select().where(SecurityIncident.form_key == key).first().run()
    return None if row is None else _incident(row)


async def create_incident(
    data: IncidentInput,
    *,
    actor: Actor,
    address: str,
    now: dt.datetime,
    form_key: str = "",
) -> Incident:
    """Record an incident. The same form sent again (its one-time ``form_key``: a double
    click, a browser resending) returns the incident it recorded and records none."""
    key = clean_form_key(form_key)
    earlier = await _by_form_key(key)
    if earlier is not None:
        return earlier
    values = _clean(data, now)
    async with SecurityIncident._meta.db.transaction(allow_nested=True):
        # A second request with the same key at the same moment waits here for the first
        # one's transaction, then inserts nothing and takes the first one's incident.
        rows = (
            await SecurityIncident.insert(
                SecurityIncident(
                    **values,
                    closed_at=now if values["status"] == "closed" else None,
                    created_by=actor.id,
                    created_at=now,
                    updated_at=now,
                    form_key=key,
                )
            )
            .on_conflict(target=SecurityIncident.form_key, action="DO NOTHING")
            .returning(*SecurityIncident.all_columns())
            .run()
        )
        if not rows:
            earlier = await _by_form_key(key)
            if earlier is None:  # the key's row is gone again: only a deleted incident does that
                raise Conflict("This form was sent twice; open the register and look again.")
            return earlier
        incident = _incident(rows[0])
        await log_change(
            incident.id,
            "created",
            {name: _plain(values[name]) for name in _FIELDS},
            audit_details={"kind": incident.kind, "personal_data": incident.personal_data},
            actor=actor,
            address=address,
            now=now,
        )
    return incident


async def update_incident(
    incident_id: int,
    data: IncidentInput,
    *,
    actor: Actor,
    address: str,
    now: dt.datetime,
    version: str | None = None,
) -> Incident:
    """Save an edit: only changed fields are written, each with its old and new value in the
    history. Personal data cannot be switched off once the authority or a person was told;
    the detection time is fixed once the authority was notified. With ``version`` (the
    ``updated_at`` the form was opened with), an edit saved meanwhile by someone else is not
    overwritten."""
    values = _clean(data, now)
    async with SecurityIncident._meta.db.transaction(allow_nested=True):
        before = await lock_incident(incident_id)
        if version is not None and version != before.version:
            raise Conflict(
                "Someone else saved this incident after you opened the form. Open it again "
                "to see their changes, then make yours."
            )
        changed = {
            name: [_plain(getattr(before, name)), _plain(values[name])]
            for name in _FIELDS
            if getattr(before, name) != values[name]
        }
        if not changed:
            return before
        if "detected_at" in changed and before.authority_notified_at is not None:
            raise Conflict(
                "The detection time was given to the supervisory authority and the 72 hours "
                "were counted from it; it cannot be changed any more. Explain a correction in "
                "the analysis or in a further submission to the authority."
            )
        if "risk" in changed and before.no_notice_at is not None:
            raise Conflict(
                "The decision not to notify the authority rests on this risk assessment. "
                "Withdraw the decision first, then change the risk."
            )
        if before.personal_data and not values["personal_data"]:
            told = await AffectedPerson.exists().where(
                AffectedPerson.incident == incident_id, AffectedPerson.times_told > 0
            )
            if told or before.authority_notified_at is not None:
                raise Conflict(
                    "The authority or affected people were already told about personal data "
                    "in this incident; that cannot be undone here.",
                )
        update: dict[Any, Any] = {getattr(SecurityIncident, name): values[name] for name in changed}
        if "status" in changed:
            update[SecurityIncident.closed_at] = now if values["status"] == "closed" else None
        update[SecurityIncident.updated_at] = now
        await SecurityIncident.update(update).where(SecurityIncident.id == incident_id).run()
        await log_change(
            incident_id,
            "edited",
            changed,
            audit_details={"fields": sorted(changed)},
            actor=actor,
            address=address,
            now=now,
        )
    return await get_incident(incident_id)


# --- the 72-hour deadline ------------------------------------------------------------------


def _due_threshold(incident: Incident, now: dt.datetime) -> int | None:
    """The latest alert threshold passed and not yet alerted, or None."""
    elapsed = now - incident.detected_at
    passed = [hours for hours in ALERT_HOURS if elapsed >= dt.timedelta(hours=hours)]
    if not passed or passed[-1] <= incident.alerted_hours:
        return None
    return passed[-1]


def _alert_text(incident: Incident, hours: int, now: dt.datetime) -> tuple[str, str]:
    # Alerts leave the appliance (chat services, e-mail): they name the incident by number and
    # kind only, never its title or description, which may hold personal data.
    deadline = incident.detected_at + DEADLINE
    left = (deadline - now).total_seconds()
    when = format_utc(deadline)
    title = f"Security incident #{incident.id}: {hours} h since detection, authority not notified"
    body = "\n".join(
        [
            f"Security incident #{incident.id} ({incident.kind_label.lower()}) involves "
            "personal data and was detected "
            f"{format_utc(incident.detected_at)}.",
            "The supervisory authority has not been notified yet. GDPR Art. 33(1) asks for "
            f"that within 72 hours of detection, by {when}"
            + (
                f" ({format_duration(left)} left)."
                if left > 0
                else f" (overdue by {format_duration(-left)})."
            ),
            "Open Admin → Security on the appliance to record the notification.",
        ]
    )
    return title, body


def _mail_context(incident: Incident, hours: int, now: dt.datetime) -> dict[str, Any]:
    # Like the alert: the incident by number and kind, never its title or description.
    deadline = incident.detected_at + DEADLINE
    left = (deadline - now).total_seconds()
    return {
        "incident_id": incident.id,
        "kind": incident.kind,
        "hours": hours,
        "detected": format_utc(incident.detected_at),
        "deadline": format_utc(deadline),
        "overdue": left <= 0,
        "left_seconds": abs(left),  # each language's template words it: | duration("de")
    }


async def _queue_deadline(
    settings: Settings, to: Recipients, incident: Incident, hours: int, now: dt.datetime
) -> int:
    """The alert on every channel, or else one e-mail to each admin; the messages queued."""
    title, body = _alert_text(incident, hours, now)
    notice = AdminNotice(
        title=title,
        body=body,
        severity="failure" if hours >= ALERT_HOURS[-1] else "warning",
        template="security_deadline",
        context=_mail_context(incident, hours, now),
        source="privacy",
        dedupe_key=f"security-deadline:{incident.id}:{hours}",
    )
    return await tell_admins(settings, to, notice, now)


async def check_deadlines(settings: Settings, now: dt.datetime) -> int:
    """Queue the escalating admin alerts (24 h, 48 h: warning; 66 h: failure) for incidents
    with personal data whose authority has not been notified and for which no decision not to
    notify is recorded. They go to the alert channels, or to the active admins by e-mail when
    no channel is set up; with neither, nothing is claimed and the next run tries again.

    Safe to run any number of times: each threshold is claimed once with a conditional UPDATE,
    in the transaction that queues its messages, and the outbox's dedupe keys guard the rest.
    Returns the messages queued."""
    rows = (
        await SecurityIncident.select()
        .where(
            SecurityIncident.personal_data.eq(True),
            SecurityIncident.authority_notified_at.is_null(),
            SecurityIncident.no_notice_at.is_null(),
            SecurityIncident.alerted_hours < ALERT_HOURS[-1],
            SecurityIncident.detected_at <= now - dt.timedelta(hours=ALERT_HOURS[0]),
        )
        .run()
    )
    due = [
        (incident, hours)
        for incident in map(_incident, rows)
        if (hours := _due_threshold(incident, now))
    ]
    if not due:
        return 0
    to = await admin_recipients(settings)
    if to.nobody:
        log.warning(
            "%d security-incident deadline alerts are due, but there is no alert channel and "
            "no active admin with an e-mail address",
            len(due),
        )
        return 0
    queued = 0
    for incident, hours in due:
        async with SecurityIncident._meta.db.transaction(allow_nested=True):
            claimed = (
                await SecurityIncident.update({SecurityIncident.alerted_hours: hours})
                .where(
                    SecurityIncident.id == incident.id,
                    SecurityIncident.alerted_hours < hours,
                    SecurityIncident.authority_notified_at.is_null(),
                    SecurityIncident.no_notice_at.is_null(),
                    SecurityIncident.personal_data.eq(True),
                )
                .returning(SecurityIncident.id)
                .run()
            )
            if not claimed:
                continue  # another run took it, or the authority was notified meanwhile
            sent = await _queue_deadline(settings, to, incident, hours, now)
            if not sent:
                # The channels or addresses went away meanwhile: give the claim back, so the
                # next run tries again instead of the threshold passing unannounced.
                await (
                    SecurityIncident.update(
                        {SecurityIncident.alerted_hours: incident.alerted_hours}
                    )
                    .where(SecurityIncident.id == incident.id)
                    .run()
                )
                continue
            await audit.record(
                "security_incident.deadline_alert",
                actor=Actor(id=None, name="system"),
                target=f"security_incident:{incident.id}",
                details={"hours": hours, "via": "alert" if to.channels else "email"},
                at=now,
            )
        queued += sent
        log.info("security incident %d: %d-hour deadline alert queued", incident.id, hours)
    return queued
