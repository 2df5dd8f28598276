"""The worker's delivery of the outbox: claim a due row, send it, mark it; retry with back-off.

Several workers may run: a row is claimed with ``FOR UPDATE SKIP LOCKED`` and a lease
(``claimed_until``); a row whose worker died is claimed again when its lease ran out. A row is
marked ``sent`` right after the relay or channel accepted it: a crash between the two is the
only way a message goes out twice, and that window is one UPDATE long.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any, Literal

import anyio
import anyio.to_thread
import msgspec

from appliance.config import Settings
from appliance.notify import channels, smtp
from appliance.notify.messages import config_channel_key, queue_alert
from appliance.notify.relay import effective_relay
from appliance.notify.smtp import Relay, TransportError
from appliance.notify.tables import AlertChannel, OutboxMessage

__all__ = [
    "SENT_KEPT",
    "DeliveryLoop",
    "DeliveryReport",
    "backoff",
    "channel_label",
    "deliver_due",
    "purge_sent",
    "resolve_channel",
]

log = logging.getLogger(__name__)

SENT_KEPT = dt.timedelta(days=30)
PURGE_EVERY = 3600.0  # seconds between purges in the loop
_LEASE_EXTRA = dt.timedelta(seconds=60)

_CLAIM = """
UPDATE outbox_message SET state = 'sending', claimed_until = {}, attempts = attempts + 1,
    message_id = CASE WHEN kind = 'email' AND message_id = '' THEN {} ELSE message_id END
WHERE id = (
    SELECT id FROM outbox_message
    WHERE ((state = 'pending' AND next_attempt_at <= {})
           OR (state = 'sending' AND claimed_until < {}))
      AND (kind <> 'email' OR {})
      AND ({}::integer[] IS NULL OR id = ANY({}::integer[]))
    ORDER BY next_attempt_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING *
"""


class DeliveryReport(msgspec.Struct, kw_only=True):
    """What one :func:`deliver_due` call did."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    relay_missing: bool = False

    @property
    def handled(self) -> int:
        return self.sent + self.retrying + self.failed


class _Outcome(msgspec.Struct, frozen=True):
    result: Literal["sent", "retry", "failed"]
    reason: str = ""
    tell_others: bool = True  # a failed alert is announced on the other channels


def backoff(attempts: int, settings: Settings) -> dt.timedelta:
    """The wait after the ``attempts``-th failed attempt: ``retry_seconds``, doubling, capped
    at ``retry_max_minutes``."""
    notify = settings.notify
    seconds = notify.retry_seconds * 2 ** min(max(attempts - 1, 0), 30)
    return dt.timedelta(seconds=min(seconds, notify.retry_max_minutes * 60))


async def resolve_channel(settings: Settings, key: str) -> tuple[str, str]:
    """``(url, "")`` for a channel key, or ``("", why it cannot be used)``."""
    if key.startswith("config:"):
        # The backups domain queues for its own alert URLs too (set in its section of the
        # settings file or on its admin page), so those resolve here as well.
        from appliance.backups.alerts import effective_targets

        backup_urls, _ = await effective_targets(settings)
        for url in [*settings.notify.alert_urls, *backup_urls]:
            if url.strip() and config_channel_key(url) == key:
                return url, ""
        return "", "the alert URL is no longer configured"
    if key.startswith("db:") and key[3:].isdigit():
        row = (
            await AlertChannel.select(AlertChannel.url, AlertChannel.enabled)
            .where(AlertChannel.id == int(key[3:]))
            .first()
            .run()
        )
        if row is None:
            return "", "the alert channel was removed"
        if not row["enabled"]:
            return "", "the alert channel is switched off"
        return str(row["url"]), ""
    return "", "the alert channel is unknown"


async def channel_label(key: str) -> str:
    """A channel as admins know it: its name, or where it comes from; never its URL."""
    if key.startswith("db:") and key[3:].isdigit():
        row = (
            await AlertChannel.select(AlertChannel.name)
            .where(AlertChannel.id == int(key[3:]))
            .first()
            .run()
        )
        if row is not None:
            return f"“{row['name']}”"
    if key.startswith("config:"):
        return f"alert URL {key[7:15]}… (settings file or backups page)"
    return key


async def _claim(
    now: dt.datetime,
    lease: dt.datetime,
    *,
    emails: bool,
    message_id: str,
    only: list[int] | None,
) -> dict[str, Any] | None:
    rows = await OutboxMessage.raw(_CLAIM, lease, message_id, now, now, emails, only, only)
    return rows[0] if rows else None


async def _send_email(relay: Relay, row: dict[str, Any], seconds: float) -> _Outcome:
    message = smtp.build_message(
        relay,
        recipient=row["recipient"],
        subject=row["subject"],
        text=row["body_text"],
        html=row["body_html"],
        language=row["language"],
        message_id=row["message_id"],
        date=row["created_at"],
    )
    try:
        with anyio.fail_after(seconds * 2 + 5):
            await anyio.to_thread.run_sync(
                smtp.send_message, relay, message, row["recipient"], seconds, abandon_on_cancel=True
            )
    except TransportError as error:
        return _Outcome("failed" if error.permanent else "retry", error.message)
    except TimeoutError:
        return _Outcome("retry", f"{relay.address} did not finish within {seconds * 2:.0f} s")
    return _Outcome("sent")


async def _send_alert(settings: Settings, row: dict[str, Any], seconds: float) -> _Outcome:
    url, missing = await resolve_channel(settings, row["channel"])
    if not url:
        # Nobody reads a channel that is gone; the other channels need not hear of it.
        return _Outcome("failed", missing, tell_others=False)
    try:
        with anyio.fail_after(seconds * 2 + 5):
            await anyio.to_thread.run_sync(
                lambda: channels.send_alert(
                    url,
                    title=row["subject"],
                    body=row["body_text"],
                    severity=row["severity"],
                    timeout=seconds,
                ),
                abandon_on_cancel=True,
            )
    except TransportError as error:
        return _Outcome("failed" if error.permanent else "retry", error.message)
    except TimeoutError:
        return _Outcome("retry", f"the channel did not answer within {seconds * 2:.0f} s")
    return _Outcome("sent")


async def _settle(
    settings: Settings,
    row: dict[str, Any],
    outcome: _Outcome,
    *,
    now: dt.datetime,
    lease: dt.datetime,
) -> str:
    """Mark the row; the state it got ("" when the claim was lost to another worker)."""
    state: str = outcome.result
    next_at = now
    if state == "retry":
        if row["attempts"] >= settings.notify.max_attempts:
            state = "failed"
        else:
            state = "pending"
            next_at = now + backoff(row["attempts"], settings)
    # Only the holder of the claim marks the row: a worker whose lease ran out while it was
    # sending finds the row claimed again (another claimed_until) and leaves it alone.
    updated = await OutboxMessage.raw(
        "UPDATE outbox_message SET state = {}, next_attempt_at = {}, claimed_until = NULL,"
        " last_error = {}, sent_at = CASE WHEN {} THEN {}::timestamptz ELSE sent_at END"
        " WHERE id = {} AND state = 'sending' AND claimed_until = {} RETURNING id",
        state,
        next_at,
        outcome.reason[:2000],
        state == "sent",
        now,
        row["id"],
        lease,
    )
    return state if updated else ""


async def _tell_other_channels(
    settings: Settings, row: dict[str, Any], reason: str, now: dt.datetime
) -> None:
    """One alert on the other channels per failure episode of a channel: the episode is named
    after the channel's last delivered alert, so it ends once the channel works again."""
    channel = row["channel"]
    rows = await OutboxMessage.raw(
        "SELECT max(sent_at) AS last FROM outbox_message"
        " WHERE kind = 'alert' AND channel = {} AND state = 'sent'",
        channel,
    )
    last: dt.datetime | None = rows[0]["last"] if rows else None
    episode = str(int(last.timestamp())) if last else "never"
    label = await channel_label(channel)
    body = (
        f"Alerts to {label} cannot be delivered: {reason}.\n\n"
        f"The alert that failed: {row['subject']}\n\n"
        "Until this is fixed, admins reading only that channel hear nothing. Open "
        "Admin → Notifications on the appliance: test the channel, correct or replace it, "
        "and retry the failed messages."
    )
    await queue_alert(
        f"Alert channel not working: {label}",
        body,
        severity="warning",
        source="notify",
        now=now,
        config_urls=settings.notify.alert_urls,
        dedupe_key=f"channel-failed:{channel}:{episode}",
        skip_channels=[channel],
    )


async def deliver_due(
    settings: Settings,
    now: dt.datetime,
    *,
    limit: int = 20,
    only: list[int] | None = None,
) -> DeliveryReport:
    """Deliver up to ``limit`` due messages (of ``only`` these ids, when given), one claim at a
    time.

    E-mail waits (no attempt spent) while no relay is set. Steps for each row:
    1. claim it (state ``sending``, a lease, one more attempt, its Message-ID fixed once);
    2. send it, outside any transaction;
    3. mark it sent, pending again after a back-off, or failed (at once when permanent, else
       after ``max_attempts``); a failed alert is announced on the other channels.
    """
    relay = await effective_relay(settings)
    timeout = float(settings.notify.timeout_seconds)
    report = DeliveryReport(relay_missing=not relay.configured)
    lease = now + dt.timedelta(seconds=timeout * 3) + _LEASE_EXTRA
    for _ in range(limit):
        row = await _claim(
            now,
            lease,
            emails=relay.configured,
            message_id=smtp.new_message_id(relay),
            only=only,
        )
        if row is None:
            break
        if row["kind"] == "email":
            outcome = await _send_email(relay, row, timeout)
        else:
            outcome = await _send_alert(settings, row, timeout)
        state = await _settle(settings, row, outcome, now=now, lease=lease)
        if state == "sent":
            report.sent += 1
            continue
        where = row["channel"] or "e-mail"
        log.warning(
            "outbox message %d (%s, attempt %d) not delivered: %s",
            row["id"],
            where,
            row["attempts"],
            channels.redact(outcome.reason),
        )
        if state == "pending":
            report.retrying += 1
        elif state == "failed":
            report.failed += 1
            if row["kind"] == "alert" and outcome.tell_others:
                await _tell_other_channels(settings, row, outcome.reason, now)
    return report


async def purge_sent(now: dt.datetime) -> int:
    """Delete sent and discarded messages older than :data:`SENT_KEPT`; how many."""
    rows = await OutboxMessage.raw(
        "DELETE FROM outbox_message WHERE state IN ('sent', 'discarded')"
        " AND coalesce(sent_at, created_at) < {} RETURNING id",
        now - SENT_KEPT,
    )
    return len(rows)


class DeliveryLoop(threading.Thread):
    """Delivers the outbox every ``interval`` seconds until stopped; survives outages of the
    database, the relay and the channels (each is just tried again)."""

    def __init__(self, settings: Settings, *, interval: float = 2.0) -> None:
        super().__init__(name="outbox", daemon=True)
        self.settings = settings
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        from appliance.clock import utcnow
        from appliance.worker import close_thread_loop, run_async

        purged_at = 0.0
        relay_missing = False
        while not self.stopping.is_set():
            busy = False
            try:
                report = run_async(deliver_due(self.settings, utcnow()))
                busy = report.handled > 0
                if report.relay_missing and not relay_missing:
                    log.warning("outbox: no SMTP relay is set; e-mail waits until one is")
                relay_missing = report.relay_missing
                if time.monotonic() - purged_at > PURGE_EVERY:
                    run_async(purge_sent(utcnow()))
                    purged_at = time.monotonic()
            except Exception:  # the loop must survive a database outage
                log.exception("outbox: delivery failed; trying again")
            if not busy:
                self.stopping.wait(self.interval)
        close_thread_loop()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(timeout)
