"""Uptime and the SLA: pure arithmetic over the recorded spans and maintenance windows, and one
loader that reads them from the tables.

Definitions (``docs/status-page.md`` says the same for people):

- A component is *measured* from its first recorded probe on; time before that is not measured
  and counts neither way. ``unknown`` spans (nothing watched it, e.g. the appliance was off) are
  taken out of the measured time too, and shown.
- ``down`` spans are downtime, except where an announced (not cancelled) maintenance window
  covering that component overlaps them: that part is shown as maintenance and not counted.
- ``degraded`` spans are shown but count as up.
- Overall is down while any component of ``components.CORE`` is down (the union of their
  spans); it is unknown while one of them is unknown and none is down.
- Open spans end at ``now``; nothing after ``now`` is measured. All times are UTC.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from appliance.monitoring import components
from appliance.monitoring.maintenance import maintenance_between
from appliance.monitoring.tables import ComponentSpan, ComponentStatus

__all__ = [
    "OVERALL",
    "WINDOWS",
    "Budget",
    "ComponentNow",
    "Day",
    "Interval",
    "Maintenance",
    "Now",
    "Record",
    "Span",
    "Uptime",
    "budget",
    "in_page_order",
    "intersect",
    "load_now",
    "load_record",
    "month_bounds",
    "months_before",
    "parse_month",
    "subtract",
    "union",
]

OVERALL = "overall"
# The rolling windows shown everywhere, in order.
WINDOWS: dict[str, dt.timedelta] = {
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
    "30d": dt.timedelta(days=30),
    "90d": dt.timedelta(days=90),
}
DAY = dt.timedelta(days=1)

Interval = tuple[dt.datetime, dt.datetime]
DayState = Literal["up", "degraded", "maintenance", "down", "unknown"]


# --- interval arithmetic ------------------------------------------------------------------------


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint intervals covering exactly what ``intervals`` cover; empty ones dropped."""
    merged: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def intersect(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    """What both cover."""
    left, right = union(a), union(b)
    found: list[Interval] = []
    i = j = 0
    while i < len(left) and j < len(right):
        start = max(left[i][0], right[j][0])
        end = min(left[i][1], right[j][1])
        if start < end:
            found.append((start, end))
        if left[i][1] < right[j][1]:
            i += 1
        else:
            j += 1
    return found


def subtract(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    """What ``a`` covers and ``b`` does not."""
    holes = union(b)
    left: list[Interval] = []
    for start, end in union(a):
        cursor = start
        for hole_start, hole_end in holes:
            if hole_end <= cursor or hole_start >= end:
                continue
            if hole_start > cursor:
                left.append((cursor, hole_start))
            cursor = max(cursor, hole_end)
            if cursor >= end:
                break
        if cursor < end:
            left.append((cursor, end))
    return left


def seconds(intervals: Iterable[Interval]) -> float:
    return sum((end - start).total_seconds() for start, end in union(intervals))


# --- what is recorded ---------------------------------------------------------------------------


class Span(msgspec.Struct, frozen=True):
    """A stretch a component was degraded, down or unknown; ``end`` None while it lasts."""

    component: str
    state: str
    start: dt.datetime
    end: dt.datetime | None = None


class Maintenance(msgspec.Struct, frozen=True):
    """An announced maintenance window; no components means all of them."""

    start: dt.datetime
    end: dt.datetime
    components: tuple[str, ...] = ()
    title: str = ""

    def covers(self, component: str) -> bool:
        if component == OVERALL:
            return not self.components
        return not self.components or component in self.components


class Uptime(msgspec.Struct, frozen=True, kw_only=True):
    """The figures of one component (or overall) over ``start``..``end``, all in seconds."""

    start: dt.datetime
    end: dt.datetime
    measured: float  # watched and known: the denominator
    down: float  # counted as downtime
    maintenance: float  # down during announced maintenance: not counted
    degraded: float  # shown, counted as up
    unknown: float  # nothing watched: outside the measured time
    not_measured: float  # before the first probe, or after now

    @property
    def ratio(self) -> float | None:
        """Up time over measured time, or None when nothing was measured."""
        if self.measured <= 0:
            return None
        return (self.measured - self.down) / self.measured

    @property
    def percent(self) -> float | None:
        ratio = self.ratio
        return None if ratio is None else ratio * 100

    def met(self, target_percent: float) -> bool | None:
        percent = self.percent
        return None if percent is None else percent >= target_percent - 1e-9


class Day(msgspec.Struct, frozen=True):
    """One bar of the 90-day chart."""

    date: dt.date
    state: DayState
    uptime: Uptime


class Budget(msgspec.Struct, frozen=True, kw_only=True):
    """The downtime a target allows in a period, and what is left of it."""

    target_percent: float
    allowed: float  # seconds of downtime the target allows over the whole period
    used: float
    left: float  # never below zero


@dataclass
class Record:
    """Everything recorded between ``since`` and ``now``: uptime for any period inside it."""

    now: dt.datetime
    spans: list[Span] = field(default_factory=list)
    maintenance: list[Maintenance] = field(default_factory=list)
    # When each component's first probe ran; a component absent here was never probed.
    watched_from: dict[str, dt.datetime] = field(default_factory=dict)
    # Merged intervals by (component, state): a page asks for a hundred periods of each.
    _merged: dict[tuple[str, str], list[Interval]] = field(default_factory=dict, repr=False)
    _edges: dict[tuple[str, str], tuple[list[dt.datetime], list[dt.datetime]]] = field(
        default_factory=dict, repr=False
    )

    @property
    def components(self) -> list[str]:
        """Every component known to the record, in status-page order."""
        return in_page_order(set(self.watched_from) | {span.component for span in self.spans})

    @property
    def with_spans(self) -> list[str]:
        """The components with a span in the loaded range (a retired one keeps its history
        until that leaves the range), in status-page order."""
        return in_page_order({span.component for span in self.spans})

    def _merged_of(self, component: str, state: str) -> list[Interval]:
        """Sorted, disjoint intervals of ``component`` in ``state`` ("maintenance": the windows
        that cover it), merged once per record."""
        key = (component, state)
        if key not in self._merged:
            if state == "maintenance":
                found = [(m.start, m.end) for m in self.maintenance if m.covers(component)]
            else:
                found = [
                    (span.start, span.end or self.now)
                    for span in self.spans
                    if span.component == component and span.state == state
                ]
            self._merged[key] = union(found)
            self._edges[key] = (
                [i[0] for i in self._merged[key]],
                [i[1] for i in self._merged[key]],
            )
        return self._merged[key]

    def _intervals(self, component: str, state: str, period: list[Interval]) -> list[Interval]:
        """The merged intervals that reach into ``period`` (found by bisection: pages ask for
        a hundred periods of the same list)."""
        merged = self._merged_of(component, state)
        if not period or not merged:
            return []
        starts, ends = self._edges[(component, state)]
        first = bisect.bisect_right(ends, period[0][0])
        last = bisect.bisect_left(starts, period[-1][1])
        return merged[first:last]

    def _maintenance(self, component: str, period: list[Interval]) -> list[Interval]:
        return self._intervals(component, "maintenance", period)

    def _first_watched(self, component: str) -> dt.datetime | None:
        if component == OVERALL:
            found = [self.watched_from[c] for c in components.CORE if c in self.watched_from]
            return min(found) if found else None
        return self.watched_from.get(component)

    def uptime(self, component: str, start: dt.datetime, end: dt.datetime) -> Uptime:
        """The figures of ``component`` (or :data:`OVERALL`) over ``start``..``end``; time
        after ``now`` and before the first probe is reported as not measured."""
        asked_end = max(start, end)
        end = max(start, min(end, self.now))
        first = self._first_watched(component)
        measured_from = end if first is None else min(max(start, first), end)
        period = [(measured_from, end)] if measured_from < end else []
        if component == OVERALL:
            unknown, down, counted, degraded = self._overall(period)
        else:
            unknown = intersect(self._intervals(component, "unknown", period), period)
            down = subtract(intersect(self._intervals(component, "down", period), period), unknown)
            counted = subtract(down, self._maintenance(component, period))
            degraded = subtract(
                intersect(self._intervals(component, "degraded", period), period), [*unknown, *down]
            )
        return Uptime(
            start=start,
            end=asked_end,
            measured=seconds(period) - seconds(unknown),
            down=seconds(counted),
            maintenance=seconds(down) - seconds(counted),
            degraded=seconds(degraded),
            unknown=seconds(unknown),
            not_measured=(asked_end - start).total_seconds() - seconds(period),
        )

    def _overall(
        self, period: list[Interval]
    ) -> tuple[list[Interval], list[Interval], list[Interval], list[Interval]]:
        unknown_any: list[Interval] = []
        down_all: list[Interval] = []
        counted_all: list[Interval] = []
        degraded_any: list[Interval] = []
        for component in components.CORE:
            unknown = intersect(self._intervals(component, "unknown", period), period)
            down = subtract(intersect(self._intervals(component, "down", period), period), unknown)
            unknown_any += unknown
            down_all += down
            # A window for one core component excuses only that component's downtime.
            counted_all += subtract(down, self._maintenance(component, period))
            degraded_any += intersect(self._intervals(component, "degraded", period), period)
        down = union(down_all)
        unknown = subtract(unknown_any, down)
        degraded = subtract(degraded_any, [*down, *unknown])
        return unknown, down, union(counted_all), degraded

    def windows(self, component: str) -> dict[str, Uptime]:
        """The rolling windows of :data:`WINDOWS`, ending now."""
        return {
            name: self.uptime(component, self.now - length, self.now)
            for name, length in WINDOWS.items()
        }

    def days(self, component: str, count: int = 90) -> list[Day]:
        """One entry per UTC day, the oldest first; the last is today (so far)."""
        today = dt.datetime.combine(self.now.date(), dt.time(), tzinfo=dt.UTC)
        found = []
        for back in range(count - 1, -1, -1):
            start = today - back * DAY
            figures = self.uptime(component, start, start + DAY)
            found.append(Day(date=start.date(), state=_day_state(figures), uptime=figures))
        return found

    def month(self, component: str, year: int, month: int) -> Uptime:
        start, end = month_bounds(year, month)
        return self.uptime(component, start, end)

    def months(self, component: str, count: int = 12) -> list[Uptime]:
        """This month and the ``count - 1`` before it, the newest first."""
        return [
            self.month(component, year, month) for year, month in months_before(self.now, count)
        ]


def in_page_order(keys: Iterable[str]) -> list[str]:
    """Component keys sorted as the status page groups them, unknown keys last."""
    order = [key for members in components.GROUPS.values() for key in members]
    return sorted(set(keys), key=lambda key: (_rank(key, order), key))


def _rank(key: str, order: list[str]) -> int:
    for index, member in enumerate(order):
        if key == member or (member.endswith(":") and key.startswith(member)):
            return index
    return len(order)


def _day_state(figures: Uptime) -> DayState:
    if figures.down > 0:
        return "down"
    if figures.maintenance > 0:
        return "maintenance"
    if figures.measured <= 0:
        return "unknown"
    if figures.degraded > 0:
        return "degraded"
    return "up"


# --- calendar months and the budget --------------------------------------------------------------


def month_bounds(year: int, month: int) -> Interval:
    """The first instant of the month and of the next one, in UTC."""
    start = dt.datetime(year, month, 1, tzinfo=dt.UTC)
    following = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.UTC)
    return start, following


def months_before(now: dt.datetime, count: int) -> list[tuple[int, int]]:
    """(year, month) of the month of ``now`` and the ``count - 1`` before it, the newest first."""
    year, month = now.year, now.month
    found = []
    for _ in range(count):
        found.append((year, month))
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return found


def parse_month(text: str, now: dt.datetime) -> tuple[int, int] | None:
    """``YYYY-MM`` of a month that has begun and is not before year 2000, else None."""
    text = text.strip()
    if len(text) != 7 or not text.isascii() or text[4] != "-":
        return None
    if not (text[:4].isdigit() and text[5:].isdigit()):
        return None
    year, month = int(text[:4]), int(text[5:])
    if not 1 <= month <= 12 or year < 2000 or (year, month) > (now.year, now.month):
        return None
    return year, month


def budget(target_percent: float, start: dt.datetime, end: dt.datetime, used: float) -> Budget:
    """The downtime ``target_percent`` allows over ``start``..``end`` and what ``used`` left.

    The allowance is taken over the whole period (99.9% of 30 days = 43 min 12 s), so early in
    a month the budget shows what the month may still lose.
    """
    allowed = (end - start).total_seconds() * (100 - target_percent) / 100
    return Budget(
        target_percent=target_percent,
        allowed=allowed,
        used=used,
        left=max(0.0, allowed - used),
    )


# --- the loader -----------------------------------------------------------------------------------


async def load_record(now: dt.datetime, since: dt.datetime) -> Record:
    """Spans and announced (not cancelled) maintenance overlapping ``since``..``now``, and when
    each component was first probed: three queries.

    The first probe is recorded on the component's state row (rows from before that column
    count from their state's start), or is its earliest span when that is earlier.
    """
    span_rows = await ComponentSpan.raw(
        "SELECT component, state, started_at, ended_at FROM component_span"
        " WHERE started_at < {} AND (ended_at IS NULL OR ended_at > {})"
        " ORDER BY started_at",
        now,
        since,
    )
    windows = await maintenance_between(since, now)
    first_rows = await ComponentStatus.raw(
        "SELECT component, min(first) AS first FROM ("
        " SELECT component, coalesce(first_checked_at, since) AS first FROM component_status"
        " UNION ALL SELECT component, min(started_at) FROM component_span GROUP BY component"
        ") AS firsts GROUP BY component"
    )
    return Record(
        now=now,
        spans=[
            Span(
                component=row["component"],
                state=row["state"],
                start=row["started_at"],
                end=row["ended_at"],
            )
            for row in span_rows
        ],
        maintenance=[
            Maintenance(
                start=window.starts_at,
                end=window.ends_at,
                components=tuple(window.components),
                title=window.title,
            )
            for window in windows
        ],
        watched_from={row["component"]: row["first"] for row in first_rows if row["first"]},
    )


# --- what the pages show now -------------------------------------------------------------------


class ComponentNow(msgspec.Struct, frozen=True, kw_only=True):
    """A component's confirmed state as the pages show it. ``detail`` and ``latency_ms`` are
    for admins and ``/metrics`` only, never for the public status page."""

    component: str
    label: str
    group: str
    state: str  # up, degraded, down, unknown (not checked lately)
    since: dt.datetime | None
    detail: str = ""
    checked_at: dt.datetime | None = None
    latency_ms: int | None = None


class Now(msgspec.Struct, frozen=True, kw_only=True):
    components: list[ComponentNow]
    worker_beat_at: dt.datetime | None
    last_backup_at: dt.datetime | None  # the last backup job that finished without fault
    last_drill_at: dt.datetime | None  # the last restore drill that passed


async def load_now(
    now: dt.datetime, *, stale_seconds: int, round_seconds: int = 60, latency: bool = False
) -> Now:
    """Current states, the worker's heartbeat and the backup times: two queries, three with
    ``latency`` (the newest probe result of each component).

    The worker runs the probes, so when its heartbeat is older than ``stale_seconds`` the
    worker is shown down, and a state not checked for that long (or two probe rounds of
    ``round_seconds``, when those are longer) is shown as unknown: nobody vouches for it.
    """
    rows = await ComponentStatus.raw(
        "SELECT component, state, since, detail, checked_at,"
        " NULL::timestamptz AS beat_at, NULL::timestamptz AS backup_at,"
        " NULL::timestamptz AS drill_at FROM component_status"
        " UNION ALL SELECT NULL, NULL, NULL, NULL, NULL,"
        " (SELECT beat_at FROM process_heartbeat WHERE name = 'worker'),"
        " (SELECT max(finished_at) FROM backup_job WHERE kind = 'backup' AND state = 'done'),"
        " (SELECT max(finished_at) FROM backup_drill WHERE passed)"
    )
    latencies: dict[str, int | None] = {}
    if latency:
        # One look-up per component in the (component, checked_at DESC) index, however many
        # results the table keeps: every /metrics scrape asks.
        latest = await ComponentStatus.raw(
            "SELECT status.component, latest.latency_ms FROM component_status AS status"
            " CROSS JOIN LATERAL (SELECT latency_ms FROM probe_result"
            " WHERE probe_result.component = status.component"
            " ORDER BY checked_at DESC LIMIT 1) AS latest"
        )
        latencies = {row["component"]: row["latency_ms"] for row in latest}
    extra = next(row for row in rows if row["component"] is None)
    beat_at: dt.datetime | None = extra["beat_at"]
    stale = now - dt.timedelta(seconds=stale_seconds)
    unchecked = now - dt.timedelta(seconds=max(stale_seconds, 2 * round_seconds))
    found = []
    for row in rows:
        component = row["component"]
        if component is None:
            continue
        state, since = row["state"], row["since"]
        if component == "worker" and (beat_at is None or beat_at < stale):
            state, since = "down", beat_at or since
        elif row["checked_at"] < unchecked:
            state = "unknown"
        found.append(
            ComponentNow(
                component=component,
                label=components.label(component),
                group=components.group_of(component),
                state=state,
                since=since,
                detail=row["detail"],
                checked_at=row["checked_at"],
                latency_ms=latencies.get(component),
            )
        )
    position = {key: index for index, key in enumerate(in_page_order(c.component for c in found))}
    found.sort(key=lambda c: position[c.component])
    return Now(
        components=found,
        worker_beat_at=beat_at,
        last_backup_at=extra["backup_at"],
        last_drill_at=extra["drill_at"],
    )
