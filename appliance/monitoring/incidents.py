"""Service incidents: opened by the probes when a component is confirmed down, or by an admin,
and published with their updates on the status page.

An incident's ``state`` is always the state of its newest update, and ``resolved_at`` is set
exactly when that state is "resolved": the status page reads the tables and relies on both.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from asyncpg.exceptions import UniqueViolationError

from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.monitoring.components import clean_components, label
from appliance.monitoring.tables import Incident, IncidentUpdate
from appliance.validation import clean_multiline, clean_text
from appliance.web.form_keys import clean_form_key

__all__ = [
    "IMPACTS",
    "STATES",
    "IncidentRecord",
    "IncidentUpdateRecord",
    "create_incident",
    "current_incidents",
    "get_incident",
    "list_incidents",
    "open_automatic",
    "post_update",
    "resolve_automatic",
]


async def open_automatic(component: str, title: str, detail: str, now: dt.datetime) -> int | None:
    """Open an incident for ``component`` unless one of its own is still open; the new id."""
    existing = await Incident.exists().where(
        Incident.automatic.eq(True),
        Incident.component == component,
        Incident.resolved_at.is_null(),
    )
    if existing:
        return None
    incident = Incident(
        title=title,
        impact="major",
        state="investigating",
        components=[component],
        automatic=True,
        component=component,
        started_at=now,
        created_at=now,
        updated_at=now,
    )
    await incident.save().run()
    await (
        IncidentUpdate(incident=incident.id, state="investigating", message=detail, created_at=now)
        .save()
        .run()
    )
    return int(incident.id)


async def resolve_automatic(component: str, message: str, now: dt.datetime) -> int | None:
    """Resolve the open automatic incident of ``component``, if any; its id."""
    row = (
        await Incident.select(Incident.id)
        .where(
            Incident.automatic.eq(True),
            Incident.component == component,
            Incident.resolved_at.is_null(),
        )
        .first()
        .run()
    )
    if row is None:
        return None
    # Conditional: an admin who resolved it a moment ago keeps the only "resolved" update.
    changed = await (
        Incident.update(
            {Incident.state: "resolved", Incident.resolved_at: now, Incident.updated_at: now}
        )
        .where(Incident.id == row["id"], Incident.resolved_at.is_null())
        .returning(Incident.id)
        .run()
    )
    if not changed:
        return None
    await (
        IncidentUpdate(incident=row["id"], state="resolved", message=message, created_at=now)
        .save()
        .run()
    )
    return int(row["id"])


# --- incidents admins open and update, and what the status page reads ------------------------

IMPACTS = ("minor", "major", "critical")
STATES = ("investigating", "identified", "monitoring", "resolved")
TITLE_MAX = 200
MESSAGE_MAX = 4000
# How long a resolved incident stays among the current ones on the status page.
RECENTLY_RESOLVED = dt.timedelta(hours=24)


class IncidentUpdateRecord(msgspec.Struct, frozen=True):
    """One published update: its state and text (``created_by`` None for a probe's)."""

    id: int
    state: str
    message: str
    created_at: dt.datetime
    created_by: int | None


class IncidentRecord(msgspec.Struct, frozen=True):
    """An incident with its updates, newest first. ``automatic`` incidents were opened by a
    probe for ``component``; ``resolved_at`` is set exactly when ``state`` is "resolved"."""

    id: int
    title: str
    impact: str
    state: str
    components: list[str]
    automatic: bool
    component: str
    started_at: dt.datetime
    resolved_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    updates: list[IncidentUpdateRecord]

    @property
    def component_labels(self) -> list[str]:
        return [label(component) for component in self.components]


def _clean_message(value: str) -> str:
    text = clean_multiline(value, field="message", max_length=MESSAGE_MAX)
    if not text:
        raise InvalidInput("Write what happened or what is being done.", field="message")
    return text


def _clean_state(value: str) -> str:
    state = value.strip()
    if state not in STATES:
        raise InvalidInput(f"Choose one of: {', '.join(STATES)}.", field="state")
    return state


def _decoded(value: Any) -> list[str]:
    items = msgspec.json.decode(value) if isinstance(value, str | bytes) else value
    return [str(item) for item in items or []]


async def _records(where: Any, *, limit: int | None = None) -> list[IncidentRecord]:
    query = Incident.select().where(where).order_by(Incident.started_at, ascending=False)
    if limit is not None:
        query = query.limit(limit)
    rows = await query.run()
    if not rows:
        return []
    updates = (
        await IncidentUpdate.select()
        .where(IncidentUpdate.incident.is_in([row["id"] for row in rows]))
        .order_by(IncidentUpdate.created_at, ascending=False)
        .order_by(IncidentUpdate.id, ascending=False)
        .run()
    )
    by_incident: dict[int, list[IncidentUpdateRecord]] = {}
    for item in updates:
        by_incident.setdefault(item["incident"], []).append(
            IncidentUpdateRecord(
                id=item["id"],
                state=item["state"],
                message=item["message"],
                created_at=item["created_at"],
                created_by=item["created_by"],
            )
        )
    return [
        IncidentRecord(
            id=row["id"],
            title=row["title"],
            impact=row["impact"],
            state=row["state"],
            components=_decoded(row["components"]),
            automatic=row["automatic"],
            component=row["component"],
            started_at=row["started_at"],
            resolved_at=row["resolved_at"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            updates=by_incident.get(row["id"], []),
        )
        for row in rows
    ]


async def get_incident(incident_id: int) -> IncidentRecord:
    found = await _records(Incident.id == incident_id)
    if not found:
        raise NotFound("There is no such incident.")
    return found[0]


async def list_incidents(now: dt.datetime, *, days: int = 90) -> list[IncidentRecord]:
    """Open incidents and those resolved in the last ``days``, newest first (admins' list)."""
    return await _records(
        Incident.resolved_at.is_null() | (Incident.resolved_at > now - dt.timedelta(days=days))
    )


async def current_incidents(now: dt.datetime) -> list[IncidentRecord]:
    """What the status page shows on top: every open incident, and those resolved in the last
    24 hours, newest first, each with its updates newest first."""
    return await _records(
        Incident.resolved_at.is_null() | (Incident.resolved_at > now - RECENTLY_RESOLVED)
    )


async def create_incident(
    *,
    title: str,
    impact: str,
    components: list[str],
    message: str,
    known: list[str],
    actor: Actor,
    address: str,
    now: dt.datetime,
    form_key: str = "",
) -> IncidentRecord:
    """Open an incident with its first update ("investigating"); ``known`` are the
    components it may name. The same form sent again (its ``form_key``) returns the incident
    it opened and opens none."""
    key = clean_form_key(form_key)
    earlier = await _by_form_key(key)
    if earlier is not None:
        return earlier
    clean_title = clean_text(title, field="title", max_length=TITLE_MAX, required=False)
    if not clean_title:
        raise InvalidInput("Give the incident a title.", field="title")
    if impact not in IMPACTS:
        raise InvalidInput(f"Choose one of: {', '.join(IMPACTS)}.", field="impact")
    chosen = clean_components(components, known)
    text = _clean_message(message)
    try:
        incident = await _open(
            title=clean_title,
            impact=impact,
            components=chosen,
            text=text,
            key=key,
            actor=actor,
            address=address,
            now=now,
        )
    except UniqueViolationError:
        # The same form, sent twice at the same moment: the other request opened it.
        earlier = await _by_form_key(key)
        if earlier is None:
            raise
        return earlier
    return await get_incident(incident)


async def _by_form_key(key: str | None) -> IncidentRecord | None:
    if key is None:
        return None
    row = await Incident.select(Incident.id).where(Incident.form_key == key).first().run()
    return await get_incident(row["id"]) if row else None


async def _open(
    *,
    title: str,
    impact: str,
    components: list[str],
    text: str,
    key: str | None,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> int:
    async with Incident._meta.db.transaction():
        incident = Incident(
            title=title,
            impact=impact,
            state="investigating",
            components=components,
            automatic=False,
            started_at=now,
            created_by=actor.id,
            created_at=now,
            updated_at=now,
            form_key=key,
        )
        await incident.save().run()
        await (
            IncidentUpdate(
                incident=incident.id,
                state="investigating",
                message=text,
                created_at=now,
                created_by=actor.id,
            )
            .save()
            .run()
        )
        await audit.record(
            "incident.opened",
            actor=actor,
            target=f"incident:{incident.id}",
            address=address,
            details={"title": title, "impact": impact, "components": components},
            at=now,
        )
    return int(incident.id)


async def post_update(
    incident_id: int,
    *,
    state: str,
    message: str,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> IncidentRecord:
    """Publish an update; "resolved" closes the incident (``resolved_at``). A resolved incident
    takes no more updates: a new problem is a new incident."""
    clean_state = _clean_state(state)
    text = _clean_message(message)
    async with Incident._meta.db.transaction():
        # Locked: a probe resolving the same incident at this moment waits, then finds it
        # resolved (or this update finds the probe's resolution).
        rows = await Incident.raw(
            "SELECT id, resolved_at FROM service_incident WHERE id = {} FOR UPDATE", incident_id
        ).run()
        if not rows:
            raise NotFound("There is no such incident.")
        if rows[0]["resolved_at"] is not None:
            raise Conflict("This incident is resolved. Open a new incident for a new problem.")
        changes: dict[Any, Any] = {Incident.state: clean_state, Incident.updated_at: now}
        if clean_state == "resolved":
            changes[Incident.resolved_at] = now
        await Incident.update(changes).where(Incident.id == incident_id).run()
        await (
            IncidentUpdate(
                incident=incident_id,
                state=clean_state,
                message=text,
                created_at=now,
                created_by=actor.id,
            )
            .save()
            .run()
        )
        await audit.record(
            "incident.updated",
            actor=actor,
            target=f"incident:{incident_id}",
            address=address,
            details={"state": clean_state},
            at=now,
        )
    return await get_incident(incident_id)
