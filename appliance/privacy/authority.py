"""Notifications to the supervisory authority (GDPR Art. 33): each submission is kept with the
fields Art. 33(3) asks for; later phases (Art. 33(4)) are added, never overwritten."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from appliance.audit.service import Actor
from appliance.errors import Conflict, InvalidInput
from appliance.localtime import clean_zone, format_duration, local_input
from appliance.privacy.service import (
    DEADLINE,
    MAX_COUNT,
    MAX_TEXT,
    Incident,
    lock_incident,
    log_change,
    parse_time,
)
from appliance.privacy.tables import AuthorityNotice, SecurityIncident
from appliance.setup.service import StudioProfile
from appliance.validation import clean_multiline, clean_text, parse_count

__all__ = [
    "AuthorityInput",
    "AuthoritySubmission",
    "form_defaults",
    "list_submissions",
    "record_submission",
]

# Art. 33(3) (a) to (d), with the labels the form and the messages use.
REQUIRED = {
    "nature": "the nature of the breach",
    "data_categories": "the categories of personal data and of people concerned",
    "contact_name": "the name of the contact point",
    "contact_details": "the contact details of the contact point",
    "consequences": "the likely consequences",
    "measures": "the measures taken or proposed",
}


class AuthorityInput(msgspec.Struct, frozen=True, kw_only=True):
    """What an admin types about one submission; ``notified_at`` as typed in ``timezone``."""

    authority: str
    notified_at: str
    timezone: str = "UTC"
    reference: str = ""
    nature: str = ""
    data_categories: str = ""
    people_count: str = ""
    records_count: str = ""
    contact_name: str = ""
    contact_details: str = ""
    consequences: str = ""
    measures: str = ""
    delay_reasons: str = ""


class AuthoritySubmission(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    phase: int
    authority: str
    notified_at: dt.datetime
    reference: str
    nature: str
    data_categories: str
    people_count: int
    records_count: int
    contact_name: str
    contact_details: str
    consequences: str
    measures: str
    delay_reasons: str
    created_by: int | None
    created_at: dt.datetime


def _submission(row: dict[str, Any]) -> AuthoritySubmission:
    fields = AuthoritySubmission.__struct_fields__
    return AuthoritySubmission(**{name: row[name] for name in fields})


async def list_submissions(incident_id: int) -> list[AuthoritySubmission]:
    """Every submission of an incident, first phase first."""
    rows = (
        await AuthorityNotice.select()
        .where(AuthorityNotice.incident == incident_id)
        .order_by(AuthorityNotice.phase)
        .run()
    )
    return [_submission(row) for row in rows]


def form_defaults(
    incident: Incident,
    previous: AuthoritySubmission | None,
    studio: StudioProfile | None,
    now: dt.datetime,
) -> AuthorityInput:
    """The form, filled from the last submission or else from the register and the studio."""
    local = local_input(now, incident.timezone)
    if previous is not None:
        return AuthorityInput(
            authority=previous.authority,
            notified_at=local,
            timezone=incident.timezone,
            reference=previous.reference,
            nature=previous.nature,
            data_categories=previous.data_categories,
            people_count=str(previous.people_count),
            records_count=str(previous.records_count),
            contact_name=previous.contact_name,
            contact_details=previous.contact_details,
            consequences=previous.consequences,
            measures=previous.measures,
        )
    contact = ""
    if studio is not None:
        contact = "\n".join(part for part in (studio.contact_email, studio.contact_phone) if part)
    return AuthorityInput(
        authority="",
        notified_at=local,
        timezone=incident.timezone,
        nature="\n\n".join(part for part in (incident.title, incident.description) if part),
        data_categories=incident.data_categories,
        people_count="" if incident.people_count is None else str(incident.people_count),
        records_count="" if incident.records_count is None else str(incident.records_count),
        contact_name=studio.name if studio else "",
        contact_details=contact,
        consequences=incident.consequences,
        measures=incident.measures,
    )


def _clean(data: AuthorityInput, incident: Incident, now: dt.datetime) -> dict[str, Any]:
    zone_name = clean_zone(data.timezone)
    notified = parse_time(data.notified_at, zone=zone_name, field="notified_at", now=now)
    assert notified is not None  # required
    if notified < incident.detected_at:
        raise InvalidInput(
            "The authority cannot have been notified before the incident was detected.",
            field="notified_at",
        )
    values: dict[str, Any] = {
        "authority": clean_text(data.authority, field="authority", max_length=200),
        "notified_at": notified,
        "reference": clean_text(data.reference, field="reference", max_length=200, required=False),
        "contact_name": clean_text(
            data.contact_name, field="contact_name", max_length=200, required=False
        ),
    }
    for name in ("nature", "data_categories", "contact_details", "consequences", "measures"):
        values[name] = clean_multiline(getattr(data, name), field=name, max_length=MAX_TEXT)
    values["delay_reasons"] = clean_multiline(
        data.delay_reasons, field="delay_reasons", max_length=MAX_TEXT
    )
    # Art. 33(3)(a) to (d): a submission without them is not a notification.
    for name, label in REQUIRED.items():
        if not values[name]:
            raise InvalidInput(f"Art. 33(3) asks for {label}.", field=name)
    for name, what in (("people_count", "people"), ("records_count", "records")):
        count = parse_count(getattr(data, name), field=name, maximum=MAX_COUNT)
        if count is None:
            raise InvalidInput(
                f"Art. 33(3)(a) asks for the approximate number of {what} concerned; "
                "an estimate is fine.",
                field=name,
            )
        values[name] = count
    return values


async def record_submission(
    incident_id: int, data: AuthorityInput, *, actor: Actor, address: str, now: dt.datetime
) -> AuthoritySubmission:
    """Record one submission to the authority. The first one stops the deadline; when it came
    later than 72 hours after detection, the reasons for the delay are required
    (Art. 33(1))."""
    async with SecurityIncident._meta.db.transaction(allow_nested=True):
        incident = await lock_incident(incident_id)
        if not incident.personal_data:
            raise Conflict(
                "This incident is not marked as involving personal data; Art. 33 notifications "
                "are for personal data breaches. Edit the incident first if it does."
            )
        if incident.no_notice_at is not None:
            raise Conflict(
                "The decision not to notify the authority is recorded for this incident. "
                "Withdraw it first, then record the notification."
            )
        values = _clean(data, incident, now)
        previous = await list_submissions(incident_id)
        if previous and values["notified_at"] < previous[-1].notified_at:
            raise InvalidInput(
                "A later phase cannot have been sent before the previous one.",
                field="notified_at",
            )
        late = values["notified_at"] - (incident.detected_at + DEADLINE)
        if not previous and late > dt.timedelta(0) and not values["delay_reasons"]:
            raise InvalidInput(
                f"This notification came {format_duration(late.total_seconds())} after the "
                "72 hours: "
                "Art. 33(1) asks for the reasons for the delay.",
                field="delay_reasons",
            )
        phase = len(previous) + 1
        rows = await AuthorityNotice.insert(
            AuthorityNotice(
                incident=incident_id, phase=phase, created_by=actor.id, created_at=now, **values
            )
        ).returning(*AuthorityNotice.all_columns())
        if not previous:
            await (
                SecurityIncident.update(
                    {
                        SecurityIncident.authority_notified_at: values["notified_at"],
                        SecurityIncident.updated_at: now,
                    }
                )
                .where(SecurityIncident.id == incident_id)
                .run()
            )
        await log_change(
            incident_id,
            "authority_notified",
            {
                "phase": phase,
                "authority": values["authority"],
                "notified_at": values["notified_at"].isoformat(),
                "reference": values["reference"],
            },
            audit_details={"phase": phase, "late": late > dt.timedelta(0) and not previous},
            actor=actor,
            address=address,
            now=now,
        )
    return _submission(rows[0])
