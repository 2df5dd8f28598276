"""Piccolo tables of the notify domain: the outbox, admins' alert channels, mail settings.

Every e-mail and every alert is a row here before anything is sent, so a relay or channel that
is down delays a message and never loses it; the worker delivers with back-off and flags what
keeps failing for admins to see.
"""

from __future__ import annotations

from piccolo.columns import JSONB, Boolean, Integer, Serial, Text, Timestamptz, Varchar
from piccolo.table import Table

__all__ = ["AlertChannel", "NotifySetting", "OutboxMessage"]


class OutboxMessage(Table, tablename="outbox_message"):
    """One message to one recipient: an e-mail (rendered when queued, in the recipient's
    language) or an alert for one channel.

    ``dedupe_key`` is unique: a producer that may run twice (a maintenance notice, a probe
    alert) names its message, and the second enqueue is a no-op.
    """

    id: Serial  # added by Piccolo; declared for the type checker
    kind = Varchar(length=8)  # "email" or "alert"
    channel = Varchar(length=40, default="")  # alerts: "config:<n>" or "db:<id>"; e-mail: ""
    recipient = Varchar(length=320, default="")  # e-mail address; alerts: ""
    language = Varchar(length=8, default="en")
    template = Varchar(length=64, default="")  # the template it was rendered from, for admins
    subject = Text(default="")  # e-mail subject or alert title
    body_text = Text(default="")
    body_html = Text(default="")
    severity = Varchar(length=8, default="info")  # alerts: info, success, warning, failure
    source = Varchar(length=32, default="")  # the domain that queued it: monitoring, backups...
    # Whom a message to someone else is about ("client:<id>"): an erasure deletes it too.
    about = Varchar(length=40, default="", index=True)
    dedupe_key = Varchar(length=200, null=True, default=None, unique=True)
    state = Varchar(length=12, default="pending", index=True)  # pending, sending, sent, failed
    attempts = Integer(default=0)
    next_attempt_at = Timestamptz(index=True)
    claimed_until = Timestamptz(null=True, default=None)  # the lease, in the database's time
    claim_token = Varchar(length=32, default="")  # who holds the claim; only it settles the row
    last_error = Text(default="")
    message_id = Varchar(length=200, default="")  # the Message-ID header of an e-mail
    created_at = Timestamptz()
    sent_at = Timestamptz(null=True, default=None)


class AlertChannel(Table, tablename="alert_channel"):
    """An apprise URL admins added on Admin → Notifications. The URL carries tokens or
    passwords: it is never logged or shown again, only its masked form."""

    id: Serial
    name = Varchar(length=80)
    url = Text()
    enabled = Boolean(default=True)
    created_at = Timestamptz()
    created_by = Integer(null=True, default=None)


class NotifySetting(Table, tablename="notify_setting"):
    """Settings admins changed on Admin → Notifications (the SMTP relay); they win over the
    settings file."""

    key = Varchar(length=64, unique=True)
    value = JSONB(default="null")
    updated_at = Timestamptz()
    updated_by = Integer(null=True, default=None)
