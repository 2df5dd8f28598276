"""Telling the studio's admins of something that has a deadline: on every alert channel, or
else by e-mail to each active admin with an address (deadline alerts of the security-incident
register and of clients' privacy requests)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from appliance.config import Settings
from appliance.notify.messages import Severity, queue_alert, queue_email

__all__ = ["AdminNotice", "Recipients", "admin_recipients", "tell_admins"]


class Recipients(msgspec.Struct, frozen=True):
    """Who an admin notice reaches: the alert channels, or else the active admins' addresses."""

    channels: int
    admins: tuple[tuple[int, str], ...]

    @property
    def nobody(self) -> bool:
        return not self.channels and not self.admins


class AdminNotice(msgspec.Struct, frozen=True, kw_only=True):
    """One notice as an alert (title and body) and as an e-mail (template and context)."""

    title: str
    body: str
    severity: Severity
    template: str
    context: dict[str, Any]
    source: str
    dedupe_key: str


async def admin_recipients(settings: Settings) -> Recipients:
    """The alert channels when there are any; else the active admins with an e-mail address."""
    from appliance.accounts import service as accounts
    from appliance.notify.delivery import alert_urls
    from appliance.notify.messages import channel_keys

    channels = len(await channel_keys(await alert_urls(settings)))
    if channels:
        return Recipients(channels, ())
    admins = tuple(
        (member.id, member.email)
        for member in await accounts.list_members()
        if member.is_admin and member.is_active and member.email
    )
    return Recipients(0, admins)


async def tell_admins(
    settings: Settings, to: Recipients, notice: AdminNotice, now: dt.datetime
) -> int:
    """The alert on every channel, or else one e-mail to each admin; the messages queued."""
    from appliance.notify.delivery import alert_urls

    if to.channels:
        return await queue_alert(
            notice.title,
            notice.body,
            severity=notice.severity,
            source=notice.source,
            now=now,
            config_urls=await alert_urls(settings),
            dedupe_key=notice.dedupe_key,
        )
    queued = 0
    for admin_id, email in to.admins:
        outbox_id = await queue_email(
            to=email,
            template=notice.template,
            context=notice.context,
            language=settings.notify.language,
            source=notice.source,
            now=now,
            dedupe_key=f"{notice.dedupe_key}:admin:{admin_id}",
        )
        queued += outbox_id is not None
    return queued
