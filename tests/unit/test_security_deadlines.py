"""The 72-hour deadline of the security-incident register: countdown texts, alert thresholds,
and the times and numbers people type."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from appliance.errors import InvalidInput
from appliance.localtime import zone
from appliance.privacy.people import default_notice
from appliance.privacy.service import (
    MAX_COUNT,
    NO_NOTICE,
    Incident,
    _alert_text,
    _due_threshold,
    _mail_context,
    countdown,
    parse_time,
    people_countdown,
)
from appliance.validation import parse_count
from appliance.web.pdf import Report

DETECTED = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)


def incident(**changes: object) -> Incident:
    base = Incident(
        id=7,
        kind="leak",
        title="Laptop stolen",
        description="",
        analysis="",
        measures="",
        status="open",
        detected_at=DETECTED,
        occurred_at=None,
        timezone="Europe/Berlin",
        personal_data=True,
        data_categories="",
        people_count=None,
        records_count=None,
        consequences="",
        risk="high",
        authority_notified_at=None,
        alerted_hours=0,
        closed_at=None,
        created_by=None,
        created_at=DETECTED,
        updated_at=DETECTED,
    )
    return msgspec.structs.replace(base, **changes)


def test_countdown_shows_hours_and_minutes_left() -> None:
    """30 h 48 min after detection, 41 h 12 min are left of the 72 hours."""
    timer = countdown(incident(), DETECTED + dt.timedelta(hours=30, minutes=48))
    assert timer is not None
    assert timer.text == "41 h 12 min left"
    assert timer.state == "running"
    assert timer.deadline == DETECTED + dt.timedelta(hours=72)


def test_countdown_says_how_long_it_is_overdue() -> None:
    """75 hours after detection without a notification, it is overdue by 3 h."""
    timer = countdown(incident(), DETECTED + dt.timedelta(hours=75))
    assert timer is not None
    assert timer.text == "overdue by 3 h 0 min"
    assert timer.state == "overdue"


def test_countdown_of_a_long_overdue_incident_counts_days() -> None:
    """Past 100 hours the text counts days."""
    timer = countdown(incident(), DETECTED + dt.timedelta(days=10))
    assert timer is not None and timer.text == "overdue by 7 days 0 h"


def test_countdown_stops_when_the_authority_was_notified() -> None:
    """A notification in time shows as met; a late one says how late, whatever the time now."""
    met = countdown(
        incident(authority_notified_at=DETECTED + dt.timedelta(hours=70)),
        DETECTED + dt.timedelta(days=30),
    )
    assert met is not None and (met.state, met.text) == ("met", "authority notified in time")
    late = countdown(
        incident(authority_notified_at=DETECTED + dt.timedelta(hours=80, minutes=30)),
        DETECTED + dt.timedelta(days=30),
    )
    assert late is not None
    assert (late.state, late.text) == ("late", "authority notified 8 h 30 min late")


def test_no_countdown_without_personal_data() -> None:
    """An incident without personal data has no deadline."""
    assert countdown(incident(personal_data=False), DETECTED) is None
    assert incident(personal_data=False).deadline is None


@pytest.mark.parametrize(
    ("elapsed", "alerted", "due"),
    [
        (dt.timedelta(hours=23, minutes=59), 0, None),
        (dt.timedelta(hours=24), 0, 24),
        (dt.timedelta(hours=30), 24, None),
        (dt.timedelta(hours=48), 24, 48),
        (dt.timedelta(hours=66), 48, 66),
        (dt.timedelta(hours=200), 66, None),
        # Recorded late or a worker that was down: only the latest threshold goes out.
        (dt.timedelta(hours=67), 0, 66),
    ],
)
def test_alert_thresholds(elapsed: dt.timedelta, alerted: int, due: int | None) -> None:
    """The alert due is the latest threshold passed that was not alerted before."""
    assert _due_threshold(incident(alerted_hours=alerted), DETECTED + elapsed) == due


NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def test_a_typed_time_is_read_in_its_zone() -> None:
    """A browser's datetime-local value is local time in the zone chosen."""
    moment = parse_time("2026-11-29T10:30", zone="Europe/Berlin", field="t", now=NOW)
    assert moment == dt.datetime(2026, 11, 29, 9, 30, tzinfo=dt.UTC)
    assert parse_time("2026-11-29 10:30", zone="UTC", field="t", now=NOW) == dt.datetime(
        2026, 11, 29, 10, 30, tzinfo=dt.UTC
    )
    assert parse_time("", zone="UTC", field="t", now=NOW, required=False) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-11-30T10:00", "in the future"),
        ("yesterday", "YYYY-MM-DD HH:MM"),
        ("2026-13-40T99:99", "does not exist"),
        ("0001-01-01T00:00", "year between"),
        ("9999-12-31T23:59", "year between"),
        ("0001-01-01T00:00+01:00", "year between"),
        ("\uff12\uff10\uff12\uff16-11-29T10:00", "YYYY-MM-DD HH:MM"),
        ("2" * 5000, "YYYY-MM-DD HH:MM"),
        ("", "Enter the date and time"),
    ],
)
def test_bad_times_are_refused_with_a_message(text: str, message: str) -> None:
    """Future, unparseable, enormous and missing times name the field and what is wrong."""
    with pytest.raises(InvalidInput) as refused:
        parse_time(text, zone="UTC", field="detected_at", now=NOW)
    assert message in refused.value.message
    assert refused.value.field == "detected_at"


def test_a_time_skipped_by_daylight_saving_is_refused() -> None:
    """02:30 on the last Sunday of March does not exist in Berlin."""
    with pytest.raises(InvalidInput) as refused:
        parse_time("2026-03-29T02:30", zone="Europe/Berlin", field="detected_at", now=NOW)
    assert "does not exist" in refused.value.message


@pytest.mark.parametrize(
    ("text", "number"),
    [("120", 120), ("1,200", 1200), ("1.200", 1200), ("~ 40", 40), ("", None), ("0", 0)],
)
def test_approximate_numbers(text: str, number: int | None) -> None:
    """Counts may carry thousands separators of English and German, or a tilde."""
    assert parse_count(text, field="people_count", maximum=MAX_COUNT) == number


@pytest.mark.parametrize("text", ["-3", "1.5", "lots", "9" * 11, "12e3", "²", "١٢", "1²"])
def test_numbers_that_are_not_counts_are_refused(text: str) -> None:
    """Anything but a whole number is refused with the field named."""
    with pytest.raises(InvalidInput) as refused:
        parse_count(text, field="people_count", maximum=MAX_COUNT)
    assert refused.value.field == "people_count"


def test_a_decision_not_to_notify_stops_the_countdown() -> None:
    """Recorded as unlikely to result in a risk: no running time, no overdue, whatever the hour."""
    decided = incident(risk="none", no_notice_at=DETECTED + dt.timedelta(hours=2))
    timer = countdown(decided, DETECTED + dt.timedelta(hours=100))
    assert timer is not None
    assert (timer.state, timer.text) == ("decided", NO_NOTICE)
    notified = msgspec.structs.replace(decided, authority_notified_at=DETECTED)
    assert countdown(notified, DETECTED).state == "met"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("risk", "untold", "listed", "state"),
    [
        ("high", 0, 0, "overdue"),  # nobody on the list yet
        ("high", 1, 3, "overdue"),
        ("high", 0, 3, "done"),
        ("low", 3, 3, None),
        ("none", 3, 3, None),
    ],
)
def test_the_people_countdown_runs_while_anyone_is_untold(
    risk: str, untold: int, listed: int, state: str | None
) -> None:
    """Policy §6: with high risk, 72 hours from detection to tell everyone on the list."""
    timer = people_countdown(incident(risk=risk), untold, listed, DETECTED + dt.timedelta(hours=80))
    assert (timer.state if timer else None) == state
    if timer is not None and state == "overdue":
        assert timer.text == "overdue by 8 h 0 min"
    assert people_countdown(incident(personal_data=False), 1, 1, DETECTED) is None


def test_alerts_and_reminders_give_their_times_in_utc() -> None:
    """The deadline alert and the admins' reminder name detection and deadline in UTC."""
    title, body = _alert_text(incident(), 24, DETECTED + dt.timedelta(hours=24))
    assert title == "Security incident #7: 24 h since detection, authority not notified"
    assert "detected 2026-11-27 09:00 UTC." in body
    assert "by 2026-11-30 09:00 UTC (48 h 0 min left)." in body
    context = _mail_context(incident(), 66, DETECTED + dt.timedelta(hours=73))
    assert (context["detected"], context["deadline"]) == (
        "2026-11-27 09:00 UTC",
        "2026-11-30 09:00 UTC",
    )
    assert context["overdue"] is True and context["left_seconds"] == 3600


def test_the_notice_gives_the_detection_time_in_the_incidents_zone_with_utc() -> None:
    """The letter to the people shows the time as the register's pages do."""
    _, body = default_notice(incident(), None, "en")
    assert "It was detected on 2026-11-27 10:00 CET (09:00 UTC)." in body


def test_a_pdf_footer_gives_its_creation_time_in_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    """A report created with a time in another zone says that time in UTC, as it claims to."""
    footers: list[str] = []
    monkeypatch.setattr(Report, "_footer", lambda self, text: footers.append(text))
    berlin = DETECTED.astimezone(zone("Europe/Berlin"))
    Report("Security incident #7", created_at=berlin).output()
    assert footers == ["Security incident #7 - created 2026-11-27 09:00 UTC"]
