"""The Art. 12(3) deadline arithmetic, and the calls a privacy request's answer makes into the
export and erasure domains (patched at that seam only: the integration tests call the real ones)."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest

from appliance.audit.service import Actor
from appliance.config import load_settings
from appliance.privacy_requests import deadlines, fulfilment


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (dt.date(2026, 1, 31), 1, dt.date(2026, 2, 28)),
        (dt.date(2028, 1, 31), 1, dt.date(2028, 2, 29)),
        (dt.date(2026, 12, 15), 1, dt.date(2027, 1, 15)),
        (dt.date(2026, 2, 28), 2, dt.date(2026, 4, 28)),
        (dt.date(2026, 3, 31), 1, dt.date(2026, 4, 30)),
    ],
)
def test_a_month_later_is_the_same_date_or_the_months_last_day(
    day: dt.date, months: int, expected: dt.date
) -> None:
    """Regulation 1182/71 Art. 3: the same date, or the last day of a shorter month."""
    assert deadlines.add_months(day, months) == expected


def test_the_deadline_ends_at_local_midnight_across_a_clock_change() -> None:
    """Received on 28 February in Berlin: due at the end of 28 March (23:00 UTC, still winter
    time); extended to the end of 28 May, after the clocks went forward (22:00 UTC)."""
    received = dt.datetime(2026, 2, 27, 23, 30, tzinfo=dt.UTC)  # 00:30 on the 28th in Berlin
    assert deadlines.due_date(received, "Europe/Berlin") == dt.date(2026, 3, 28)
    deadline = deadlines.first_deadline(received, "Europe/Berlin")
    assert deadline == dt.datetime(2026, 3, 28, 23, 0, tzinfo=dt.UTC)  # 29 March 00:00 CET
    later = deadlines.extended_deadline(deadline, "Europe/Berlin")
    assert later == dt.datetime(2026, 5, 28, 22, 0, tzinfo=dt.UTC)  # 29 May 00:00 CEST


@pytest.mark.parametrize(
    ("zone", "received", "due", "extended"),
    [
        # The clocks go from 00:00 to 01:00 on 29 March 2026: 29 March has no midnight.
        ("Atlantic/Azores", dt.datetime(2026, 2, 28, 12, tzinfo=dt.UTC), (3, 28), (5, 28)),
        # Chile's go forward at 00:00 on 6 September 2026.
        ("America/Santiago", dt.datetime(2026, 8, 5, 15, tzinfo=dt.UTC), (9, 5), (11, 5)),
    ],
)
def test_the_last_day_is_right_where_the_clocks_go_forward_at_midnight(
    zone: str, received: dt.datetime, due: tuple[int, int], extended: tuple[int, int]
) -> None:
    """Where the day after the last day starts at 01:00, the deadline's local time is 01:00;
    the last day is still the day before it, and the extension counts from that day."""
    deadline = deadlines.first_deadline(received, zone)
    assert deadlines.last_day(deadline, zone) == dt.date(2026, *due)
    later = deadlines.extended_deadline(deadline, zone)
    assert deadlines.last_day(later, zone) == dt.date(2026, *extended)


def test_the_extension_counts_from_the_first_deadlines_last_day() -> None:
    """Received 31 January: due 28 February, extended to 28 April (not 30 April)."""
    deadline = deadlines.first_deadline(dt.datetime(2026, 1, 31, 9, tzinfo=dt.UTC), "UTC")
    assert deadline == dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    assert deadlines.extended_deadline(deadline, "UTC") == dt.datetime(2026, 4, 29, tzinfo=dt.UTC)


async def test_a_copy_request_asks_the_export_domain_for_the_clients_export(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The export is of the client, made on the client's behalf, by the answering admin."""
    from appliance.exports import service as exports

    calls: list[dict[str, Any]] = []

    async def request_export(settings: object, **kwargs: Any) -> SimpleNamespace:
        calls.append(kwargs)
        return SimpleNamespace(id=41)

    monkeypatch.setattr(exports, "request_export", request_export)
    now = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    owner = Actor(id=3, name="owner")
    job = await fulfilment.start_export(
        load_settings(environ={}), client_id=7, actor=owner, address="192.0.2.1", now=now
    )
    assert job == 41
    assert calls == [
        {
            "kind": "client",
            "subject_id": 7,
            "actor": owner,
            "source": "client",
            "now": now,
            "address": "192.0.2.1",
        }
    ]


async def test_a_deletion_request_asks_the_erasure_domain_to_erase_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The erasure is of the client, at the client's request, with the admin named."""
    from appliance.privacy import erasure

    calls: list[dict[str, Any]] = []

    async def request_erasure(settings: object, **kwargs: Any) -> SimpleNamespace:
        calls.append(kwargs)
        return SimpleNamespace(id=9)

    monkeypatch.setattr(erasure, "request_erasure", request_erasure)
    now = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    got = await fulfilment.start_erasure(
        load_settings(environ={}), client_id=7, actor="owner", actor_id=3, now=now
    )
    assert got == 9
    assert calls == [
        {
            "kind": "client",
            "subject_id": 7,
            "actor": "owner",
            "source": "client",
            "now": now,
            "actor_id": 3,
        }
    ]
