"""`appliance up --tls`: the real Caddy in front of the real web server, spoken to over TLS.

The site is named ``fotostudio.test`` (LAN mode, Caddy's own authority) and reached on
127.0.0.1 with that name in SNI and Host, so the web server cannot mistake it for loopback,
which browsers count as secure even over plain HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import empty_database
from tests.processes import AppProcess, alive, child_pids, free_port

SITE = "fotostudio.test"
START_SECONDS = 30


@dataclass
class Running:
    app: AppProcess
    workdir: Path
    web_port: int
    https_port: int
    http_port: int

    @property
    def root_certificate(self) -> Path:
        return (
            self.workdir / "data" / "caddy" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        )

    def trusting(self) -> ssl.SSLContext:
        """A client context that trusts only the appliance's own root certificate."""
        return ssl.create_default_context(cafile=self.root_certificate)

    def get(
        self,
        path: str,
        *,
        verify: ssl.SSLContext | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """GET over HTTPS as a browser that typed https://fotostudio.test:<port> would."""
        with httpx.Client(verify=verify or self.trusting(), timeout=5) as client:
            return client.get(
                f"https://127.0.0.1:{self.https_port}{path}",
                headers={"Host": f"{SITE}:{self.https_port}", **(headers or {})},
                extensions={"sni_hostname": SITE},
            )

    def handshake(self, version: ssl.TLSVersion) -> str:
        """The protocol agreed when the client offers ``version`` alone."""
        context = self.trusting()
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # lets this OpenSSL offer TLS 1.1 at all
        context.minimum_version = version
        context.maximum_version = version
        with (
            socket.create_connection(("127.0.0.1", self.https_port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=SITE) as wrapped,
        ):
            return str(wrapped.version())


def _wait_for_https(running: Running) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if running.app.process.poll() is not None:
            raise AssertionError(f"exited early:\n{running.app.text()[-4000:]}")
        if running.root_certificate.exists():
            with contextlib.suppress(httpx.HTTPError, ssl.SSLError, OSError):
                if running.get("/healthz").status_code == 200:
                    return
        time.sleep(0.2)
    raise AssertionError(f"HTTPS never answered:\n{running.app.text()[-4000:]}")


@pytest.fixture(scope="module")
def running(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    # A fresh install: an earlier test module may have finished the setup wizard.
    asyncio.run(empty_database(database_url))
    workdir = tmp_path_factory.mktemp("native-tls")
    web_port, https_port, http_port = free_port(), free_port(), free_port()
    app = AppProcess(
        ["up", "--tls", "--https-port", str(https_port), "--http-port", str(http_port)],
        workdir=workdir,
        port=web_port,
        env={
            "APPLIANCE_DATABASE__URL": database_url,
            "APPLIANCE_SERVER__PUBLIC_URL": f"https://{SITE}:{https_port}",
            # Nothing here is about backups; a first start would otherwise prepare a repository.
            "APPLIANCE_BACKUPS__ENABLED": "false",
        },
    )
    state = Running(app, workdir, web_port, https_port, http_port)
    try:
        app.wait_ready(timeout=START_SECONDS)
        _wait_for_https(state)
        yield state
    finally:
        children = child_pids(app.process.pid)
        app.kill()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_https_answers_with_a_certificate_from_the_appliances_own_authority(
    running: Running,
) -> None:
    """/healthz answers 200 over HTTPS verified against the printed root certificate, and a
    client that does not trust that root is refused."""
    assert str(running.root_certificate) in running.app.text()
    assert f"Fotostudio Appliance on https://{SITE}:{running.https_port}" in running.app.text()
    response = running.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        running.get("/healthz", verify=ssl.create_default_context())


def test_hsts_is_sent_once_and_caddy_does_not_name_itself(running: Running) -> None:
    """Caddy replaces the web server's HSTS header instead of adding a second one, and
    neither Server nor Via gives the software away."""
    response = running.get("/healthz")
    assert response.headers.get_list("strict-transport-security") == ["max-age=63072000"]
    assert "server" not in response.headers
    assert "via" not in response.headers


def test_plain_http_redirects_to_the_https_port(running: Running) -> None:
    """A browser that types http:// is sent to the same path on the HTTPS port."""
    response = httpx.get(
        f"http://127.0.0.1:{running.http_port}/login?next=%2F",
        headers={"Host": f"{SITE}:{running.http_port}"},
        timeout=5,
    )
    assert response.status_code == 308
    assert response.headers["location"] == f"https://{SITE}:{running.https_port}/login?next=%2F"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused_and_1_2_and_1_3_are_accepted(running: Running) -> None:
    """The server ends a TLS 1.1 handshake with a protocol-version alert; 1.2 and 1.3 work."""
    with pytest.raises(ssl.SSLError) as refused:
        running.handshake(ssl.TLSVersion.TLSv1_1)
    # The server's alert, not this client failing to offer TLS 1.1 in the first place.
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION", refused.value
    assert running.handshake(ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert running.handshake(ssl.TLSVersion.TLSv1_3) == "TLSv1.3"


def test_the_web_server_sees_https_and_prints_https_links(running: Running) -> None:
    """Through Caddy the web server sets its cookie with the __Host- prefix and Secure, which it
    only does for HTTPS (X-Forwarded-Proto from a trusted proxy); asked directly over plain
    HTTP for the same name it does not. The setup link printed at start is the HTTPS one."""
    through_caddy = running.get("/setup").headers["set-cookie"]
    assert through_caddy.startswith("__Host-fs_csrf="), through_caddy
    assert "Secure" in through_caddy
    direct = httpx.get(
        f"http://127.0.0.1:{running.web_port}/setup",
        headers={"Host": f"{SITE}:{running.https_port}"},
        timeout=5,
    ).headers["set-cookie"]
    assert direct.startswith("fs_csrf="), direct
    assert f"https://{SITE}:{running.https_port}/setup?token=" in running.app.text()


def test_caddys_log_keeps_no_token_referer_or_cookie(running: Running) -> None:
    """A share link opened from a page with a token in its address, with a cookie, is logged
    by Caddy as /s/[redacted] with the query masked and no Referer or Cookie at all."""
    token = "Tk" + secrets.token_urlsafe(24)
    response = running.get(
        f"/s/{token}/p/1?pin={token}",
        headers={
            "Referer": f"https://{SITE}:{running.https_port}/invite/{token}-from",
            "Cookie": f"fs_session={token}-cookie",
        },
    )
    assert response.status_code == 404  # no such link; the request still reached the app
    deadline = time.monotonic() + 5
    while "/s/[redacted]/p/1?[redacted]" not in running.app.text():
        assert time.monotonic() < deadline, running.app.text()[-3000:]
        time.sleep(0.1)
    (logged,) = [
        json.loads(line[line.index("{") :])
        for line in running.app.text().splitlines()
        if "/s/[redacted]/p/1" in line and '"http.log.access' in line
    ]
    assert logged["request"]["uri"] == "/s/[redacted]/p/1?[redacted]"
    assert {"Referer", "Cookie"}.isdisjoint(logged["request"]["headers"])
    assert token not in running.app.text()


def test_sigterm_stops_caddy_with_the_rest(running: Running) -> None:
    """On SIGTERM `up` stops web, worker and Caddy, exits 0, and the HTTPS port is free."""
    children = child_pids(running.app.process.pid)
    assert len(children) == 3, children
    running.app.stop(signal.SIGTERM)
    assert running.app.process.returncode == 0, running.app.text()[-3000:]
    assert not [pid for pid in children if alive(pid)]
    with socket.socket() as probe:
        # SO_REUSEADDR as any server sets it: our closed connections may linger in TIME_WAIT,
        # but a listener still holding the port makes bind fail.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("0.0.0.0", running.https_port))  # noqa: S104 - Caddy listened on all
