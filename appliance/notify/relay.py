"""The SMTP relay in effect: what admins saved on Admin → Notifications wins over the settings
file. Saving checks the syntax and then a real connection, and stores nothing that failed."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from typing import Any

import anyio
import anyio.to_thread
import msgspec

from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.config import Settings
from appliance.errors import InvalidInput
from appliance.notify.smtp import Relay, TransportError, check_relay, is_address
from appliance.notify.tables import NotifySetting

__all__ = [
    "RELAY_KEY",
    "RelayForm",
    "effective_relay",
    "is_address",
    "is_loopback",
    "relay_from_form",
    "save_relay",
]

RELAY_KEY = "smtp"
_HOST = re.compile(
    r"(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}"
    r"[a-zA-Z0-9])?)*\.?|\[[0-9a-fA-F:.]+\]|[0-9a-fA-F:]*:[0-9a-fA-F:.]+"
)


class RelayForm(msgspec.Struct, kw_only=True):
    """The relay form as typed; ``password`` empty keeps the stored one."""

    host: str = ""
    port: str = "587"
    security: str = "starttls"
    username: str = ""
    password: str = ""
    mail_from: str = ""
    mail_from_name: str = ""


async def effective_relay(settings: Settings) -> Relay:
    """The relay admins saved, else the settings file's."""
    row = (
        await NotifySetting.select(NotifySetting.value)
        .where(NotifySetting.key == RELAY_KEY)
        .output(load_json=True)
        .first()
        .run()
    )
    value = row["value"] if row else None
    if isinstance(value, dict):
        try:
            return msgspec.convert({**value, "from_page": True}, Relay)
        except msgspec.ValidationError:
            pass  # an unreadable row is ignored, as if never saved; the page saves a new one
    notify = settings.notify
    return Relay(
        host=notify.smtp_host,
        port=notify.smtp_port,
        security=notify.smtp_security,
        username=notify.smtp_username,
        password=notify.smtp_password,
        mail_from=notify.mail_from,
        mail_from_name=notify.mail_from_name,
    )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses: a password sent there in clear text never
    leaves the machine."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _text(value: str, field: str, label: str, limit: int) -> str:
    value = value.strip()
    if len(value) > limit:
        raise InvalidInput(f"{label} is longer than {limit} characters.", field=field)
    if any(not ch.isprintable() for ch in value):
        raise InvalidInput(f"{label} must not contain control characters.", field=field)
    return value


def relay_from_form(form: RelayForm, current: Relay) -> Relay:
    """The relay the form describes (syntax only); an empty password keeps ``current``'s, but
    only for the same server, port, encryption and user: the stored password is never handed
    to a server it was not saved for. A login without encryption is refused except to this
    machine."""
    host = _text(form.host, "host", "The server name", 253)
    if not host:
        raise InvalidInput(
            "Enter the mail server's name, for example mail.example.com.", field="host"
        )
    if not _HOST.fullmatch(host):
        raise InvalidInput(f"“{host}” is not a server name or address.", field="host")
    try:
        port = int(form.port.strip())
    except ValueError:
        raise InvalidInput("The port must be a number, usually 587 or 465.", field="port") from None
    if not 1 <= port <= 65535:
        raise InvalidInput("The port must be between 1 and 65535.", field="port")
    if form.security not in ("starttls", "tls", "none"):
        raise InvalidInput("Choose STARTTLS, TLS or no encryption.", field="security")
    username = _text(form.username, "username", "The user name", 254)
    security = form.security
    if username and security == "none" and not is_loopback(host):
        raise InvalidInput(
            "A login without encryption would send the password in clear text: choose STARTTLS "
            "or TLS (a relay on this machine, localhost, may go without).",
            field="security",
        )
    same_relay = (host.lower(), port, security, username) == (
        current.host.lower(),
        current.port,
        current.security,
        current.username,
    )
    if form.password:
        password = form.password
    elif current.password and username and not same_relay:
        raise InvalidInput(
            "Enter the password again: the stored one is only sent to the server, port, "
            "encryption and user it was saved for.",
            field="password",
        )
    else:
        password = current.password
    if len(password) > 1000 or any(ch in password for ch in "\r\n\0"):
        raise InvalidInput("The password cannot be used.", field="password")
    if username and not password:
        raise InvalidInput("Enter the password for this user.", field="password")
    mail_from = _text(form.mail_from, "mail_from", "The sender address", 254)
    if not is_address(mail_from):
        raise InvalidInput("Enter the sender address as name@example.com.", field="mail_from")
    name = _text(form.mail_from_name, "mail_from_name", "The sender name", 80)
    return Relay(
        host=host,
        port=port,
        security=security,  # type: ignore[arg-type]  # checked above
        username=username,
        password=password if username else "",
        mail_from=mail_from,
        mail_from_name=name,
        from_page=True,
    )


async def save_relay(
    settings: Settings, form: RelayForm, *, actor: Actor, address: str, now: dt.datetime
) -> Relay:
    """Check the form, connect to the relay (EHLO, STARTTLS or TLS, login), then store it.

    Nothing is stored when either check fails; the error says why ("could not connect to
    mail.example.com:587: connection refused", "authentication failed ...").
    """
    current = await effective_relay(settings)
    relay = relay_from_form(form, current)
    timeout = float(settings.notify.timeout_seconds)
    try:
        with anyio.fail_after(timeout * 2 + 5):
            await anyio.to_thread.run_sync(check_relay, relay, timeout, abandon_on_cancel=True)
    except TransportError as error:
        raise InvalidInput(f"Not saved: {error.message}.", field="host") from None
    except TimeoutError:
        raise InvalidInput(
            f"Not saved: {relay.address} did not answer within {timeout * 2:.0f} s.", field="host"
        ) from None
    value: dict[str, Any] = msgspec.to_builtins(relay)
    value.pop("from_page", None)
    async with NotifySetting._meta.db.transaction(allow_nested=True):
        await NotifySetting.raw(
            "INSERT INTO notify_setting (key, value, updated_at, updated_by)"
            " VALUES ({}, {}::jsonb, {}, {}) ON CONFLICT (key) DO UPDATE SET"
            " value = EXCLUDED.value, updated_at = EXCLUDED.updated_at,"
            " updated_by = EXCLUDED.updated_by",
            RELAY_KEY,
            msgspec.json.encode(value).decode(),
            now,
            actor.id,
        )
        await audit.record(
            "notify.smtp.save",
            actor=actor,
            target="notifications",
            address=address,
            details={
                "host": relay.host,
                "port": relay.port,
                "security": relay.security,
                "login": bool(relay.username),
                "password_changed": bool(form.password) and form.password != current.password,
                "mail_from": relay.mail_from,
            },
            at=now,
        )
    return relay
