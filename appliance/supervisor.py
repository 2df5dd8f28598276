"""``appliance up``: run the web server, the worker (and Caddy) as supervised child processes.

Steps:
1. start the embedded PostgreSQL unless ``database.url`` names a server;
2. run the migrations and, while set-up is unfinished, print the setup link with a fresh token;
3. start ``appliance web`` and ``appliance worker`` (and Caddy with ``--tls``); a child that
   dies is logged and restarted after a back-off that grows while it keeps crashing;
4. on SIGINT or SIGTERM, stop the children (SIGTERM, then SIGKILL at the deadline), then the
   database, all within ``STOP_SECONDS``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

__all__ = ["Child", "Supervisor"]

log = logging.getLogger("appliance.up")

STOP_SECONDS = 8.0  # children get this long; the database stop follows well inside 10 s
_STABLE_SECONDS = 60.0  # a child that ran this long has its back-off reset
_MAX_BACKOFF = 30.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None  # instead of the supervisor's (Caddy gets no secrets)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    backoff: float = field(default=1.0)


class Supervisor:
    """Keeps children running until told to stop."""

    def __init__(self, children: list[Child], env: dict[str, str]) -> None:
        self.children = children
        self.env = env
        self.stopping = False

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        if not self.stopping:
            log.info("received %s, stopping", signal.Signals(signum).name)
        self.stopping = True

    def _start(self, child: Child) -> None:
        # A session of its own: Ctrl-C in the terminal reaches only the supervisor, which then
        # stops the children in order instead of all of them racing each other.
        env = self.env if child.env is None else child.env
        child.process = subprocess.Popen(child.argv, env=env, start_new_session=True)  # noqa: S603 - argv is ours
        child.started_at = time.monotonic()
        log.info("started %s (pid %d)", child.name, child.process.pid)

    def _check(self, child: Child) -> None:
        process = child.process
        now = time.monotonic()
        if process is None:
            if now >= child.next_start:
                self._start(child)
            return
        code = process.poll()
        if code is None:
            return
        ran = now - child.started_at
        child.backoff = 1.0 if ran >= _STABLE_SECONDS else min(child.backoff * 2, _MAX_BACKOFF)
        child.restarts += 1
        child.process = None
        child.next_start = now + child.backoff
        log.error(
            "%s exited with code %s after %.1f s; restarting in %.0f s (restart %d)",
            child.name,
            code,
            ran,
            child.backoff,
            child.restarts,
        )

    def run(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        for child in self.children:
            self._start(child)
        while not self.stopping:
            for child in self.children:
                self._check(child)
            time.sleep(0.2)
        self.stop()

    def stop(self) -> None:
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()
        log.info("all processes stopped")


def child_argv(command: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "appliance", command, *extra]


def child_env(dsn: str, config_path: str | None) -> dict[str, str]:
    """The children's environment: the resolved database and the same settings file."""
    env = dict(os.environ)
    env["APPLIANCE_DATABASE__URL"] = dsn
    if config_path:
        env["APPLIANCE_CONFIG"] = os.path.abspath(config_path)  # noqa: PTH100 - a str for env
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
