"""Times typed in the studio's zone: read as UTC, refused clearly when they cannot be meant."""

from __future__ import annotations

import datetime as dt

import pytest

from appliance.errors import InvalidInput
from appliance.localtime import (
    clean_zone,
    format_duration,
    format_local,
    local_input,
    parse_local_time,
)
from appliance.validation import clean_multiline, parse_count


def test_a_local_time_is_read_in_its_zone() -> None:
    winter = parse_local_time("2026-12-01T14:00", "Europe/Berlin", field="t")
    assert winter == dt.datetime(2026, 12, 1, 13, 0, tzinfo=dt.UTC)
    summer = parse_local_time("2026-07-01 14:00", "Europe/Berlin", field="t")
    assert summer == dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)
    explicit = parse_local_time("2026-07-01T14:00+05:00", "Europe/Berlin", field="t")
    assert explicit == dt.datetime(2026, 7, 1, 9, 0, tzinfo=dt.UTC)
    assert parse_local_time("2026-07-01T14:00Z", "Europe/Berlin", field="t").hour == 14


@pytest.mark.parametrize(
    ("text", "zone", "says"),
    [
        ("", "UTC", "Enter a date"),
        ("tomorrow", "UTC", "YYYY-MM-DD"),
        ("2026-02-30T10:00", "UTC", "does not exist"),
        ("2026-03-29T02:30", "Europe/Berlin", "clocks skip"),
        ("0001-01-01T00:00", "Europe/Berlin", "between 2000"),
        ("0001-01-01T00:00+05:00", "UTC", "between 2000"),
        ("9999-12-31T23:30", "America/New_York", "between 2000"),
        ("２０２６-01-01T00:00", "UTC", "YYYY-MM-DD"),  # noqa: RUF001 - full-width digits
        ("2026-01-01T00:00\x00", "UTC", "YYYY-MM-DD"),
        ("2026-01-01T00:00" + "0" * 5000, "UTC", "YYYY-MM-DD"),
    ],
)
def test_impossible_times_are_refused_with_a_reason(text: str, zone: str, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_local_time(text, zone, field="detected_at")
    assert says in str(caught.value) and caught.value.field == "detected_at"


def test_times_read_back_as_typed_and_shown_with_utc() -> None:
    moment = dt.datetime(2026, 12, 1, 13, 0, tzinfo=dt.UTC)
    assert format_local(moment, "Europe/Berlin") == "2026-12-01 14:00 CET (13:00 UTC)"
    assert format_local(moment, "UTC") == "2026-12-01 13:00 UTC"
    assert local_input(moment, "Europe/Berlin") == "2026-12-01T14:00"
    assert format_local(moment, "No/Such_Zone") == "2026-12-01 13:00 UTC (13:00 UTC)"


def test_zone_names() -> None:
    assert clean_zone(" ") == "UTC"
    assert clean_zone("Europe/Berlin") == "Europe/Berlin"
    for bad in ("Mars/Base", "../../etc/passwd", "x" * 200, "Europe/Berlin\x00"):
        with pytest.raises(InvalidInput):
            clean_zone(bad)


def test_counts_take_ascii_digits_only() -> None:
    assert parse_count("~1.200", field="n", maximum=10**9) == 1200
    assert parse_count(" 3 000 ", field="n", maximum=10**9) == 3000
    assert parse_count("", field="n", maximum=10) is None
    for bad in ("²", "١٢", "12abc", "-5", "1e9", "99999999999999"):
        with pytest.raises(InvalidInput):
            parse_count(bad, field="n", maximum=10**9)


def test_multiline_text_keeps_lines_and_refuses_control_characters() -> None:
    assert clean_multiline(" a\r\nb\tc ", field="f", max_length=10) == "a\nb\tc"
    with pytest.raises(InvalidInput):
        clean_multiline("a\x00b", field="f", max_length=10)
    with pytest.raises(InvalidInput):
        clean_multiline("x" * 11, field="f", max_length=10)
    with pytest.raises(InvalidInput):
        clean_multiline(" ", field="f", max_length=10, required=True)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "0 s"),
        (0, "0 s"),
        (45.9, "45 s"),
        (60, "1 min"),
        (45 * 60 + 59, "45 min"),
        (3 * 3600 + 5 * 60 + 30, "3 h 5 min"),
        (3600, "1 h 0 min"),
        (47 * 3600 + 59 * 60, "47 h 59 min"),
        (48 * 3600, "2 days 0 h"),
        (4 * 86400 + 3 * 3600 + 59 * 60, "4 days 3 h"),
    ],
)
def test_durations_read_in_one_shape_cut_to_the_minute(seconds: float, shown: str) -> None:
    """Past a minute the seconds are cut; hours up to two days, then days and hours."""
    assert format_duration(seconds) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0 s"),
        (0.6, "1 s"),
        (43 * 60 + 12, "43 min 12 s"),
        (43 * 60, "43 min"),
        (3600, "1 h 0 min"),
        (3600 + 7, "1 h 0 min 7 s"),
        (2 * 86400 + 3 * 3600, "2 days 3 h 0 min"),
        (2 * 86400 + 3 * 3600 + 5, "2 days 3 h 0 min 5 s"),
    ],
)
def test_exact_durations_keep_their_seconds(seconds: float, shown: str) -> None:
    """The SLA figures keep seconds so that they add up to the budget."""
    assert format_duration(seconds, exact=True) == shown
