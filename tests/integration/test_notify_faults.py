"""The outbox when things go wrong: headers that would break a message, a relay slower than a
lease, a relay that hangs or stays down for days, and the backups' own alert URLs."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
from collections.abc import Iterator

import msgspec
import pytest

from appliance.config import Settings
from appliance.notify import delivery
from appliance.notify.delivery import DeliveryReport, deliver_due, purge_sent
from appliance.notify.messages import config_channel_key, queue_alert, queue_email
from appliance.notify.tables import AlertChannel, OutboxMessage
from tests.integration.test_notify_delivery import (
    T0,
    notify_settings,
    queue_mails,
    rows,
    use_relay,
)
from tests.receiver import Receiver
from tests.smtp import SmtpServer


@pytest.fixture
def hanging_relay() -> Iterator[tuple[str, int]]:
    """A port that takes connections and never says a word (a relay that hangs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()


async def test_line_breaks_in_headers_become_spaces_and_a_bad_recipient_fails_alone(
    clean_db: None, settings: Settings, smtp_server: SmtpServer
) -> None:
    """A name a client typed with a line separator ends up in the subject and the sender's
    name as a space, adding no header; a recipient that is no address fails at once with the
    reason, and the rest of the batch goes out."""
    await use_relay(smtp_server, mail_from_name="Studio\u2028Lumen\x85X")
    context = {"studio": "My picks\u2028Bcc: spy@evil.example\u2029\v\f\r", "sender": "Anna"}
    first = await queue_email(
        to="anna@example.org",
        template="test_message",
        context={**context, "relay": "x"},
        language="en",
        source="test",
        now=T0,
    )
    await (
        OutboxMessage(
            kind="email",
            recipient="ben@example.org\u2028Bcc: spy@evil.example",
            subject="Hello",
            body_text="text",
            next_attempt_at=T0,
            created_at=T0,
        )
        .save()
        .run()
    )
    await queue_mails(1, start=7)

    assert await deliver_due(settings, T0) == DeliveryReport(sent=2, failed=1)
    good, bad, other = await rows()
    assert (good["id"], good["state"], other["state"]) == (first, "sent", "sent")
    assert (bad["state"], bad["attempts"]) == ("failed", 1)
    assert bad["last_error"].endswith("is not an e-mail address")
    mails = smtp_server.messages
    assert [m.recipients for m in mails] == [["anna@example.org"], ["client7@example.org"]]
    assert mails[0].message["Subject"] == "Test message from My picks Bcc: spy@evil.example"
    assert mails[0].message["From"] == "Studio Lumen X <studio@lumen.example>"
    assert all(m.message["Bcc"] is None for m in mails)
    # Nothing stays "sending": the next pass has nothing to do.
    assert (await deliver_due(settings, T0 + dt.timedelta(days=1))).handled == 0


async def test_a_batch_slower_than_a_lease_is_sent_once_beside_a_second_deliverer(
    clean_db: None,
    settings: Settings,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each claim gets its lease when it is taken: a row claimed late in a long batch is not
    taken over by a second deliverer that starts meanwhile (both with the clock moving as real
    time does), and every mail arrives exactly once."""
    monkeypatch.setattr(delivery, "_LEASE_EXTRA", dt.timedelta(0))
    settings = notify_settings(settings, timeout_seconds=2)  # a lease of 9 s per claim
    smtp_server.delay = 1.5
    await use_relay(smtp_server)
    await queue_mails(8)
    started = time.monotonic()

    async def second() -> DeliveryReport:
        await asyncio.sleep(7.5)
        elapsed = dt.timedelta(seconds=time.monotonic() - started)
        return await deliver_due(settings, T0 + elapsed, limit=8)

    first_report, second_report = await asyncio.gather(deliver_due(settings, T0, limit=8), second())
    assert first_report.sent + second_report.sent == 8
    ids = [m.message_id for m in smtp_server.messages]
    assert len(ids) == 8 and len(set(ids)) == 8
    assert {(row["state"], row["attempts"]) for row in await rows()} == {("sent", 1)}


async def test_alerts_go_first_and_a_hanging_relay_costs_one_time_out_per_pass(
    clean_db: None,
    settings: Settings,
    receiver: Receiver,
    hanging_relay: tuple[str, int],
) -> None:
    """Alerts queued after the e-mail are delivered first; the e-mail part of the pass stops
    at the first relay that does not answer, spending no attempt on the other mails."""
    host, port = hanging_relay
    server = SmtpServer()
    server.host, server.port = host, port
    await use_relay(server)
    settings = notify_settings(settings, timeout_seconds=1, alert_urls=[receiver.alert_url()])
    await queue_mails(3)
    for title in ("Disk almost full", "Backup failed"):
        await queue_alert(
            title,
            "body",
            severity="failure",
            source="test",
            now=T0 + dt.timedelta(seconds=1),
            config_urls=settings.notify.alert_urls,
        )
    assert await deliver_due(settings, T0 + dt.timedelta(seconds=1)) == DeliveryReport(
        sent=2, retrying=1
    )
    assert [m["title"] for m in receiver.messages()] == ["Disk almost full", "Backup failed"]
    mails = await rows(kind="email")
    assert [row["attempts"] for row in mails] == [1, 0, 0]
    assert mails[0]["last_error"].endswith(f"{port}: no answer within 1 s")


async def test_e_mail_failing_for_an_hour_is_told_on_the_channels_once_per_episode(
    clean_db: None, settings: Settings, smtp_server: SmtpServer, receiver: Receiver
) -> None:
    """While the relay stays down, the alert channels hear "E-mail cannot be delivered" once
    an e-mail has waited an hour, and only once; after the relay worked again, a new outage
    is told again."""
    settings = notify_settings(settings, alert_urls=[receiver.alert_url()], retry_max_minutes=30)
    await use_relay(smtp_server)
    smtp_server.stop()
    await queue_mails(1)

    async def passes(at: dt.datetime) -> None:
        await deliver_due(settings, at)
        await deliver_due(settings, at)  # the alert queued by the first pass

    def told() -> list[str]:
        return [m["title"] for m in receiver.messages() if m["title"].startswith("E-mail")]

    await passes(T0)
    await passes(T0 + dt.timedelta(minutes=59))
    assert told() == []
    await passes(T0 + dt.timedelta(hours=1))
    await passes(T0 + dt.timedelta(hours=2))
    assert told() == [
        f"E-mail cannot be delivered: could not connect to 127.0.0.1:{smtp_server.port}: "
        "connection refused"
    ]
    notice = next(m for m in receiver.messages() if m["title"].startswith("E-mail"))
    assert "1 e-mail(s) wait in the outbox" in notice["message"]
    assert "given up after 3 days" in notice["message"]

    smtp_server.start()
    await passes(T0 + dt.timedelta(hours=3))
    assert [row["state"] for row in await rows(kind="email")] == ["sent"]
    smtp_server.stop()
    await queue_mails(1, start=1)
    later = T0 + dt.timedelta(hours=3)
    await (
        OutboxMessage.update({OutboxMessage.created_at: later})
        .where(OutboxMessage.state == "pending")
        .run()
    )
    await passes(later + dt.timedelta(minutes=30))
    await passes(later + dt.timedelta(hours=1))
    assert len(told()) == 2


async def test_the_backups_alert_urls_hear_that_a_channel_is_not_working(
    clean_db: None, settings: Settings, receiver: Receiver
) -> None:
    """The backups' own alert URLs are channels like the settings file's: a failing channel
    is told to them too."""
    backup_url = receiver.alert_url("backup-hook")
    settings = msgspec.structs.replace(
        notify_settings(settings, max_attempts=1),
        backups=msgspec.structs.replace(settings.backups, alert_urls=[backup_url]),
    )
    channel = AlertChannel(name="Pager", url="json://127.0.0.1:9/pager", created_at=T0)
    await channel.save().run()
    await queue_alert("Disk full", "b", severity="failure", source="test", now=T0, config_urls=[])
    await deliver_due(settings, T0)
    notices = await rows(source="notify")
    assert [row["channel"] for row in notices] == [config_channel_key(backup_url)]
    await deliver_due(settings, T0)
    assert [m["title"] for m in receiver.messages()] == ["Alert channel not working: “Pager”"]


async def test_failed_and_discarded_messages_are_purged_after_ninety_days(
    clean_db: None, settings: Settings
) -> None:
    """Sent rows go after 30 days; failed and discarded ones are kept for 90."""
    for state in ("sent", "failed", "discarded"):
        await (
            OutboxMessage(
                kind="alert",
                channel="db:1",
                subject=state,
                state=state,
                next_attempt_at=T0,
                created_at=T0,
                sent_at=None if state == "failed" else T0,
            )
            .save()
            .run()
        )
    assert await purge_sent(T0 + dt.timedelta(days=31)) == 1
    assert sorted(row["state"] for row in await rows()) == ["discarded", "failed"]
    assert await purge_sent(T0 + dt.timedelta(days=89)) == 0
    assert await purge_sent(T0 + dt.timedelta(days=91)) == 2
    assert await rows() == []
