"""The worker's delivery of the outbox: claim a due row, send it, mark it; retry with back-off.

Several workers may run: a row is claimed with ``FOR UPDATE SKIP LOCKED``, a random claim token
and a lease (``claimed_until``) taken from the database's clock at the moment of the claim and
long enough for the slowest send; a row whose worker died is claimed again when its lease ran
out, and only the holder of the token marks a row. A row is marked ``sent`` right after the
relay or channel accepted it: a crash between the two is the only way a message goes out twice,
and that window is one UPDATE long.

The injected ``now`` decides what is due (and is what tests move); leases are real time, since
sending takes real time.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
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
    "FAILED_KEPT",
    "GIVE_UP_AFTER",
    "MAIL_TROUBLE_AFTER",
    "SENT_KEPT",
    "DeliveryLoop",
    "DeliveryReport",
    "backoff",
    "channel_label",
    "config_channels",
    "deliver_due",
    "purge_sent",
    "resolve_channel",
]

log = logging.getLogger(__name__)

SENT_KEPT = dt.timedelta(days=30)  # sent messages are deleted after this
FAILED_KEPT = dt.timedelta(days=90)  # failed and discarded ones after this
# An e-mail failing for a passing reason (the relay down, a mailbox busy) is given up once it
# had max_attempts attempts *and* is this old: a relay outage longer than the back-off does
# not fail every message queued meanwhile.
GIVE_UP_AFTER = dt.timedelta(days=3)
# An e-mail that the relay has not taken for this long is told on the alert channels.
MAIL_TROUBLE_AFTER = dt.timedelta(hours=1)
PURGE_EVERY = 3600.0  # seconds between purges in the loop
_LEASE_EXTRA = dt.timedelta(seconds=60)  # margin beyond the longest a send may take

_CLAIM = """
UPDATE outbox_message SET state = 'sending', claimed_until = clock_timestamp() + {}::interval,
    claim_token = {}, attempts = attempts + 1,
    message_id = CASE WHEN kind = 'email' AND message_id = '' THEN {} ELSE message_id END
WHERE id = (
    SELECT id FROM outbox_message
    WHERE ((state = 'pending' AND next_attempt_at <= {})
           OR (state = 'sending' AND claimed_until < clock_timestamp()))
      AND kind = {}
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
    relay_down: bool = False  # the relay failed, not this message: the others would too


def backoff(attempts: int, settings: Settings) -> dt.timedelta:
    """The wait after the ``attempts``-th failed attempt: ``retry_seconds``, doubling, capped
    at ``retry_max_minutes``."""
    notify = settings.notify
    seconds = notify.retry_seconds * 2 ** min(max(attempts - 1, 0), 30)
    return dt.timedelta(seconds=min(seconds, notify.retry_max_minutes * 60))


async def config_channels(settings: Settings) -> list[tuple[str, str]]:
    """The alert URLs that are not channels added on Admin → Notifications, as ``(url,
    origin)``: the ``[notify]`` section's (origin ``"settings"``), then the backups' own, set in
    their section of the settings file or on their admin page (origin ``"backups"``). Each URL
    once; every list of channels and every alert to all of them starts here."""
    # Imported here: the backups domain imports this module.
    from appliance.backups.alerts import effective_targets

    backup_urls, _ = await effective_targets(settings)
    found: dict[str, str] = {}
    for origin, urls in (("settings", settings.notify.alert_urls), ("backups", backup_urls)):
        for url in urls:
            if url.strip():
                found.setdefault(url, origin)
    return list(found.items())


async def alert_urls(settings: Settings) -> list[str]:
    """Every alert URL that is not a channel added on Admin → Notifications: what each
    producer of alerts passes to ``queue_alert``, so that every alert reaches every channel."""
    return [url for url, _ in await config_channels(settings)]


async def resolve_channel(settings: Settings, key: str) -> tuple[str, str]:
    """``(url, "")`` for a channel key, or ``("", why it cannot be used)``."""
    if key.startswith("config:"):
        for url in await alert_urls(settings):
            if config_channel_key(url) == key:
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


def lease_length(settings: Settings) -> dt.timedelta:
    """How long a claim holds: longer than the longest a send may take (twice the time-out
    and 5 s, see :func:`_send_email`) with a margin, counted from the claim itself."""
    return dt.timedelta(seconds=settings.notify.timeout_seconds * 2 + 5) + _LEASE_EXTRA


async def _claim(
    now: dt.datetime,
    lease: dt.timedelta,
    *,
    kind: str,
    message_id: str,
    only: list[int] | None,
) -> dict[str, Any] | None:
    token = secrets.token_hex(16)
    rows = await OutboxMessage.raw(_CLAIM, lease, token, message_id, now, kind, only, only)
    return rows[0] if rows else None


async def _send_email(relay: Relay, row: dict[str, Any], seconds: float) -> _Outcome:
    try:
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
        with anyio.fail_after(seconds * 2 + 5):
            await anyio.to_thread.run_sync(
                smtp.send_message, relay, message, row["recipient"], seconds, abandon_on_cancel=True
            )
    except TransportError as error:
        return _Outcome(
            "failed" if error.permanent else "retry", error.message, relay_down=error.relay
        )
    except TimeoutError:
        return _Outcome(
            "retry", f"{relay.address} did not finish within {seconds * 2:.0f} s", relay_down=True
        )
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


def _gives_up(settings: Settings, row: dict[str, Any], now: dt.datetime) -> bool:
    """After a passing failure: an alert is given up after ``max_attempts`` (the other
    channels are told at once); an e-mail only once it is also :data:`GIVE_UP_AFTER` old."""
    if row["attempts"] < settings.notify.max_attempts:
        return False
    return bool(row["kind"] != "email" or now - row["created_at"] >= GIVE_UP_AFTER)


async def _settle(
    settings: Settings, row: dict[str, Any], outcome: _Outcome, *, now: dt.datetime
) -> str:
    """Mark the row; the state it got ("" when the claim was lost to another worker)."""
    state: str = outcome.result
    next_at = now
    if state == "retry":
        if _gives_up(settings, row, now):
            state = "failed"
        else:
            state = "pending"
            next_at = now + backoff(row["attempts"], settings)
    # Only the holder of the claim marks the row: a worker whose lease ran out while it was
    # sending finds the row claimed again (another token) and leaves it alone.
    updated = await OutboxMessage.raw(
        "UPDATE outbox_message SET state = {}, next_attempt_at = {}, claimed_until = NULL,"
        " claim_token = '', last_error = {},"
        " sent_at = CASE WHEN {} THEN {}::timestamptz ELSE sent_at END"
        " WHERE id = {} AND state = 'sending' AND claim_token = {} RETURNING id",
        state,
        next_at,
        outcome.reason[:2000],
        state == "sent",
        now,
        row["id"],
        row["claim_token"],
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
        config_urls=await alert_urls(settings),
        dedupe_key=f"channel-failed:{channel}:{episode}",
        skip_channels=[channel],
    )


async def _tell_mail_failing(settings: Settings, reason: str, now: dt.datetime) -> None:
    """One alert per episode of e-mail not getting through (the episode is named after the
    last e-mail the relay took, so it ends once one goes out)."""
    rows = await OutboxMessage.raw(
        "SELECT (SELECT max(sent_at) FROM outbox_message WHERE kind = 'email'"
        " AND state = 'sent') AS last,"
        " (SELECT count(*) FROM outbox_message WHERE kind = 'email'"
        " AND state IN ('pending', 'sending')) AS waiting"
    )
    last: dt.datetime | None = rows[0]["last"]
    episode = str(int(last.timestamp())) if last else "never"
    body = (
        f"The mail relay has not taken e-mail for over an hour: {reason}.\n\n"
        f"{rows[0]['waiting']} e-mail(s) wait in the outbox and are tried again; each is given "
        f"up after {GIVE_UP_AFTER.days} days. Open Admin → Notifications on the appliance to "
        "check the relay, then retry the failed messages."
    )
    await queue_alert(
        f"E-mail cannot be delivered: {reason}"[:200],
        body,
        severity="failure",
        source="notify",
        now=now,
        config_urls=await alert_urls(settings),
        dedupe_key=f"mail-failing:{episode}",
    )


async def deliver_due(
    settings: Settings,
    now: dt.datetime,
    *,
    limit: int = 20,
    only: list[int] | None = None,
) -> DeliveryReport:
    """Deliver up to ``limit`` due messages (of ``only`` these ids, when given), one claim at a
    time: alerts first, so a relay that hangs never holds them up, then e-mail.

    E-mail waits (no attempt spent) while no relay is set, and the e-mail part stops at the
    first failure of the relay itself (down, refusing the login): the other mails would only
    wait the same time-out each. Steps for each row:
    1. claim it (state ``sending``, a claim token and a lease from now, one more attempt, its
       Message-ID fixed once);
    2. send it, outside any transaction;
    3. mark it sent, pending again after a back-off, or failed (at once when permanent, else
       see :func:`_gives_up`); a failed alert is announced on the other channels, an e-mail
       the relay has not taken for :data:`MAIL_TROUBLE_AFTER` on all of them.
    """
    relay = await effective_relay(settings)
    timeout = float(settings.notify.timeout_seconds)
    report = DeliveryReport(relay_missing=not relay.configured)
    lease = lease_length(settings)
    for kind in ("alert", "email"):
        if kind == "email" and not relay.configured:
            break
        while report.handled < limit:
            row = await _claim(
                now, lease, kind=kind, message_id=smtp.new_message_id(relay), only=only
            )
            if row is None:
                break
            outcome = await _send(settings, relay, row, timeout)
            await _record(settings, row, outcome, now, report)
            if outcome.relay_down:
                break
    return report


async def _send(settings: Settings, relay: Relay, row: dict[str, Any], seconds: float) -> _Outcome:
    try:
        if row["kind"] == "email":
            return await _send_email(relay, row, seconds)
        return await _send_alert(settings, row, seconds)
    except Exception as error:  # noqa: BLE001 - the row must be settled whatever happened
        # Only the type: a message could carry a URL or an address.
        log.error(  # noqa: TRY400 - a traceback could show the URL or the address
            "outbox message %d: sending raised %s", row["id"], type(error).__name__
        )
        return _Outcome("retry", f"an unexpected error ({type(error).__name__})")


async def _record(
    settings: Settings,
    row: dict[str, Any],
    outcome: _Outcome,
    now: dt.datetime,
    report: DeliveryReport,
) -> None:
    state = await _settle(settings, row, outcome, now=now)
    if state == "sent":
        report.sent += 1
        return
    log.warning(
        "outbox message %d (%s, attempt %d) not delivered: %s",
        row["id"],
        row["channel"] or "e-mail",
        row["attempts"],
        channels.redact(outcome.reason),
    )
    if state == "pending":
        report.retrying += 1
    elif state == "failed":
        report.failed += 1
        if row["kind"] == "alert" and outcome.tell_others:
            await _tell_other_channels(settings, row, outcome.reason, now)
    if (
        row["kind"] == "email"
        and outcome.relay_down
        and state
        and now - row["created_at"] >= MAIL_TROUBLE_AFTER
    ):
        await _tell_mail_failing(settings, outcome.reason, now)


async def purge_sent(now: dt.datetime) -> int:
    """Delete sent messages older than :data:`SENT_KEPT`, failed and discarded ones older
    than :data:`FAILED_KEPT` (counted from the discard or the last attempt); how many."""
    rows = await OutboxMessage.raw(
        "DELETE FROM outbox_message WHERE (state = 'sent' AND sent_at < {})"
        " OR (state IN ('failed', 'discarded') AND coalesce(sent_at, next_attempt_at) < {})"
        " RETURNING id",
        now - SENT_KEPT,
        now - FAILED_KEPT,
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
                # Straight on while messages go out; after a pass that only met failures
                # (the relay down), wait: the next would meet them again.
                busy = report.sent > 0
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
