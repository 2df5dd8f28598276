"""Queueing messages: every e-mail and alert becomes an outbox row before anything is sent.

E-mail is rendered when it is queued, from ``templates/mail/<language>/<name>.txt`` (first line:
the subject) and ``<name>.html``, so a message waiting for the relay reads the same when it is
finally sent. Contexts hold plain values (dates, seconds, codes); the templates word them in
their own language, with the filters ``day`` (``{{ due_on | day("de") }}``) and ``duration``
(``{{ left_seconds | duration("de") }}``). Alerts become one row per channel, so a channel that
is down delays only itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import jinja2

from appliance.localtime import format_day, format_duration
from appliance.notify.tables import AlertChannel, OutboxMessage

__all__ = [
    "LANGUAGES",
    "Severity",
    "channel_keys",
    "config_channel_key",
    "queue_alert",
    "queue_alert_rows",
    "queue_channel_alert",
    "queue_email",
    "render_email",
]

LANGUAGES = ("en", "de")
Severity = Literal["info", "success", "warning", "failure"]
TEMPLATES = Path(__file__).parent.parent / "web" / "templates" / "mail"

_text = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=False,  # noqa: S701 - plain text; the HTML environment below escapes
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)
_html = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def _duration(seconds: float, language: str = "en") -> str:
    """The ``duration`` filter: :func:`format_duration` with the language as an argument."""
    return format_duration(seconds, language=language)


for _env in (_text, _html):
    _env.filters["day"] = format_day
    _env.filters["duration"] = _duration


def render_email(
    template: str, language: str, context: Mapping[str, Any]
) -> tuple[str, str, str, str]:
    """``(language, subject, text, html)`` of ``template`` in ``language``, else in English."""
    folder = TEMPLATES / language
    if language not in LANGUAGES or not all(
        (folder / f"{template}.{kind}").is_file() for kind in ("txt", "html")
    ):
        language = "en"
    text = _text.get_template(f"{language}/{template}.txt").render(context)
    subject, _, body = text.partition("\n")
    html = _html.get_template(f"{language}/{template}.html").render(context)
    return language, subject.strip(), body.lstrip("\n"), html


async def queue_email(
    *,
    to: str,
    template: str,
    context: Mapping[str, Any],
    language: str,
    source: str,
    now: dt.datetime,
    dedupe_key: str | None = None,
) -> int | None:
    """Queue one e-mail; the id of its row, or None when ``dedupe_key`` was queued before."""
    language, subject, text, html = render_email(template, language, context)
    return await _insert(
        OutboxMessage(
            kind="email",
            recipient=to.strip(),
            language=language,
            template=template,
            subject=subject,
            body_text=text,
            body_html=html,
            source=source,
            dedupe_key=dedupe_key,
            next_attempt_at=now,
            created_at=now,
        )
    )


def config_channel_key(url: str) -> str:
    """The key of an alert channel from the settings file: stable while its URL is, and
    saying nothing about the URL (which holds tokens)."""
    return "config:" + hashlib.sha256(url.encode()).hexdigest()[:16]


async def channel_keys(config_urls: Iterable[str]) -> list[str]:
    """Every alert channel that receives alerts: the settings file's, then the enabled ones
    admins added."""
    keys = [config_channel_key(url) for url in config_urls if url.strip()]
    rows = await AlertChannel.select(AlertChannel.id).where(AlertChannel.enabled.eq(True)).run()
    keys.extend(f"db:{row['id']}" for row in rows)
    return list(dict.fromkeys(keys))


async def queue_alert(
    title: str,
    body: str,
    *,
    severity: Severity,
    source: str,
    now: dt.datetime,
    config_urls: Iterable[str],
    dedupe_key: str | None = None,
    skip_channels: Iterable[str] = (),
) -> int:
    """Queue an alert for every channel (but ``skip_channels``); the number of rows queued.

    With ``dedupe_key``, each channel's row is keyed ``<dedupe_key>@<channel>``, so an alert
    queued twice goes out once per channel.
    """
    ids = await queue_alert_rows(
        title,
        body,
        severity=severity,
        source=source,
        now=now,
        config_urls=config_urls,
        dedupe_key=dedupe_key,
        skip_channels=skip_channels,
    )
    return len(ids)


async def queue_alert_rows(
    title: str,
    body: str,
    *,
    severity: Severity,
    source: str,
    now: dt.datetime,
    config_urls: Iterable[str],
    dedupe_key: str | None = None,
    skip_channels: Iterable[str] = (),
) -> list[int]:
    """:func:`queue_alert`, returning the ids of the rows queued (for a producer that delivers
    them at once)."""
    skipped = set(skip_channels)
    ids: list[int] = []
    for channel in await channel_keys(config_urls):
        if channel in skipped:
            continue
        row = _alert_row(
            channel,
            title,
            body,
            severity=severity,
            source=source,
            now=now,
            dedupe_key=f"{dedupe_key}@{channel}"[:200] if dedupe_key else None,
        )
        queued = await _insert(row)
        if queued is not None:
            ids.append(queued)
    return ids


async def queue_channel_alert(
    channel: str, title: str, body: str, *, severity: Severity, source: str, now: dt.datetime
) -> int:
    """Queue an alert for one channel only (a test from the admin page); the id of its row."""
    row = _alert_row(channel, title, body, severity=severity, source=source, now=now)
    await row.save().run()
    return int(row.id)


def _alert_row(
    channel: str,
    title: str,
    body: str,
    *,
    severity: Severity,
    source: str,
    now: dt.datetime,
    dedupe_key: str | None = None,
) -> OutboxMessage:
    """An alert's outbox row for ``channel``, due at once; the subject cut to its column."""
    return OutboxMessage(
        kind="alert",
        channel=channel,
        subject=title[:500],
        body_text=body,
        severity=severity,
        source=source,
        dedupe_key=dedupe_key,
        next_attempt_at=now,
        created_at=now,
    )


async def _insert(row: OutboxMessage) -> int | None:
    """Insert ``row``; None when its ``dedupe_key`` was queued before. One statement that
    cannot fail on the key (``ON CONFLICT DO NOTHING``), so a caller's transaction stays
    usable after a message it had queued already."""
    inserted = (
        await OutboxMessage.insert(row)
        .on_conflict(target=OutboxMessage.dedupe_key, action="DO NOTHING")
        .returning(OutboxMessage.id)
        .run()
    )
    return int(inserted[0]["id"]) if inserted else None
