"""The one module that talks SMTP: builds a message, checks a relay, hands a message over.

Everything here blocks (``smtplib``); callers run it in a thread. Errors become
:class:`TransportError` with a sentence an admin can act on and a ``permanent`` flag that
decides between retrying later and giving up at once. No message ever carries the password.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.errors
import re
import smtplib
import socket
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from typing import Literal

import msgspec

__all__ = [
    "Relay",
    "Security",
    "TransportError",
    "build_message",
    "check_relay",
    "is_address",
    "new_message_id",
    "send_message",
]

Security = Literal["starttls", "tls", "none"]

_ADDRESS = re.compile(r"[^@\s\"<>(),;:\\\[\]]{1,64}@[a-zA-Z0-9.-]{1,253}\.[a-zA-Z]{2,63}")


def is_address(value: str) -> bool:
    """True for an e-mail address a relay will take (and that cannot inject a header)."""
    return len(value) <= 254 and _ADDRESS.fullmatch(value) is not None


class TransportError(Exception):
    """Delivery did not happen; ``permanent`` when trying again cannot help (the recipient
    does not exist, the channel URL is unusable); ``relay`` when the relay itself failed (down,
    refusing the login), so every other message would fail the same way now."""

    def __init__(self, message: str, *, permanent: bool = False, relay: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.relay = relay


class Relay(msgspec.Struct, frozen=True, kw_only=True):
    """The SMTP relay in effect; ``from_page`` when admins set it rather than the settings
    file."""

    host: str = ""
    port: int = 587
    security: Security = "starttls"
    username: str = ""
    password: str = ""
    mail_from: str = ""
    mail_from_name: str = ""
    from_page: bool = False

    @property
    def configured(self) -> bool:
        return bool(self.host and self.mail_from)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def new_message_id(relay: Relay) -> str:
    """A Message-ID in the sender's domain, made once per outbox row and kept on it."""
    domain = relay.mail_from.rpartition("@")[2] or "appliance.invalid"
    return make_msgid(idstring="outbox", domain=domain)


def build_message(
    relay: Relay,
    *,
    recipient: str,
    subject: str,
    text: str,
    html: str,
    language: str,
    message_id: str,
    date: dt.datetime,
) -> EmailMessage:
    """A text message, with an HTML alternative when there is one.

    Header values become one line: any whitespace in the subject and the sender's name (a
    line or paragraph separator from a name a client typed, a tab) is one space, so nothing
    can start a header of its own. A message that still cannot be built (a recipient that is
    no address) raises a permanent :class:`TransportError`: no later attempt can do better.
    """
    if not is_address(recipient):
        raise TransportError(f"“{recipient[:80]}” is not an e-mail address", permanent=True)
    try:
        message = EmailMessage()
        message["From"] = formataddr((" ".join(relay.mail_from_name.split()), relay.mail_from))
        message["To"] = recipient
        message["Subject"] = " ".join(subject.split())
        message["Message-ID"] = message_id
        message["Date"] = format_datetime(date)
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(text)
        if html:
            message.add_alternative(html, subtype="html")
        # Last: set_content and add_alternative move or drop the Content-* headers set before.
        message["Content-Language"] = language
    except (ValueError, email.errors.HeaderParseError) as error:
        raise TransportError(f"the message cannot be built: {error}", permanent=True) from None
    return message


def _connect_error(relay: Relay, error: OSError, timeout: float) -> TransportError:
    where = f"could not connect to {relay.address}"
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = f"its TLS certificate is not valid ({error.verify_message})"
    elif isinstance(error, ssl.SSLError):
        reason = f"TLS failed ({error.reason or error})"
    elif isinstance(error, socket.gaierror):
        reason = f"the name {relay.host} cannot be resolved"
    elif isinstance(error, ConnectionRefusedError):
        reason = "connection refused"
    elif isinstance(error, TimeoutError) or isinstance(error.__context__, TimeoutError):
        # smtplib turns a read that timed out into SMTPServerDisconnected
        reason = f"no answer within {timeout:.0f} s"
    elif isinstance(error, smtplib.SMTPServerDisconnected):
        reason = "the server closed the connection"
    else:
        reason = str(error.strerror or error)
    return TransportError(f"{where}: {reason}", relay=True)


def _reply(error: smtplib.SMTPResponseException) -> str:
    text = error.smtp_error.decode(errors="replace") if isinstance(error.smtp_error, bytes) else ""
    return f"{error.smtp_code} {text}".strip()


@contextlib.contextmanager
def _session(relay: Relay, timeout: float) -> Iterator[smtplib.SMTP]:
    """A connection that said EHLO, secured as the relay says and logged in when it has a
    user."""
    context = ssl.create_default_context()
    client: smtplib.SMTP
    try:
        if relay.security == "tls":
            client = smtplib.SMTP_SSL(relay.host, relay.port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(relay.host, relay.port, timeout=timeout)
    except OSError as error:
        raise _connect_error(relay, error, timeout) from None
    try:
        try:
            client.ehlo()
            if relay.security == "starttls":
                if not client.has_extn("starttls"):
                    raise TransportError(
                        f"{relay.address} does not offer STARTTLS; choose TLS or no encryption "
                        "if the server expects that",
                        relay=True,
                    )
                client.starttls(context=context)
                client.ehlo()
            if relay.username:
                client.login(relay.username, relay.password)
        except smtplib.SMTPAuthenticationError as error:
            raise TransportError(
                f"authentication failed at {relay.address}: {_reply(error)}", relay=True
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise TransportError(
                f"{relay.address} does not offer a login; leave the user empty, or choose the "
                "encryption under which it offers one",
                relay=True,
            ) from None
        except smtplib.SMTPResponseException as error:
            raise TransportError(f"{relay.address} answered {_reply(error)}", relay=True) from None
        except OSError as error:  # TLS failures and broken connections
            raise _connect_error(relay, error, timeout) from None
        yield client
    finally:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            client.quit()
        client.close()


def check_relay(relay: Relay, timeout: float) -> None:
    """Connect, EHLO, STARTTLS or TLS, log in; raise :class:`TransportError` with the reason."""
    with _session(relay, timeout):
        return


def send_message(relay: Relay, message: EmailMessage, recipient: str, timeout: float) -> None:
    """Hand ``message`` to the relay for ``recipient``; returns once the relay accepted it.

    A 5xx answer to the recipient or the message is permanent; everything else (the relay
    down, 4xx, a refused sender that an admin can fix) is worth another attempt.
    """
    with _session(relay, timeout) as client:
        try:
            client.send_message(message, from_addr=relay.mail_from, to_addrs=[recipient])
        except smtplib.SMTPRecipientsRefused as error:
            code, reply = next(iter(error.recipients.values()), (0, b""))
            text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
            raise TransportError(
                f"the relay refused the recipient: {code} {text}".strip(),
                permanent=500 <= code < 600,
            ) from None
        except smtplib.SMTPSenderRefused as error:
            raise TransportError(  # the same for every message: an admin must fix it
                f"the relay refused the sender {relay.mail_from}: {_reply(error)}", relay=True
            ) from None
        except smtplib.SMTPDataError as error:
            raise TransportError(
                f"the relay refused the message: {_reply(error)}",
                permanent=500 <= error.smtp_code < 600,
            ) from None
        except smtplib.SMTPResponseException as error:
            raise TransportError(f"{relay.address} answered {_reply(error)}") from None
        except OSError as error:
            raise _connect_error(relay, error, timeout) from None
