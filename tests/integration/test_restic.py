"""The restic wrapper against the real restic binary: local repositories and the S3 server."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.backups.restic import (
    BackupSummary,
    IncompleteBackup,
    Repository,
    RepositoryLocked,
    RepositoryMissing,
    Restic,
    ResticError,
    ResticTimeout,
    WrongPassword,
    display_url,
    find_restic,
)
from tests.conftest import S3Server
from tests.processes import alive, child_pids, free_port

PASSWORD = "correct horse battery staple"
HOST = "studio-test"
UTF8_NAME = "Hochzeit Müller, Brautpaar.jpg"
BIG_FILE = 3 * 1024 * 1024  # several chunks of restic's content-defined chunker (~1 MiB each)


def make_repository(folder: Path, name: str, *, password: str = PASSWORD) -> Repository:
    folder.mkdir(parents=True, exist_ok=True)
    password_file = folder / f"{name}.password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    return Repository(name=name, url=str(folder / name), password_file=password_file)


def write_photos(folder: Path) -> Path:
    """A small object store: a big file, small ones, an empty one, a nested folder, a UTF-8 name."""
    (folder / "originals" / "2024").mkdir(parents=True)
    (folder / "originals" / "2024" / "big.raw").write_bytes(secrets.token_bytes(BIG_FILE))
    for index in range(5):
        (folder / "originals" / f"photo-{index}.jpg").write_bytes(secrets.token_bytes(20_000))
    (folder / "originals" / "empty.txt").write_bytes(b"")
    (folder / UTF8_NAME).write_bytes(secrets.token_bytes(1234))
    return folder


def digests(root: Path) -> dict[str, str]:
    """Every file under ``root`` by its relative path, with its SHA-256."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def restored(target: Path, source: Path) -> Path:
    """restic restores a snapshot's absolute paths beneath the target folder."""
    return target / source.relative_to(source.anchor)


def lock_files(repository: Repository) -> set[str]:
    """The repository's locks; a lock being written is a temporary file until renamed."""
    folder = Path(repository.url) / "locks"
    return {path.name for path in folder.iterdir() if "-tmp-" not in path.name}


def live_processes_in_group(pgid: int) -> list[int]:
    """Processes (not zombies) whose process group is ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may contain spaces.
        fields = stat.rsplit(")", 1)[1].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            found.append(int(entry.name))
    return found


def process_with_argument(argument: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if argument.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                return int(entry.name)
    return None


@contextlib.contextmanager
def lock_holder(restic: Restic) -> Iterator[subprocess.Popen[bytes]]:
    """Another restic (a backup of a slow command) holding a lock on the repository, in a
    process group of its own; stopped with SIGKILL on the way out if still running."""
    backup = ["backup", "--host", HOST, "--stdin-filename", "slow", "--stdin-from-command"]
    argv = restic._argv([*backup, "--", "sh", "-c", "echo started; sleep 60"])
    before = lock_files(restic.repository)
    process = subprocess.Popen(
        argv,
        env=restic._env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while lock_files(restic.repository) == before:
            assert process.poll() is None, "the lock holder exited early"
            assert time.monotonic() < deadline, "the lock holder never took its lock"
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass(frozen=True)
class Seeded:
    restic: Restic
    photos: Path
    first: BackupSummary
    second: BackupSummary


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("restic")


@pytest.fixture(scope="module")
async def seeded(module_dir: Path) -> Seeded:
    """The primary repository with two snapshots of the same photos (recovery points 0001 and
    0002). Tests add snapshots under tags of their own and never remove any."""
    restic = Restic(make_repository(module_dir, "primary"), timeout=120)
    await restic.init()
    photos = write_photos(module_dir / "photos")
    first = await restic.backup(
        [photos], tags=["rp:0001", "kind:objects"], host=HOST, time="2024-05-01 12:00:00"
    )
    second = await restic.backup(
        [photos], tags=["rp:0002", "kind:objects"], host=HOST, time="2024-05-02 12:00:00"
    )
    return Seeded(restic=restic, photos=photos, first=first, second=second)


@pytest.fixture(scope="module")
async def scratch(module_dir: Path) -> Restic:
    """A repository for the tests of locks and time-outs; each leaves it unlocked."""
    restic = Restic(make_repository(module_dir, "scratch"), timeout=120)
    await restic.init()
    return restic


# --- backup, snapshots, restore --------------------------------------------------------------


async def test_restic_is_new_enough(seeded: Seeded) -> None:
    """The binary the wrapper finds reports version 0.17 or newer."""
    assert await seeded.restic.version() >= (0, 17, 0)
    assert Restic(seeded.restic.repository, binary=find_restic()).binary == seeded.restic.binary


async def test_backup_records_tags_host_and_time(seeded: Seeded) -> None:
    """A backup's snapshot carries the given tags, host and time, and its summary counts files."""
    snapshots = await seeded.restic.snapshots(tags=["rp:0001"])

    assert [s.id for s in snapshots] == [seeded.first.snapshot_id]
    snapshot = snapshots[0]
    assert snapshot.short_id == snapshot.id[:8]
    assert snapshot.hostname == HOST
    assert snapshot.time.startswith("2024-05-01T12:00:00")
    assert snapshot.paths == [str(seeded.photos)]
    assert snapshot.tag("rp") == "0001"
    assert snapshot.tag("kind") == "objects"
    assert snapshot.tag("r") is None
    assert snapshot.tag("drill") is None
    files = digests(seeded.photos)
    assert seeded.first.files_new == len(files) == 8
    assert seeded.first.total_bytes_processed == sum(
        p.stat().st_size for p in seeded.photos.rglob("*") if p.is_file()
    )
    assert seeded.first.data_added >= BIG_FILE


async def test_second_backup_of_unchanged_files_adds_nothing(seeded: Seeded) -> None:
    """Backing up the same files again stores no new file data."""
    assert seeded.second.snapshot_id != seeded.first.snapshot_id
    assert seeded.second.files_new == 0
    assert seeded.second.files_unmodified == len(digests(seeded.photos))
    assert seeded.second.data_added < 4096  # at most a new tree blob


async def test_snapshots_filter_requires_every_tag(seeded: Seeded) -> None:
    """Listing by several tags returns the snapshots that carry all of them."""
    restic = seeded.restic
    both = await restic.snapshots(tags=["kind:objects"])
    assert {seeded.first.snapshot_id, seeded.second.snapshot_id} <= {s.id for s in both}
    only = await restic.snapshots(tags=["rp:0002", "kind:objects"])
    assert [s.id for s in only] == [seeded.second.snapshot_id]
    assert await restic.snapshots(tags=["rp:0002", "kind:database"]) == []
    assert await restic.snapshots(tags=["rp:never"]) == []


async def test_restore_brings_back_every_file_byte_for_byte(seeded: Seeded, tmp_path: Path) -> None:
    """A restored snapshot holds exactly the backed-up files with identical content."""
    events: list[dict[str, object]] = []
    summary = await seeded.restic.restore(
        seeded.first.snapshot_id, tmp_path, on_event=events.append
    )

    expected = digests(seeded.photos)
    assert digests(restored(tmp_path, seeded.photos)) == expected
    # restic counts the folders on the way to the files as restored files too.
    assert summary["files_restored"] == summary["total_files"] >= len(expected)
    assert (
        summary["bytes_restored"]
        == summary["total_bytes"]
        == sum(p.stat().st_size for p in seeded.photos.rglob("*") if p.is_file())
    )
    assert any(event.get("message_type") == "summary" for event in events)


async def test_restore_with_include_brings_back_only_matching_files(
    seeded: Seeded, tmp_path: Path
) -> None:
    """An include pattern restores only the files it names."""
    await seeded.restic.restore(seeded.second.snapshot_id, tmp_path, include=["*/photo-3.jpg"])

    root = restored(tmp_path, seeded.photos)
    assert list(digests(root)) == ["originals/photo-3.jpg"]
    assert (root / "originals" / "photo-3.jpg").read_bytes() == (
        seeded.photos / "originals" / "photo-3.jpg"
    ).read_bytes()


async def test_listing_longer_than_a_pipe_line_limit_is_read_whole(seeded: Seeded) -> None:
    """A snapshot listing of more than 64 KiB on one JSON line (months of daily snapshots) is
    parsed, not cut off."""
    marker = f"long:{secrets.token_hex(4)}"
    long_tags = [f"note-{i}:{'x' * 900}" for i in range(100)]
    small = seeded.photos / UTF8_NAME
    await seeded.restic.backup([small], tags=[marker, *long_tags], host=HOST)

    snapshots = await seeded.restic.snapshots(tags=[marker])

    assert len(snapshots) == 1
    assert sorted(snapshots[0].tags) == sorted([marker, *long_tags])


# --- backing up a command's output -----------------------------------------------------------


async def test_command_output_lands_in_the_snapshot_under_its_filename(
    seeded: Seeded, tmp_path: Path
) -> None:
    """``backup_command`` stores exactly what the command printed, under the given file name."""
    dump = tmp_path / "source.dump"
    dump.write_bytes(secrets.token_bytes(700_000))
    marker = f"rp:{secrets.token_hex(4)}"

    summary = await seeded.restic.backup_command(
        ["cat", str(dump)], filename="database.dump", tags=[marker, "kind:database"], host=HOST
    )

    [snapshot] = await seeded.restic.snapshots(tags=[marker])
    assert snapshot.id == summary.snapshot_id
    assert snapshot.paths == ["/database.dump"]
    assert snapshot.tag("kind") == "database"
    assert summary.total_bytes_processed == dump.stat().st_size
    target = tmp_path / "restored"
    await seeded.restic.restore(snapshot.id, target)
    assert (target / "database.dump").read_bytes() == dump.read_bytes()


async def test_command_failing_half_way_leaves_no_snapshot(seeded: Seeded) -> None:
    """A command that prints data and then exits non-zero raises and leaves no snapshot."""
    marker = f"rp:{secrets.token_hex(4)}"
    command = ["sh", "-c", "head -c 300000 /dev/urandom; echo 'dump failed' >&2; exit 3"]

    with pytest.raises(ResticError) as raised:
        await seeded.restic.backup_command(command, filename="db.dump", tags=[marker], host=HOST)

    assert not isinstance(raised.value, IncompleteBackup)
    assert raised.value.code == 1
    assert "command failed: exit status 3" in str(raised.value)
    assert "message_type" not in str(raised.value)  # restic's message, not its JSON
    assert await seeded.restic.snapshots(tags=[marker]) == []


async def test_command_printing_nothing_is_incomplete_and_names_its_snapshot(
    seeded: Seeded, tmp_path: Path
) -> None:
    """A command that exits 0 without output raises IncompleteBackup naming the snapshot restic
    saved anyway, which holds nothing."""
    marker = f"rp:{secrets.token_hex(4)}"

    with pytest.raises(IncompleteBackup) as raised:
        await seeded.restic.backup_command(["true"], filename="db.dump", tags=[marker], host=HOST)

    assert raised.value.code == 3
    assert raised.value.retryable is True
    [snapshot] = await seeded.restic.snapshots(tags=[marker])
    assert raised.value.snapshot_id == snapshot.id
    await seeded.restic.restore(snapshot.id, tmp_path)
    assert digests(tmp_path) == {}


async def test_password_reaches_restic_only_through_the_file(
    seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither RESTIC_PASSWORD nor other variables of the caller reach restic's environment."""
    monkeypatch.setenv("RESTIC_PASSWORD", "the-callers-password")
    monkeypatch.setenv("RESTIC_REPOSITORY", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-callers-key")
    restic = seeded.restic
    assert "RESTIC_PASSWORD" not in restic._env()
    marker = f"rp:{secrets.token_hex(4)}"

    # What restic hands its command is restic's own environment: back it up and read it.
    summary = await restic.backup_command(
        [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
        filename="environment.json",
        tags=[marker],
        host=HOST,
    )
    await restic.restore(summary.snapshot_id, tmp_path)
    text = (tmp_path / "environment.json").read_text()
    environment = json.loads(text)

    assert environment["RESTIC_PASSWORD_FILE"] == str(restic.repository.password_file)
    # The repository is named by the wrapper (not on the command line), never the caller's.
    assert environment["RESTIC_REPOSITORY"] == restic.repository.url
    for name in ("RESTIC_PASSWORD", "AWS_SECRET_ACCESS_KEY"):
        assert name not in environment
    assert PASSWORD not in text
    assert "the-callers" not in text


# --- errors ---------------------------------------------------------------------------------


async def test_missing_repository_is_a_permanent_error(tmp_path: Path) -> None:
    """A location without a repository raises RepositoryMissing, which no retry can fix."""
    restic = Restic(make_repository(tmp_path, "nothing-here"), timeout=60)

    assert await restic.exists() is False
    with pytest.raises(RepositoryMissing) as raised:
        await restic.snapshots()

    assert raised.value.code == 10
    assert raised.value.retryable is False
    assert "does not exist" in raised.value.stderr


async def test_wrong_password_is_a_permanent_error(seeded: Seeded, tmp_path: Path) -> None:
    """The primary repository opened with another password raises WrongPassword, permanently."""
    wrong = make_repository(tmp_path, "wrong", password="not the password")
    restic = Restic(
        Repository(
            name="primary", url=seeded.restic.repository.url, password_file=wrong.password_file
        ),
        timeout=60,
    )

    with pytest.raises(WrongPassword) as raised:
        await restic.exists()
    assert raised.value.code == 12
    assert raised.value.retryable is False
    with pytest.raises(WrongPassword):
        await restic.backup([seeded.photos], tags=["rp:wrong"], host=HOST)
    assert await seeded.restic.snapshots(tags=["rp:wrong"]) == []


# --- locks and time-outs ----------------------------------------------------------------------


async def test_live_lock_blocks_prune_and_survives_unlock_until_its_owner_dies(
    scratch: Restic,
) -> None:
    """A live restic's lock makes prune fail at once (retryable) and outlives ``unlock``; once
    that restic is killed its lock is stale, ``unlock`` removes it and the repository checks
    clean."""
    with lock_holder(scratch) as holder:
        held = lock_files(scratch.repository)
        assert len(held) == 1

        started = time.monotonic()
        with pytest.raises(RepositoryLocked) as raised:
            await scratch.prune()
        assert time.monotonic() - started < 10  # restic does not wait for the lock by default
        assert raised.value.code == 11
        assert raised.value.retryable is True
        assert "locked" in raised.value.stderr

        await scratch.unlock()
        assert lock_files(scratch.repository) == held

        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        assert lock_files(scratch.repository) == held  # a killed restic cannot remove its lock

    await scratch.unlock()
    assert lock_files(scratch.repository) == set()
    summary = await scratch.check()
    assert summary["num_errors"] == 0
    await scratch.prune()


async def test_time_out_stops_restic_and_everything_it_started(scratch: Restic) -> None:
    """A run longer than its time-out raises ResticTimeout, leaves no process of its group
    running, keeps no snapshot and leaves no lock behind."""
    restic = Restic(scratch.repository, timeout=2)
    marker = f"timeout:{secrets.token_hex(4)}"
    task = asyncio.create_task(
        restic.backup_command(
            ["sh", "-c", "echo started; sleep 60"], filename="slow", tags=[marker], host=HOST
        )
    )
    pid = None
    deadline = time.monotonic() + 10
    while not task.done() and time.monotonic() < deadline:
        pid = process_with_argument(marker)
        if pid is not None and len(live_processes_in_group(pid)) >= 2:
            break  # restic and the command it started
        await asyncio.sleep(0.05)
    assert pid is not None, "restic never started"
    assert len(live_processes_in_group(pid)) >= 2, "restic never started its command"

    started = time.monotonic()
    with pytest.raises(ResticTimeout) as raised:
        await task

    assert time.monotonic() - started < 8
    assert raised.value.retryable is True
    assert live_processes_in_group(pid) == []
    assert lock_files(scratch.repository) == set()
    assert await scratch.snapshots(tags=[marker]) == []


# --- off-site copies --------------------------------------------------------------------------


async def test_copy_to_a_repository_sharing_chunker_parameters(
    seeded: Seeded, module_dir: Path, tmp_path: Path
) -> None:
    """An off-site repository made with the primary's chunker parameters receives a snapshot with
    its tags, restores it identically, takes the same files backed up directly without storing
    them again, and copying again adds nothing."""
    offsite = Restic(make_repository(module_dir, "offsite"), timeout=120)
    await offsite.init(copy_chunker_params_from=seeded.restic)

    primary_config = json.loads((await seeded.restic.run(["cat", "config"], what="c")).stdout)
    offsite_config = json.loads((await offsite.run(["cat", "config"], what="c")).stdout)
    assert offsite_config["chunker_polynomial"] == primary_config["chunker_polynomial"]
    assert offsite_config["id"] != primary_config["id"]

    await offsite.copy(seeded.restic, [seeded.first.snapshot_id])
    [copied] = await offsite.snapshots()
    [original] = await seeded.restic.snapshots(tags=["rp:0001"])
    assert sorted(copied.tags) == sorted(original.tags)
    assert (copied.hostname, copied.time, copied.paths) == (
        original.hostname,
        original.time,
        original.paths,
    )
    await offsite.restore(copied.id, tmp_path / "copy")
    assert digests(restored(tmp_path / "copy", seeded.photos)) == digests(seeded.photos)
    size = await offsite.stats()
    assert size >= BIG_FILE

    await offsite.copy(seeded.restic, [seeded.first.snapshot_id])
    assert [s.id for s in await offsite.snapshots()] == [copied.id]
    assert await offsite.stats() == size

    # Same chunker parameters: the same files backed up directly (from another folder, so
    # restic has no parent snapshot and reads them all) are cut into the same chunks.
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(seeded.photos, elsewhere)
    direct = await offsite.backup([elsewhere], tags=["rp:direct"], host=HOST)
    assert direct.files_new == len(digests(seeded.photos))
    assert direct.data_added < 64 * 1024  # new folder entries only, not the 3 MiB again
    assert await offsite.stats() < size + 64 * 1024


# --- checks and sizes -------------------------------------------------------------------------


async def test_read_data_check_finds_a_flipped_byte_in_a_pack(tmp_path: Path) -> None:
    """After one byte inside a pack file changes, reading all data fails the check."""
    restic = Restic(make_repository(tmp_path, "fragile"), timeout=120)
    await restic.init()
    photos = write_photos(tmp_path / "photos")
    await restic.backup([photos], tags=["rp:fragile"], host=HOST)
    assert (await restic.check(subset="1/1"))["num_errors"] == 0

    pack = max((Path(restic.repository.url) / "data").rglob("*"), key=lambda p: p.stat().st_size)
    pack.chmod(0o600)
    content = bytearray(pack.read_bytes())
    content[len(content) // 2] ^= 0xFF
    pack.write_bytes(bytes(content))

    with contextlib.suppress(ResticError):
        await restic.check()  # without reading the data, the damage may go unseen
    with pytest.raises(ResticError) as raised:
        await restic.check(subset="1/1")
    assert raised.value.code == 1
    assert pack.name[:8] in raised.value.stderr


async def test_stats_grow_by_new_data(seeded: Seeded, tmp_path: Path) -> None:
    """The repository's size is positive and grows by about the size of new random data."""
    before = await seeded.restic.stats()
    assert before >= BIG_FILE
    new = tmp_path / "new"
    new.mkdir()
    (new / "fresh.raw").write_bytes(secrets.token_bytes(500_000))

    await seeded.restic.backup([new], tags=["rp:stats"], host=HOST)

    after = await seeded.restic.stats()
    assert 500_000 <= after - before < 500_000 + 64 * 1024


# --- S3 ----------------------------------------------------------------------------------------


def s3_repository(endpoint: str, folder: Path, server: S3Server, *, place: str) -> Repository:
    local = make_repository(folder, "s3")
    return Repository(
        name="offsite-s3",
        url=f"s3:{endpoint}/{place}",
        password_file=local.password_file,
        env={"AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key},
    )


async def test_s3_repository_backs_up_and_lists(
    s3_server: S3Server, seeded: Seeded, tmp_path: Path
) -> None:
    """A repository on the S3 server is created (with its bucket), backed up to, listed and
    restored from; a folder of that bucket without a repository is reported missing."""
    bucket = f"restic-{secrets.token_hex(4)}"
    s3_restic = Restic(
        s3_repository(s3_server.endpoint, tmp_path, s3_server, place=f"{bucket}/studio"),
        timeout=60,
    )
    await s3_restic.init()
    assert await s3_restic.exists() is True
    beside = s3_repository(s3_server.endpoint, tmp_path, s3_server, place=f"{bucket}/other")
    assert await Restic(beside, timeout=60).exists() is False

    summary = await s3_restic.backup([seeded.photos], tags=["rp:s3", "kind:objects"], host=HOST)

    [snapshot] = await s3_restic.snapshots(tags=["rp:s3"])
    assert snapshot.id == summary.snapshot_id
    assert snapshot.tag("kind") == "objects"
    await s3_restic.restore(snapshot.id, tmp_path / "back", include=["*/photo-1.jpg"])
    root = restored(tmp_path / "back", seeded.photos)
    assert digests(root) == {
        "originals/photo-1.jpg": digests(seeded.photos)["originals/photo-1.jpg"]
    }


async def test_unreachable_s3_times_out_as_retryable(s3_server: S3Server, tmp_path: Path) -> None:
    """An S3 endpoint nobody listens on ends in a retryable error within the short time-out."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    restic = Restic(s3_repository(endpoint, tmp_path, s3_server, place="unreachable"), timeout=3)

    started = time.monotonic()
    with pytest.raises(ResticError) as raised:
        await restic.snapshots()

    assert time.monotonic() - started < 10
    assert raised.value.retryable is True
    assert isinstance(raised.value, ResticTimeout)
    assert "connection refused" in str(raised.value)  # restic's retries, kept for the alert


async def test_a_bucket_that_does_not_exist_is_missing_at_once_and_init_creates_it(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """restic retries a missing bucket for minutes; exists() stops it at the first answer and
    says False, so a new off-site repository is created instead of timing out."""
    bucket = f"fresh-{secrets.token_hex(4)}"
    restic = Restic(
        s3_repository(s3_server.endpoint, tmp_path, s3_server, place=f"{bucket}/studio"),
        timeout=120,
    )
    started = time.monotonic()
    assert await restic.exists() is False
    assert time.monotonic() - started < 30
    await restic.init()
    assert await restic.exists() is True


def test_repository_urls_stay_off_the_command_line_and_out_of_messages(tmp_path: Path) -> None:
    """A rest: URL with a password is handed over in the environment (``ps`` shows argv to
    every local user) and shown masked."""
    secret_url = "rest:https://studio:hunter2-secret@backup.example.eu/fotostudio"
    repository = Repository(name="site2", url=secret_url, password_file=tmp_path / "pw")
    restic = Restic(repository)
    argv = restic._argv(["snapshots", "--json"])
    assert not any("hunter2" in part for part in argv)
    assert restic._env()["RESTIC_REPOSITORY"] == secret_url
    assert "hunter2" not in repr(repository)
    assert display_url(secret_url) == "rest:https://***@backup.example.eu/fotostudio"


def test_restic_dies_with_the_thread_that_started_it(tmp_path: Path) -> None:
    """A worker killed by SIGKILL takes its restic with it: no orphan keeps a lock or reads
    the mirror while the job's retry runs."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import asyncio, os, sys\n"
        "from pathlib import Path\n"
        "from appliance.backups.restic import Repository, Restic\n"
        "async def main():\n"
        # A server nobody answers: restic keeps retrying for minutes.
        f"    url = 'rest:http://127.0.0.1:{free_port()}/'\n"
        f"    r = Restic(Repository('x', url, Path({str(tmp_path / 'pw')!r})))\n"
        "    task = asyncio.create_task(r.run(['snapshots'], what='x'))\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    (tmp_path / "pw").write_text("pw\n")
    parent = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline = time.monotonic() + 20
        children: list[int] = []
        while time.monotonic() < deadline and not children:
            time.sleep(0.2)
            children = child_pids(parent.pid)
        assert children, "restic did not start"
        # restic's retries grow apart (0.6, 1.8, 3.7, 9.5 s...): after 8 s its next message, the
        # write that would end an orphan by SIGPIPE, is several seconds away.
        time.sleep(8)
        assert all(alive(pid) for pid in children)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and any(alive(pid) for pid in children):
            time.sleep(0.05)
        assert not any(alive(pid) for pid in children)
    finally:
        parent.kill()
