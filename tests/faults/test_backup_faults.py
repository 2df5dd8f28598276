"""Backups under faults, against real restic and PostgreSQL: a worker killed mid-backup, a
damaged pack, an unreachable off-site repository, a wrong password or a vanished repository,
and a database dump that dies half-way."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import msgspec
import pytest

from appliance.backups import jobs, pgtools, repositories, service
from appliance.backups.points import complete_points
from appliance.backups.repositories import TAG, Target, configured, restic_for
from appliance.backups.restic import Restic
from appliance.backups.service import do_backup, run_job
from appliance.backups.tables import BackupJob, RecoveryPointCopy
from appliance.config import Settings
from appliance.storage import open_store
from appliance.storage.base import ObjectStore
from tests.conftest import FakeClock
from tests.processes import child_pids, free_port
from tests.receiver import Receiver

pytestmark = pytest.mark.usefixtures("clean_db")


def _backups(settings: Settings, tmp_path: Path, **values: Any) -> Settings:
    """The suite's settings with a repository, a password and backup settings of this test."""
    raw = {
        "password_file": str(tmp_path / "password"),
        "repositories": [{"name": "primary", "url": str(tmp_path / "repository")}],
        **values,
    }
    backups = msgspec.convert(raw, type=type(settings.backups))
    return msgspec.structs.replace(settings, backups=backups)


def _store(settings: Settings) -> ObjectStore:
    return open_store(settings)


def _restic(settings: Settings, name: str = "primary") -> Restic:
    target = next(t for t in configured(settings) if t.name == name)
    return restic_for(settings, target)


async def _run(
    settings: Settings, kind: str, repository: str, now: dt.datetime, worker: str = "w1"
) -> tuple[str, dict[str, Any]]:
    """Queue a job as the schedule does, claim it and run it; its new state and its row."""
    slot = f"{kind}:{repository}:{now.isoformat()}"
    assert await jobs.enqueue(kind, slot, now, repository=repository)
    job = await jobs.claim(worker, now)
    assert job is not None and job.slot == slot
    state = await run_job(settings, _store(settings), job, lambda: now, worker)
    row = await BackupJob.select().where(BackupJob.id == job.id).first().run()
    assert row is not None
    return state, row


async def _server_major(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SHOW server_version_num")) // 10000
    finally:
        await conn.close()


async def _pg_tools_with(tmp_path: Path, dsn: str, pg_dump_body: str) -> Path:
    """A folder with a ``pg_dump`` script running ``pg_dump_body`` (``$REAL`` is the real
    pg_dump) and the real ``pg_restore``; ``--version`` answers as the real one does."""
    real = pgtools.find_pg_tools(await _server_major(dsn))
    folder = tmp_path / "pg-bin"
    folder.mkdir()
    script = folder / "pg_dump"
    script.write_text(
        "#!/bin/sh\n"
        f"REAL='{real.pg_dump}'\n"
        'if [ "$1" = "--version" ]; then exec "$REAL" --version; fi\n'
        f"{pg_dump_body}\n"
    )
    script.chmod(0o755)
    (folder / "pg_restore").symlink_to(real.pg_restore)
    return folder


def _wait_gone(pids: list[int]) -> None:
    """Until the processes ``pids`` are reaped (a lock counts as stale only then)."""
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        assert time.monotonic() < deadline, f"processes {pids} did not go away"
        time.sleep(0.1)


def _start_and_kill_mid_dump(env: dict[str, str], workdir: Path, repository: Path) -> list[int]:
    """Start `appliance backup`, wait until restic holds the repository's lock while the dump
    runs, then kill the process and its restic processes; returns the restic pids."""
    log = workdir / "backup.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "appliance", "backup"],
            cwd=workdir,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"the dump never started:\n{log.read_text()}"
            dumping = [
                pid for pid in child_pids(process.pid) if b"--stdin-from-command" in _cmdline(pid)
            ]
            if dumping and any((repository / "locks").glob("*")):
                break
            time.sleep(0.2)
        # Everything at once, as a power cut or the container being killed would: the worker
        # first (so it cannot react), then restic with the dump it runs (restic has a process
        # group of its own).
        restics = child_pids(process.pid)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        for pid in restics:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        _wait_gone(restics)
        return restics
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


async def test_worker_killed_mid_backup_next_run_succeeds_and_repository_checks_clean(
    settings: Settings, tmp_path: Path
) -> None:
    """SIGKILL to `appliance backup` and its restic while the dump runs leaves a running job
    and a lock; once the heartbeat is stale the job is taken again and succeeds with no
    manual step, `restic check` passes, and only the new point is offered."""
    bin_dir = await _pg_tools_with(tmp_path, settings.database.url, 'sleep 60; exec "$REAL" "$@"')
    slow = _backups(settings, tmp_path, pg_bin_dir=str(bin_dir))
    normal = _backups(settings, tmp_path)
    repository = Path(slow.backups.repositories[0].url)
    env = {
        **os.environ,
        "APPLIANCE_DATABASE__URL": slow.database.url,
        "APPLIANCE_PATHS__DATA_DIR": str(slow.data_dir),
        "APPLIANCE_SECURITY__SECRET_KEY": slow.security.secret_key,
        "APPLIANCE_BACKUPS__PASSWORD_FILE": slow.backups.password_file,
        "APPLIANCE_BACKUPS__PG_BIN_DIR": slow.backups.pg_bin_dir,
        "APPLIANCE_BACKUPS__REPOSITORIES": json.dumps(
            [{"name": "primary", "url": str(repository)}]
        ),
    }
    restics = await asyncio.to_thread(_start_and_kill_mid_dump, env, tmp_path, repository)
    assert restics
    row = await BackupJob.select().where(BackupJob.kind == "backup").first().run()
    assert row is not None and row["state"] == "running"
    assert list((repository / "locks").glob("*")), "the killed restic left its lock behind"

    # The worker's loop finds the job without a heartbeat and runs it again.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=jobs.STALE_SECONDS + 1)
    job = await jobs.claim("w2", later)
    assert job is not None and job.id == row["id"] and job.attempts == 2
    state = await run_job(normal, _store(normal), job, lambda: later, "w2")
    done = await BackupJob.select().where(BackupJob.id == job.id).first().run()
    assert done is not None
    assert state == "done", done["error"]

    # The daily check clears the stale locks restic judges so and finds the repository sound;
    # restic's own check agrees afterwards.
    state, checked = await _run(normal, "check", "primary", later, "w2")
    assert state == "done", checked["error"]
    restic = _restic(normal)
    summary = await restic.check()  # raises unless restic exits 0
    assert not summary.get("num_errors")
    snapshots = await restic.snapshots(tags=[TAG])
    points = complete_points(snapshots)
    assert [p.point_id for p in points] == [json.loads(done["result"])["point_id"]]
    assert len(snapshots) == 2  # the two parts of that point, nothing of the killed one
    assert not [lock for lock in (repository / "locks").glob("*") if "-tmp-" not in lock.name]


def _flip_a_byte_in_the_largest_pack(repository: Path) -> None:
    packs = [p for p in (repository / "data").rglob("*") if p.is_file()]
    pack = max(packs, key=lambda p: p.stat().st_size)
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    pack.chmod(0o600)
    pack.write_bytes(bytes(raw))


async def test_flipped_byte_fails_the_read_data_check_and_the_drill_and_alerts(
    settings: Settings, tmp_path: Path, clock: FakeClock, receiver: Receiver
) -> None:
    """A byte flipped inside a pack: the next check reading all the data fails at once (no
    retries) and alerts; the drill of that repository fails and alerts too."""
    backup = _backups(settings, tmp_path, check_subsets=1, alert_urls=[receiver.alert_url()])
    await do_backup(backup, _store(backup), clock)
    _flip_a_byte_in_the_largest_pack(Path(backup.backups.repositories[0].url))

    state, row = await _run(backup, "check", "primary", clock())
    assert (state, row["attempts"]) == ("failed", 1), row["error"]
    titles = [m["title"] for m in receiver.messages()]
    assert titles == ["Backup problem: Repository check of “primary”"]

    clock.advance(minutes=1)
    state, row = await _run(backup, "drill", "primary", clock())
    assert state == "failed"
    assert "restore drill of primary failed" in row["error"]
    assert [m["title"] for m in receiver.messages()][1:] == [
        "Backup problem: Restore drill from “primary”"
    ]


async def test_unreachable_offsite_does_not_stop_the_backup_and_its_copy_is_retried_then_alerted(
    settings: Settings,
    tmp_path: Path,
    clock: FakeClock,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the off-site repository's server down, the backup makes its point in the primary;
    the copy job fails, is queued again for later, and alerts when its last try fails."""
    offsite = {
        "name": "offsite",
        "url": f"s3:http://127.0.0.1:{free_port()}/backups",
        "offsite": True,
        "access_key": "key",
        "secret_key": "secret-key",
    }
    backup = _backups(
        settings,
        tmp_path,
        retries=1,
        alert_urls=[receiver.alert_url()],
        repositories=[{"name": "primary", "url": str(tmp_path / "repository")}, offsite],
    )
    # restic retries a dead backend for a quarter of an hour and the settings' time-out is
    # counted in minutes: the off-site repository gets seconds here, so the test stays short.
    original = repositories.restic_for

    def short(settings: Settings, target: Target, *, timeout: float | None = None) -> Restic:
        return original(settings, target, timeout=5 if target.offsite else timeout)

    monkeypatch.setattr(repositories, "restic_for", short)
    monkeypatch.setattr(service, "restic_for", short)

    started = time.monotonic()
    state, row = await _run(backup, "backup", "primary", clock())
    assert state == "done", row["error"]
    assert time.monotonic() - started < 60
    point_id = json.loads(row["result"])["point_id"]
    assert [p.point_id for p in complete_points(await _restic(backup).snapshots())] == [point_id]
    recorded = await RecoveryPointCopy.select(RecoveryPointCopy.repository).run()
    assert recorded == [{"repository": "primary"}]

    copy = await BackupJob.select().where(BackupJob.kind == "copy").first().run()
    assert copy is not None and copy["repository"] == "offsite"
    job = await jobs.claim("w1", clock())
    assert job is not None and job.id == copy["id"]
    state = await run_job(backup, _store(backup), job, clock, "w1")
    again = await BackupJob.select().where(BackupJob.id == job.id).first().run()
    assert again is not None
    assert state == "queued"
    assert again["not_before"] > clock() + dt.timedelta(minutes=4)
    assert again["error"]
    assert receiver.messages() == []  # a try that may still pass is not news yet

    clock.now = again["not_before"] + dt.timedelta(seconds=1)
    job = await jobs.claim("w1", clock())
    assert job is not None and job.id == copy["id"] and job.attempts == 2
    state = await run_job(backup, _store(backup), job, clock, "w1")
    assert state == "failed"
    assert [m["title"] for m in receiver.messages()] == [
        "Backup problem: Off-site copy to “offsite”"
    ]


async def test_wrong_password_fails_once_for_good_with_a_clear_error(
    settings: Settings, tmp_path: Path, clock: FakeClock, receiver: Receiver
) -> None:
    """A password that does not open the repository fails the backup after one try, is not
    queued again, says so in words, and alerts."""
    backup = _backups(settings, tmp_path, alert_urls=[receiver.alert_url()])
    await do_backup(backup, _store(backup), clock)
    await anyio.Path(backup.backups.password_file).write_text("not-the-password\n")

    clock.advance(minutes=1)
    state, row = await _run(backup, "backup", "primary", clock())
    assert (state, row["attempts"]) == ("failed", 1)
    assert "wrong repository password" in row["error"]
    assert await jobs.claim("w1", clock() + dt.timedelta(days=1)) is None
    [message] = receiver.messages()
    assert "wrong repository password" in message["message"]


async def test_vanished_repository_fails_once_for_good_and_is_not_made_anew(
    settings: Settings, tmp_path: Path, clock: FakeClock, receiver: Receiver
) -> None:
    """A repository that held recovery points and is gone (an unmounted disk): the next backup
    fails after one try saying there is no repository, and no new empty repository takes the
    old one's place; the drill of it fails the same way."""
    backup = _backups(settings, tmp_path, alert_urls=[receiver.alert_url()])
    await do_backup(backup, _store(backup), clock)
    repository = Path(backup.backups.repositories[0].url)
    await anyio.Path(repository).rename(tmp_path / "unmounted")

    clock.advance(minutes=1)
    state, row = await _run(backup, "backup", "primary", clock())
    assert (state, row["attempts"]) == ("failed", 1)
    assert "no repository" in row["error"]
    assert not await anyio.Path(repository).exists()

    clock.advance(minutes=1)
    state, row = await _run(backup, "drill", "primary", clock())
    assert (state, row["attempts"]) == ("failed", 1)
    assert "no repository" in row["error"]
    assert await jobs.claim("w1", clock() + dt.timedelta(days=1)) is None
    assert len(receiver.messages()) == 2


async def test_pg_dump_failing_half_way_leaves_no_point_and_alerts(
    settings: Settings, tmp_path: Path, clock: FakeClock, receiver: Receiver
) -> None:
    """A dump that prints part of its output and dies: the backup fails, the repository holds
    no snapshot of that point (nothing that looks complete), and an alert goes out."""
    bin_dir = await _pg_tools_with(
        tmp_path,
        settings.database.url,
        "printf 'PGDMP partial dump data' ; echo 'pg_dump: error: connection lost' >&2 ; exit 1",
    )
    backup = _backups(
        settings, tmp_path, pg_bin_dir=str(bin_dir), retries=0, alert_urls=[receiver.alert_url()]
    )
    state, row = await _run(backup, "backup", "primary", clock())
    assert state == "failed"
    assert row["error"]
    restic = _restic(backup)
    assert await restic.snapshots() == []
    assert complete_points(await restic.snapshots(tags=[TAG])) == []
    assert await RecoveryPointCopy.count().run() == 0
    [message] = receiver.messages()
    assert message["title"] == "Backup problem: Backup to “primary”"
