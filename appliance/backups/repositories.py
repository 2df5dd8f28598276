"""Which restic repositories exist, how to open them, and the repository password.

Repositories come from the settings file and from the backups page (stored in the database);
names are unique across both. Exactly one is the primary, where recovery points are made; each
off-site one receives a copy of every recovery point. With none configured, one local
repository lives in the data folder, so a fresh appliance is backed up from the first night.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from pathlib import Path

import msgspec

from appliance.backups.restic import Repository, RepositoryMissing, Restic, display_url
from appliance.config import RepositorySettings, Settings, publish_private_file

__all__ = [
    "HOST",
    "TAG",
    "Target",
    "backup_dir",
    "ensure_password",
    "named",
    "password_path",
    "primary",
    "restic_for",
    "targets",
]

TAG = "fotostudio"  # every snapshot the appliance makes carries it
HOST = "fotostudio"  # a fixed host name: a restored appliance continues the same history
DEFAULT_NAME = "local"


@dataclass(frozen=True)
class Target:
    repository: Repository
    offsite: bool
    from_admin: bool = False  # added on the backups page rather than in the settings file

    @property
    def name(self) -> str:
        return self.repository.name


def backup_dir(settings: Settings) -> Path:
    """Working folder of the backups: the object mirror, scratch space, drill reports."""
    return settings.data_dir / "backup"


def password_path(settings: Settings) -> Path:
    configured = settings.backups.password_file
    return Path(configured) if configured else backup_dir(settings) / "restic-password"


def ensure_password(settings: Settings) -> bool:
    """Make the repository password file unless it exists; True when it was made now.

    Written to a private temporary file and linked into place, so two processes starting
    together agree on one password and nobody ever reads half of one.
    """
    path = password_path(settings)
    if path.exists():
        if not path.read_text(encoding="utf-8").strip():
            raise ValueError(f"the repository password file {path} is empty")
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Six groups of five hex digits: easy to copy onto paper, 120 bits.
    password = "-".join(secrets.token_hex(3)[:5] for _ in range(6))
    return publish_private_file(path, password + "\n")


def read_password(settings: Settings) -> str:
    return password_path(settings).read_text(encoding="utf-8").strip()


def _target(settings: Settings, entry: RepositorySettings, *, from_admin: bool) -> Target:
    env: dict[str, str] = {}
    if entry.url.startswith("s3:"):
        env = {"AWS_ACCESS_KEY_ID": entry.access_key, "AWS_SECRET_ACCESS_KEY": entry.secret_key}
        if entry.region:
            env["AWS_DEFAULT_REGION"] = entry.region
    url = entry.url
    if ":" not in url.split("/")[0] or url.startswith(("/", ".")):
        url = str(Path(url).expanduser().resolve())  # a folder: absolute, whatever the cwd
    repository = Repository(
        name=entry.name,
        url=url,
        password_file=password_path(settings),
        env=env,
        options=tuple(entry.options),
    )
    return Target(repository=repository, offsite=entry.offsite, from_admin=from_admin)


def configured(settings: Settings, admin: list[RepositorySettings] | None = None) -> list[Target]:
    """The repositories of the settings file, then those added by admins; the primary first."""
    entries = list(settings.backups.repositories)
    if not entries:
        default = str(backup_dir(settings) / "repository")
        entries = [RepositorySettings(name=DEFAULT_NAME, url=default)]
    found = [_target(settings, entry, from_admin=False) for entry in entries]
    names = {t.name for t in found}
    for entry in admin or []:
        if entry.name not in names and entry.offsite:
            found.append(_target(settings, entry, from_admin=True))
            names.add(entry.name)
    return sorted(found, key=lambda t: t.offsite)


async def admin_repositories() -> list[RepositorySettings]:
    """Off-site repositories added on the backups page."""
    from appliance.backups.tables import BackupSetting

    row = (
        await BackupSetting.select(BackupSetting.value)
        .where(BackupSetting.key == "repositories")
        .first()
    )
    if not row or not row["value"]:
        return []
    value = row["value"]
    raw = msgspec.json.decode(value) if isinstance(value, str | bytes) else value
    entries = []
    for item in raw or []:
        with contextlib.suppress(msgspec.ValidationError):
            entries.append(msgspec.convert(item, RepositorySettings))
    return entries


async def targets(settings: Settings) -> list[Target]:
    return configured(settings, await admin_repositories())


def primary(found: list[Target]) -> Target:
    return next(t for t in found if not t.offsite)


def named(found: list[Target], name: str) -> Target | None:
    return next((t for t in found if t.name == name), None)


def restic_for(settings: Settings, target: Target, *, timeout: float | None = None) -> Restic:
    cache = backup_dir(settings) / "cache"
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Restic(
        target.repository,
        binary=settings.backups.restic,
        cache_dir=cache,
        timeout=timeout or settings.backups.timeout_minutes * 60.0,
    )


async def _refuse_if_lost(target: Target) -> None:
    """Raise when a repository that held recovery points is gone (an unmounted disk, a deleted
    bucket): making a new empty one in its place would hide the loss of every point in it."""
    from appliance.backups.tables import RecoveryPointCopy

    held = await RecoveryPointCopy.count().where(RecoveryPointCopy.repository == target.name).run()
    if held:
        raise RepositoryMissing(
            f"repository {target.name}: no repository at {display_url(target.repository.url)}, "
            "though it "
            f"held {held} recovery point(s); it is not made anew (is its disk mounted?)"
        )


async def ensure_initialised(settings: Settings, found: list[Target]) -> list[str]:
    """Create missing repositories (off-site ones with the primary's chunker parameters, so
    copies deduplicate); return the names created. Wrong passwords raise."""
    ensure_password(settings)
    made = []
    first = primary(found)
    source = restic_for(settings, first, timeout=600)
    if not await source.exists():
        await _refuse_if_lost(first)
        folder = Path(first.repository.url)
        if first.repository.url.startswith("/"):
            if folder == backup_dir(settings) / "repository":
                folder.parent.mkdir(parents=True, exist_ok=True)
            elif not folder.parent.is_dir():
                # An unmounted NAS share: a repository made in its place would fill the
                # system disk and hide that the share is gone.
                raise RepositoryMissing(
                    f"repository {first.name}: {folder.parent} does not exist (is it mounted?)"
                )
        await source.init()
        made.append(first.name)
    for target in found:
        if not target.offsite:
            continue
        restic = restic_for(settings, target, timeout=600)
        if not await restic.exists():
            await _refuse_if_lost(target)
            await restic.init(copy_chunker_params_from=source)
            made.append(target.name)
    return made
