"""The uptime bars as inline SVG, drawn on the server: one bar per day, no script, no styles.

Colours are SVG presentation attributes (not ``style``), which the Content-Security-Policy
allows; every bar carries a ``<title>`` with its date and figures, and the chart as a whole an
``aria-label``, so the bars read without colour and without a pointer.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from appliance.localtime import format_duration
from appliance.monitoring.uptime import Day, Uptime

__all__ = [
    "BAR_GAP",
    "BAR_WIDTH",
    "COLOURS",
    "HEIGHT",
    "day_colour",
    "day_text",
    "percent",
    "uptime_bars",
]

BAR_WIDTH = 6
BAR_GAP = 2
HEIGHT = 32
COLOURS = {
    "up": "#1e8e3e",
    "degraded": "#d68a00",
    "maintenance": "#1f5fbf",
    "minor": "#e8710a",  # down, but for under 1% of the day
    "down": "#c5221f",
    "unknown": "#c4c4cc",
}


def percent(figures: Uptime, digits: int = 2) -> str:
    """``99.95%``, or "no data" when nothing was measured."""
    value = figures.percent
    if value is None:
        return "no data"
    # Never round a day with downtime up to a clean 100%.
    text = f"{value:.{digits}f}"
    if figures.down > 0 and text.startswith("100"):
        text = f"{100 - 10**-digits:.{digits}f}"
    return f"{text}%"


def day_colour(day: Day) -> str:
    if day.state == "down" and (day.uptime.ratio or 0) >= 0.99:
        return COLOURS["minor"]
    return COLOURS[day.state]


def day_text(day: Day) -> str:
    """What a bar says: the date, the uptime, and what else happened that day."""
    figures = day.uptime
    if day.state == "unknown":
        return f"{day.date.isoformat()}: no data"
    parts = [f"{day.date.isoformat()}: {percent(figures)} up"]
    if figures.down:
        parts.append(f"down {format_duration(figures.down, exact=True)}")
    if figures.maintenance:
        parts.append(f"maintenance {format_duration(figures.maintenance, exact=True)}")
    if figures.degraded:
        parts.append(f"degraded {format_duration(figures.degraded, exact=True)}")
    if figures.unknown:
        parts.append(f"not watched {format_duration(figures.unknown, exact=True)}")
    return ", ".join(parts)


def uptime_bars(days: Sequence[Day], label: str) -> Markup:
    """An ``<svg>`` with one ``<rect>`` per day, the oldest on the left."""
    width = len(days) * (BAR_WIDTH + BAR_GAP) - BAR_GAP if days else BAR_WIDTH
    bars = []
    for index, day in enumerate(days):
        x = index * (BAR_WIDTH + BAR_GAP)
        bars.append(
            f'<rect x="{x}" y="0" width="{BAR_WIDTH}" height="{HEIGHT}" rx="1" '
            f'fill="{day_colour(day)}" data-state="{day.state}" '
            f'data-date="{day.date.isoformat()}"><title>{escape(day_text(day))}</title></rect>'
        )
    # Every value in the markup is a number, a fixed word or escaped above.
    return Markup(  # noqa: S704
        f'<svg xmlns="http://www.w3.org/2000/svg" class="uptime-bars" '
        f'viewBox="0 0 {width} {HEIGHT}" width="{width}" height="{HEIGHT}" '
        f'preserveAspectRatio="none" role="img" aria-label="{escape(label)}">'
        f"{''.join(bars)}</svg>"
    )
