"""Run the appliance's own commands as real processes in tests: start, wait ready, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = ["AppProcess", "alive", "child_pids", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AppProcess:
    """``python -m appliance ARGS`` in ``workdir`` with its output in a log file."""

    def __init__(
        self, args: list[str], *, workdir: Path, port: int, env: dict[str, str] | None = None
    ) -> None:
        self.log = workdir / f"{args[0]}-{time.monotonic_ns()}.log"
        full_env = {**os.environ, "APPLIANCE_SERVER__PORT": str(port), **(env or {})}
        if env is None or "APPLIANCE_DATABASE__URL" not in env:
            full_env.pop("APPLIANCE_DATABASE__URL", None)
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "appliance", *args],
                cwd=workdir,
                env=full_env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{port}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        """Until /readyz answers 200; fails with the log's tail if the process dies first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"exited early:\n{self.text()[-4000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"never ready:\n{self.text()[-4000:]}")

    def wait_listening(self, timeout: float = 60) -> None:
        """Until the server answers at all (ready or not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"exited early:\n{self.text()[-4000:]}")
            try:
                httpx.get(self.url + "/healthz", timeout=1)
            except httpx.HTTPError:
                time.sleep(0.2)
            else:
                return
        raise AssertionError(f"never listening:\n{self.text()[-4000:]}")

    def stop(self, signum: int = signal.SIGTERM) -> float:
        """Send ``signum`` and wait; returns the seconds it took to exit."""
        started = time.monotonic()
        self.process.send_signal(signum)
        self.process.wait(timeout=30)
        return time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def child_pids(pid: int) -> list[int]:
    """Every process whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
