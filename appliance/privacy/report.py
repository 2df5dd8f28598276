"""The report of one security incident, as JSON (every field, the history, the authority
submissions, the people told as ids and times) and as a PDF to read or hand over."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.localtime import format_local
from appliance.privacy import authority, people
from appliance.privacy.service import (
    KINDS,
    NO_NOTICE,
    RISKS,
    STATUSES,
    Incident,
    countdown,
    get_incident,
    list_changes,
)
from appliance.privacy.tables import AffectedPerson, PersonNotice
from appliance.web.pdf import Report

__all__ = ["export_json", "export_pdf", "report_data"]

FORMAT_VERSION = 1


def _time(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(dt.UTC).isoformat()


# The decision not to notify the authority is reported as one object ("no_notice"), or None.
_NO_NOTICE_FIELDS = {
    "no_notice_at": "decided_at",
    "no_notice_by": "decided_by",
    "no_notice_reason": "reason",
}
# Names the export has used since its first version for fields named otherwise in the code.
_SUBMISSION_NAMES = {"created_by": "recorded_by", "created_at": "recorded_at"}


def _value(value: Any) -> Any:
    return _time(value) if isinstance(value, dt.datetime) else value


def _fields(
    struct: msgspec.Struct, *, renamed: Mapping[str, str] = {}, left_out: Iterable[str] = ()
) -> dict[str, Any]:
    """Every field of ``struct``, in its order, times in UTC (ISO 8601): taken from the
    struct's definition, so a field added to it is in the export without anyone listing it
    (Art. 33(5): the documentation of a breach leaves nothing out)."""
    skipped = set(left_out)
    return {
        renamed.get(field.name, field.name): _value(getattr(struct, field.name))
        for field in msgspec.structs.fields(struct)
        if field.name not in skipped
    }


def _incident(incident: Incident, now: dt.datetime) -> dict[str, Any]:
    timer = countdown(incident, now)
    decision = (
        None
        if incident.no_notice_at is None
        else {
            "decision": NO_NOTICE,
            **{label: _value(getattr(incident, name)) for name, label in _NO_NOTICE_FIELDS.items()},
        }
    )
    return {
        **_fields(incident, left_out=_NO_NOTICE_FIELDS),
        "authority_deadline": _time(incident.deadline),
        "deadline_state": timer.state if timer else None,
        "no_notice": decision,
    }


async def _notices(incident_id: int) -> dict[int, list[str]]:
    """The times each affected person (by row id) was sent a notice, oldest first."""
    rows = (
        await PersonNotice.select(PersonNotice.person, PersonNotice.queued_at)
        .where(PersonNotice.person.incident == incident_id)
        .order_by(PersonNotice.queued_at)
        .order_by(PersonNotice.id)
        .run()
    )
    times: dict[int, list[str]] = {}
    for row in rows:
        times.setdefault(row["person"], []).append(_time(row["queued_at"]) or "")
    return times


async def report_data(incident_id: int, now: dt.datetime) -> dict[str, Any]:
    """Everything the register holds about an incident, times in UTC (ISO 8601)."""
    incident = await get_incident(incident_id)
    notices = await _notices(incident_id)
    affected = (
        await AffectedPerson.select()
        .where(AffectedPerson.incident == incident_id)
        .order_by(AffectedPerson.id)
        .run()
    )
    return {
        "format": "fotostudio-security-incident",
        "version": FORMAT_VERSION,
        "generated_at": _time(now),
        "incident": _incident(incident, now),
        "history": [
            {"at": _time(c.at), "action": c.action, "actor": c.actor, "changes": c.changes}
            for c in await list_changes(incident_id)
        ],
        "authority_submissions": [
            _fields(submission, renamed=_SUBMISSION_NAMES)
            for submission in await authority.list_submissions(incident_id)
        ],
        # Ids only: the report may leave the appliance, the people's details need not.
        "affected_people": [
            {
                "kind": row["kind"],
                "id": row["person_id"],
                "added_at": _time(row["added_at"]),
                "told_at": notices.get(row["id"], []),
            }
            for row in affected
        ],
    }


async def _audited(
    incident_id: int, what: str, *, actor: Actor, address: str, now: dt.datetime
) -> None:
    await audit.record(
        "security_incident.export",
        actor=actor,
        target=f"security_incident:{incident_id}",
        address=address,
        details={"format": what},
        at=now,
    )


async def export_json(incident_id: int, *, actor: Actor, address: str, now: dt.datetime) -> bytes:
    data = await report_data(incident_id, now)
    await _audited(incident_id, "json", actor=actor, address=address, now=now)
    return json.dumps(data, ensure_ascii=False, indent=2).encode()


def _local(incident: Incident, moment: dt.datetime | None) -> str:
    return "" if moment is None else format_local(moment, incident.timezone)


def _count(value: int | None) -> str:
    return "" if value is None else f"about {value:,}"


async def export_pdf(
    incident_id: int, *, actor: Actor, address: str, studio: str, now: dt.datetime
) -> bytes:
    incident = await get_incident(incident_id)
    timer = countdown(incident, now)
    report = Report(
        f"Security incident #{incident.id}",
        subtitle=f"{studio} - {incident.title}" if studio else incident.title,
        created_at=now,
    )
    report.fields(
        [
            ("Kind", KINDS.get(incident.kind, incident.kind)),
            ("Status", STATUSES.get(incident.status, incident.status)),
            ("Detected", _local(incident, incident.detected_at)),
            ("Occurred", _local(incident, incident.occurred_at) or "not known"),
            ("Closed", _local(incident, incident.closed_at)),
            ("Personal data", "yes" if incident.personal_data else "no"),
            ("Risk to people", RISKS.get(incident.risk, incident.risk)),
        ]
    )
    report.heading("Description")
    report.paragraph(incident.description or "-")
    report.heading("Analysis")
    report.paragraph(incident.analysis or "-")
    report.heading("Corrective measures")
    report.paragraph(incident.measures or "-")
    if incident.personal_data:
        report.heading("Personal data")
        report.fields(
            [
                ("Categories", incident.data_categories),
                ("People concerned", _count(incident.people_count)),
                ("Records concerned", _count(incident.records_count)),
                ("Likely consequences", incident.consequences),
                ("Authority deadline (72 h)", _local(incident, incident.deadline)),
                ("Deadline", timer.text if timer else ""),
            ]
        )
        if incident.no_notice_at is not None:
            report.heading("Decision: authority not notified (Art. 33(1))")
            report.fields(
                [
                    ("Decision", NO_NOTICE),
                    ("Decided", _local(incident, incident.no_notice_at)),
                    ("Decided by", incident.no_notice_by),
                    ("Reasoning", incident.no_notice_reason),
                ]
            )
    submissions = await authority.list_submissions(incident_id)
    if submissions:
        report.heading("Notifications to the supervisory authority (Art. 33)")
        for s in submissions:
            report.fields(
                [
                    ("Phase", str(s.phase)),
                    ("Authority", s.authority),
                    ("Notified", _local(incident, s.notified_at)),
                    ("Reference", s.reference),
                    ("Nature", s.nature),
                    ("Categories", s.data_categories),
                    ("People / records", f"about {s.people_count:,} / {s.records_count:,}"),
                    ("Contact point", f"{s.contact_name}\n{s.contact_details}"),
                    ("Likely consequences", s.consequences),
                    ("Measures", s.measures),
                    ("Reasons for delay", s.delay_reasons),
                ]
            )
    affected = await people.list_affected(incident_id)
    if affected:
        report.heading("Affected people (Art. 34)")
        report.table(
            ["Person", "Kind", "First told", "Times told"],
            [
                [
                    person.name
                    if person.on_record
                    else f"#{person.person_id} (no longer on record)",
                    person.kind,
                    _local(incident, person.first_told_at) or "not told",
                    str(person.times_told),
                ]
                for person in affected
            ],
        )
    changes = await list_changes(incident_id)
    report.heading("History")
    report.table(
        ["When", "Who", "What"],
        [[_local(incident, c.at), c.actor, _summary(c.action, c.changes)] for c in changes],
    )
    data = report.output()
    await _audited(incident_id, "pdf", actor=actor, address=address, now=now)
    return data


def _summary(action: str, changes: dict[str, Any]) -> str:
    if action == "edited":
        return "changed " + ", ".join(name.replace("_", " ") for name in sorted(changes))
    if action == "no_notice_decided":
        return "decided not to notify the authority (unlikely to result in a risk)"
    if action == "no_notice_withdrawn":
        return "withdrew the decision not to notify the authority"
    if action == "authority_notified":
        return f"authority notified (phase {changes.get('phase')})"
    if action in ("people_added", "people_told"):
        verb = "added" if action == "people_added" else "told"
        return f"{len(changes.get('people', []))} people {verb}"
    return action.replace("_", " ")
