"""A real SMTP server (aiosmtpd) on a loopback port that a test can stop and start again on the
same port; it records every message it accepted."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import ipaddress
import shutil
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Delivered", "SmtpServer"]


def _self_signed_context() -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder = Path(tempfile.mkdtemp(prefix="smtp-tls-"))
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    shutil.rmtree(folder, ignore_errors=True)
    return context


@dataclass
class Delivered:
    """One message the server accepted: the envelope and the parsed message."""

    mail_from: str
    recipients: list[str]
    message: EmailMessage

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    def part(self, subtype: str) -> str:
        """The decoded ``text/<subtype>`` part of the message ("" when it has none)."""
        body = self.message.get_body(preferencelist=(subtype,))
        return "" if body is None else str(body.get_content())


@dataclass
class _Handler:
    server: SmtpServer
    delivered: list[Delivered] = field(default_factory=list)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.server.refused:
            return "550 5.1.1 No such user here"
        if address in self.server.deferred:
            return "450 4.2.1 Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.server.delay:
            await asyncio.sleep(self.server.delay)
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.server.lock:
            self.delivered.append(
                Delivered(str(envelope.mail_from), list(envelope.rcpt_tos), parsed)
            )
        return "250 Message accepted for delivery"


class SmtpServer:
    """``start()``, ``stop()`` and ``start()`` again: the port stays the same, so the relay
    settings pointing at it stay right. ``refused`` and ``deferred`` addresses get 550 and 450
    at RCPT; with ``credentials`` set, clients must log in with them (no TLS needed); ``delay``
    seconds pass before a message is accepted (a slow relay)."""

    def __init__(
        self, *, credentials: tuple[str, str] | None = None, starttls: bool = False
    ) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]
        self.host = "127.0.0.1"
        self.credentials = credentials
        self.refused: set[str] = set()
        self.deferred: set[str] = set()
        self.delay = 0.0
        self.lock = threading.Lock()
        self.handler = _Handler(self)
        self.controller: Controller | None = None
        # STARTTLS with a self-signed certificate: clients that verify certificates refuse it.
        self.tls_context = _self_signed_context() if starttls else None

    @property
    def messages(self) -> list[Delivered]:
        with self.lock:
            return list(self.handler.delivered)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if (
            self.credentials is not None
            and isinstance(data, LoginPassword)
            and (data.login.decode(), data.password.decode()) == self.credentials
        ):
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def start(self) -> None:
        if self.controller is not None:
            return
        options: dict[str, Any] = {}
        if self.credentials is not None:
            options = {
                "authenticator": self._authenticate,
                "auth_required": False,
                "auth_require_tls": False,
            }
        if self.tls_context is not None:
            options["tls_context"] = self.tls_context
        controller = Controller(self.handler, hostname=self.host, port=self.port, **options)
        # The port was just closed by stop(): on a busy machine binding it again may need a
        # moment.
        deadline = time.monotonic() + 10
        while True:
            try:
                controller.start()
                break
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.controller = controller

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Delivered]:
        """The messages once at least ``count`` arrived (fails after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.messages)} of {count} messages arrived")
            time.sleep(0.05)
        return self.messages
