"""Retention, point assembly and the schedule: pure rules, checked with a moved clock."""

from __future__ import annotations

import datetime as dt

import pytest

from appliance.backups.jobs import due_slots
from appliance.backups.points import (
    Point,
    RetentionRules,
    complete_points,
    leftover_parts,
    parse_time,
    to_keep,
)
from appliance.backups.restic import Snapshot
from appliance.backups.service import check_subset
from appliance.config import BackupSettings

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=UTC)  # a Sunday


def point(days_ago: float, name: str | None = None) -> Point:
    at = NOW - dt.timedelta(days=days_ago)
    return Point(name or f"p{days_ago}", at, f"db{days_ago}", f"files{days_ago}")


def test_restic_times_with_nanoseconds_parse_to_utc() -> None:
    assert parse_time("2026-11-29T17:20:54.126946925Z") == dt.datetime(
        2026, 11, 29, 17, 20, 54, 126946, tzinfo=UTC
    )
    assert parse_time("2026-11-29T18:20:54.5+01:00") == dt.datetime(
        2026, 11, 29, 17, 20, 54, 500000, tzinfo=UTC
    )


def test_daily_rule_keeps_the_newest_point_of_each_of_the_last_days() -> None:
    points = [point(d) for d in (0, 0.1, 1, 2, 3)]  # two on the newest day
    rules = RetentionRules(daily=3, weekly=0, monthly=0)
    assert to_keep(points, rules, NOW) == {"p0", "p1", "p2"}


def test_weekly_and_monthly_reach_back_and_max_age_wins() -> None:
    points = [point(d) for d in range(0, 200)]
    rules = RetentionRules(daily=7, weekly=4, monthly=6, max_age_days=400)
    kept = to_keep(points, rules, NOW)
    days = sorted(float(p.removeprefix("p")) for p in kept)
    assert days[:7] == [0, 1, 2, 3, 4, 5, 6]
    assert len(kept) <= 7 + 4 + 6 and max(days) > 150  # a monthly point about half a year back
    strict = to_keep(points, RetentionRules(daily=7, weekly=4, monthly=6, max_age_days=30), NOW)
    assert strict and max(float(p.removeprefix("p")) for p in strict) <= 30


def test_days_follow_the_studios_time_zone() -> None:
    # 23:30 and 00:30 UTC+1 on two local days, though one UTC day.
    early = Point("early", dt.datetime(2026, 11, 28, 23, 30, tzinfo=UTC), "a", "b")
    late = Point("late", dt.datetime(2026, 11, 28, 22, 30, tzinfo=UTC), "c", "d")
    utc = to_keep([early, late], RetentionRules(daily=2, weekly=0, monthly=0), NOW)
    berlin = to_keep(
        [early, late], RetentionRules(daily=2, weekly=0, monthly=0, timezone="Europe/Berlin"), NOW
    )
    assert utc == {"early"} and berlin == {"early", "late"}


def snap(sid: str, point_id: str, part: str, time: str = "2026-11-29T02:30:00Z") -> Snapshot:
    return Snapshot(
        id=sid,
        short_id=sid[:8],
        time=time,
        tags=["fotostudio", f"point:{point_id}", f"part:{part}"],
    )


A, B, C = "20261129T023000Z-aaaa", "20261128T023000Z-bbbb", "20261129T115900Z-cccc"


def test_a_point_is_complete_only_with_both_parts_and_leftovers_are_found() -> None:
    snapshots = [
        snap("a1", A, "db"),
        snap("a2", A, "files"),
        snap("b1", B, "db", "2026-11-28T02:30:00Z"),  # files never stored
        snap("c1", C, "db", "2026-11-29T11:59:00Z"),  # being made right now
    ]
    points = complete_points(snapshots)
    assert [(p.point_id, p.db_snapshot, p.files_snapshot) for p in points] == [(A, "a1", "a2")]
    assert leftover_parts(snapshots, before=NOW - dt.timedelta(hours=12)) == ["b1"]


def test_point_ids_not_of_the_appliances_form_are_ignored() -> None:
    """They end up in folder and database names: "../x" or a quote must never get there."""
    hostile = ["../../etc", 'x"; DROP DATABASE y; --', "20261129T023000Z-AAAA"]
    snapshots = [snap(f"{n}{part}", n, part) for n in hostile for part in ("db", "files")]
    assert complete_points(snapshots) == []


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        # Sunday: the Saturday drill of this ISO week is caught up from midnight on.
        (dt.datetime(2026, 11, 29, 2, 0, tzinfo=UTC), {"drill", "watch"}),  # before 02:30
        (dt.datetime(2026, 11, 29, 2, 30, tzinfo=UTC), {"backup", "drill", "watch"}),
        (
            dt.datetime(2026, 11, 29, 5, 0, tzinfo=UTC),
            {"backup", "check", "prune", "watch", "drill"},
        ),
    ],
)
def test_schedule_is_due_once_its_time_has_come(when: dt.datetime, expected: set[str]) -> None:
    settings = BackupSettings()  # prune on Sundays at 04:00
    slots = due_slots(when, settings, [("local", False), ("offsite", True)])
    assert {kind for kind, _, _ in slots} == expected
    backup = [s for s in slots if s[0] == "backup"]
    assert all(repo == "local" and slot == "backup:2026-11-29" for _, repo, slot in backup)


def test_drills_alternate_between_repositories_week_by_week() -> None:
    settings = BackupSettings()
    repos = [("local", False), ("offsite", True)]
    saturday = dt.datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
    one = [s for s in due_slots(saturday, settings, repos) if s[0] == "drill"]
    two = [
        s for s in due_slots(saturday + dt.timedelta(days=7), settings, repos) if s[0] == "drill"
    ]
    assert one[0][1] != two[0][1]
    assert one[0][2] != two[0][2]


def test_schedule_uses_the_configured_time_zone() -> None:
    settings = BackupSettings(timezone="Europe/Berlin")  # 02:30 Berlin is 01:30 UTC
    slots = due_slots(dt.datetime(2026, 11, 29, 1, 45, tzinfo=UTC), settings, [("local", False)])
    assert "backup" in {kind for kind, _, _ in slots}


def test_read_data_subsets_cover_everything_over_the_cycle() -> None:
    seen = {check_subset(NOW + dt.timedelta(days=d), 28) for d in range(28)}
    assert seen == {f"{n}/28" for n in range(1, 29)}


def test_the_newest_point_stays_whatever_the_rules_unless_past_the_maximum_age() -> None:
    points = [point(d) for d in (0, 1, 2)]
    assert to_keep(points, RetentionRules(daily=0, weekly=0, monthly=0), NOW) == {"p0"}
    assert to_keep([point(500)], RetentionRules(max_age_days=400), NOW) == set()


def test_settings_refuse_rules_that_keep_nothing() -> None:
    from appliance.config import ConfigError, load_settings

    environ = {
        "APPLIANCE_BACKUPS__KEEP_DAILY": "0",
        "APPLIANCE_BACKUPS__KEEP_WEEKLY": "0",
        "APPLIANCE_BACKUPS__KEEP_MONTHLY": "0",
    }
    with pytest.raises(ConfigError, match=r"backups\.keep_daily"):
        load_settings(environ=environ)
