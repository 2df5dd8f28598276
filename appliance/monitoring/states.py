"""Confirmed component states: flap damping, spans of downtime, one alert per change.

The decisions (:func:`damp`, :func:`unwatched_gap`, :func:`alert_for`) are pure functions of
plain values; the functions below them apply those decisions to the tables, one component
per transaction, so a failure with one component never loses the others' results.

A confirmed change of state (``up`` to ``down``, ``down`` to ``degraded``, back to ``up``):

1. closes the component's open span and opens one for the new state (degraded or down);
2. opens a service incident when the component is now down, resolves it when it no longer is;
3. queues exactly one alert, keyed by component, state and start, through the outbox.

The span of a change starts at the first result of the run that confirmed it, not at the
confirmation, so damping delays the alert but never shortens the recorded downtime.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import msgspec

from appliance.db.engine import engine
from appliance.localtime import format_duration, format_utc
from appliance.monitoring import incidents
from appliance.monitoring.components import State, label, reported_elsewhere
from appliance.monitoring.tables import ComponentStatus, ProbeResult
from appliance.notify.messages import Severity, queue_alert

__all__ = [
    "GAP_INTERVALS",
    "Alert",
    "Observation",
    "Status",
    "Transition",
    "alert_for",
    "confirm_down",
    "damp",
    "dedupe_key",
    "prune_results",
    "record_database_outage",
    "record_gap",
    "record_round",
    "retire",
    "unwatched_gap",
]

# Rounds missed in a row before the time between them counts as unwatched ("unknown"): one
# slow round is not a gap, a switched-off machine is.
GAP_INTERVALS = 3
SOURCE = "monitoring"
_ADMIN_HINT = "Open Admin → Monitoring on the appliance for the probe results."
_SEVERITY: dict[str, Severity] = {"down": "failure", "degraded": "warning", "up": "success"}


class Observation(msgspec.Struct, frozen=True):
    """One probe result: what a probe saw of one component."""

    component: str
    state: State
    detail: str
    latency_ms: int | None
    checked_at: dt.datetime


class Status(msgspec.Struct, frozen=True):
    """A component's confirmed state and the state it may be moving to."""

    state: State
    since: dt.datetime
    detail: str = ""
    candidate_state: str = ""
    candidate_count: int = 0


class Transition(msgspec.Struct, frozen=True):
    """A confirmed change of a component's state."""

    component: str
    previous: State
    current: State
    detail: str
    at: dt.datetime  # when it was confirmed
    results: int = 1  # the run of results that confirmed it, this one included


class Alert(msgspec.Struct, frozen=True):
    title: str
    body: str
    severity: Severity


# --- decisions -----------------------------------------------------------------------------


_SEVERITY_RANK = {"up": 0, "degraded": 1, "down": 2}


def _worse(first: str, second: str) -> str:
    return first if _SEVERITY_RANK.get(first, 0) >= _SEVERITY_RANK.get(second, 0) else second


def _direction(state: str, confirmed: str) -> int:
    """1 for a result worse than the confirmed state, -1 for a better one."""
    return 1 if _SEVERITY_RANK.get(state, 0) > _SEVERITY_RANK.get(confirmed, 0) else -1


def damp(
    status: Status | None, state: State, detail: str, now: dt.datetime, threshold: int
) -> tuple[Status, Transition | None]:
    """The status after one more result, and the change it confirms, if any.

    A component seen for the first time starts as ``up``, so one that is down from the start
    is confirmed (and alerted) like any other. A result equal to the confirmed state clears
    the candidate: one lost packet neither alerts nor counts. Results that differ from the
    confirmed state in the same direction (all worse, or all better) count towards one
    candidate, the worst state among them; ``threshold`` of them in a row confirm it. So a
    component flapping between down and degraded after ``up`` is confirmed down, and one
    coming back from down through up, degraded, up is confirmed degraded; back to ``up``
    takes ``threshold`` up results in a row.
    """
    current = status or Status(state="up", since=now)
    if state == current.state:
        return Status(state=state, since=current.since, detail=detail), None
    direction = _direction(state, current.state)
    same_run = bool(current.candidate_state) and (
        _direction(current.candidate_state, current.state) == direction
    )
    if same_run:
        count = current.candidate_count + 1
        candidate = _worse(current.candidate_state, state)
    else:
        count, candidate = 1, state
    if count < max(threshold, 1):
        return msgspec.structs.replace(
            current, candidate_state=candidate, candidate_count=count
        ), None
    confirmed: State = (
        "down" if candidate == "down" else "degraded" if candidate == "degraded" else "up"
    )
    transition = Transition(
        component="",
        previous=current.state,
        current=confirmed,
        detail=detail,
        at=now,
        results=count,
    )
    return Status(state=confirmed, since=now, detail=detail), transition


def unwatched_gap(
    previous_beat: dt.datetime | None,
    last_round: dt.datetime | None,
    now: dt.datetime,
    interval: float,
) -> tuple[dt.datetime, dt.datetime] | None:
    """The stretch nobody watched, when the worker's last heartbeat is ``GAP_INTERVALS``
    rounds old and this loop was not running meanwhile (a database outage keeps the loop
    running and is no gap: the loop keeps the database's state itself)."""
    if previous_beat is None:
        return None
    limit = dt.timedelta(seconds=interval * GAP_INTERVALS)
    if now - previous_beat <= limit:
        return None
    if last_round is not None and now - last_round <= limit:
        return None
    return previous_beat, now


def alert_for(transition: Transition, started: dt.datetime, previous_since: dt.datetime) -> Alert:
    """The alert of a confirmed change: down, degraded, or up again after how long."""
    name = label(transition.component)
    severity = _SEVERITY[transition.current]
    detail = transition.detail or "no detail"
    if transition.current == "up":
        title = f"{name} is up again"
        lasted = format_duration((started - previous_since).total_seconds())
        body = (
            f"{name} is up again since {format_utc(started)} after "
            f"{lasted} {transition.previous}.\n{detail}"
        )
    else:
        title = f"{name} is {transition.current}"
        body = (
            f"{name} is {transition.current} since {format_utc(started)}: {detail}\n{_ADMIN_HINT}"
        )
    return Alert(title=title, body=body, severity=severity)


def dedupe_key(component: str, state: str, started: dt.datetime) -> str:
    """The outbox key of a change: queued twice (a retried round), it still goes out once."""
    return f"monitor:{component}:{state}:{int(started.timestamp())}"


# --- the tables ----------------------------------------------------------------------------


def _status(row: Any) -> Status | None:
    if row is None:
        return None
    return Status(
        state=row["state"],
        since=row["since"],
        detail=row["detail"],
        candidate_state=row["candidate_state"],
        candidate_count=row["candidate_count"],
    )


async def _save_status(connection: Any, component: str, status: Status, now: dt.datetime) -> None:
    await connection.execute(
        "INSERT INTO component_status (component, state, since, detail, candidate_state, "
        "candidate_count, checked_at, first_checked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) "
        "ON CONFLICT (component) DO UPDATE SET state = $2, since = $3, detail = $4, "
        "candidate_state = $5, candidate_count = $6, checked_at = $7",
        component,
        status.state,
        status.since,
        status.detail,
        status.candidate_state,
        status.candidate_count,
        now,
    )


async def _run_started(connection: Any, component: str, results: int, now: dt.datetime) -> Any:
    """When the run of ``results`` equal results ending at ``now`` began: its first one."""
    started = await connection.fetchval(
        "SELECT min(checked_at) FROM (SELECT checked_at FROM probe_result WHERE component = $1 "
        "AND checked_at <= $2 ORDER BY checked_at DESC LIMIT $3) AS run",
        component,
        now,
        results,
    )
    return started or now


async def _latest_detail(connection: Any, component: str, state: str, started: dt.datetime) -> str:
    """The detail of the latest ``state`` result since ``started``."""
    detail = await connection.fetchval(
        "SELECT detail FROM probe_result WHERE component = $1 AND state = $2 "
        "AND checked_at >= $3 ORDER BY checked_at DESC LIMIT 1",
        component,
        state,
        started,
    )
    return str(detail or "")


async def _change_spans(
    connection: Any, component: str, state: str, started: dt.datetime, detail: str
) -> None:
    await connection.execute(
        "UPDATE component_span SET ended_at = greatest(started_at, $2) "
        "WHERE component = $1 AND ended_at IS NULL",
        component,
        started,
    )
    if state != "up":
        await connection.execute(
            "INSERT INTO component_span (component, state, started_at, detail) "
            "VALUES ($1, $2, $3, $4)",
            component,
            state,
            started,
            detail[:2000],
        )


async def _announce(
    transition: Transition,
    started: dt.datetime,
    previous_since: dt.datetime,
    config_urls: Sequence[str],
    now: dt.datetime,
) -> None:
    """Incident and alert of a confirmed change, inside the caller's transaction."""
    if reported_elsewhere(transition.component):
        return
    name = label(transition.component)
    if transition.current == "down":
        await incidents.open_automatic(
            transition.component, f"{name} is down", transition.detail or "Down.", started
        )
    elif transition.previous == "down":
        await incidents.resolve_automatic(
            transition.component, f"{name} is {transition.current} again.", now
        )
    alert = alert_for(transition, started, previous_since)
    await queue_alert(
        alert.title,
        alert.body,
        severity=alert.severity,
        source=SOURCE,
        now=now,
        config_urls=config_urls,
        dedupe_key=dedupe_key(transition.component, transition.current, started),
    )


async def record_observation(
    observation: Observation, *, threshold: int, config_urls: Sequence[str]
) -> Transition | None:
    """Store one result and apply it to its component's state; the change it confirmed."""
    now = observation.checked_at
    component = observation.component
    change: Transition | None = None
    async with engine().transaction() as transaction:
        connection = transaction.connection
        await connection.execute(
            "INSERT INTO probe_result (component, state, detail, latency_ms, checked_at) "
            "VALUES ($1, $2, $3, $4, $5)",
            component,
            observation.state,
            observation.detail[:2000],
            observation.latency_ms,
            now,
        )
        # The row lock makes a second process applying a result wait and then see this one's
        # outcome, so a change is confirmed (and alerted) once.
        row = await connection.fetchrow(
            "SELECT * FROM component_status WHERE component = $1 FOR UPDATE", component
        )
        previous = _status(row)
        status, change = damp(previous, observation.state, observation.detail, now, threshold)
        if change is None:
            await _save_status(connection, component, status, now)
        else:
            started = await _run_started(connection, component, change.results, now)
            if change.current != observation.state:
                # The worst result of the run is confirmed: its words, not the latest's.
                detail = await _latest_detail(connection, component, change.current, started)
                change = msgspec.structs.replace(change, detail=detail)
            change = msgspec.structs.replace(change, component=component)
            status = msgspec.structs.replace(status, since=started, detail=change.detail)
            await _save_status(connection, component, status, now)
            await _change_spans(connection, component, change.current, started, change.detail)
            previous_since = previous.since if previous else started
            await _announce(change, started, previous_since, config_urls, now)
    return change


async def record_round(
    observations: Iterable[Observation], *, threshold: int, config_urls: Sequence[str]
) -> list[Transition]:
    """Apply every result of a round; the changes confirmed."""
    changes = []
    for observation in observations:
        change = await record_observation(observation, threshold=threshold, config_urls=config_urls)
        if change is not None:
            changes.append(change)
    return changes


async def record_gap(start: dt.datetime, end: dt.datetime) -> int:
    """Mark ``start`` to ``end`` as unwatched for every known component; how many.

    A component's open span older than the gap is cut at its start and continued after it
    (its state is still the confirmed one); a span that began during the gap was recorded by
    someone who was watching (the web process marking the worker down) and is left alone.
    Candidates are cleared: results from before the gap say nothing about the state after it.
    """
    marked = 0
    async with engine().transaction() as transaction:
        connection = transaction.connection
        rows = await connection.fetch("SELECT component FROM component_status FOR UPDATE")
        for row in rows:
            component = row["component"]
            open_span = await connection.fetchrow(
                "SELECT id, state, started_at, detail FROM component_span "
                "WHERE component = $1 AND ended_at IS NULL ORDER BY started_at DESC LIMIT 1",
                component,
            )
            if open_span is not None and open_span["started_at"] >= start:
                continue
            if open_span is not None:
                await connection.execute(
                    "UPDATE component_span SET ended_at = $2 WHERE id = $1",
                    open_span["id"],
                    start,
                )
            await connection.execute(
                "INSERT INTO component_span (component, state, started_at, ended_at, detail) "
                "VALUES ($1, 'unknown', $2, $3, $4)",
                component,
                start,
                end,
                "Not watched: the worker was not running.",
            )
            if open_span is not None:
                await connection.execute(
                    "INSERT INTO component_span (component, state, started_at, detail) "
                    "VALUES ($1, $2, $3, $4)",
                    component,
                    open_span["state"],
                    end,
                    open_span["detail"],
                )
            marked += 1
        await connection.execute(
            "UPDATE component_status SET candidate_state = '', candidate_count = 0"
        )
    return marked


async def retire(watched: Iterable[str], now: dt.datetime) -> list[str]:
    """Forget components no longer probed (an off-site repository removed, the TLS address
    cleared): their open spans end now, their automatic incidents are resolved."""
    keep = list(watched)
    rows = await ComponentStatus.select(ComponentStatus.component).run()
    gone = [row["component"] for row in rows if row["component"] not in keep]
    for component in gone:
        async with engine().transaction() as transaction:
            connection = transaction.connection
            await connection.execute(
                "UPDATE component_span SET ended_at = greatest(started_at, $2) "
                "WHERE component = $1 AND ended_at IS NULL",
                component,
                now,
            )
            await connection.execute("DELETE FROM component_status WHERE component = $1", component)
            await incidents.resolve_automatic(component, "No longer watched.", now)
    return gone


async def prune_results(now: dt.datetime, kept_days: int) -> int:
    """Delete probe results older than ``kept_days``; how many."""
    cutoff = now - dt.timedelta(days=kept_days)
    rows = (
        await ProbeResult.delete()
        .where(ProbeResult.checked_at < cutoff)
        .returning(ProbeResult.id)
        .run()
    )
    return len(rows)


async def confirm_down(
    component: str, detail: str, since: dt.datetime, now: dt.datetime
) -> Literal["changed", "already"]:
    """Mark ``component`` down from outside its own probe (the web process, when the worker's
    heartbeat is stale): status, span from ``since``, incident. "already" when it was down,
    so of several processes noticing at once, exactly one gets "changed" and alerts."""
    async with engine().transaction() as transaction:
        connection = transaction.connection
        row = await connection.fetchrow(
            "INSERT INTO component_status (component, state, since, detail, candidate_state, "
            "candidate_count, checked_at, first_checked_at) "
            "VALUES ($1, 'down', $2, $3, '', 0, $4, $2) "
            "ON CONFLICT (component) DO UPDATE SET state = 'down', since = $2, detail = $3, "
            "candidate_state = '', candidate_count = 0, checked_at = $4 "
            "WHERE component_status.state <> 'down' RETURNING id",
            component,
            since,
            detail,
            now,
        )
        if row is None:
            return "already"
        await _change_spans(connection, component, "down", since, detail)
        name = label(component)
        await incidents.open_automatic(component, f"{name} is down", detail, since)
    return "changed"


async def record_database_outage(
    started: dt.datetime, ended: dt.datetime, detail: str, config_urls: Sequence[str]
) -> None:
    """Record, once the database is back, an outage the loop kept in memory: the span from
    the first failed result, the incident (opened and resolved), the recovery alert."""
    component = "database"
    async with engine().transaction() as transaction:
        connection = transaction.connection
        await connection.execute(
            "UPDATE component_span SET ended_at = greatest(started_at, $2) "
            "WHERE component = $1 AND ended_at IS NULL",
            component,
            started,
        )
        await connection.execute(
            "INSERT INTO component_span (component, state, started_at, ended_at, detail) "
            "VALUES ($1, 'down', $2, $3, $4)",
            component,
            started,
            ended,
            detail[:2000],
        )
        await _save_status(connection, component, Status(state="up", since=ended), ended)
        name = label(component)
        incident = await incidents.open_automatic(component, f"{name} is down", detail, started)
        if incident is not None:
            await incidents.resolve_automatic(component, f"{name} is up again.", ended)
        change = Transition(
            component=component, previous="down", current="up", detail=detail, at=ended
        )
        alert = alert_for(change, ended, started)
        await queue_alert(
            alert.title,
            f"{alert.body}\nThe alert that it was down went out directly, not through the "
            "outbox, which is kept in the database.",
            severity=alert.severity,
            source=SOURCE,
            now=ended,
            config_urls=config_urls,
            dedupe_key=dedupe_key(component, "up", ended),
        )
