"""Times people type and read in the studio's time zone; stored and compared in UTC.

Browsers send ``datetime-local`` values (``2026-12-01T14:00``) without a zone; they are read in
the zone the form names, refused when that wall-clock time does not exist (skipped by a
daylight-saving change) or lies outside the years a studio could mean.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

from appliance.errors import InvalidInput

__all__ = [
    "clean_zone",
    "format_day",
    "format_duration",
    "format_local",
    "format_utc",
    "local_input",
    "parse_local_time",
    "zone",
]

_LOCAL_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2})?$")
_OFFSET = re.compile(r"(?:Z|[+-][0-9]{2}:?[0-9]{2})$")
# Earlier or later years are typing mistakes; refusing them also keeps every conversion away
# from the ends of the datetime range, where astimezone overflows.
FIRST_YEAR, LAST_YEAR = 2000, 2200
# Month names in code rather than strftime's %B, which follows the process's locale.
_MONTHS = {
    "en": (
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ),
    "de": (
        "Januar", "Februar", "März", "April", "Mai", "Juni",
        "Juli", "August", "September", "Oktober", "November", "Dezember",
    ),
}  # fmt: skip
# Only the day unit differs between the languages e-mails are written in; "h", "min" and "s"
# read the same in both.
_DAYS = {"en": "days", "de": "Tage"}


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The zone named ``name``; UTC when the name is unknown (a stored value from before)."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def clean_zone(value: str, *, field: str = "timezone") -> str:
    """An IANA zone name as typed; empty means UTC."""
    name = value.strip() or "UTC"
    try:
        zoneinfo.ZoneInfo(name[:65])  # a name past 64 characters is none, and not looked up
        known = len(name) <= 64
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        known = False
    if not known:
        raise InvalidInput(
            f"Unknown time zone {name[:64]!r}; use a name such as Europe/Berlin or UTC.",
            field=field,
        )
    return name


def parse_local_time(value: str, zone_name: str, *, field: str) -> dt.datetime:
    """``value`` (``YYYY-MM-DD HH:MM``, or ISO 8601 with an offset) as an aware UTC time,
    reading a time without an offset in ``zone_name``."""
    text = value.strip()
    if not text:
        raise InvalidInput("Enter a date and time.", field=field)
    offset = _OFFSET.search(text) if len(text) <= 40 else None
    plain = text[: offset.start()] if offset else text
    if not _LOCAL_TIME.match(plain):
        raise InvalidInput(
            "Enter the date and time as YYYY-MM-DD HH:MM, e.g. 2026-11-29 14:05.", field=field
        )
    try:
        moment = dt.datetime.fromisoformat(text.replace(" ", "T", 1).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput("This date does not exist.", field=field) from None
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise InvalidInput(f"Enter a year between {FIRST_YEAR} and {LAST_YEAR}.", field=field)
    if moment.tzinfo is not None:
        return moment.astimezone(dt.UTC)
    local = moment.replace(tzinfo=zone(zone_name))
    # A wall-clock time skipped by a daylight-saving change does not survive the round trip.
    if local.astimezone(dt.UTC).astimezone(local.tzinfo).replace(tzinfo=None) != moment:
        raise InvalidInput(
            f"This time does not exist in {zone_name} (the clocks skip it).", field=field
        )
    return local.astimezone(dt.UTC)


def format_utc(moment: dt.datetime) -> str:
    """``2026-11-29 14:05 UTC``: times in alerts, probe details and reports; converted, so a
    time read back in another zone is still shown as UTC."""
    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"


def format_day(day: dt.date, language: str = "en") -> str:
    """A calendar day for people: "5 March 2026", in German "5. März 2026"; English for a
    language without month names here."""
    if language == "de":
        return f"{day.day}. {_MONTHS['de'][day.month - 1]} {day.year}"
    return f"{day.day} {_MONTHS['en'][day.month - 1]} {day.year}"


def format_duration(seconds: float, *, exact: bool = False, language: str = "en") -> str:
    """A duration for people, in one shape everywhere: "45 s", "12 min", "3 h 5 min" (below
    100 hours, so a 72-hour deadline reads in hours to its end), "4 days 3 h" (German "4 Tage
    3 h"; English for another language).

    Past a minute the seconds are dropped (cut, not rounded: a deadline never looks later than
    it is). ``exact`` keeps them, rounded, where the sum must add up (the SLA report: "43 min
    12 s" of a 99.9% month): "43 min 12 s", "1 h 0 min", "2 days 3 h 0 min 5 s".
    """
    whole = max(0, round(seconds) if exact else int(seconds))
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    if whole < 60:
        return f"{secs} s"
    if hours == 0:
        parts = [f"{minutes} min"]
    elif hours < 100:
        parts = [f"{hours} h", f"{minutes} min"]
    else:
        # Days start at 100 hours, so there are always at least four: never a singular.
        days, hours = divmod(hours, 24)
        unit = _DAYS.get(language, _DAYS["en"])
        parts = [f"{days} {unit}", f"{hours} h"] + ([f"{minutes} min"] if exact else [])
    if exact and secs:
        parts.append(f"{secs} s")
    return " ".join(parts)


def format_local(moment: dt.datetime, zone_name: str) -> str:
    """``2026-12-01 14:00 CET (13:00 UTC)``; ``2026-12-01 13:00 UTC`` when the zone is UTC."""
    utc = moment.astimezone(dt.UTC)
    local = moment.astimezone(zone(zone_name))
    if local.utcoffset() == dt.timedelta(0) and zone_name in ("UTC", "Etc/UTC"):
        return format_utc(utc)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()} ({utc:%H:%M} UTC)"


def local_input(moment: dt.datetime, zone_name: str) -> str:
    """The ``datetime-local`` value of ``moment`` in ``zone_name`` (a form shown again)."""
    return f"{moment.astimezone(zone(zone_name)):%Y-%m-%dT%H:%M}"
