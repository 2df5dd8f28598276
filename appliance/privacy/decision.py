"""The recorded decision not to notify the supervisory authority (GDPR Art. 33(1): "unless the
personal data breach is unlikely to result in a risk to the rights and freedoms of natural
persons"). Art. 33(5) asks that such a decision be documented: who took it, when and why.

The decision stops the 72-hour countdown and its alerts. It can be taken only while the risk
is assessed as none and nothing was submitted to the authority, and it can be withdrawn; both
are kept in the incident's history and audited (without the reasoning, which stays in the
register).
"""

from __future__ import annotations

import datetime as dt

from appliance.audit.service import Actor
from appliance.errors import Conflict
from appliance.privacy.service import MAX_TEXT, Incident, get_incident, lock_incident, log_change
from appliance.privacy.tables import SecurityIncident
from appliance.validation import clean_multiline

__all__ = ["decide_no_notice", "withdraw_no_notice"]


async def decide_no_notice(
    incident_id: int, reason: str, *, actor: Actor, address: str, now: dt.datetime
) -> Incident:
    """Record that the authority is not notified because the breach is unlikely to result in
    a risk; ``reason`` (required) is the reasoning."""
    text = clean_multiline(reason, field="reason", max_length=MAX_TEXT, required=True)
    async with SecurityIncident._meta.db.transaction(allow_nested=True):
        incident = await lock_incident(incident_id)
        if not incident.personal_data:
            raise Conflict(
                "This incident is not marked as involving personal data: there is no "
                "notification to decide about."
            )
        if incident.authority_notified_at is not None:
            raise Conflict("The authority was already notified of this incident.")
        if incident.no_notice_at is not None:
            raise Conflict("This decision is already recorded; withdraw it first to change it.")
        if incident.risk != "none":
            raise Conflict(
                "The risk to people is not assessed as none. Change the risk in the incident "
                "first if the breach is unlikely to result in a risk."
            )
        await (
            SecurityIncident.update(
                {
                    SecurityIncident.no_notice_at: now,
                    SecurityIncident.no_notice_by: actor.name[:100],
                    SecurityIncident.no_notice_reason: text,
                    SecurityIncident.updated_at: now,
                }
            )
            .where(SecurityIncident.id == incident_id)
            .run()
        )
        await log_change(
            incident_id,
            "no_notice_decided",
            {"reason": text},
            audit_details={},
            actor=actor,
            address=address,
            now=now,
        )
    return await get_incident(incident_id)


async def withdraw_no_notice(
    incident_id: int, *, actor: Actor, address: str, now: dt.datetime
) -> Incident:
    """Withdraw the decision: the countdown and its alerts run again from the detection time."""
    async with SecurityIncident._meta.db.transaction(allow_nested=True):
        incident = await lock_incident(incident_id)
        if incident.no_notice_at is None:
            raise Conflict("There is no decision not to notify the authority to withdraw.")
        await (
            SecurityIncident.update(
                {
                    SecurityIncident.no_notice_at: None,
                    SecurityIncident.no_notice_by: "",
                    SecurityIncident.no_notice_reason: "",
                    SecurityIncident.updated_at: now,
                }
            )
            .where(SecurityIncident.id == incident_id)
            .run()
        )
        await log_change(
            incident_id,
            "no_notice_withdrawn",
            {
                "decided_at": incident.no_notice_at.astimezone(dt.UTC).isoformat(),
                "decided_by": incident.no_notice_by,
                "reason": incident.no_notice_reason,
            },
            audit_details={},
            actor=actor,
            address=address,
            now=now,
        )
    return await get_incident(incident_id)
