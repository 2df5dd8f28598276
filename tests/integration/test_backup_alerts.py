"""Backup alerts against a real HTTP receiver: apprise json:// messages and healthchecks pings."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import socket
import time
from collections.abc import Iterator

import msgspec
import pytest

from appliance.backups import alerts
from appliance.backups.alerts import Notifier
from appliance.backups.tables import BackupAlert, BackupJob, BackupSetting, DrillReport
from appliance.config import Settings
from appliance.notify import delivery
from appliance.notify.delivery import deliver_due
from appliance.notify.tables import AlertChannel, OutboxMessage
from tests.receiver import TOKEN, Receiver

T0 = dt.datetime(2026, 11, 29, 2, 30, tzinfo=dt.UTC)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def notifier_for(
    settings: Settings, *urls: str, ping_url: str = "", ping_timeout: float = 10.0
) -> Notifier:
    """A Notifier for ``urls`` that delivers at once, with settings whose backups section
    names those URLs (the outbox resolves a channel from the URLs in effect)."""
    configured = msgspec.structs.replace(
        settings, backups=msgspec.structs.replace(settings.backups, alert_urls=list(urls))
    )
    return Notifier(list(urls), ping_url, settings=configured, ping_timeout=ping_timeout)


async def _state(key: str) -> dict[str, object] | None:
    rows = await BackupAlert.select().where(BackupAlert.key == key).run()
    return rows[0] if rows else None


async def test_first_failure_sends_one_problem_message(
    clean_db: None, receiver: Receiver, settings: Settings
) -> None:
    """A check that starts failing sends one message naming the check, the repository, the
    error and where to look."""
    notifier = notifier_for(settings, receiver.alert_url())
    await alerts.report(
        "copy:offsite",
        ok=False,
        message="Fatal: unable to open repository",
        notifier=notifier,
        now=T0,
    )
    messages = receiver.messages()
    assert len(messages) == 1
    assert messages[0]["title"] == "Backup problem: Off-site copy to “offsite”"
    body = messages[0]["message"]
    assert "Repository: offsite" in body
    assert "Error: Fatal: unable to open repository" in body
    assert "Admin → Backups" in body
    assert messages[0]["type"] == "failure"
    assert receiver.requests[0].path == f"/{TOKEN}"


async def test_failures_remind_once_a_day_and_recovery_is_told_once(
    clean_db: None, receiver: Receiver, settings: Settings
) -> None:
    """Failing again within a day is silent, the next day brings one reminder, the first
    success one "recovered" message, and later successes nothing."""
    notifier = notifier_for(settings, receiver.alert_url())

    async def run(ok: bool, at: dt.datetime, message: str = "disk full") -> None:
        await alerts.report("backup", ok=ok, message=message, notifier=notifier, now=at)

    await run(False, T0)
    await run(False, T0 + dt.timedelta(hours=3), "still full")
    assert len(receiver.requests) == 1
    state = await _state("backup")
    assert state is not None and state["message"] == "still full"

    await run(False, T0 + dt.timedelta(days=1))
    assert len(receiver.requests) == 2
    reminder = receiver.messages()[1]
    assert reminder["title"] == "Still failing: Backup"
    assert "failing since 2026-11-29 02:30 UTC (24 h 0 min)" in reminder["message"]

    await run(False, T0 + dt.timedelta(days=1, hours=5))
    assert len(receiver.requests) == 2

    await run(True, T0 + dt.timedelta(days=2))
    assert len(receiver.requests) == 3
    recovered = receiver.messages()[2]
    assert recovered["title"] == "Recovered: Backup"
    assert recovered["type"] == "success"
    assert "failing since 2026-11-29 02:30 UTC (48 h 0 min)" in recovered["message"]
    assert "The last error was: disk full" in recovered["message"]

    await run(True, T0 + dt.timedelta(days=3))
    await run(True, T0 + dt.timedelta(days=4))
    assert len(receiver.requests) == 3
    assert await alerts.failing() == []


async def test_successes_of_a_check_that_never_failed_send_nothing(
    clean_db: None, receiver: Receiver, settings: Settings
) -> None:
    """Daily successes are not news: no message and no row."""
    notifier = notifier_for(settings, receiver.alert_url())
    for day in range(3):
        await alerts.report(
            "backup", ok=True, message="", notifier=notifier, now=T0 + dt.timedelta(days=day)
        )
    assert receiver.requests == []
    assert await _state("backup") is None


async def test_concurrent_reports_of_one_key_send_one_message(
    clean_db: None, receiver: Receiver, settings: Settings
) -> None:
    """Workers reporting the same first failure at the same moment send one message between
    them, and then one recovery between them."""
    notifier = notifier_for(settings, receiver.alert_url())
    await asyncio.gather(
        *(
            alerts.report(
                "check:primary", ok=False, message="pack damaged", notifier=notifier, now=T0
            )
            for _ in range(6)
        )
    )
    assert len(receiver.requests) == 1
    later = T0 + dt.timedelta(hours=2)
    await asyncio.gather(
        *(
            alerts.report("check:primary", ok=True, message="", notifier=notifier, now=later)
            for _ in range(6)
        )
    )
    assert [m["title"] for m in receiver.messages()] == [
        "Backup problem: Repository check of “primary”",
        "Recovered: Repository check of “primary”",
    ]


async def test_a_refused_problem_is_retried_by_the_outbox_not_sent_twice(
    clean_db: None, receiver: Receiver, settings: Settings
) -> None:
    """When the channel refuses the first message, the outbox keeps it and sends it at its
    next attempt; the next failing report within the day adds no second message."""
    notifier = notifier_for(settings, receiver.alert_url())
    receiver.status = 500
    await alerts.report("backup", ok=False, message="boom", notifier=notifier, now=T0)
    [row] = await OutboxMessage.select().run()
    assert (row["state"], row["attempts"], row["source"]) == ("pending", 1, "backups")
    receiver.status = 200
    later = T0 + dt.timedelta(hours=1)
    await alerts.report("backup", ok=False, message="boom", notifier=notifier, now=later)
    assert await OutboxMessage.count().run() == 1
    assert notifier.settings is not None
    assert (await deliver_due(notifier.settings, later)).sent == 1
    assert len(receiver.requests) == 2  # the refused try and the accepted one
    assert [m["title"] for m in receiver.messages()] == ["Backup problem: Backup"] * 2


async def test_a_problem_without_any_channel_is_told_once_a_channel_exists(
    clean_db: None, receiver: Receiver, settings: Settings
) -> None:
    """With no alert channel at all, nothing is queued and the claim is given back, so the
    next failing report tells the channel added meanwhile instead of waiting a day."""
    await alerts.report(
        "backup", ok=False, message="boom", notifier=Notifier([], settings=settings), now=T0
    )
    assert await OutboxMessage.count().run() == 0
    await AlertChannel(name="Owner", url=receiver.alert_url(), created_at=T0).save().run()
    later = T0 + dt.timedelta(hours=1)
    await alerts.report(
        "backup", ok=False, message="boom", notifier=Notifier([], settings=settings), now=later
    )
    assert [m["title"] for m in receiver.messages()] == ["Still failing: Backup"]


async def test_ping_hits_start_success_and_fail_with_the_body(receiver: Receiver) -> None:
    """start → <url>/start, success → <url>, fail → <url>/fail, each carrying the body."""
    notifier = Notifier([], receiver.ping_url())
    assert await notifier.ping("start")
    assert await notifier.ping("success", "3 new files, 12 MB")
    assert await notifier.ping("fail", "Fatal: repository is locked")
    assert [(r.method, r.path, r.body) for r in receiver.requests] == [
        ("POST", f"/ping/{TOKEN}/start", b""),
        ("POST", f"/ping/{TOKEN}", b"3 new files, 12 MB"),
        ("POST", f"/ping/{TOKEN}/fail", b"Fatal: repository is locked"),
    ]


async def test_ping_body_is_cut_to_its_last_ten_kilobytes(receiver: Receiver) -> None:
    """A long log is shortened to its end, where the error is, on a character boundary."""
    notifier = Notifier([], receiver.ping_url())
    assert await notifier.ping("fail", "ä" * 20_000 + "the cause")
    body = receiver.requests[0].body
    assert len(body) <= alerts.PING_BODY_BYTES
    assert body.decode().endswith("the cause")
    assert len(body) > alerts.PING_BODY_BYTES - 2


async def test_refused_ping_returns_false(receiver: Receiver) -> None:
    """A ping answered with an error status counts as not sent."""
    receiver.status = 404
    assert not await Notifier([], receiver.ping_url()).ping("success")
    assert len(receiver.requests) == 1


async def test_unreachable_urls_keep_the_alert_queued_and_the_ping_false_quickly(
    clean_db: None, settings: Settings, closed_port: int, silent_port: int
) -> None:
    """A refused or silent alert URL leaves the alert in the outbox for the next attempt
    within the time-out; a ping to them yields False, never an exception."""
    settings = msgspec.structs.replace(
        settings, notify=msgspec.structs.replace(settings.notify, timeout_seconds=1)
    )
    for port in (closed_port, silent_port):
        notifier = notifier_for(
            settings,
            f"json://127.0.0.1:{port}/{TOKEN}",
            ping_url=f"http://127.0.0.1:{port}/ping/{TOKEN}",
            ping_timeout=1.0,
        )
        started = time.monotonic()
        assert await notifier.send("title", "body", now=T0) is True
        assert await notifier.ping("fail", "body") is False
        assert time.monotonic() - started < 8
    rows = await OutboxMessage.select().run()
    assert [(row["state"], row["attempts"]) for row in rows] == [("pending", 1)] * 2
    assert all(row["last_error"] for row in rows)


async def test_nothing_is_sent_without_urls(clean_db: None) -> None:
    """With no alert channel and no ping URL, both methods say nothing was sent."""
    notifier = Notifier([], "")
    assert await notifier.send("title", "body") is False
    assert await notifier.ping("start") is False
    assert await OutboxMessage.count().run() == 0


async def test_logs_never_show_the_urls(
    clean_db: None,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    receiver: Receiver,
    closed_port: int,
) -> None:
    """Failed deliveries and pings are logged, with neither the URLs nor their tokens and
    hosts, even at DEBUG."""
    caplog.set_level(logging.DEBUG)
    receiver.status = 500
    refused = f"json://127.0.0.1:{closed_port}/{TOKEN}"
    rejected = receiver.alert_url()
    broken = f"json://user:{TOKEN}@/nowhere"
    notifier = notifier_for(settings, refused, rejected, broken, ping_url=receiver.ping_url())
    assert await notifier.send("Backup problem", "body", now=T0) is True
    assert await notifier.ping("fail", "body") is False
    assert await Notifier([], f"http://127.0.0.1:{closed_port}/{TOKEN}").ping("start") is False
    assert len(receiver.requests) == 2  # the alert and the ping reached the receiver

    warnings = [r for r in caplog.records if r.name in (alerts.__name__, delivery.__name__)]
    assert len(warnings) >= 4, "the failures must be logged"
    for secret in (refused, rejected, broken, receiver.ping_url(), TOKEN, "127.0.0.1"):
        assert secret not in caplog.text
        assert all(secret not in str(r.args) for r in caplog.records)
    assert f":{receiver.port}" not in caplog.text
    assert f":{closed_port}" not in caplog.text
    errors = [row["last_error"] for row in await OutboxMessage.select().run()]
    assert errors and all(TOKEN not in error for error in errors)


async def test_admin_values_override_the_settings_file(clean_db: None, settings: Settings) -> None:
    """Alert and ping URLs set by an admin win over the settings file, even when cleared."""
    backups = msgspec.structs.replace(
        settings.backups, alert_urls=["json://file.example/a"], ping_url="https://hc.example/p"
    )
    configured = msgspec.structs.replace(settings, backups=backups)
    assert await alerts.effective_targets(configured) == (
        ["json://file.example/a"],
        "https://hc.example/p",
    )

    await BackupSetting.insert(
        BackupSetting(key="alert_urls", value=json.dumps(["json://admin.example/b"]), updated_at=T0)
    ).run()
    assert await alerts.effective_targets(configured) == (
        ["json://admin.example/b"],
        "https://hc.example/p",
    )

    await BackupSetting.insert(
        BackupSetting(key="ping_url", value=json.dumps(""), updated_at=T0)
    ).run()
    notifier = await alerts.load_notifier(configured)
    assert (notifier.alert_urls, notifier.ping_url) == (["json://admin.example/b"], "")


# --- the overdue drill -------------------------------------------------------------------------


async def _job(created_at: dt.datetime) -> None:
    await BackupJob.insert(
        BackupJob(
            kind="backup",
            slot=f"backup:{created_at:%Y-%m-%d}",
            not_before=created_at,
            created_at=created_at,
        )
    ).run()


async def _drill(finished_at: dt.datetime, *, passed: bool) -> None:
    await DrillReport.insert(
        DrillReport(
            repository="primary",
            point_id="rp-1",
            started_at=finished_at - dt.timedelta(minutes=20),
            finished_at=finished_at,
            passed=passed,
        )
    ).run()


async def test_fresh_install_is_not_alarmed_before_a_drill_was_due(
    clean_db: None, receiver: Receiver, settings: Settings
) -> None:
    """Without any job nothing is judged; with backups for fewer than 8 days and no drill yet,
    nothing is overdue; past 8 days without a passed drill, it is."""
    notifier = notifier_for(settings, receiver.alert_url())
    assert not await alerts.check_drill_overdue(T0, overdue_days=8, notifier=notifier)
    await _job(T0)
    await _drill(T0 + dt.timedelta(days=6), passed=False)
    for day in (1, 7, 8):
        at = T0 + dt.timedelta(days=day)
        assert not await alerts.check_drill_overdue(at, overdue_days=8, notifier=notifier)
    assert receiver.requests == []

    at = T0 + dt.timedelta(days=8, hours=1)
    assert await alerts.check_drill_overdue(at, overdue_days=8, notifier=notifier)
    [message] = receiver.messages()
    assert message["title"] == "Backup problem: Restore drills"
    assert "since backups began on 2026-11-29 02:30 UTC" in message["message"]


async def test_drill_overdue_nine_days_after_the_last_pass_and_recovered_by_a_new_one(
    clean_db: None, receiver: Receiver, settings: Settings
) -> None:
    """Nine days after the last passed drill an alert goes out once; a new passed drill sends
    "recovered"."""
    notifier = notifier_for(settings, receiver.alert_url())
    await _job(T0 - dt.timedelta(days=60))
    await _drill(T0, passed=True)
    await _drill(T0 + dt.timedelta(days=7), passed=False)

    assert not await alerts.check_drill_overdue(
        T0 + dt.timedelta(days=7, hours=1), overdue_days=8, notifier=notifier
    )
    nine_days = T0 + dt.timedelta(days=9)
    assert await alerts.check_drill_overdue(nine_days, overdue_days=8, notifier=notifier)
    assert await alerts.check_drill_overdue(
        nine_days + dt.timedelta(hours=4), overdue_days=8, notifier=notifier
    )
    [problem] = receiver.messages()
    assert "the last one that passed finished at 2026-11-29 02:30 UTC" in problem["message"]
    [check] = await alerts.failing()
    assert (check.key, check.since, check.title) == ("drill-overdue", nine_days, "Restore drills")

    await _drill(nine_days + dt.timedelta(hours=6), passed=True)
    assert not await alerts.check_drill_overdue(
        nine_days + dt.timedelta(hours=7), overdue_days=8, notifier=notifier
    )
    assert [m["title"] for m in receiver.messages()] == [
        "Backup problem: Restore drills",
        "Recovered: Restore drills",
    ]
    assert await alerts.failing() == []
