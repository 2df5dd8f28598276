"""The outbox against real services: an aiosmtpd relay that is stopped and started again, apprise
``json://`` channels on a recording HTTP server, PostgreSQL claims under concurrency."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from appliance.config import Settings
from appliance.notify import delivery
from appliance.notify.delivery import DeliveryReport, deliver_due, purge_sent
from appliance.notify.messages import config_channel_key, queue_alert, queue_email
from appliance.notify.relay import RELAY_KEY
from appliance.notify.tables import AlertChannel, NotifySetting, OutboxMessage
from tests.receiver import Receiver
from tests.smtp import SmtpServer

T0 = dt.datetime(2026, 11, 29, 9, 0, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parents[2]


def notify_settings(settings: Settings, **changes: Any) -> Settings:
    return msgspec.structs.replace(
        settings, notify=msgspec.structs.replace(settings.notify, **changes)
    )


async def use_relay(server: SmtpServer, **extra: Any) -> None:
    """Store the relay as the admin page does."""
    value = {
        "host": server.host,
        "port": server.port,
        "security": "none",
        "username": "",
        "password": "",
        "mail_from": "studio@lumen.example",
        "mail_from_name": "Studio Lumen",
        **extra,
    }
    await NotifySetting(key=RELAY_KEY, value=json.dumps(value), updated_at=T0).save().run()


async def rows(**where: Any) -> list[dict[str, Any]]:
    query = OutboxMessage.select().order_by(OutboxMessage.id)
    for column, value in where.items():
        query = query.where(getattr(OutboxMessage, column) == value)
    return list(await query.run())


async def queue_mails(count: int, *, start: int = 0) -> list[int]:
    ids = []
    for number in range(start, start + count):
        language = "de" if number % 2 else "en"
        queued = await queue_email(
            to=f"client{number}@example.org",
            template="test_message",
            context={"studio": "Studio Lumen", "sender": f"Sender {number}", "relay": "x"},
            language=language,
            source="test",
            now=T0,
        )
        assert queued is not None
        ids.append(queued)
    return ids


async def test_mail_waits_while_the_relay_is_down_and_arrives_exactly_once(
    clean_db: None, settings: Settings, smtp_server: SmtpServer
) -> None:
    """Five mails queued while the relay is stopped are retried with doubling back-off and
    lose nothing; a pass stops at the first refused connection (the others would fail the
    same), so each pass spends one attempt. Once the relay is back each mail arrives exactly
    once, with both parts, in its language and with the Message-ID stored on its row."""
    await use_relay(smtp_server)
    smtp_server.stop()
    await queue_mails(5)

    assert await deliver_due(settings, T0) == DeliveryReport(retrying=1)
    assert [row["attempts"] for row in await rows()] == [1, 0, 0, 0, 0]
    for _ in range(4):
        assert await deliver_due(settings, T0) == DeliveryReport(retrying=1)
    first = await rows()
    assert {row["state"] for row in first} == {"pending"}
    assert {row["attempts"] for row in first} == {1}
    assert {row["next_attempt_at"] for row in first} == {T0 + dt.timedelta(seconds=30)}
    assert all(
        row["last_error"].endswith(f":{smtp_server.port}: connection refused") for row in first
    )
    message_ids = {row["id"]: row["message_id"] for row in first}
    assert all(
        mid.startswith("<") and mid.endswith("@lumen.example>") for mid in message_ids.values()
    )
    assert len(set(message_ids.values())) == 5

    # Not due yet: nothing is tried, no attempt is spent.
    assert (await deliver_due(settings, T0 + dt.timedelta(seconds=29))).handled == 0
    for _ in range(5):
        await deliver_due(settings, T0 + dt.timedelta(seconds=30))
    second = await rows()
    assert {row["attempts"] for row in second} == {2}
    assert {row["next_attempt_at"] for row in second} == {T0 + dt.timedelta(seconds=90)}
    assert {row["id"]: row["message_id"] for row in second} == message_ids

    smtp_server.start()
    report = await deliver_due(settings, T0 + dt.timedelta(seconds=90))
    assert report == DeliveryReport(sent=5)
    assert (await deliver_due(settings, T0 + dt.timedelta(hours=1))).handled == 0

    arrived = smtp_server.messages
    assert len(arrived) == 5
    assert sorted(m.message_id for m in arrived) == sorted(message_ids.values())
    sent = await rows()
    assert {row["state"] for row in sent} == {"sent"}
    for row in sent:
        mail = next(m for m in arrived if m.message_id == row["message_id"])
        assert mail.recipients == [row["recipient"]]
        assert mail.mail_from == "studio@lumen.example"
        assert mail.message["From"] == "Studio Lumen <studio@lumen.example>"
        assert mail.message["Content-Language"] == row["language"]
        number = row["recipient"].removeprefix("client").partition("@")[0]
        if row["language"] == "de":
            assert mail.message["Subject"] == "Testnachricht von Studio Lumen"
            assert f"Sender {number} hat diese Testnachricht" in mail.part("plain")
            assert f"Sender {number} hat diese Testnachricht" in mail.part("html")
            assert '<html lang="de">' in mail.part("html")
        else:
            assert mail.message["Subject"] == "Test message from Studio Lumen"
            assert f"Sender {number} sent this test message" in mail.part("plain")
            assert f"Sender {number} sent this test message" in mail.part("html")
        assert "<p" not in mail.part("plain")


async def test_mail_is_given_up_after_max_attempts_and_three_days_with_the_reason(
    clean_db: None, settings: Settings, smtp_server: SmtpServer
) -> None:
    """With the relay down for good, a mail is tried past ``max_attempts`` while it is younger
    than three days (an outage longer than the back-off fails nothing), then marked failed
    with the connection error; no attempt is made afterwards."""
    settings = notify_settings(settings, max_attempts=3, retry_seconds=10)
    await use_relay(smtp_server)
    smtp_server.stop()
    await queue_mails(1)
    at = T0
    for _ in range(4):
        await deliver_due(settings, at)
        [row] = await rows()
        assert row["state"] == "pending"
        at = row["next_attempt_at"]
    assert row["attempts"] == 4
    await deliver_due(settings, T0 + delivery.GIVE_UP_AFTER)
    [row] = await rows()
    assert (row["state"], row["attempts"]) == ("failed", 5)
    assert "connection refused" in row["last_error"]
    smtp_server.start()
    assert (await deliver_due(settings, T0 + dt.timedelta(days=4))).handled == 0
    assert smtp_server.messages == []


async def test_a_refused_recipient_fails_at_once_and_a_deferred_one_is_retried(
    clean_db: None, settings: Settings, smtp_server: SmtpServer
) -> None:
    """A 5xx answer to the recipient is permanent: failed after one attempt. A 4xx answer is
    retried. The other mails go out."""
    await use_relay(smtp_server)
    smtp_server.refused.add("client0@example.org")
    smtp_server.deferred.add("client1@example.org")
    await queue_mails(3)
    report = await deliver_due(settings, T0)
    assert report == DeliveryReport(sent=1, retrying=1, failed=1)
    refused, deferred, delivered = await rows()
    assert refused["state"] == "failed" and refused["attempts"] == 1
    assert refused["last_error"] == "the relay refused the recipient: 550 5.1.1 No such user here"
    assert deferred["state"] == "pending"
    assert deferred["last_error"].startswith("the relay refused the recipient: 450")
    assert delivered["state"] == "sent"
    assert [m.recipients for m in smtp_server.messages] == [["client2@example.org"]]


async def test_mail_waits_without_spending_attempts_while_no_relay_is_set(
    clean_db: None, settings: Settings, receiver: Receiver
) -> None:
    """No relay configured: e-mail stays pending with no attempt spent, alerts still go out,
    and the report says the relay is missing."""
    settings = notify_settings(settings, alert_urls=[receiver.alert_url()])
    await queue_mails(2)
    await queue_alert(
        "Disk almost full",
        "3 % left",
        severity="warning",
        source="test",
        now=T0,
        config_urls=settings.notify.alert_urls,
    )
    report = await deliver_due(settings, T0 + dt.timedelta(hours=5))
    assert report == DeliveryReport(sent=1, relay_missing=True)
    mails = await rows(kind="email")
    assert [(row["state"], row["attempts"]) for row in mails] == [("pending", 0), ("pending", 0)]
    assert [m["title"] for m in receiver.messages()] == ["Disk almost full"]
    assert receiver.messages()[0]["type"] == "warning"


async def test_a_failing_channel_is_retried_then_failed_and_the_others_told_once(
    clean_db: None, settings: Settings, receiver: Receiver
) -> None:
    """A channel that goes down gets its alerts retried with back-off, then failed; the
    other channel hears of it once for the whole episode, not once per message, and the
    failing channel is not sent that notice."""
    flaky = Receiver()
    flaky.thread.start()
    settings = notify_settings(
        settings, alert_urls=[receiver.alert_url()], max_attempts=2, retry_seconds=10
    )
    channel = AlertChannel(name="Owner's phone", url=flaky.alert_url("phone-token"), created_at=T0)
    await channel.save().run()
    flaky_key = f"db:{channel.id}"

    async def alert(title: str, at: dt.datetime) -> None:
        await queue_alert(
            title,
            "body",
            severity="failure",
            source="test",
            now=at,
            config_urls=settings.notify.alert_urls,
        )

    await alert("First", T0)
    assert (await deliver_due(settings, T0)).sent == 2
    assert [m["title"] for m in flaky.messages()] == ["First"]

    flaky.server.shutdown()
    flaky.server.server_close()
    for number in range(3):
        await alert(f"Down {number}", T0 + dt.timedelta(minutes=1))
    at = T0 + dt.timedelta(minutes=1)
    report = await deliver_due(settings, at)
    assert (report.sent, report.retrying) == (3, 3)
    report = await deliver_due(settings, at + dt.timedelta(seconds=10))
    assert report.failed == 3
    failed = await rows(channel=flaky_key, state="failed")
    assert [row["subject"] for row in failed] == ["Down 0", "Down 1", "Down 2"]
    assert all(row["attempts"] == 2 for row in failed)
    assert all("did not accept the alert" in row["last_error"] for row in failed)
    assert all("phone-token" not in row["last_error"] for row in failed)

    # The notice was queued for the working channel only, once, and goes out next round.
    notices = await rows(source="notify")
    assert [row["channel"] for row in notices] == [config_channel_key(receiver.alert_url())]
    await deliver_due(settings, at + dt.timedelta(seconds=10))
    titles = [m["title"] for m in receiver.messages()]
    assert titles.count("Alert channel not working: “Owner's phone”") == 1
    notice = next(m for m in receiver.messages() if m["title"].startswith("Alert channel"))
    assert "phone-token" not in notice["message"]
    assert "Admin → Notifications" in notice["message"]


async def test_a_removed_channel_fails_its_waiting_alerts_with_the_reason(
    clean_db: None, settings: Settings, receiver: Receiver
) -> None:
    """Alerts for a channel removed meanwhile fail at once, saying so, and tell nobody."""
    channel = AlertChannel(name="Old pager", url=receiver.alert_url(), created_at=T0)
    await channel.save().run()
    await queue_alert(
        "Backup failed", "b", severity="failure", source="test", now=T0, config_urls=[]
    )
    await AlertChannel.delete().where(AlertChannel.id == channel.id).run()
    report = await deliver_due(settings, T0)
    assert report.failed == 1
    [row] = await rows()
    assert (row["state"], row["last_error"]) == ("failed", "the alert channel was removed")
    assert receiver.requests == []


async def test_two_workers_at_once_never_send_a_message_twice(
    clean_db: None, settings: Settings, smtp_server: SmtpServer
) -> None:
    """Two deliveries running side by side share the due rows between them: every mail
    arrives exactly once."""
    await use_relay(smtp_server)
    await queue_mails(12)
    reports = await asyncio.gather(
        deliver_due(settings, T0, limit=12), deliver_due(settings, T0, limit=12)
    )
    assert sum(report.sent for report in reports) == 12
    assert all(report.sent > 0 for report in reports)
    ids = [m.message_id for m in smtp_server.messages]
    assert len(ids) == 12 and len(set(ids)) == 12
    assert {row["state"] for row in await rows()} == {"sent"}


async def lease_in(seconds: int) -> None:
    """Leave every row "sending" by a worker that stopped, its lease ending ``seconds`` from
    now in the database's time (negative: already over)."""
    await OutboxMessage.raw(
        "UPDATE outbox_message SET state = 'sending', attempts = 1, claim_token = 'gone',"
        " claimed_until = clock_timestamp() + {} * interval '1 second'",
        seconds,
    )


async def test_a_row_whose_worker_died_is_claimed_again_after_its_lease(
    clean_db: None, settings: Settings, smtp_server: SmtpServer
) -> None:
    """A row left in "sending" by a dead worker is not touched before its lease ends (leases
    are real time, whatever the injected clock says), and is delivered once after."""
    await use_relay(smtp_server)
    await queue_mails(1)
    await lease_in(120)
    assert (await deliver_due(settings, T0 + dt.timedelta(days=1))).handled == 0
    await lease_in(-1)
    assert (await deliver_due(settings, T0)).sent == 1
    [row] = await rows()
    assert (row["state"], row["attempts"], row["claim_token"]) == ("sent", 2, "")
    assert len(smtp_server.messages) == 1


async def test_sent_messages_are_purged_after_thirty_days(
    clean_db: None, settings: Settings, smtp_server: SmtpServer
) -> None:
    """Sent rows older than 30 days go; newer ones, waiting and failed ones stay."""
    await use_relay(smtp_server)
    await queue_mails(2)
    await deliver_due(settings, T0)
    await queue_mails(1, start=5)
    assert await purge_sent(T0 + dt.timedelta(days=29)) == 0
    assert await purge_sent(T0 + dt.timedelta(days=31)) == 2
    assert [row["state"] for row in await rows()] == ["pending"]


async def test_nothing_secret_is_logged_when_a_channel_fails(
    clean_db: None, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning about a failed alert names the row and the reason, never the URL or its
    token."""
    settings = notify_settings(settings, alert_urls=["json://127.0.0.1:9/sekrit-token-123"])
    await queue_alert(
        "A", "b", severity="info", source="test", now=T0, config_urls=settings.notify.alert_urls
    )
    with caplog.at_level(logging.DEBUG):
        await deliver_due(settings, T0)
    assert "not delivered" in caplog.text
    assert "sekrit-token-123" not in caplog.text


async def test_the_delivery_loop_thread_delivers_once_the_relay_is_up(
    settings: Settings, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """The worker's DeliveryLoop (in a process of its own, as in the worker) keeps trying
    while the relay is down and delivers as soon as it is up."""
    settings = notify_settings(settings, retry_seconds=1, retry_max_minutes=1)
    smtp_server.stop()

    # Async, on the session's loop like the other tests: the engine's pool belongs to it.
    await OutboxMessage.delete(force=True).run()
    await NotifySetting.delete(force=True).run()
    await use_relay(smtp_server)
    await queue_email(
        to="anna@example.org",
        template="test_message",
        context={"studio": "Studio Lumen", "sender": "Olivia", "relay": "x"},
        language="en",
        source="test",
        now=dt.datetime.now(dt.UTC),
    )
    script = (
        "import sys, msgspec\n"
        "from appliance.config import Settings\n"
        "from appliance.db.engine import configure\n"
        "from appliance.notify.delivery import DeliveryLoop\n"
        "settings = msgspec.json.decode(sys.stdin.buffer.readline(), type=Settings)\n"
        "configure(settings.database.url)\n"
        "loop = DeliveryLoop(settings, interval=0.2)\n"
        "loop.start()\n"
        "sys.stdin.readline()\n"
        "loop.stop(10)\n"
        "print('stopped' if not loop.is_alive() else 'alive')\n"
    )
    process = subprocess.Popen(  # noqa: ASYNC220 - started once; its pipes are read in a thread
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdin is not None
    try:
        process.stdin.write(msgspec.json.encode(settings) + b"\n")
        process.stdin.flush()
        # Wait for a failed attempt against the stopped relay.
        deadline = time.monotonic() + 60
        while not any(row["last_error"] for row in await rows()):
            assert time.monotonic() < deadline, "the loop made no attempt"
            await asyncio.sleep(0.2)
        smtp_server.start()
        [mail] = await asyncio.to_thread(smtp_server.wait_for, 1, timeout=30)
        assert mail.recipients == ["anna@example.org"]
        await asyncio.sleep(1)
        assert len(smtp_server.messages) == 1
        out, err = await asyncio.to_thread(process.communicate, b"\n", timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert out.decode().strip() == "stopped", err.decode()
    assert "Traceback" not in err.decode()

    [row] = await rows()
    assert row["state"] == "sent" and row["attempts"] >= 2
    assert row["message_id"] == mail.message_id


def test_backoff_doubles_and_is_capped(settings: Settings) -> None:
    """30 s, 60 s, 120 s… and never more than retry_max_minutes."""
    settings = notify_settings(settings, retry_seconds=30, retry_max_minutes=5)
    waits = [delivery.backoff(n, settings).total_seconds() for n in range(1, 7)]
    assert waits == [30, 60, 120, 240, 300, 300]


async def test_a_channel_failing_again_after_it_worked_is_told_again(
    clean_db: None, settings: Settings, receiver: Receiver
) -> None:
    """Each failure episode of a channel is told once: failing, working again, then failing
    once more brings a second notice, not more."""
    flaky = Receiver()
    flaky.thread.start()
    try:
        settings = notify_settings(settings, alert_urls=[receiver.alert_url()], max_attempts=1)
        channel = AlertChannel(name="Pager", url=flaky.alert_url("pager-token"), created_at=T0)
        await channel.save().run()
        at = T0

        async def round_of(title: str) -> None:
            nonlocal at
            at += dt.timedelta(minutes=5)
            await queue_alert(
                title,
                "body",
                severity="failure",
                source="test",
                now=at,
                config_urls=settings.notify.alert_urls,
            )
            await deliver_due(settings, at)
            await deliver_due(settings, at)  # the notices queued by the first call

        flaky.status = 500
        await round_of("One")
        await round_of("Two")
        flaky.status = 200
        await round_of("Three")
        flaky.status = 500
        await round_of("Four")
        await round_of("Five")
    finally:
        flaky.server.shutdown()
        flaky.server.server_close()
    titles = [m["title"] for m in receiver.messages()]
    assert titles.count("Alert channel not working: “Pager”") == 2
    assert [t for t in titles if not t.startswith("Alert channel")] == [
        "One",
        "Two",
        "Three",
        "Four",
        "Five",
    ]
    failed = await rows(channel=f"db:{channel.id}", state="failed")
    assert [row["subject"] for row in failed] == ["One", "Two", "Four", "Five"]
