"""What the backups page shows: recovery points, the last drill, jobs, next runs, sizes.

Read from the tables the worker keeps, never from a repository: the page must open at once even
when an off-site repository is unreachable.
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from typing import Any

import msgspec

from appliance.backups import alerts, repositories
from appliance.backups.tables import BackupJob, DrillReport, RecoveryPointCopy, RepositorySample
from appliance.config import BackupSettings, Settings

__all__ = [
    "ChartSeries",
    "DrillView",
    "JobView",
    "NextRun",
    "Overview",
    "PointView",
    "SizeChart",
    "load_overview",
    "next_runs",
    "size_chart",
]

RECENT_JOBS = 25
CHART_DAYS = 90
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 640, 200, 8
_ERROR_SHOWN = 240
_DETAIL_SHOWN = 300
_PALETTE = ["#1f5fbf", "#1e6b35", "#b3261e", "#8a4fbf", "#c77700", "#007c89"]
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class PointView(msgspec.Struct, frozen=True):
    point_id: str
    taken_at: dt.datetime
    age: dt.timedelta
    objects: int
    size: int


class DrillCheck(msgspec.Struct, frozen=True):
    name: str
    ok: bool
    detail: str


class DrillView(msgspec.Struct, frozen=True):
    repository: str
    point_id: str
    started_at: dt.datetime
    finished_at: dt.datetime
    passed: bool
    rto_seconds: float
    rpo_seconds: float
    failure: str
    checks: list[DrillCheck]


class JobView(msgspec.Struct, frozen=True):
    id: int
    kind: str
    repository: str
    state: str
    attempts: int
    error: str
    created_at: dt.datetime
    finished_at: dt.datetime | None
    on_demand: bool


class NextRun(msgspec.Struct, frozen=True):
    kind: str
    at: dt.datetime  # in the schedule's time zone
    repositories: list[str]


class ChartSeries(msgspec.Struct, frozen=True):
    repository: str
    colour: str
    points: str  # "x,y x,y …" for an SVG polyline
    last_bytes: int


class SizeChart(msgspec.Struct, frozen=True):
    width: int
    height: int
    series: list[ChartSeries]
    max_bytes: int
    start: dt.datetime
    end: dt.datetime


class Overview(msgspec.Struct, frozen=True):
    points: dict[str, list[PointView]]
    failing: list[alerts.FailingCheck]
    drill: DrillView | None
    jobs: list[JobView]
    next_runs: list[NextRun]
    chart: SizeChart | None
    enabled: bool
    timezone: str


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _credentials(found: list[repositories.Target]) -> list[str]:
    """The secrets of the repositories: errors quote restic's output, which may name one."""
    values = []
    for target in found:
        values.append(target.repository.env.get("AWS_SECRET_ACCESS_KEY", ""))
        userinfo = target.repository.url.partition("//")[2].split("/", 1)[0]
        if "@" in userinfo:
            values.append(userinfo.rpartition("@")[0].partition(":")[2])
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def _redact(text: str, hidden: list[str]) -> str:
    for value in hidden:
        text = text.replace(value, "[redacted]")
    return text


def _next_at(local: dt.datetime, clock: str, weekday: str | None) -> dt.datetime:
    hour, minute = (int(x) for x in clock.split(":"))
    days = 0 if weekday is None else (_WEEKDAYS.index(weekday) - local.weekday()) % 7
    moment = (local + dt.timedelta(days=days)).replace(
        hour=hour, minute=minute, second=0, microsecond=0
    )
    if moment <= local:
        moment += dt.timedelta(days=1 if weekday is None else 7)
    return moment


def next_runs(now: dt.datetime, settings: BackupSettings, names: list[str]) -> list[NextRun]:
    """The next scheduled backup, check, prune and drill, in the schedule's time zone.

    Drills take turns like :func:`jobs.due_slots`: the repository is chosen by ISO week.
    """
    local = now.astimezone(zoneinfo.ZoneInfo(settings.timezone))
    primary = names[:1]
    drill_at = _next_at(local, settings.drill_at, settings.drill_weekday)
    week = drill_at.isocalendar()[1]
    runs = [
        NextRun("backup", _next_at(local, settings.daily_at, None), primary),
        NextRun("check", _next_at(local, settings.check_at, None), names),
        NextRun("prune", _next_at(local, settings.prune_at, settings.prune_weekday), names),
        NextRun("drill", drill_at, [names[week % len(names)]] if names else []),
    ]
    return sorted(runs, key=lambda run: run.at)


def size_chart(rows: list[dict[str, Any]], now: dt.datetime) -> SizeChart | None:
    """Repository sizes over the last ``CHART_DAYS`` as SVG polylines, one a repository."""
    if not rows:
        return None
    start = min(now - dt.timedelta(days=CHART_DAYS), min(r["at"] for r in rows))
    span = max((now - start).total_seconds(), 1.0)
    top = max(max(r["stored_bytes"] for r in rows), 1)
    inner_w, inner_h = CHART_WIDTH - 2 * CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD
    by_repository: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: r["at"]):
        by_repository.setdefault(row["repository"], []).append(row)
    series = []
    for index, (name, samples) in enumerate(sorted(by_repository.items())):
        coordinates = []
        for sample in samples:
            x = CHART_PAD + inner_w * (sample["at"] - start).total_seconds() / span
            y = CHART_PAD + inner_h * (1 - sample["stored_bytes"] / top)
            coordinates.append(f"{x:.1f},{y:.1f}")
        if len(coordinates) == 1:  # one sample: a flat line to now, so it can be seen
            coordinates.append(f"{CHART_PAD + inner_w:.1f},{coordinates[0].split(',')[1]}")
        series.append(
            ChartSeries(
                repository=name,
                colour=_PALETTE[index % len(_PALETTE)],
                points=" ".join(coordinates),
                last_bytes=samples[-1]["stored_bytes"],
            )
        )
    return SizeChart(CHART_WIDTH, CHART_HEIGHT, series, top, start, now)


def _detail(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return _shorten(text, _DETAIL_SHOWN)


def _drill(row: dict[str, Any] | None) -> DrillView | None:
    if row is None:
        return None
    report = row["report"] if isinstance(row["report"], dict) else {}
    checks = [
        DrillCheck(
            name=str(item.get("check", "")),
            ok=bool(item.get("ok")),
            detail=_detail(item.get("detail", "")),
        )
        for item in report.get("checks", [])
        if isinstance(item, dict)
    ]
    return DrillView(
        repository=row["repository"],
        point_id=row["point_id"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        passed=row["passed"],
        rto_seconds=row["rto_seconds"],
        rpo_seconds=row["rpo_seconds"],
        failure=_shorten(str(report.get("failure", "")), _ERROR_SHOWN * 2),
        checks=checks,
    )


async def load_overview(settings: Settings, now: dt.datetime) -> Overview:
    found = await repositories.targets(settings)
    names = [t.name for t in found]
    hidden = _credentials(found)
    point_rows = (
        await RecoveryPointCopy.select()
        .order_by(RecoveryPointCopy.repository)
        .order_by(RecoveryPointCopy.taken_at, ascending=False)
        .limit(1000)
        .run()
    )
    points: dict[str, list[PointView]] = {name: [] for name in names}
    for row in point_rows:
        points.setdefault(row["repository"], []).append(
            PointView(
                point_id=row["point_id"],
                taken_at=row["taken_at"],
                age=now - row["taken_at"],
                objects=row["object_count"],
                size=row["object_bytes"],
            )
        )
    drill_row = (
        await DrillReport.select()
        .order_by(DrillReport.finished_at, ascending=False)
        .output(load_json=True)
        .first()
        .run()
    )
    job_rows = (
        await BackupJob.select()
        .where(BackupJob.kind != "watch")
        .order_by(BackupJob.id, ascending=False)
        .limit(RECENT_JOBS)
        .run()
    )
    jobs = [
        JobView(
            id=row["id"],
            kind=row["kind"],
            repository=row["repository"],
            state=row["state"],
            attempts=row["attempts"],
            error=_shorten(_redact(row["error"], hidden), _ERROR_SHOWN),
            created_at=row["created_at"],
            finished_at=row["finished_at"],
            on_demand=row["requested_by"] is not None,
        )
        for row in job_rows
    ]
    samples = (
        await RepositorySample.select()
        .where(RepositorySample.at >= now - dt.timedelta(days=CHART_DAYS))
        .order_by(RepositorySample.at)
        .run()
    )
    failing = [
        msgspec.structs.replace(check, message=_redact(check.message, hidden))
        for check in await alerts.failing()
    ]
    return Overview(
        points=points,
        failing=failing,
        drill=_drill(drill_row),
        jobs=jobs,
        next_runs=next_runs(now, settings.backups, names),
        chart=size_chart(samples, now),
        enabled=settings.backups.enabled,
        timezone=settings.backups.timezone,
    )
