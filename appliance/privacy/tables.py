"""Piccolo tables of the privacy domain: the security-incident register (policy §6, GDPR Art. 33)
and the erasure lifecycle (policy §8, GDPR Art. 17).

The register is the studio's documentation under Art. 33(5): every incident, every change to
it, every submission to the supervisory authority and every person told. People are kept as
ids of the clients and staff domains, not as copies of their names and addresses.
"""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    Boolean,
    ForeignKey,
    Integer,
    OnDelete,
    Serial,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table

__all__ = [
    "AffectedPerson",
    "AuthorityNotice",
    "ErasureRequest",
    "LegalHold",
    "PersonNotice",
    "SecurityIncident",
    "SecurityIncidentChange",
]


class SecurityIncident(Table, tablename="security_incident"):
    """One suspected or confirmed security incident."""

    id: Serial  # added by Piccolo; declared for the type checker
    kind = Varchar(length=24)  # leak, unauthorised_access, accidental_deletion, other
    title = Varchar(length=200)
    description = Text(default="")
    analysis = Text(default="")
    measures = Text(default="")  # corrective measures taken or proposed
    status = Varchar(length=12, default="open", index=True)  # open, contained, closed
    detected_at = Timestamptz()
    occurred_at = Timestamptz(null=True, default=None)
    timezone = Varchar(length=64, default="UTC")  # the zone times were typed in and are shown in
    personal_data = Boolean(default=False)
    data_categories = Text(default="")
    people_count = Integer(null=True, default=None)  # approximate
    records_count = Integer(null=True, default=None)  # approximate
    consequences = Text(default="")
    risk = Varchar(length=8, default="low")  # none, low, high (high: Art. 34, tell the people)
    # The time of the first submission to the authority; null while it has not been notified.
    authority_notified_at = Timestamptz(null=True, default=None)
    # The highest deadline alert (24, 48, 66 hours after detection) queued so far: a run that
    # finds a later threshold passed claims it with a conditional UPDATE, so each goes out once.
    alerted_hours = Integer(default=0)
    # Art. 33(1): no notification when the breach is unlikely to result in a risk. The decision
    # is recorded with who took it, when and why; it stops the deadline and its alerts, and
    # can be withdrawn (then all three are cleared, the history keeps them).
    no_notice_at = Timestamptz(null=True, default=None)
    no_notice_by = Varchar(length=100, default="")
    no_notice_reason = Text(default="")
    closed_at = Timestamptz(null=True, default=None)
    created_by = Integer(null=True, default=None)  # staff user id; no foreign key: kept history
    created_at = Timestamptz()
    updated_at = Timestamptz()
    # The one-time key of the form that recorded it (appliance.web.form_keys): the same form
    # sent twice finds this incident instead of recording a second one.
    form_key = Varchar(length=64, null=True, default=None, unique=True)


class SecurityIncidentChange(Table, tablename="security_incident_change"):
    """One entry of an incident's history: what was created or changed, with the values."""

    id: Serial
    incident = ForeignKey(references=SecurityIncident, index=True, on_delete=OnDelete.cascade)
    action = Varchar(length=32)  # created, edited, authority_notified, people_added, ...
    changes = JSONB(default="{}")  # {field: [before, after]} or a summary of the action
    actor = Varchar(length=100, default="")
    actor_id = Integer(null=True, default=None)
    at = Timestamptz()


class AuthorityNotice(Table, tablename="security_authority_notice"):
    """One submission to the supervisory authority (Art. 33(3)); phases are kept (Art. 33(4))."""

    id: Serial
    incident = ForeignKey(references=SecurityIncident, index=True, on_delete=OnDelete.cascade)
    phase = Integer()
    authority = Varchar(length=200)
    notified_at = Timestamptz()
    reference = Varchar(length=200, default="")
    nature = Text()
    data_categories = Text()
    people_count = Integer()
    records_count = Integer()
    contact_name = Varchar(length=200)
    contact_details = Text()
    consequences = Text()
    measures = Text()
    delay_reasons = Text(default="")
    created_by = Integer(null=True, default=None)
    created_at = Timestamptz()


class AffectedPerson(Table, tablename="security_affected_person"):
    """A client or staff member affected by an incident, and when they were told."""

    id: Serial
    incident = ForeignKey(references=SecurityIncident, index=True, on_delete=OnDelete.cascade)
    kind = Varchar(length=8)  # client or staff
    person_id = Integer()
    added_at = Timestamptz()
    added_by = Integer(null=True, default=None)
    first_told_at = Timestamptz(null=True, default=None)
    last_told_at = Timestamptz(null=True, default=None)
    times_told = Integer(default=0)


class PersonNotice(Table, tablename="security_person_notice"):
    """One notice queued for an affected person: the outbox row holds what was sent."""

    id: Serial
    person = ForeignKey(references=AffectedPerson, index=True, on_delete=OnDelete.cascade)
    outbox_id = Integer(null=True, default=None)
    sent_by = Integer(null=True, default=None)
    queued_at = Timestamptz()


class ErasureRequest(Table, tablename="erasure_request"):
    """A client, a staff account or the whole studio to be erased, and, once purged, the proof.

    The row never holds personal data: the subject is an id, the counts say what kinds of
    records went and how many. It stays after the purge as the deletion record.
    """

    id: Serial
    kind = Varchar(length=8)  # client, staff, studio
    subject_id = Integer(null=True, default=None)  # null for the studio
    # "<kind>:<id>" while pending or purging, null after: a second request for the same
    # subject finds the open one (unique), and a cancelled or finished one allows a new one.
    open_key = Varchar(length=40, null=True, default=None, unique=True)
    state = Varchar(length=12, default="pending", index=True)  # pending, purging, done, cancelled
    source = Varchar(length=8, default="staff")  # staff or client (a client's own request)
    requested_at = Timestamptz()
    requested_by = Integer(null=True, default=None)  # staff user id; no foreign key: kept proof
    purge_after = Timestamptz(index=True)
    # What was switched off at once, so a cancellation restores exactly that: share link ids
    # revoked, whether the staff account was active.
    undo = JSONB(default="{}")
    # The purge's progress: steps finished, object keys to delete (read before the rows go),
    # counts per kind. A purge killed half-way starts again from here.
    progress = JSONB(default="{}")
    cancelled_at = Timestamptz(null=True, default=None)
    cancelled_by = Integer(null=True, default=None)
    purged_at = Timestamptz(null=True, default=None)


class LegalHold(Table, tablename="legal_hold"):
    """Records the law obliges the studio to keep (invoices: years, in Germany by §147 AO) about
    a person being erased: copied here by the purge (``record``) before their table's row goes,
    kept, restricted, until ``expires_at``; then the daily purge takes them. Which tables are
    kept, why and for how long is declared in :mod:`appliance.privacy.holds`."""

    id: Serial
    kind = Varchar(length=8)  # client or staff
    subject_id = Integer()
    table_name = Varchar(length=64)  # the table whose rows are held
    record_id = Integer()
    reason = Varchar(length=200)
    record = JSONB(default="{}")  # the row as it was when the purge took it
    created_at = Timestamptz()
    expires_at = Timestamptz(index=True)
