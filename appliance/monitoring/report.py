"""The monthly SLA report: uptime of every component and overall against the target, the
downtime budget, announced maintenance and each outage, as PDF and as CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io

import msgspec

from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.errors import InvalidInput
from appliance.localtime import format_duration, format_utc
from appliance.monitoring import components
from appliance.monitoring.uptime import (
    OVERALL,
    Budget,
    Maintenance,
    Record,
    Uptime,
    budget,
    intersect,
    load_record,
    month_bounds,
    parse_month,
    subtract,
    union,
)
from appliance.web.pdf import Report

__all__ = [
    "CSV_COLUMNS",
    "FORMATS",
    "MonthReport",
    "Outage",
    "ReportFile",
    "ReportRow",
    "build_month_report",
    "export_month_report",
    "month_name",
    "report_csv",
    "report_month",
    "report_pdf",
]

CSV_COLUMNS = (
    "component",
    "label",
    "uptime_percent",
    "target_percent",
    "met",
    "measured_seconds",
    "down_seconds",
    "maintenance_seconds",
    "degraded_seconds",
    "unknown_seconds",
    "not_measured_seconds",
)


FORMATS = {"pdf": "application/pdf", "csv": "text/csv"}  # Litestar adds the charset to text


class ReportRow(msgspec.Struct, frozen=True):
    component: str
    label: str
    uptime: Uptime
    met: bool | None


class Outage(msgspec.Struct, frozen=True):
    """One stretch a component was down within the month, and how much of it maintenance
    covered."""

    component: str
    label: str
    start: dt.datetime
    end: dt.datetime
    ongoing: bool
    counted: float
    maintenance: float


class MonthReport(msgspec.Struct, frozen=True, kw_only=True):
    year: int
    month: int
    start: dt.datetime
    end: dt.datetime
    created_at: dt.datetime
    target_percent: float
    overall: ReportRow
    rows: list[ReportRow]
    budget: Budget
    maintenance: list[Maintenance]
    outages: list[Outage]
    studio: str = ""

    @property
    def name(self) -> str:
        return month_name(self.year, self.month)

    @property
    def running(self) -> bool:
        """The month has not ended: it is reported so far, and judged only when it ends."""
        return self.created_at < self.end


def month_name(year: int, month: int) -> str:
    return dt.date(year, month, 1).strftime("%B %Y")


def _row(
    record: Record, component: str, start: dt.datetime, end: dt.datetime, target: float
) -> ReportRow:
    figures = record.uptime(component, start, end)
    name = "Overall" if component == OVERALL else components.label(component)
    return ReportRow(component=component, label=name, uptime=figures, met=figures.met(target))


def _outages(record: Record, start: dt.datetime, end: dt.datetime) -> list[Outage]:
    period = [(start, min(end, record.now))]
    found = []
    for span in record.spans:
        if span.state != "down":
            continue
        cut = intersect([(span.start, span.end or record.now)], period)
        if not cut:
            continue
        windows = union((m.start, m.end) for m in record.maintenance if m.covers(span.component))
        counted = sum((b - a).total_seconds() for a, b in subtract(cut, windows))
        total = sum((b - a).total_seconds() for a, b in cut)
        found.append(
            Outage(
                component=span.component,
                label=components.label(span.component),
                start=cut[0][0],
                end=cut[-1][1],
                ongoing=span.end is None,
                counted=counted,
                maintenance=total - counted,
            )
        )
    return sorted(found, key=lambda outage: (outage.start, outage.component))


async def build_month_report(
    year: int, month: int, *, now: dt.datetime, target_percent: float, studio: str = ""
) -> MonthReport:
    """The figures of one calendar month (UTC), up to ``now`` when it is the current one."""
    start, end = month_bounds(year, month)
    record = await load_record(min(now, end), start)
    keys = record.components
    overall = _row(record, OVERALL, start, end, target_percent)
    return MonthReport(
        year=year,
        month=month,
        start=start,
        end=end,
        created_at=now,
        target_percent=target_percent,
        overall=overall,
        rows=[_row(record, key, start, end, target_percent) for key in keys],
        budget=budget(target_percent, start, end, overall.uptime.down),
        maintenance=[m for m in record.maintenance if m.start < end and m.end > start],
        outages=_outages(record, start, end),
        studio=studio,
    )


def _percent(figures: Uptime, digits: int) -> str:
    value = figures.percent
    return "" if value is None else f"{value:.{digits}f}"


def _met(row: ReportRow, running: bool) -> str:
    if row.met is None:
        return "not measured"
    if running:
        return "so far met" if row.met else "so far below"
    return "met" if row.met else "missed"


def _cell(text: str) -> str:
    # A spreadsheet runs a cell that starts with one of these as a formula.
    return f"'{text}" if text[:1] in {"=", "+", "-", "@", "\t", "\r"} else text


def report_csv(report: MonthReport) -> str:
    """One row per component, overall first; seconds exact, the percentage to 6 places."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in (report.overall, *report.rows):
        u = row.uptime
        writer.writerow(
            [
                _cell(row.component),
                _cell(row.label),
                _percent(u, 6),
                f"{report.target_percent:g}",
                _met(row, report.running),
                f"{u.measured:.0f}",
                f"{u.down:.0f}",
                f"{u.maintenance:.0f}",
                f"{u.degraded:.0f}",
                f"{u.unknown:.0f}",
                f"{u.not_measured:.0f}",
            ]
        )
    return out.getvalue()


def report_pdf(report: MonthReport) -> bytes:
    """The report as a PDF for the studio's records or a client who asks."""
    subtitle = f"{report.studio} - " if report.studio else ""
    pdf = Report(
        f"Availability report {report.name}",
        subtitle=f"{subtitle}{format_utc(report.start)} to "
        + (
            f"{format_utc(report.created_at)} (month not over)"
            if report.running
            else format_utc(report.end)
        ),
        created_at=report.created_at,
    )
    overall = report.overall
    pdf.fields(
        [
            ("Target", f"{report.target_percent:g}% available"),
            ("Overall availability", f"{_percent(overall.uptime, 3) or '-'}%"),
            ("Result", _met(overall, report.running)),
            ("Downtime counted", format_duration(overall.uptime.down, exact=True)),
            ("Downtime allowed", format_duration(report.budget.allowed, exact=True)),
            ("Budget left", format_duration(report.budget.left, exact=True)),
            ("Announced maintenance", format_duration(overall.uptime.maintenance, exact=True)),
            ("Not watched", format_duration(overall.uptime.unknown, exact=True)),
            ("Not measured", format_duration(overall.uptime.not_measured, exact=True)),
        ]
    )
    pdf.paragraph(
        "Overall is down while the website, the database or the photo storage is down. "
        "Downtime during announced maintenance is shown but not counted; time nothing watched "
        "the appliance, and time before its first check, is left out of the measured time."
    )
    pdf.heading("Components")
    pdf.table(
        ["Component", "Available", "Result", "Down", "Maintenance", "Degraded", "Not watched"],
        [
            [
                row.label,
                f"{_percent(row.uptime, 3)}%" if row.uptime.percent is not None else "-",
                _met(row, report.running),
                format_duration(row.uptime.down, exact=True),
                format_duration(row.uptime.maintenance, exact=True),
                format_duration(row.uptime.degraded, exact=True),
                format_duration(row.uptime.unknown, exact=True),
            ]
            for row in report.rows
        ],
    )
    pdf.heading("Announced maintenance")
    if report.maintenance:
        pdf.table(
            ["Title", "From", "To", "Components"],
            [
                [
                    m.title,
                    format_utc(m.start),
                    format_utc(m.end),
                    ", ".join(components.label(c) for c in m.components) or "All",
                ]
                for m in report.maintenance
            ],
        )
    else:
        pdf.paragraph("None.")
    pdf.heading("Outages")
    if report.outages:
        pdf.table(
            ["Component", "From", "To", "Counted", "In maintenance"],
            [
                [
                    o.label,
                    format_utc(o.start),
                    "ongoing" if o.ongoing else format_utc(o.end),
                    format_duration(o.counted, exact=True),
                    format_duration(o.maintenance, exact=True),
                ]
                for o in report.outages
            ],
        )
    else:
        pdf.paragraph("None.")
    return pdf.output()


# --- the download ------------------------------------------------------------------------------


class ReportFile(msgspec.Struct, frozen=True):
    body: bytes
    media_type: str
    filename: str


def report_month(text: str | None, now: dt.datetime) -> tuple[int, int]:
    """The (year, month) an admin asked for as ``YYYY-MM``, or a message saying what is wrong."""
    value = (text or "").strip()
    if not value:
        raise InvalidInput("Choose a month.", field="month")
    found = parse_month(value, now)
    if found is not None:
        return found
    if len(value) == 7 and value.isascii() and value[:4].isdigit() and value[5:].isdigit():
        if not 1 <= int(value[5:]) <= 12:
            raise InvalidInput("There is no such month: use 01 to 12.", field="month")
        if (int(value[:4]), int(value[5:])) > (now.year, now.month):
            raise InvalidInput("That month has not begun yet.", field="month")
        raise InvalidInput("Reports start in the year 2000.", field="month")
    raise InvalidInput("Give the month as YYYY-MM, for example 2026-11.", field="month")


async def export_month_report(
    month: str | None,
    fmt: str | None,
    *,
    target_percent: float,
    studio: str,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> ReportFile:
    """The SLA report of ``month`` (``YYYY-MM``) as ``fmt`` (pdf or csv); the download is
    audit-logged."""
    kind = (fmt or "pdf").strip().lower()
    if kind not in FORMATS:
        raise InvalidInput("Choose PDF or CSV.", field="format")
    year, number = report_month(month, now)
    report = await build_month_report(
        year, number, now=now, target_percent=target_percent, studio=studio
    )
    body = report_pdf(report) if kind == "pdf" else report_csv(report).encode()
    await audit.record(
        "monitoring.sla_report",
        actor=actor,
        target=f"{year:04d}-{number:02d}",
        address=address,
        details={"format": kind},
        at=now,
    )
    return ReportFile(
        body=body,
        media_type=FORMATS[kind],
        filename=f"availability-{year:04d}-{number:02d}.{kind}",
    )
