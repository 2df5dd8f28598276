"""``appliance upgrade-check``: the upgrade script's gate, read from the backups tables."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from appliance.backups.tables import BackupJob, DrillReport
from appliance.config import Settings

HOUR = dt.timedelta(hours=1)


def _upgrade_check(settings: Settings, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "APPLIANCE_DATABASE__URL": settings.database.url,
        "APPLIANCE_MONITORING__BACKUP_MAX_AGE_HOURS": "30",
        "APPLIANCE_BACKUPS__DRILL_OVERDUE_DAYS": "8",
    }
    return subprocess.run(
        [sys.executable, "-m", "appliance", "upgrade-check", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _backup(state: str, age: dt.timedelta, slot: str, error: str = "") -> None:
    finished = dt.datetime.now(dt.UTC) - age
    await (
        BackupJob(
            kind="backup",
            slot=slot,
            state=state,
            not_before=finished,
            finished_at=finished,
            created_at=finished,
            error=error,
        )
        .save()
        .run()
    )


async def _drill(passed: bool, age: dt.timedelta) -> None:
    finished = dt.datetime.now(dt.UTC) - age
    await (
        DrillReport(
            repository="local",
            point_id="p1",
            started_at=finished - HOUR,
            finished_at=finished,
            passed=passed,
        )
        .save()
        .run()
    )


async def test_nothing_recorded_refuses_and_names_both_missing_pieces(
    clean_db: None, settings: Settings
) -> None:
    """With no backup and no drill yet the gate is shut and says which command to run."""
    result = _upgrade_check(settings)
    assert result.returncode == 1, result.stderr
    assert "no recovery point has been made yet" in result.stdout
    assert "no restore drill has run yet" in result.stdout


async def test_a_failed_last_backup_refuses_even_after_an_older_success(
    clean_db: None, settings: Settings
) -> None:
    """The newest finished backup decides: a failure after a success shuts the gate."""
    await _backup("done", 5 * HOUR, "b1")
    await _backup("failed", 2 * HOUR, "b2", error="repository locked by another process\nmore")
    await _drill(True, 3 * HOUR)
    result = _upgrade_check(settings, "--json")
    assert result.returncode == 1
    verdict = json.loads(result.stdout)
    assert verdict["ready"] is False
    assert verdict["last_backup"]["state"] == "failed"
    [reason] = verdict["reasons"]
    assert "the last backup failed" in reason
    assert "repository locked by another process" in reason and "more" not in reason


async def test_a_recovery_point_older_than_the_limit_refuses(
    clean_db: None, settings: Settings
) -> None:
    """A successful backup older than backup_max_age_hours is too old to fall back on."""
    await _backup("done", 31 * HOUR, "b1")
    await _drill(True, 3 * HOUR)
    result = _upgrade_check(settings)
    assert result.returncode == 1
    assert "the last recovery point is 31 h 0 min old" in result.stdout
    assert "backup_max_age_hours (30 h)" in result.stdout
    assert "drill" not in result.stdout


async def test_a_failed_last_drill_refuses(clean_db: None, settings: Settings) -> None:
    """A recent backup is not enough when the last restore drill failed."""
    await _backup("done", 2 * HOUR, "b1")
    await _drill(True, 50 * HOUR)
    await _drill(False, 4 * HOUR)
    result = _upgrade_check(settings, "--json")
    assert result.returncode == 1
    verdict: dict[str, Any] = json.loads(result.stdout)
    assert verdict["last_drill"]["passed"] is False
    assert len(verdict["reasons"]) == 1
    assert "the last restore drill failed" in verdict["reasons"][0]


@pytest.mark.parametrize("as_json", [False, True])
async def test_a_recent_backup_and_a_passed_drill_open_the_gate(
    clean_db: None, settings: Settings, as_json: bool
) -> None:
    """Exit 0 when the newest backup worked within the limit and the newest drill passed; a
    running or queued backup does not count either way."""
    await _backup("failed", 9 * HOUR, "b0", error="disk full")
    await _backup("done", 2 * HOUR, "b1")
    now = dt.datetime.now(dt.UTC)
    await (
        BackupJob(kind="backup", slot="b2", state="running", not_before=now, created_at=now)
        .save()
        .run()
    )
    await _drill(True, 1 * HOUR)
    result = _upgrade_check(settings, *(["--json"] if as_json else []))
    assert result.returncode == 0, result.stdout + result.stderr
    if as_json:
        verdict = json.loads(result.stdout)
        assert verdict["ready"] is True and verdict["reasons"] == []
        assert verdict["last_backup"]["state"] == "done"
        assert verdict["backup_max_age_hours"] == 30
    else:
        assert result.stdout.startswith("ready to upgrade: the last recovery point is 2 h 0 min")


async def test_a_drill_that_passed_too_long_ago_refuses(clean_db: None, settings: Settings) -> None:
    """A passed drill older than backups.drill_overdue_days no longer opens the gate; one
    just inside the limit does."""
    await _backup("done", 2 * HOUR, "b1")
    await _drill(True, dt.timedelta(days=8, hours=1))
    result = _upgrade_check(settings, "--json")
    assert result.returncode == 1
    verdict = json.loads(result.stdout)
    assert verdict["drill_overdue_days"] == 8
    [reason] = verdict["reasons"]
    assert "the last restore drill passed at" in reason
    assert "backups.drill_overdue_days (8 days)" in reason
    await _drill(True, dt.timedelta(days=7, hours=23))
    assert _upgrade_check(settings).returncode == 0
