"""The Art. 12(3) deadline: one calendar month from receipt, extendable once by two months.

Periods in months are counted as Regulation (EEC, Euratom) No 1182/71 Art. 3 counts them: the
day of receipt is not counted, and the period ends at the end of the day with the same date in
the month it ends in, or at the end of that month's last day when it has no such date (received
31 January: due 28 or 29 February). Days are the studio's calendar days, in its time zone.
The deadline is never pushed past a weekend or a holiday: earlier is always safe.
"""

from __future__ import annotations

import calendar
import datetime as dt

from appliance.localtime import zone

__all__ = [
    "ANSWER_MONTHS",
    "EXTENSION_MONTHS",
    "add_months",
    "alert_at",
    "due_date",
    "end_of_day",
    "extended_deadline",
    "first_deadline",
    "last_day",
]

ANSWER_MONTHS = 1
EXTENSION_MONTHS = 2


def add_months(day: dt.date, months: int) -> dt.date:
    """The same date ``months`` later, or the last day of that month when it is shorter."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return dt.date(year, month + 1, min(day.day, last))


def end_of_day(day: dt.date, zone_name: str) -> dt.datetime:
    """The instant (UTC) at which ``day`` ends in ``zone_name``: the next day's local midnight."""
    local = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=zone(zone_name))
    return local.astimezone(dt.UTC)


def due_date(received_at: dt.datetime, zone_name: str) -> dt.date:
    """The last day to answer a request received at ``received_at``, in the studio's calendar."""
    received_on = received_at.astimezone(zone(zone_name)).date()
    return add_months(received_on, ANSWER_MONTHS)


def first_deadline(received_at: dt.datetime, zone_name: str) -> dt.datetime:
    """When the month for answering ends, as a UTC instant."""
    return end_of_day(due_date(received_at, zone_name), zone_name)


def last_day(deadline_at: dt.datetime, zone_name: str) -> dt.date:
    """The last day to answer: the day, in ``zone_name``, of the instant before the deadline.

    The microsecond is taken off in UTC: Python subtracts from a local time in wall-clock
    terms, and where the clocks go forward at midnight (Atlantic/Azores, America/Santiago) the
    deadline's local time is 01:00, so a microsecond before it would still be the next day."""
    return (deadline_at - dt.timedelta(microseconds=1)).astimezone(zone(zone_name)).date()


def extended_deadline(deadline_at: dt.datetime, zone_name: str) -> dt.datetime:
    """The deadline moved by the two further months of Art. 12(3), counted from the last day
    of the first month (the earlier of the two readings of "two further months")."""
    return end_of_day(add_months(last_day(deadline_at, zone_name), EXTENSION_MONTHS), zone_name)


def alert_at(deadline_at: dt.datetime, days_before: int) -> dt.datetime:
    """When the "due soon" alert becomes due."""
    return deadline_at - dt.timedelta(days=days_before)
