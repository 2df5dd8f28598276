"""Piccolo tables of the monitoring domain.

Probe results are kept a few days; what uptime is computed from is the record of confirmed
states: a ``ComponentSpan`` for every stretch a component was degraded, down or not watched.
Service incidents and maintenance windows are what the status page publishes.
"""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    Boolean,
    ForeignKey,
    Integer,
    Serial,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table

__all__ = [
    "ComponentSpan",
    "ComponentStatus",
    "Incident",
    "IncidentUpdate",
    "MaintenanceWindow",
    "MonitorSetting",
    "ProbeResult",
    "ProcessHeartbeat",
]


class ProbeResult(Table, tablename="probe_result"):
    """One probe of one component; kept ``monitoring.results_kept_days``."""

    id: Serial  # added by Piccolo; declared for the type checker
    component = Varchar(length=64, index=True)  # "database", "disk:data", "offsite:nas", ...
    state = Varchar(length=12)  # up, degraded, down
    detail = Text(default="")
    latency_ms = Integer(null=True, default=None)
    checked_at = Timestamptz(index=True)


class ComponentStatus(Table, tablename="component_status"):
    """The confirmed state of a component, and the state it may be moving to.

    A new state is confirmed only after ``monitoring.flap_threshold`` results in a row
    (``candidate_count``): one lost packet neither raises an alert nor dents the uptime.
    """

    id: Serial
    component = Varchar(length=64, unique=True)
    state = Varchar(length=12, default="up")  # up, degraded, down
    since = Timestamptz()
    detail = Text(default="")
    candidate_state = Varchar(length=12, default="")
    candidate_count = Integer(default=0)
    checked_at = Timestamptz()
    # Uptime counts from here: before a component's first probe, time is not measured.
    first_checked_at = Timestamptz(null=True, default=None)


class ComponentSpan(Table, tablename="component_span"):
    """A stretch of time a component was not up: degraded, down, or unknown (nothing watched
    it, for example while the appliance was switched off). Open while ``ended_at`` is null."""

    id: Serial
    component = Varchar(length=64, index=True)
    state = Varchar(length=12)  # degraded, down, unknown
    started_at = Timestamptz(index=True)
    ended_at = Timestamptz(null=True, default=None)
    detail = Text(default="")


class ProcessHeartbeat(Table, tablename="process_heartbeat"):
    """The worker's sign of life, written every probe round; the web process reads it."""

    id: Serial
    name = Varchar(length=32, unique=True)  # "worker"
    beat_at = Timestamptz()
    started_at = Timestamptz()
    hostname = Varchar(length=255, default="")
    pid = Integer(default=0)
    version = Varchar(length=32, default="")


class Incident(Table, tablename="service_incident"):
    """A service incident as published on the status page: opened by a probe that confirmed a
    component down, or by an admin."""

    id: Serial
    title = Varchar(length=200)
    impact = Varchar(length=12, default="major")  # minor, major, critical
    state = Varchar(
        length=16, default="investigating"
    )  # investigating, identified, monitoring, resolved
    components = JSONB(default="[]")
    automatic = Boolean(default=False)
    component = Varchar(length=64, default="")  # the component whose probe opened it
    started_at = Timestamptz()
    resolved_at = Timestamptz(null=True, default=None)
    created_by = Integer(null=True, default=None)
    created_at = Timestamptz()
    updated_at = Timestamptz()
    # The one-time key of the form that opened it: the same form sent twice opens one incident.
    form_key = Varchar(length=64, null=True, default=None, unique=True)


class IncidentUpdate(Table, tablename="service_incident_update"):
    """One published update of an incident."""

    id: Serial
    incident = ForeignKey(references=Incident, index=True)
    state = Varchar(length=16)
    message = Text()
    created_at = Timestamptz()
    created_by = Integer(null=True, default=None)


class MaintenanceWindow(Table, tablename="maintenance_window"):
    """Planned maintenance: announced ahead, shown as a banner while it runs, and not counted
    as downtime."""

    id: Serial
    title = Varchar(length=200)
    description = Text(default="")
    components = JSONB(default="[]")
    starts_at = Timestamptz(index=True)
    ends_at = Timestamptz()
    notify_clients = Boolean(default=False)
    # Raised by every edit that changes what people were told (times, title, components):
    # notices are keyed by it, so a changed window is announced again, once.
    revision = Integer(default=0)
    # Everyone a notice went to, [{"email": ..., "audience": "staff" | "client"}]: a
    # cancellation goes to exactly these people, whoever is on staff or has a link by then.
    # Emptied once nothing more can be sent (the window ended or was cancelled).
    told = JSONB(default="[]")
    notice_sent_at = Timestamptz(null=True, default=None)
    reminder_sent_at = Timestamptz(null=True, default=None)
    cancelled_at = Timestamptz(null=True, default=None)
    created_by = Integer(null=True, default=None)
    created_at = Timestamptz()
    updated_at = Timestamptz()
    # The one-time key of the form that scheduled it: the same form sent twice schedules once.
    form_key = Varchar(length=64, null=True, default=None, unique=True)


class MonitorSetting(Table, tablename="monitor_setting"):
    """Monitoring settings admins changed in the browser; they win over the settings file."""

    key = Varchar(length=64, unique=True)
    value = JSONB(default="null")
    updated_at = Timestamptz()
    updated_by = Integer(null=True, default=None)
