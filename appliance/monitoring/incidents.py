"""Service incidents: opened by the probes when a component is confirmed down, or by an admin,
and published with their updates on the status page."""

from __future__ import annotations

import datetime as dt

from appliance.monitoring.tables import Incident, IncidentUpdate

__all__ = ["open_automatic", "resolve_automatic"]


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
    await (
        Incident.update(
            {Incident.state: "resolved", Incident.resolved_at: now, Incident.updated_at: now}
        )
        .where(Incident.id == row["id"])
        .run()
    )
    await (
        IncidentUpdate(incident=row["id"], state="resolved", message=message, created_at=now)
        .save()
        .run()
    )
    return int(row["id"])
