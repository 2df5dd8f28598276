"""What the benchmarks share: the web process as ``appliance web`` runs it, a client that
sends cookies as a browser does, and the CPU time a process has used."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx

from appliance.config import Settings
from tests.processes import AppProcess, free_port


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system (kernel) CPU time of process ``pid`` so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cookie_browser(url: str, *, timeout: float = 60) -> httpx.AsyncClient:
    """An HTTP client that sends its cookies as a browser does to http://127.0.0.1.

    The appliance marks its cookies Secure on the loopback address (browsers count it as a
    secure context), and httpx's jar never sends those over http://; so every stored cookie
    is put on each request by hand.
    """
    client = httpx.AsyncClient(base_url=url, timeout=timeout)

    async def send_cookies(request: httpx.Request) -> None:
        if client.cookies.jar:
            pairs = [f"{cookie.name}={cookie.value}" for cookie in client.cookies.jar]
            request.headers["Cookie"] = "; ".join(pairs)

    client.event_hooks["request"] = [send_cookies]
    return client


@contextlib.contextmanager
def web_process(settings: Settings, folder: Path, **env: str) -> Iterator[AppProcess]:
    """``appliance web`` (one uvicorn worker) on the test database, its data in ``folder``;
    ``env`` adds settings (``APPLIANCE_...`` variables)."""
    process = AppProcess(
        ["web", "--no-migrate", "--no-setup-token"],
        workdir=folder,
        port=free_port(),
        env={
            "APPLIANCE_DATABASE__URL": settings.database.url,
            "APPLIANCE_SECURITY__SECRET_KEY": settings.security.secret_key,
            "APPLIANCE_PATHS__DATA_DIR": str(folder / "data"),
            "APPLIANCE_LOGGING__LEVEL": "WARNING",
            **env,
        },
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
