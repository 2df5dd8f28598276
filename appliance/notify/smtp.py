"""The one module that talks SMTP: builds a message, checks a relay, hands a message over.

Everything here blocks (``smtplib``); callers run it in a thread. Errors become
:class:`TransportError` with a sentence an admin can act on and a ``permanent`` flag that
decides between retrying later and giving up at once. No message ever carries the password.
"""

from __future__ import annotations

import contextlib
import datetime as dt
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
    "new_message_id",
    "send_message",
]

Security = Literal["starttls", "tls", "none"]


class TransportError(Exception):
    """Delivery did not happen; ``permanent`` when trying again cannot help (the recipient
    does not exist, the channel URL is unusable)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


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
    """A text message, with an HTML alternative when there is one."""
    message = EmailMessage()
    message["From"] = formataddr((relay.mail_from_name, relay.mail_from))
    message["To"] = recipient
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message["Date"] = format_datetime(date)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    if html:
        message.add_alternative(html, subtype="html")
    # Last: set_content and add_alternative move or drop the Content-* headers set before.
    message["Content-Language"] = language
    return message


def _connect_error(relay: Relay, error: OSError, timeout: float) -> TransportError:
    where = f"could not connect to {relay.address}"
    if isinstance(error, ssl.SSLCertVerificationError):
        return TransportError(f"{where}: its TLS certificate is not valid ({error.verify_message})")
    if isinstance(error, ssl.SSLError):
        return TransportError(f"{where}: TLS failed ({error.reason or error})")
    if isinstance(error, socket.gaierror):
        return TransportError(f"{where}: the name {relay.host} cannot be resolved")
    if isinstance(error, ConnectionRefusedError):
        return TransportError(f"{where}: connection refused")
    if isinstance(error, TimeoutError):
        return TransportError(f"{where}: no answer within {timeout:.0f} s")
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return TransportError(f"{where}: the server closed the connection")
    return TransportError(f"{where}: {error.strerror or error}")


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
                        "if the server expects that"
                    )
                client.starttls(context=context)
                client.ehlo()
            if relay.username:
                client.login(relay.username, relay.password)
        except smtplib.SMTPAuthenticationError as error:
            raise TransportError(
                f"authentication failed at {relay.address}: {_reply(error)}"
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise TransportError(
                f"{relay.address} does not offer a login; leave the user empty, or choose the "
                "encryption under which it offers one"
            ) from None
        except smtplib.SMTPResponseException as error:
            raise TransportError(f"{relay.address} answered {_reply(error)}") from None
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
            raise TransportError(
                f"the relay refused the sender {relay.mail_from}: {_reply(error)}"
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
