"""Times typed in the studio's zone: read as UTC, refused clearly when they cannot be meant."""

from __future__ import annotations

import datetime as dt

import pytest

from appliance.errors import InvalidInput
from appliance.localtime import (
    clean_zone,
    format_day,
    format_duration,
    format_local,
    local_input,
    parse_local_time,
)
from appliance.validation import MAX_ID, clean_multiline, parse_count, parse_id


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
    """Counts are ASCII digits, with a tilde for an estimate; other digits are refused."""
    assert parse_count("~1.200", field="n", maximum=10**9) == 1200
    assert parse_count(" 3 000 ", field="n", maximum=10**9) == 3000
    assert parse_count("", field="n", maximum=10) is None
    for bad in ("²", "١٢", "12abc", "-5", "1e9", "99999999999999"):
        with pytest.raises(InvalidInput):
            parse_count(bad, field="n", maximum=10**9)


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("1500", 1500),
        ("1.500", 1500),
        ("1,500", 1500),
        ("1'500", 1500),
        ("1 500", 1500),
        ("1\u202f500", 1500),
        ("12.345.678", 12_345_678),
        ("999,999,999,999", 999_999_999_999),
        ("007", 7),
    ],
)
def test_thousands_separators_are_read_in_groups_of_three(text: str, number: int) -> None:
    """One kind of separator between groups of three digits: English, German, Swiss."""
    assert parse_count(text, field="n", maximum=10**12) == number


@pytest.mark.parametrize(
    "text",
    ["1.5", "1,5", "1.50", "1.5000", "1.500,000", ".500", "1.500.", "1..500", "1.000.000.000.000"],
)
def test_separators_that_do_not_group_thousands_are_refused(text: str) -> None:
    """ "1.5" is refused, not read as 15; mixed separators and stray ones too."""
    with pytest.raises(InvalidInput) as refused:
        parse_count(text, field="people_count", maximum=10**12)
    assert refused.value.field == "people_count"
    assert "Enter a whole number up to 1,000,000,000,000" in refused.value.message


def test_a_count_above_its_maximum_is_refused() -> None:
    """The maximum is part of the message, so the person knows what fits."""
    assert parse_count("1.000", field="n", maximum=1000) == 1000
    with pytest.raises(InvalidInput) as refused:
        parse_count("1.001", field="n", maximum=1000)
    assert "up to 1,000" in refused.value.message


@pytest.mark.parametrize(("text", "number"), [("1", 1), (" 42 ", 42), (str(MAX_ID), 2**31 - 1)])
def test_ids_are_positive_ascii_numbers(text: str, number: int) -> None:
    """An id as a form sends it is read as a number."""
    assert parse_id(text, field="id") == number


@pytest.mark.parametrize(
    "text", ["", "0", "-1", "+1", "1.0", "1e3", "²", "\u0661", "1²", str(2**31), "9" * 40, "x"]
)
def test_ids_outside_a_database_integer_are_refused(text: str) -> None:
    """Zero, signs, other digits and numbers past 2**31 - 1 get a message naming the field."""
    with pytest.raises(InvalidInput) as refused:
        parse_id(text, field="people")
    assert refused.value.field == "people"
    assert "is not a valid id" in refused.value.message


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
        (71 * 3600 + 59 * 60, "71 h 59 min"),
        (99 * 3600 + 59 * 60, "99 h 59 min"),
        (100 * 3600, "4 days 4 h"),
        (5 * 86400 + 3 * 3600 + 59 * 60, "5 days 3 h"),
    ],
)
def test_durations_read_in_one_shape_cut_to_the_minute(seconds: float, shown: str) -> None:
    """Past a minute the seconds are cut; hours below 100, then days and hours."""
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
        (2 * 86400 + 3 * 3600, "51 h 0 min"),
        (5 * 86400 + 3 * 3600 + 5, "5 days 3 h 0 min 5 s"),
    ],
)
def test_exact_durations_keep_their_seconds(seconds: float, shown: str) -> None:
    """The SLA figures keep seconds so that they add up to the budget."""
    assert format_duration(seconds, exact=True) == shown


@pytest.mark.parametrize(
    ("seconds", "exact", "shown"),
    [
        (45, False, "45 s"),
        (3 * 3600 + 5 * 60, False, "3 h 5 min"),
        (99 * 3600 + 59 * 60, False, "99 h 59 min"),
        (100 * 3600, False, "4 Tage 4 h"),
        (5 * 86400 + 3 * 3600 + 59 * 60, False, "5 Tage 3 h"),
        (5 * 86400 + 3 * 3600 + 5, True, "5 Tage 3 h 0 min 5 s"),
    ],
)
def test_durations_read_in_german_name_days_tage(seconds: float, exact: bool, shown: str) -> None:
    """German shares the shape and the units h, min and s; days (never fewer than four,
    as they start at 100 hours) are "Tage"."""
    assert format_duration(seconds, exact=exact, language="de") == shown


def test_durations_in_a_language_without_words_read_in_english() -> None:
    """A language the appliance has no words for gets the English duration."""
    assert format_duration(5 * 86400, language="fr") == "5 days 0 h"


ENGLISH_MONTHS = (
    "January February March April May June July August September October November December"
)
GERMAN_MONTHS = "Januar Februar März April Mai Juni Juli August September Oktober November Dezember"


@pytest.mark.parametrize("month", range(1, 13))
def test_days_are_named_with_the_month_in_the_readers_language(month: int) -> None:
    """Every month by name: "5 March 2026" in English, "5. März 2026" in German."""
    day = dt.date(2026, month, 5)
    assert format_day(day) == f"5 {ENGLISH_MONTHS.split()[month - 1]} 2026"
    assert format_day(day, "en") == format_day(day)
    assert format_day(day, "de") == f"5. {GERMAN_MONTHS.split()[month - 1]} 2026"


def test_days_have_no_leading_zero_and_fall_back_to_english() -> None:
    """Two-digit days stay whole, one-digit days get no zero; another language reads English."""
    assert format_day(dt.date(2026, 12, 25), "de") == "25. Dezember 2026"
    assert format_day(dt.date(2027, 1, 1), "de") == "1. Januar 2027"
    assert format_day(dt.date(2026, 10, 3), "fr") == "3 October 2026"
