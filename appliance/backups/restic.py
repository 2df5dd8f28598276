"""The only code that runs restic: argv lists, a password file, ``--json`` parsed into events.

restic's exit codes become typed errors that say whether trying again can help:

=====  ==========================  =========
code   meaning                     retryable
=====  ==========================  =========
1      fatal error (see stderr)    by message
3      backup could not read all   yes
10     repository does not exist   no
11     repository lock failed      yes
12     wrong password              no
130    interrupted                 yes
=====  ==========================  =========

A run that outlives its time-out is stopped (SIGINT first, so restic removes its own lock, then
SIGKILL) and raised as :class:`ResticTimeout`. Locks are only ever removed with plain
``restic unlock``, which removes the locks restic itself judges stale, never all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

__all__ = [
    "BackupSummary",
    "IncompleteBackup",
    "Repository",
    "RepositoryLocked",
    "RepositoryMissing",
    "Restic",
    "ResticError",
    "ResticTimeout",
    "Snapshot",
    "WrongPassword",
    "find_restic",
]

log = logging.getLogger(__name__)

MIN_VERSION = (0, 17)
_STDERR_KEPT = 8000  # characters of stderr kept on an error
_STOP_GRACE = 10.0  # seconds between SIGINT and SIGKILL at a time-out
# Fatal errors that another try cannot fix: the repository or its settings are wrong.
_PERMANENT_HINTS = (
    "wrong password",
    "no key found",
    "invalid repository",
    "config file already exists",
    "access denied",
    "accessdenied",
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "nosuchbucket",
    "permission denied",
    "invalid backend",
)


# What restic prints, retrying, when the bucket of an s3: repository does not exist yet.
_MISSING_BUCKET = ("the specified bucket does not exist", "nosuchbucket")


class ResticError(Exception):
    """restic failed; ``stderr`` is kept (shortened), ``retryable`` says if another try may help."""

    retryable = True

    def __init__(self, message: str, *, code: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.stderr = stderr[-_STDERR_KEPT:]

    def __str__(self) -> str:
        return str(self.args[0])


class PermanentResticError(ResticError):
    retryable = False


class IncompleteBackup(ResticError):
    """Exit 3: some files could not be read; restic still saved the snapshot ``snapshot_id``."""

    snapshot_id: str | None = None


class RepositoryMissing(PermanentResticError):
    """Exit 10: there is no repository at that location (or it cannot be opened)."""


class RepositoryLocked(ResticError):
    """Exit 11: another restic holds a lock; a stale one is cleared by :meth:`Restic.unlock`."""


class WrongPassword(PermanentResticError):
    """Exit 12: the password does not open the repository."""


class ResticTimeout(ResticError):
    """restic ran longer than allowed and was stopped."""


class Snapshot(msgspec.Struct, frozen=True):
    id: str
    short_id: str
    time: str
    paths: list[str] = []
    tags: list[str] = []
    hostname: str = ""

    def tag(self, prefix: str) -> str | None:
        """The value of the first tag ``<prefix>:<value>``."""
        for tag in self.tags:
            if tag.startswith(prefix + ":"):
                return tag[len(prefix) + 1 :]
        return None


class BackupSummary(msgspec.Struct, frozen=True):
    snapshot_id: str
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    data_added: int = 0
    total_files_processed: int = 0
    total_bytes_processed: int = 0
    total_duration: float = 0.0


@dataclass(frozen=True)
class Repository:
    """Where a repository is and how to open it. ``env`` carries backend credentials only."""

    name: str
    url: str
    password_file: Path
    env: dict[str, str] = field(default_factory=dict)
    options: tuple[str, ...] = ()

    def __repr__(self) -> str:  # credentials stay out of logs and tracebacks
        return f"Repository(name={self.name!r}, url={display_url(self.url)!r})"


def display_url(url: str) -> str:
    """A repository URL fit for messages: any ``user:password@`` replaced by ``***@``."""
    return re.sub(r"//[^/@\s]*@", "//***@", url)


@dataclass
class Result:
    events: list[dict[str, Any]]
    stdout: str
    stderr: str


def find_restic(configured: str = "") -> str:
    """The restic binary: the configured one, else ``.tools/bin/restic``, else ``$PATH``."""
    if configured:
        return configured
    here = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "restic"
    if here.exists():
        return str(here)
    found = shutil.which("restic")
    if found is None:
        raise PermanentResticError("restic is not installed (see scripts/install-tools.sh)")
    return found


def _classify(code: int, stderr: str, what: str) -> ResticError:
    last = _last_line(stderr) or f"restic exited with code {code}"
    message = f"{what}: {last}"
    if code == 3:
        return IncompleteBackup(message, code=code, stderr=stderr)
    if code == 10:
        message = f"{what}: no repository at this location"
        return RepositoryMissing(message, code=code, stderr=stderr)
    if code == 11:
        return RepositoryLocked(f"{what}: the repository is locked", code=code, stderr=stderr)
    if code == 12:
        return WrongPassword(f"{what}: wrong repository password", code=code, stderr=stderr)
    if any(hint in stderr.lower() for hint in _PERMANENT_HINTS):
        return PermanentResticError(message, code=code, stderr=stderr)
    return ResticError(message, code=code, stderr=stderr)


def _last_line(stderr: str) -> str:
    """The most telling line of restic's stderr: its last ``Fatal:`` line, else the last one."""
    lines = [_readable(line.strip()) for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("Fatal:") or "error" in line.lower():
            return line[:300]
    return lines[-1][:300] if lines else ""


def _readable(line: str) -> str:
    """With ``--json`` restic writes its errors to stderr as JSON; keep just their message."""
    if not line.startswith("{"):
        return line
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return line
    if not isinstance(event, dict):
        return line
    message = event.get("message")
    if message is None and isinstance(event.get("error"), dict):
        message = event["error"].get("message")
    return str(message) if message else line


def _events(stdout: str) -> list[dict[str, Any]]:
    events = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


class Restic:
    """restic commands against one repository."""

    def __init__(
        self,
        repository: Repository,
        *,
        binary: str = "",
        cache_dir: Path | None = None,
        timeout: float = 6 * 3600,
    ) -> None:
        self.repository = repository
        self.binary = find_restic(binary)
        self.cache_dir = cache_dir
        self.timeout = timeout

    def _env(self) -> dict[str, str]:
        # A clean environment: nothing of the caller's (no RESTIC_PASSWORD, no proxies' secrets)
        # reaches restic except what is named here.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            "RESTIC_PASSWORD_FILE": str(self.repository.password_file),
            "RESTIC_PROGRESS_FPS": "1",
            "LC_ALL": "C.UTF-8",
        }
        if os.environ.get("TMPDIR"):
            env["TMPDIR"] = os.environ["TMPDIR"]
        if self.cache_dir is not None:
            env["RESTIC_CACHE_DIR"] = str(self.cache_dir)
        env.update(self.repository.env)
        env["RESTIC_REPOSITORY"] = self.repository.url
        return env

    def _argv(self, args: Sequence[str]) -> list[str]:
        # The repository goes in RESTIC_REPOSITORY, not on the command line: a rest: URL may
        # carry a password, and any local user can read a process's arguments.
        argv = [self.binary]
        for option in self.repository.options:
            argv += ["--option", option]
        if self.cache_dir is None:
            argv.append("--no-cache")
        return [*argv, *args]

    async def run(
        self,
        args: Sequence[str],
        *,
        what: str,
        timeout: float | None = None,  # noqa: ASYNC109 - restic is stopped, not just abandoned
        on_event: Callable[[dict[str, Any]], None] | None = None,
        extra_env: dict[str, str] | None = None,
        missing_when: Sequence[str] = (),
    ) -> Result:
        """Run ``restic <args>``; raise a typed :class:`ResticError` unless it exits 0.

        restic retries some answers that will not change for minutes (an S3 bucket that does
        not exist); when stderr shows one of ``missing_when``, restic is stopped and
        :class:`RepositoryMissing` raised at once.
        """
        argv = self._argv(args)
        # This repository's own variables win over those of a copy's source.
        env = {**(extra_env or {}), **self._env()}
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # a time-out stops restic and whatever it started
            preexec_fn=_die_with_parent,
        )
        assert process.stdout is not None and process.stderr is not None
        out: list[str] = []

        def take(raw: bytes) -> None:
            line = raw.decode("utf-8", "replace")
            out.append(line)
            if on_event is not None and line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    event = json.loads(line)
                    if isinstance(event, dict):
                        on_event(event)

        async def read_stdout() -> None:
            # Not line by line through the stream reader: its lines are limited to 64 KiB, and
            # ``snapshots --json`` prints the whole list as one line (a few months of snapshots).
            assert process.stdout is not None
            pending = bytearray()
            while chunk := await process.stdout.read(1 << 16):
                pending += chunk
                end = pending.rfind(b"\n", len(pending) - len(chunk)) + 1
                if end:
                    for raw in bytes(pending[: end - 1]).split(b"\n"):
                        take(raw + b"\n")
                    del pending[:end]
            if pending:
                take(bytes(pending))

        err = bytearray()

        missing: list[str] = []

        async def read_stderr() -> None:
            # Kept as it arrives: at a time-out it tells why (e.g. "connection refused").
            assert process.stderr is not None
            while chunk := await process.stderr.read(1 << 16):
                err.extend(chunk)
                text = err.decode("utf-8", "replace").lower()
                found = [pattern for pattern in missing_when if pattern.lower() in text]
                if found and not missing:
                    missing.append(found[0])
                    await _stop(process)

        # A command's own limit only ever shortens the one this wrapper was made with.
        limit = self.timeout if timeout is None else min(timeout, self.timeout)
        reading = asyncio.gather(read_stdout(), read_stderr())
        # A cancelled reader ends the gathering future with an exception that nobody awaits
        # once wait_for has given up on it; fetched here, asyncio does not log it as lost.
        reading.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            await asyncio.wait_for(reading, limit)
        except TimeoutError:
            await _stop(process)
            so_far = err.decode("utf-8", "replace")
            last = _last_line(so_far)
            raise ResticTimeout(
                f"{what}: restic did not finish within {limit:.0f} s"
                + (f" ({last})" if last else ""),
                stderr=so_far,
            ) from None
        except BaseException:
            # Cancelled, or the caller's ``on_event`` failed: restic must not run on unwatched.
            await _stop(process)
            raise
        code = await process.wait()
        stdout = "".join(out)
        stderr = err.decode("utf-8", "replace")
        if missing:
            message = f"{what}: no repository at this location ({missing[0]})"
            raise RepositoryMissing(message, code=code, stderr=stderr)
        if code != 0:
            error = _classify(code, stderr + _json_error(stdout), what)
            if isinstance(error, IncompleteBackup):
                error.snapshot_id = _snapshot_id(_events(stdout))
            log.warning("restic %s failed (exit %s): %s", args[0], code, error)
            raise error
        return Result(events=_events(stdout), stdout=stdout, stderr=stderr)

    async def version(self) -> tuple[int, int, int]:
        result = await self.run(["version", "--json"], what="restic version", timeout=30)
        text = str(json.loads(result.stdout).get("version", "0.0.0"))
        parts = [int(p) for p in text.split(".")[:3] if p.isdigit()]
        found = (*parts, 0, 0, 0)[:3]
        if found[:2] < MIN_VERSION:
            raise PermanentResticError(f"restic {text} is too old; 0.17 or newer is needed")
        return found[0], found[1], found[2]

    async def exists(self) -> bool:
        """Whether the repository can be opened (``cat config``); a wrong password raises."""
        try:
            await self.run(
                ["cat", "config", "--json"],
                what="open repository",
                timeout=120,
                missing_when=_MISSING_BUCKET,
            )
        except RepositoryMissing:
            return False
        return True

    async def init(self, *, copy_chunker_params_from: Restic | None = None) -> None:
        """Create the repository; an off-site one shares the primary's chunker parameters so
        that ``restic copy`` deduplicates."""
        args = ["init", "--json"]
        extra: dict[str, str] = {}
        if copy_chunker_params_from is not None:
            source = copy_chunker_params_from.repository
            args.append("--copy-chunker-params")
            extra = _from_env(source)
            for option in source.options:
                args += ["--option", option]
        await self.run(args, what=f"create repository {self.repository.name}", extra_env=extra)

    async def backup(
        self,
        paths: Sequence[Path],
        *,
        tags: Sequence[str],
        host: str,
        time: str | None = None,
        exclude: Sequence[str] = (),
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> BackupSummary:
        args = ["backup", "--json", "--host", host, *_tag_args(tags)]
        if time:
            args += ["--time", time]
        for pattern in exclude:
            args += ["--exclude", pattern]
        args += ["--", *(str(p) for p in paths)]
        result = await self.run(args, what="back up files", on_event=on_event)
        return _summary(result)

    async def backup_command(
        self,
        command: Sequence[str],
        *,
        filename: str,
        tags: Sequence[str],
        host: str,
        time: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> BackupSummary:
        """Back up what ``command`` prints. restic keeps no snapshot when the command exits
        non-zero, so a dump that fails half-way never looks complete (unlike piping into
        ``--stdin``).

        A command that exits 0 without printing anything is different: restic saves a snapshot
        without the file and exits 3. :class:`IncompleteBackup` names that snapshot in
        ``snapshot_id``; the caller forgets it (a forget here would take the exclusive lock
        while the caller's other backups may be running).
        """
        args = ["backup", "--json", "--host", host, "--stdin-filename", filename, *_tag_args(tags)]
        if time:
            args += ["--time", time]
        args += ["--stdin-from-command", "--", *command]
        result = await self.run(args, what="back up the database", extra_env=extra_env)
        return _summary(result)

    async def snapshots(self, *, tags: Sequence[str] = ()) -> list[Snapshot]:
        args = ["snapshots", "--json", "--no-lock"]
        if tags:
            args += ["--tag", ",".join(tags)]
        result = await self.run(args, what="list snapshots", timeout=600)
        return msgspec.json.decode(result.stdout.strip() or "[]", type=list[Snapshot])

    async def forget(self, snapshot_ids: Sequence[str]) -> None:
        if not snapshot_ids:
            return
        await self.run(["forget", "--json", *snapshot_ids], what="forget snapshots")

    async def prune(self) -> None:
        await self.run(["prune"], what="prune")

    async def rewrite(self, *, tags: Sequence[str], exclude_file: Path) -> None:
        """New snapshots without the files ``exclude_file`` names (one pattern a line), the
        originals forgotten (``--forget``): metadata and tags stay. Only a prune then
        removes the data itself."""
        args = ["rewrite", "--forget", "--exclude-file", str(exclude_file)]
        if tags:
            args += ["--tag", ",".join(tags)]
        await self.run(args, what="rewrite snapshots")

    async def unlock(self) -> None:
        """Remove stale locks only (plain ``restic unlock``; never ``--remove-all``)."""
        await self.run(["unlock"], what="remove stale locks", timeout=600)

    async def check(self, *, subset: str | None = None) -> dict[str, Any]:
        """``restic check``; with ``subset`` ("3/28") also read that part of the data."""
        args = ["check", "--json"]
        if subset:
            args.append(f"--read-data-subset={subset}")
        result = await self.run(args, what="check the repository")
        summaries = [e for e in result.events if e.get("message_type") == "summary"]
        return summaries[-1] if summaries else {}

    async def copy(self, source: Restic, snapshot_ids: Sequence[str]) -> None:
        """Copy snapshots from ``source`` into this repository (already copied ones are skipped)."""
        args = ["copy"]
        for option in source.repository.options:
            args += ["--option", option]
        args += ["--", *snapshot_ids]
        await self.run(
            args,
            what=f"copy to {self.repository.name}",
            extra_env=_from_env(source.repository),
        )

    async def restore(
        self,
        snapshot_id: str,
        target: Path,
        *,
        include: Sequence[str] = (),
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        args = ["restore", "--json", "--target", str(target)]
        for pattern in include:
            args += ["--include", pattern]
        args.append(snapshot_id)
        result = await self.run(args, what="restore", on_event=on_event)
        summaries = [e for e in result.events if e.get("message_type") == "summary"]
        return summaries[-1] if summaries else {}

    async def stats(self) -> int:
        """Bytes the repository stores (after deduplication and compression)."""
        result = await self.run(
            ["stats", "--json", "--no-lock", "--mode", "raw-data"], what="repository size"
        )
        return int(json.loads(result.stdout).get("total_size", 0))


def _tag_args(tags: Sequence[str]) -> list[str]:
    return ["--tag", ",".join(tags)] if tags else []


def _from_env(source: Repository) -> dict[str, str]:
    """The source repository of ``copy`` or ``init --from-repo``: its password and credentials."""
    # restic reads the source's S3 credentials from the same AWS_* variables as the target's;
    # where both set them the target's win (Restic.run), so a copy between two S3 repositories
    # with different keys is not possible (a limit of restic itself).
    return {
        **source.env,
        "RESTIC_FROM_REPOSITORY": source.url,
        "RESTIC_FROM_PASSWORD_FILE": str(source.password_file),
    }


def _snapshot_id(events: list[dict[str, Any]]) -> str | None:
    for event in reversed(events):
        if event.get("message_type") == "summary" and event.get("snapshot_id"):
            return str(event["snapshot_id"])
    return None


def _summary(result: Result) -> BackupSummary:
    for event in reversed(result.events):
        if event.get("message_type") == "summary" and event.get("snapshot_id"):
            return msgspec.convert(event, BackupSummary, strict=False)
    raise ResticError("backup: restic reported no snapshot", stderr=result.stderr)


def _json_error(stdout: str) -> str:
    """restic ``--json`` reports some fatal errors on stdout (``exit_error``)."""
    messages = [
        str(e.get("message", ""))
        for e in _events(stdout)
        if e.get("message_type") in {"exit_error", "error"}
    ]
    return ("\n" + "\n".join(messages)) if messages else ""


def _load_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


# Looked up once here: between fork and exec only a plain C call is safe in a threaded process.
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: have the kernel kill restic when the thread that started it
    dies (the worker, even by SIGKILL), so no restic is left holding a lock and reading the
    mirror while a retry of its job runs."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGINT lets restic remove its lock; SIGKILL follows if it does not stop."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        await asyncio.wait_for(process.wait(), _STOP_GRACE)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
