"""Uptime and SLA arithmetic with exact figures: overlaps, period borders, maintenance, unknown
time, open spans, months of 28 to 31 days, and the bars drawn from them."""

from __future__ import annotations

import datetime as dt
import random
import xml.etree.ElementTree as ET

import pytest

from appliance.localtime import format_duration
from appliance.monitoring.svg import uptime_bars
from appliance.monitoring.uptime import (
    OVERALL,
    Maintenance,
    Record,
    Span,
    budget,
    intersect,
    month_bounds,
    months_before,
    parse_month,
    subtract,
    union,
)

UTC = dt.UTC
MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0


def at(
    day: int, hour: int = 0, minute: int = 0, *, month: int = 11, year: int = 2026
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def record(
    now: dt.datetime,
    spans: list[Span] = (),  # type: ignore[assignment]
    maintenance: list[Maintenance] = (),  # type: ignore[assignment]
    watched_from: dt.datetime | None = None,
    watched: tuple[str, ...] = ("web", "database", "object-store", "worker"),
) -> Record:
    first = watched_from or at(1, month=1)
    return Record(
        now=now,
        spans=list(spans),
        maintenance=list(maintenance),
        watched_from=dict.fromkeys(watched, first),
    )


def test_interval_union_intersection_and_difference_are_exact() -> None:
    """Touching and overlapping intervals merge; intersections and differences cut exactly."""
    a = [(at(1, 2), at(1, 4)), (at(1, 1), at(1, 3)), (at(1, 4), at(1, 5)), (at(1, 8), at(1, 8))]
    assert union(a) == [(at(1, 1), at(1, 5))]
    assert intersect(a, [(at(1, 3), at(1, 9))]) == [(at(1, 3), at(1, 5))]
    assert subtract([(at(1, 0), at(1, 10))], [(at(1, 2), at(1, 3)), (at(1, 5), at(1, 12))]) == [
        (at(1, 0), at(1, 2)),
        (at(1, 3), at(1, 5)),
    ]
    assert subtract([(at(1, 2), at(1, 3))], [(at(1, 0), at(1, 10))]) == []


def test_43_minutes_down_in_november_meets_the_999_target() -> None:
    """43 minutes of downtime in a 30-day month is 99.9005%: the 99.9% target is met, with
    12 seconds of the 43 min 12 s budget left."""
    spans = [Span("web", "down", at(10, 12), at(10, 12, 43))]
    rec = record(at(1, month=12), spans)
    november = rec.month("web", 2026, 11)
    assert november.measured == 30 * DAY
    assert november.down == 43 * MINUTE
    assert november.percent == pytest.approx((30 * DAY - 43 * MINUTE) / (30 * DAY) * 100)
    assert round(november.percent or 0, 4) == 99.9005
    assert november.met(99.9) is True
    start, end = month_bounds(2026, 11)
    left = budget(99.9, start, end, november.down)
    assert left.allowed == pytest.approx(43 * MINUTE + 12)
    assert format_duration(left.allowed, exact=True) == "43 min 12 s"
    assert left.left == pytest.approx(12)


def test_44_minutes_down_in_a_31_day_month_still_meets_it_but_not_in_february() -> None:
    """99.9% of 31 days allows 44 min 38.4 s; of February 2026 (28 days) only 40 min 19.2 s."""
    rec = record(
        at(1, month=4),
        [
            Span("web", "down", at(3, 0, 0, month=3), at(3, 0, 44, month=3)),
            Span("web", "down", at(3, 0, 0, month=2), at(3, 0, 44, month=2)),
        ],
    )
    march, february = rec.month("web", 2026, 3), rec.month("web", 2026, 2)
    assert march.measured == 31 * DAY and february.measured == 28 * DAY
    assert march.met(99.9) is True
    assert february.met(99.9) is False
    assert budget(99.9, *month_bounds(2026, 3), 0).allowed == pytest.approx(44 * MINUTE + 38.4)
    assert budget(99.9, *month_bounds(2026, 2), 0).allowed == pytest.approx(40 * MINUTE + 19.2)
    assert budget(99.9, *month_bounds(2028, 2), 0).allowed == pytest.approx(29 * 86.4)


def test_a_span_crossing_a_month_border_is_split_between_the_months() -> None:
    """Down from 23:30 on 31 October to 00:15 on 1 November: 30 min in October, 15 in November."""
    rec = record(
        at(1, month=12), [Span("database", "down", at(31, 23, 30, month=10), at(1, 0, 15))]
    )
    assert rec.month("database", 2026, 10).down == 30 * MINUTE
    assert rec.month("database", 2026, 11).down == 15 * MINUTE


def test_overlapping_spans_of_one_component_are_counted_once() -> None:
    """Two down spans that overlap (a probe and a restart both recorded one) count their union."""
    spans = [
        Span("web", "down", at(5, 10), at(5, 11)),
        Span("web", "down", at(5, 10, 30), at(5, 11, 30)),
    ]
    assert record(at(6), spans).uptime("web", at(5), at(6)).down == 90 * MINUTE


def test_an_open_span_ends_now_and_nothing_after_now_is_measured() -> None:
    """A span still open counts up to now; the rest of the month is not measured yet."""
    now = at(15, 12)
    rec = record(now, [Span("web", "down", at(15, 11, 20))])
    month = rec.month("web", 2026, 11)
    assert month.down == 40 * MINUTE
    assert month.measured == 14.5 * DAY
    assert month.not_measured == 15.5 * DAY
    assert rec.windows("web")["24h"].down == 40 * MINUTE
    assert rec.windows("web")["24h"].measured == DAY


def test_time_before_the_first_probe_is_not_measured() -> None:
    """An appliance first probed on 21 November measures 10 days of November, not 30."""
    rec = record(at(1, month=12), [Span("web", "down", at(25), at(25, 1))], watched_from=at(21))
    november = rec.month("web", 2026, 11)
    assert november.measured == 10 * DAY
    assert november.not_measured == 20 * DAY
    assert november.percent == pytest.approx((10 * DAY - HOUR) / (10 * DAY) * 100)
    assert rec.month("web", 2026, 10).ratio is None
    assert rec.month("web", 2026, 10).met(99.9) is None


def test_unknown_time_is_left_out_of_the_measured_time_and_shown() -> None:
    """Two unknown hours (the appliance was off) shrink the measured time; a down span inside
    them does not count twice."""
    spans = [
        Span("web", "unknown", at(5, 2), at(5, 4)),
        Span("web", "down", at(5, 3), at(5, 5)),
    ]
    figures = record(at(6), spans).uptime("web", at(5), at(6))
    assert figures.unknown == 2 * HOUR
    assert figures.measured == 22 * HOUR
    assert figures.down == HOUR


def test_degraded_time_is_shown_but_counts_as_up() -> None:
    """Degraded for three hours: 100% up, three hours shown as degraded."""
    figures = record(at(6), [Span("queue", "degraded", at(5, 1), at(5, 4))], watched=("queue",))
    day = figures.uptime("queue", at(5), at(6))
    assert day.percent == 100
    assert day.degraded == 3 * HOUR


def test_announced_maintenance_is_not_downtime_and_is_shown_separately() -> None:
    """Down 02:00-04:00 with a window 01:00-03:00 for that component: one hour maintenance,
    one hour downtime. A window for another component excuses nothing; one naming no
    component covers all."""
    spans = [Span("database", "down", at(5, 2), at(5, 4))]
    window = Maintenance(at(5, 1), at(5, 3), ("database",), "Upgrade")
    figures = record(at(6), spans, [window]).uptime("database", at(5), at(6))
    assert (figures.down, figures.maintenance) == (HOUR, HOUR)
    other = Maintenance(at(5, 1), at(5, 3), ("object-store",))
    assert record(at(6), spans, [other]).uptime("database", at(5), at(6)).down == 2 * HOUR
    everything = Maintenance(at(5, 0), at(5, 5))
    excused = record(at(6), spans, [everything]).uptime("database", at(5), at(6))
    assert (excused.down, excused.maintenance, excused.percent) == (0, 2 * HOUR, 100)


def test_overall_is_down_while_any_core_component_is_down() -> None:
    """Web down 10:00-11:00 and database 10:30-12:00 make two hours overall; the worker is not
    core and does not count; maintenance of the database excuses only its own part."""
    spans = [
        Span("web", "down", at(5, 10), at(5, 11)),
        Span("database", "down", at(5, 10, 30), at(5, 12)),
        Span("worker", "down", at(5, 13), at(5, 20)),
    ]
    rec = record(at(6), spans)
    assert rec.uptime(OVERALL, at(5), at(6)).down == 2 * HOUR
    window = Maintenance(at(5, 10), at(5, 12), ("database",))
    overall = record(at(6), spans, [window]).uptime(OVERALL, at(5), at(6))
    assert overall.down == HOUR  # the web's hour
    assert overall.maintenance == HOUR


def test_overall_unknown_time_leaves_the_measured_time() -> None:
    """The appliance off for an hour: every core component unknown, overall unknown once."""
    spans = [Span(c, "unknown", at(5, 1), at(5, 2)) for c in ("web", "database", "object-store")]
    overall = record(at(6), spans).uptime(OVERALL, at(5), at(6))
    assert overall.unknown == HOUR
    assert overall.measured == 23 * HOUR
    assert overall.percent == 100


def test_ninety_days_of_bars_with_the_right_states() -> None:
    """90 days, today last; days before the first probe unknown; a down day, a maintenance day
    and a degraded day each in their state."""
    now = at(29, 12)
    spans = [
        Span("web", "down", at(28, 1), at(28, 2)),
        Span("web", "down", at(27, 1), at(27, 2)),
        Span("web", "degraded", at(26, 1), at(26, 2)),
    ]
    window = Maintenance(at(27, 0), at(27, 3), ("web",))
    rec = record(now, spans, [window], watched_from=at(1))
    days = rec.days("web")
    assert len(days) == 90
    assert days[-1].date == dt.date(2026, 11, 29)
    assert days[0].date == dt.date(2026, 9, 1)
    states = {day.date.day: day.state for day in days if day.date.month == 11}
    assert (states[28], states[27], states[26], states[25]) == (
        "down",
        "maintenance",
        "degraded",
        "up",
    )
    assert all(day.state == "unknown" for day in days if day.date.month < 11)
    assert days[-1].uptime.measured == 12 * HOUR


def test_the_bars_are_well_formed_svg_with_a_title_per_day() -> None:
    """The SVG parses as XML, has 90 rects with a date in each title, and escapes its label."""
    rec = record(at(29, 12), [Span("web", "down", at(28, 1), at(28, 2))], watched_from=at(1))
    svg = str(uptime_bars(rec.days("web"), 'Website <&> "uptime"'))
    root = ET.fromstring(svg)  # noqa: S314 - the SVG was made by the code under test
    ns = "{http://www.w3.org/2000/svg}"
    rects = root.findall(f"{ns}rect")
    assert len(rects) == 90
    assert root.get("aria-label") == 'Website <&> "uptime"'
    titles = [rect.findtext(f"{ns}title") or "" for rect in rects]
    assert titles[-2] == "2026-11-28: 95.83% up, down 1 h 0 min"
    assert titles[0] == "2026-09-01: no data"
    assert rects[-2].get("fill") == "#c5221f"


def test_month_parameter_is_validated() -> None:
    """Only YYYY-MM of a month that has begun, from 2000 on, is accepted."""
    now = at(15)
    assert parse_month("2026-11", now) == (2026, 11)
    assert parse_month("2025-01", now) == (2025, 1)
    for bad in (
        "2026-13",
        "2026-00",
        "../../",
        "2026-12",
        "9999-01",
        "1999-12",
        "2026-1",
        "",
        "\uff12\uff10\uff12\uff16-11",
    ):
        assert parse_month(bad, now) is None, bad
    assert months_before(at(15, month=2), 3) == [(2026, 2), (2026, 1), (2025, 12)]


def test_figures_match_a_minute_by_minute_count_of_random_spans() -> None:
    """Random overlapping spans and windows, counted minute by minute with sets, give the same
    figures as the interval arithmetic, for components, overall and every day."""
    rng = random.Random(20261129)
    base = at(1)
    now = base + dt.timedelta(days=3)
    core = ("web", "database", "object-store")
    spans, windows = [], []
    for _ in range(60):
        start = rng.randrange(0, 3 * 1440)
        spans.append(
            Span(
                rng.choice(core),
                rng.choice(["down", "down", "degraded", "unknown"]),
                base + dt.timedelta(minutes=start),
                base + dt.timedelta(minutes=start + rng.randrange(1, 300)),
            )
        )
    for _ in range(6):
        start = rng.randrange(0, 3 * 1440)
        covers = rng.choice([(), ("web",), ("database", "object-store")])
        windows.append(
            Maintenance(
                base + dt.timedelta(minutes=start),
                base + dt.timedelta(minutes=start + rng.randrange(10, 200)),
                covers,
            )
        )
    rec = record(now, spans, windows, watched_from=base)

    def minutes(component: str, state: str) -> set[int]:
        found: set[int] = set()
        for span in spans:
            if span.component == component and span.state == state:
                first = int((span.start - base).total_seconds() // 60)
                last = int((min(span.end or now, now) - base).total_seconds() // 60)
                found.update(range(first, last))
        return found

    def covered(component: str) -> set[int]:
        found: set[int] = set()
        for window in windows:
            if window.covers(component):
                first = int((window.start - base).total_seconds() // 60)
                found.update(range(first, int((window.end - base).total_seconds() // 60)))
        return found

    for day in range(3):
        period = set(range(day * 1440, (day + 1) * 1440))
        day_start = base + dt.timedelta(days=day)
        overall_down: set[int] = set()
        overall_counted: set[int] = set()
        overall_unknown: set[int] = set()
        for component in core:
            unknown = minutes(component, "unknown") & period
            down = (minutes(component, "down") & period) - unknown
            counted = down - covered(component)
            figures = rec.uptime(component, day_start, day_start + dt.timedelta(days=1))
            assert figures.unknown == len(unknown) * MINUTE
            assert figures.down == len(counted) * MINUTE
            assert figures.maintenance == len(down - counted) * MINUTE
            assert figures.measured == (1440 - len(unknown)) * MINUTE
            overall_down |= down
            overall_counted |= counted
            overall_unknown |= unknown
        overall = rec.uptime(OVERALL, day_start, day_start + dt.timedelta(days=1))
        assert overall.down == len(overall_counted) * MINUTE
        assert overall.maintenance == len(overall_down - overall_counted) * MINUTE
        assert overall.unknown == len(overall_unknown - overall_down) * MINUTE
