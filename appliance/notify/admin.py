"""What admins do on Admin → Notifications: alert channels, test messages, and the outbox's
messages that failed or wait too long. Every change is audit-logged, never with a URL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.config import Settings
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.notify import channels
from appliance.notify.delivery import channel_label, config_channels
from appliance.notify.messages import (
    LANGUAGES,
    config_channel_key,
    queue_channel_alert,
    queue_email,
)
from appliance.notify.relay import effective_relay, is_address
from appliance.notify.tables import AlertChannel, OutboxMessage

__all__ = [
    "LONG_WAIT",
    "MAX_CHANNELS",
    "ChannelView",
    "OutboxOverview",
    "ProblemMessage",
    "add_channel",
    "discard_message",
    "list_channels",
    "outbox_overview",
    "queue_test_email",
    "remove_channel",
    "retry_all_failed",
    "retry_message",
    "set_channel_enabled",
    "test_channel",
]

MAX_CHANNELS = 20
MAX_NAME = 80
LONG_WAIT = dt.timedelta(minutes=15)  # a pending message older than this is shown to admins
_PROBLEMS_SHOWN = 50
STATES = ("pending", "sending", "sent", "failed", "discarded")
_ORIGINS = {"settings": "From the settings file", "backups": "From the backups settings"}


class ChannelView(msgspec.Struct, frozen=True, kw_only=True):
    """A channel as the page shows it: masked, never its URL."""

    key: str
    id: int | None  # None for the settings file's URLs
    name: str
    masked: str
    enabled: bool
    last_sent_at: dt.datetime | None
    failed: int  # messages to it that failed for good and were not discarded


class ProblemMessage(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    kind: str
    to: str  # the recipient's address, or the channel's name
    subject: str
    state: str
    attempts: int
    last_error: str
    created_at: dt.datetime
    next_attempt_at: dt.datetime
    stalled: bool = False  # "sending" past its lease: its worker stopped; may be discarded


class OutboxOverview(msgspec.Struct, frozen=True, kw_only=True):
    counts: dict[str, int]
    emails_waiting_for_relay: int  # pending e-mail while no relay is set
    relay_configured: bool
    problems: list[ProblemMessage]


def _row_id(value: int, what: str) -> int:
    """An id from a URL path; one beyond the column's range names nothing (and must not reach
    PostgreSQL, which would refuse it with an error)."""
    if not 0 < value < 2**31:
        raise NotFound(f"That {what} does not exist.")
    return value


def _channel_name(value: str) -> str:
    name = value.strip()
    if not name:
        raise InvalidInput("Give the channel a name, for example “Owner's phone”.", field="name")
    if len(name) > MAX_NAME:
        raise InvalidInput(f"The name is longer than {MAX_NAME} characters.", field="name")
    if any(not ch.isprintable() for ch in name):
        raise InvalidInput("The name must not contain control characters.", field="name")
    return name


async def list_channels(settings: Settings) -> list[ChannelView]:
    """The settings file's alert URLs, the backups' own, then the channels admins added."""
    stats = {
        row["channel"]: row
        for row in await OutboxMessage.raw(
            "SELECT channel, max(sent_at) FILTER (WHERE state = 'sent') AS last_sent_at,"
            " count(*) FILTER (WHERE state = 'failed') AS failed"
            " FROM outbox_message WHERE kind = 'alert' GROUP BY channel"
        )
    }

    def view(key: str, id_: int | None, name: str, url: str, enabled: bool) -> ChannelView:
        stat = stats.get(key, {})
        return ChannelView(
            key=key,
            id=id_,
            name=name,
            masked=channels.mask_url(url),
            enabled=enabled,
            last_sent_at=stat.get("last_sent_at"),
            failed=int(stat.get("failed") or 0),
        )

    views = [
        view(config_channel_key(url), None, _ORIGINS[origin], url, True)
        for url, origin in await config_channels(settings)
    ]
    rows = await AlertChannel.select().order_by(AlertChannel.id).run()
    views += [
        view(f"db:{row['id']}", row["id"], row["name"], row["url"], row["enabled"]) for row in rows
    ]
    return views


async def add_channel(name: str, url: str, *, actor: Actor, address: str, now: dt.datetime) -> int:
    """Add an apprise URL after apprise parsed it; the new channel's id."""
    name = _channel_name(name)
    url = url.strip()
    if not url:
        raise InvalidInput("Enter the apprise URL of the channel.", field="url")
    problem = channels.check_url(url)
    if problem:
        raise InvalidInput(f"Not added: {problem}", field="url")
    async with AlertChannel._meta.db.transaction(allow_nested=True):
        count = await AlertChannel.count().run()
        if count >= MAX_CHANNELS:
            raise Conflict(f"At most {MAX_CHANNELS} alert channels can be added.")
        row = AlertChannel(name=name, url=url, enabled=True, created_at=now, created_by=actor.id)
        await row.save().run()
        await audit.record(
            "notify.channel.add",
            actor=actor,
            target=f"alert-channel:{row.id}",
            address=address,
            details={"name": name, "service": url.partition("://")[0].lower()},
            at=now,
        )
    return int(row.id)


async def _channel(channel_id: int) -> dict[str, Any]:
    _row_id(channel_id, "alert channel")
    row = await AlertChannel.select().where(AlertChannel.id == channel_id).first().run()
    if row is None:
        raise NotFound("That alert channel no longer exists.")
    return row


async def set_channel_enabled(
    channel_id: int, enabled: bool, *, actor: Actor, address: str, now: dt.datetime
) -> None:
    async with AlertChannel._meta.db.transaction(allow_nested=True):
        row = await _channel(channel_id)
        await (
            AlertChannel.update({AlertChannel.enabled: enabled})
            .where(AlertChannel.id == channel_id)
            .run()
        )
        await audit.record(
            "notify.channel.enable" if enabled else "notify.channel.disable",
            actor=actor,
            target=f"alert-channel:{channel_id}",
            address=address,
            details={"name": row["name"]},
            at=now,
        )


async def remove_channel(channel_id: int, *, actor: Actor, address: str, now: dt.datetime) -> None:
    """Remove a channel; its waiting messages fail with the reason when the worker sees them."""
    async with AlertChannel._meta.db.transaction(allow_nested=True):
        row = await _channel(channel_id)
        await AlertChannel.delete().where(AlertChannel.id == channel_id).run()
        await audit.record(
            "notify.channel.remove",
            actor=actor,
            target=f"alert-channel:{channel_id}",
            address=address,
            details={"name": row["name"]},
            at=now,
        )


async def test_channel(
    settings: Settings, key: str, *, studio: str, actor: Actor, address: str, now: dt.datetime
) -> int:
    """Queue a test alert for one channel (of the file or the page); the outbox row's id."""
    if key not in {view.key for view in await list_channels(settings)}:
        raise NotFound("That alert channel no longer exists.")
    label = await channel_label(key)
    message_id = await queue_channel_alert(
        key,
        "Test alert",
        f"{actor.name} sent this test from {studio or 'the appliance'} (Admin → "
        "Notifications). Alerts about the appliance will arrive here.",
        severity="info",
        source="notify",
        now=now,
    )
    await audit.record(
        "notify.channel.test",
        actor=actor,
        target=f"alert-channel:{key[3:]}" if key.startswith("db:") else "alert-channel:config",
        address=address,
        details={"channel": label, "message": message_id},
        at=now,
    )
    return message_id


async def queue_test_email(
    settings: Settings,
    to: str,
    *,
    language: str,
    studio: str,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> int:
    """Queue the test message to ``to``; the outbox row's id."""
    to = to.strip()
    if not is_address(to):
        raise InvalidInput("Enter the address as name@example.com.", field="to")
    if language not in LANGUAGES:
        raise InvalidInput("Choose English or German.", field="language")
    relay = await effective_relay(settings)
    if not relay.configured:
        raise Conflict("Set the SMTP relay first; the test message would only wait for it.")
    message_id = await queue_email(
        to=to,
        template="test_message",
        context={"studio": studio, "sender": actor.name, "relay": relay.address},
        language=language,
        source="notify",
        now=now,
    )
    assert message_id is not None  # no dedupe key: always queued
    await audit.record(
        "notify.email.test",
        actor=actor,
        target=f"outbox:{message_id}",
        address=address,
        details={"domain": to.rpartition("@")[2], "language": language},
        at=now,
    )
    return message_id


async def outbox_overview(settings: Settings, now: dt.datetime) -> OutboxOverview:
    """Counts per state, and the messages admins should look at: failed ones, and those
    waiting longer than :data:`LONG_WAIT`."""
    counts = dict.fromkeys(STATES, 0)
    for row in await OutboxMessage.raw(
        "SELECT state, count(*) AS n FROM outbox_message GROUP BY state"
    ):
        counts[row["state"]] = int(row["n"])
    relay = await effective_relay(settings)
    waiting = 0
    if not relay.configured:
        rows = await OutboxMessage.raw(
            "SELECT count(*) AS n FROM outbox_message WHERE kind = 'email' AND state = 'pending'"
        )
        waiting = int(rows[0]["n"])
    rows = await OutboxMessage.raw(
        "SELECT id, kind, channel, recipient, subject, state, attempts, last_error, created_at,"
        " next_attempt_at, (state = 'sending' AND claimed_until < clock_timestamp()) AS stalled"
        " FROM outbox_message"
        " WHERE state = 'failed' OR (state IN ('pending', 'sending') AND created_at < {})"
        " OR (state = 'sending' AND claimed_until < clock_timestamp())"
        " ORDER BY state = 'failed' DESC, created_at LIMIT {}",
        now - LONG_WAIT,
        _PROBLEMS_SHOWN,
    )
    problems = [
        ProblemMessage(
            id=row["id"],
            kind=row["kind"],
            to=row["recipient"] if row["kind"] == "email" else await channel_label(row["channel"]),
            subject=row["subject"],
            state=row["state"],
            attempts=row["attempts"],
            # An alert's reason comes from apprise, which may name the channel's URL; an
            # e-mail's is our own sentence about the relay, and masking every remembered URL
            # piece in it would hide words such as "user" in the relay's reply.
            last_error=(
                channels.redact(row["last_error"]) if row["kind"] == "alert" else row["last_error"]
            )
            or (
                "waiting for an SMTP relay"
                if row["kind"] == "email" and not relay.configured
                else ""
            ),
            created_at=row["created_at"],
            next_attempt_at=row["next_attempt_at"],
            stalled=bool(row["stalled"]),
        )
        for row in rows
    ]
    return OutboxOverview(
        counts=counts,
        emails_waiting_for_relay=waiting,
        relay_configured=relay.configured,
        problems=problems,
    )


async def retry_message(message_id: int, *, actor: Actor, address: str, now: dt.datetime) -> None:
    """Send a failed or waiting message at the next round, with its attempts counted anew."""
    _row_id(message_id, "message")
    async with OutboxMessage._meta.db.transaction(allow_nested=True):
        rows = await OutboxMessage.raw(
            "UPDATE outbox_message SET state = 'pending', attempts = 0, next_attempt_at = {},"
            " claimed_until = NULL, claim_token = ''"
            " WHERE id = {} AND (state IN ('failed', 'pending')"
            # left "sending" by a worker that stopped; a live worker's claim is left alone
            " OR (state = 'sending' AND claimed_until < clock_timestamp())) RETURNING kind",
            now,
            message_id,
        )
        if not rows:
            raise NotFound("That message is no longer waiting or failed; nothing to retry.")
        await audit.record(
            "notify.message.retry",
            actor=actor,
            target=f"outbox:{message_id}",
            address=address,
            details={"kind": rows[0]["kind"]},
            at=now,
        )


async def discard_message(message_id: int, *, actor: Actor, address: str, now: dt.datetime) -> None:
    """Give up on a failed or waiting message, or one left "sending" by a worker that
    stopped; it is kept (as discarded, ``sent_at`` the time of the discard) until purged."""
    _row_id(message_id, "message")
    async with OutboxMessage._meta.db.transaction(allow_nested=True):
        rows = await OutboxMessage.raw(
            "UPDATE outbox_message SET state = 'discarded', sent_at = {},"
            " claimed_until = NULL, claim_token = ''"
            " WHERE id = {} AND (state IN ('failed', 'pending')"
            # left "sending" by a worker that stopped; a live worker's claim is left alone
            " OR (state = 'sending' AND claimed_until < clock_timestamp())) RETURNING kind",
            now,
            message_id,
        )
        if not rows:
            raise NotFound("That message is no longer waiting or failed; nothing to discard.")
        await audit.record(
            "notify.message.discard",
            actor=actor,
            target=f"outbox:{message_id}",
            address=address,
            details={"kind": rows[0]["kind"]},
            at=now,
        )


async def retry_all_failed(*, actor: Actor, address: str, now: dt.datetime) -> int:
    """Send every failed message again at the next round, attempts counted anew (after a
    relay or a channel is fixed); how many."""
    async with OutboxMessage._meta.db.transaction(allow_nested=True):
        rows = await OutboxMessage.raw(
            "UPDATE outbox_message SET state = 'pending', attempts = 0, next_attempt_at = {}"
            " WHERE state = 'failed' RETURNING kind",
            now,
        )
        if not rows:
            raise NotFound("No message has failed; nothing to retry.")
        kinds = [row["kind"] for row in rows]
        await audit.record(
            "notify.message.retry_all",
            actor=actor,
            target="outbox",
            address=address,
            details={"emails": kinds.count("email"), "alerts": kinds.count("alert")},
            at=now,
        )
    return len(rows)
