"""The one module of the notify domain that runs apprise: checks a channel URL, sends an alert
to one channel, and keeps channel URLs out of the log.

apprise URLs carry tokens and passwords (a Telegram bot token sits where the host goes), and
apprise names its URLs in its own log records; every URL this process handles is remembered
and masked in those records.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any

import apprise
from apprise.manager_plugins import NotificationManager

from appliance.notify.smtp import TransportError

__all__ = ["MAX_URL_LENGTH", "check_url", "mask_url", "redact", "remember", "send_alert"]

MAX_URL_LENGTH = 1000
_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]{0,30}")
_SHOWN_HOST = re.compile(r"([a-z0-9-]+\.)+[a-z]{2,63}(:\d{1,5})?|\d{1,3}(\.\d{1,3}){3}(:\d{1,5})?")
_LOGGERS = ("apprise", "urllib3.connectionpool")


class _Secrets:
    """Every URL (and every piece of one long enough to mean something) seen by this process,
    longest first, so a whole URL is masked before the pieces it contains."""

    def __init__(self) -> None:
        self.parts: tuple[str, ...] = ()
        self.lock = threading.Lock()
        self.installed = False

    def remember(self, urls: Iterable[str]) -> None:
        with self.lock:
            parts = set(self.parts)
            for url in urls:
                if not url:
                    continue
                parts.add(url)
                for piece in re.split(r"[/:@?&=#,;+]", url.split("://", 1)[-1]):
                    # Pieces under 4 characters ("80", "v1") would mask ordinary words.
                    parts.update(p for p in (piece, urllib.parse.unquote(piece)) if len(p) >= 4)
            # Replaced as a whole: apprise's threads read it meanwhile.
            self.parts = tuple(sorted(parts, key=len, reverse=True))
            if not self.installed:
                for name in _LOGGERS:
                    logging.getLogger(name).addFilter(_RedactingFilter())
                self.installed = True

    def apply(self, text: str) -> str:
        for part in self.parts:
            text = text.replace(part, "[redacted]")
        return text


_secrets = _Secrets()


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and record.name.startswith("apprise"):
            return False  # routine lines, and DEBUG ones print the URL itself
        if not _secrets.parts:
            return True
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            record.exc_info = None
            record.exc_text = None
        record.msg = _secrets.apply(text)
        record.args = ()
        return True


def _capture() -> Any:
    """apprise's own warnings while parsing or sending, as text (its API is untyped)."""
    return apprise.LogCapture(level=logging.WARNING, fmt="%(message)s")  # type: ignore[no-untyped-call]


def _schemas() -> set[str]:
    return set(NotificationManager().schemas())  # type: ignore[no-untyped-call]


def remember(urls: Iterable[str]) -> None:
    """Mask these URLs (and their pieces) in every log record of apprise from now on."""
    _secrets.remember(urls)


def redact(text: str) -> str:
    """``text`` with every remembered URL and piece masked."""
    return _secrets.apply(text)


def mask_url(url: str) -> str:
    """``scheme://host/…`` when the host is a plain DNS name or address, else ``scheme://…``:
    what admins see of a channel once it is saved."""
    scheme, separator, rest = url.partition("://")
    if not separator or not _SCHEME.fullmatch(scheme):
        return "…"
    host = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[2].lower()
    if _SHOWN_HOST.fullmatch(host):
        return f"{scheme}://{host}/…"
    return f"{scheme}://…"


def _instantiate(url: str) -> tuple[apprise.NotifyBase | None, str]:
    """The apprise service for ``url`` and what apprise said while parsing it (masked)."""
    remember([url])
    with _capture() as said:
        service = apprise.Apprise.instantiate(url)
    lines = [redact(line.strip()) for line in said.getvalue().splitlines() if line.strip()]
    return service, "; ".join(dict.fromkeys(lines))


def check_url(url: str) -> str:
    """Why apprise cannot use ``url`` ("" when it can)."""
    if len(url) > MAX_URL_LENGTH:
        return f"The URL is longer than {MAX_URL_LENGTH} characters."
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "The URL must not contain spaces or control characters."
    scheme, separator, rest = url.partition("://")
    if not separator or not _SCHEME.fullmatch(scheme) or not rest:
        return "The URL needs the form service://…, for example ntfys://… or json://…."
    if scheme.lower() not in _schemas():
        return f"apprise does not know the service “{scheme}”."
    service, said = _instantiate(url)
    if service is None:
        return "apprise cannot use this URL" + (f": {said}" if said else ".")
    return ""


def send_alert(url: str, *, title: str, body: str, severity: str, timeout: float) -> None:
    """Send one alert to one channel; raise :class:`TransportError` when it was not accepted
    (``permanent`` when the URL itself is unusable). Blocks."""
    service, said = _instantiate(url)
    if service is None:
        reason = "the channel's URL cannot be used" + (f": {said}" if said else "")
        raise TransportError(reason, permanent=True)
    service.socket_connect_timeout = timeout
    service.socket_read_timeout = timeout
    try:
        notify_type = apprise.NotifyType(severity)
    except ValueError:
        notify_type = apprise.NotifyType.INFO
    with _capture() as output:
        try:
            accepted = bool(service.notify(body=body, title=title, notify_type=notify_type))
        except Exception as error:  # noqa: BLE001 - a plugin may raise anything
            raise TransportError(redact(f"the channel raised {type(error).__name__}")) from None
    if not accepted:
        lines = [redact(line.strip()) for line in output.getvalue().splitlines() if line.strip()]
        reason = "; ".join(dict.fromkeys(lines))[-500:]
        raise TransportError(
            "the channel did not accept the alert" + (f": {reason}" if reason else "")
        )
