"""Recovery points as restic stores them, and the retention rules that decide which stay.

A point is complete when a repository holds both its snapshots (``part:db`` and ``part:files``
with the same ``point:<id>`` tag). Retention keeps whole points: restic's own ``forget
--keep-*`` groups snapshots by path, so the database and the files of one point could be kept
for different days; here the rules pick points and both parts go or stay together.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Iterable

import msgspec

from appliance.backups.restic import Snapshot

__all__ = ["Point", "RetentionRules", "complete_points", "leftover_parts", "to_keep"]


class Point(msgspec.Struct, frozen=True):
    point_id: str
    taken_at: dt.datetime
    db_snapshot: str
    files_snapshot: str


class RetentionRules(msgspec.Struct, frozen=True):
    daily: int = 7
    weekly: int = 4
    monthly: int = 6
    max_age_days: int = 400
    timezone: str = "UTC"


def parse_time(text: str) -> dt.datetime:
    """restic's RFC 3339 times carry nanoseconds, which ``fromisoformat`` refuses."""
    text = text.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


POINT_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{4}$")


def complete_points(snapshots: Iterable[Snapshot]) -> list[Point]:
    """The complete points among ``snapshots``, newest first. Ids not of the appliance's own
    form are ignored: they end up in folder and database names."""
    parts: dict[str, dict[str, Snapshot]] = {}
    for snapshot in snapshots:
        point_id, part = snapshot.tag("point"), snapshot.tag("part")
        if point_id and POINT_ID.match(point_id) and part in {"db", "files"}:
            parts.setdefault(point_id, {})[part] = snapshot
    points = [
        Point(
            point_id=point_id,
            taken_at=parse_time(both["files"].time),
            db_snapshot=both["db"].id,
            files_snapshot=both["files"].id,
        )
        for point_id, both in parts.items()
        if "db" in both and "files" in both
    ]
    return sorted(points, key=lambda p: (p.taken_at, p.point_id), reverse=True)


def leftover_parts(snapshots: Iterable[Snapshot], *, before: dt.datetime) -> list[str]:
    """Snapshots of points that never completed and are older than ``before`` (a point being
    made right now is younger than that)."""
    snapshots = list(snapshots)
    complete = {p.point_id for p in complete_points(snapshots)}
    return [
        s.id
        for s in snapshots
        if s.tag("point") and s.tag("point") not in complete and parse_time(s.time) < before
    ]


def to_keep(points: Iterable[Point], rules: RetentionRules, now: dt.datetime) -> set[str]:
    """Point ids kept: the newest point of each of the last ``daily`` days that have one, of
    the last ``weekly`` ISO weeks and ``monthly`` months (in the studio's time zone), always the
    newest point, and never anything older than ``max_age_days``."""
    zone = zoneinfo.ZoneInfo(rules.timezone)
    oldest = now - dt.timedelta(days=rules.max_age_days)
    candidates = sorted(
        (p for p in points if p.taken_at >= oldest), key=lambda p: p.taken_at, reverse=True
    )
    kept: set[str] = set()
    for count, bucket in (
        (rules.daily, lambda d: d.date()),
        (rules.weekly, lambda d: d.isocalendar()[:2]),
        (rules.monthly, lambda d: (d.year, d.month)),
    ):
        seen: set[object] = set()
        for point in candidates:
            if len(seen) >= count:
                break
            key = bucket(point.taken_at.astimezone(zone))
            if key not in seen:
                seen.add(key)
                kept.add(point.point_id)
    if candidates:
        kept.add(candidates[0].point_id)  # whatever the rules say, the newest point stays
    return kept
