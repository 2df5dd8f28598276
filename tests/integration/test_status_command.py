"""``appliance status``: what it prints, its JSON, and its exit code for scripts."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

from appliance.config import Settings
from appliance.monitoring.tables import ComponentStatus, Incident, ProcessHeartbeat
from appliance.notify.tables import OutboxMessage


def _status_cli(settings: Settings, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APPLIANCE_DATABASE__URL": settings.database.url}
    return subprocess.run(
        [sys.executable, "-m", "appliance", "status", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_status_names_each_component_and_fails_while_one_is_down(
    clean_db: None, settings: Settings
) -> None:
    empty = _status_cli(settings)
    assert empty.returncode == 0, empty.stderr
    assert "No probe has run yet" in empty.stdout
    now = dt.datetime.now(dt.UTC)
    first = now - dt.timedelta(days=2)
    await ProcessHeartbeat(name="worker", beat_at=now, started_at=first).save().run()
    await ComponentStatus.insert(
        ComponentStatus(
            component="web", state="up", since=first, checked_at=now, first_checked_at=first
        ),
        ComponentStatus(
            component="object-store",
            state="down",
            since=now - dt.timedelta(minutes=5),
            detail="bucket unreachable: connection refused",
            checked_at=now,
            first_checked_at=first,
        ),
    ).run()
    await (
        Incident(
            title="Photo storage is down",
            components=["object-store"],
            automatic=True,
            component="object-store",
            started_at=now,
            created_at=now,
            updated_at=now,
        )
        .save()
        .run()
    )
    await (
        OutboxMessage(
            kind="email",
            recipient="a@example.com",
            state="failed",
            next_attempt_at=now,
            created_at=now,
        )
        .save()
        .run()
    )
    down = _status_cli(settings)
    assert down.returncode == 1, down.stderr
    lines = down.stdout.splitlines()
    assert any(line.startswith("Photo storage") and " down " in line for line in lines)
    assert "bucket unreachable: connection refused" in down.stdout
    assert any(line.startswith("Website and galleries") and " up " in line for line in lines)
    assert "Open incident #" in down.stdout and "Photo storage is down" in down.stdout
    assert "1 failed" in down.stdout
    as_json = _status_cli(settings, "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    states = {c["component"]: c["state"] for c in report["components"]}
    assert states == {"web": "up", "object-store": "down", "worker": "up"} or states == {
        "web": "up",
        "object-store": "down",
    }
    assert report["outbox"]["failed"] == 1
    assert set(report["uptime_percent"]) == {"24h", "7d", "30d", "90d"}
