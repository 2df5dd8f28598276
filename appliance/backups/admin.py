"""What admins change on the backups page: the password confirmation, alert targets, off-site
repositories, and on-demand backups and drills.

Values live in ``backup_setting`` as JSON, in the shapes :func:`repositories.admin_repositories`
and :func:`alerts.effective_targets` read. Secrets (alert URLs carry tokens, S3 keys, passwords
in repository URLs) are stored but never returned: the page gets masked forms, the audit log
counts and names only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import urllib.parse
from typing import Any

import msgspec

from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.backups import alerts, jobs, repositories
from appliance.backups.restic import display_url
from appliance.backups.tables import BackupSetting
from appliance.config import RepositorySettings, Settings
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.notify import channels
from appliance.notify.channels import mask_url

__all__ = [
    "MAX_ALERT_URLS",
    "MAX_REPOSITORIES",
    "MAX_URL_LENGTH",
    "AlertTarget",
    "AlertTargets",
    "RepositoryView",
    "add_alert_urls",
    "add_repository",
    "alert_targets",
    "confirm_password",
    "fingerprint",
    "list_repositories",
    "mask_url",
    "password_confirmed_at",
    "remove_alert_url",
    "remove_repository",
    "request_run",
    "send_test_alert",
    "set_ping_url",
]

MAX_ALERT_URLS = 20
MAX_URL_LENGTH = 1000
MAX_REPOSITORIES = 10
MAX_KEY_LENGTH = 256
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")
_REGION = re.compile(r"[a-z0-9-]{0,40}")
# One lock for every edit on the page: the JSON values are read, changed and written back, and
# two admins saving at once must not lose one of the changes.
_EDIT_LOCK = 0x6B61_6D02
_RUN_KINDS = ("backup", "drill")


class AlertTarget(msgspec.Struct, frozen=True):
    masked: str
    fingerprint: str


class AlertTargets(msgspec.Struct, frozen=True):
    """The alert and ping URLs in effect, masked; ``from_page`` when set here rather than in
    the settings file."""

    alert_urls: list[AlertTarget]
    ping_url: str  # masked; "" when none is set
    from_page: bool


class RepositoryView(msgspec.Struct, frozen=True):
    """A repository as the page shows it: no keys, the URL without credentials."""

    name: str
    url: str
    offsite: bool
    from_admin: bool
    kind: str


def fingerprint(url: str) -> str:
    """A short handle that tells stored URLs apart without showing them."""
    return hashlib.sha256(url.encode()).hexdigest()[:10]


def _clean_text(value: str, field: str, label: str, *, limit: int) -> str:
    value = value.strip()
    if len(value) > limit:
        raise InvalidInput(f"{label} is longer than {limit} characters.", field=field)
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise InvalidInput(f"{label} must not contain spaces or control characters.", field=field)
    return value


def _alert_url(value: str) -> str:
    """An alert URL apprise can use, checked as Admin → Notifications checks its channels."""
    url = value.strip()
    problem = channels.check_url(url)
    if problem:
        raise InvalidInput(problem, field="alert_urls")
    return url


def _ping_url(value: str) -> str:
    url = _clean_text(value, "ping_url", "The ping URL", limit=MAX_URL_LENGTH)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("The ping URL must start with https:// or http://.", field="ping_url")
    return url


async def _get(key: str) -> Any:
    row = (
        await BackupSetting.select(BackupSetting.value)
        .where(BackupSetting.key == key)
        .output(load_json=True)
        .first()
        .run()
    )
    return row["value"] if row else None


async def _put(key: str, value: Any, *, actor: Actor, now: dt.datetime) -> None:
    await BackupSetting.raw(
        "INSERT INTO backup_setting (key, value, updated_at, updated_by) "
        "VALUES ({}, {}::jsonb, {}, {}) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "
        "updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by",
        key,
        json.dumps(value),
        now,
        actor.id,
    )


async def _lock() -> None:
    await BackupSetting.raw("SELECT pg_advisory_xact_lock({})", _EDIT_LOCK)


# --- the repository password ------------------------------------------------------------------


async def password_confirmed_at() -> dt.datetime | None:
    """When an admin confirmed having stored the repository password; None until then."""
    value = await _get("password_confirmed_at")
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


async def confirm_password(*, actor: Actor, address: str, now: dt.datetime) -> bool:
    """Record that the password was stored; False when it had been confirmed before (the
    first confirmation is kept)."""
    async with BackupSetting._meta.db.transaction(allow_nested=True):
        rows = await BackupSetting.raw(
            "INSERT INTO backup_setting (key, value, updated_at, updated_by) "
            "VALUES ('password_confirmed_at', {}::jsonb, {}, {}) "
            "ON CONFLICT (key) DO NOTHING RETURNING id",
            json.dumps(now.isoformat()),
            now,
            actor.id,
        )
        if rows:
            await audit.record(
                "backup.password_stored", actor=actor, target="backups", address=address, at=now
            )
    return bool(rows)


# --- alert targets ----------------------------------------------------------------------------


class Attention(msgspec.Struct, frozen=True):
    """What the home page tells an admin about backups."""

    password_stored: bool
    failing: list[str]  # the checks failing now, in words


async def attention() -> Attention:
    failing = [alerts.describe(check.key) for check in await alerts.failing()]
    return Attention(password_stored=await password_confirmed_at() is not None, failing=failing)


async def alert_targets(settings: Settings) -> AlertTargets:
    urls, ping_url = await alerts.effective_targets(settings)
    from_page = await BackupSetting.exists().where(
        BackupSetting.key.is_in(["alert_urls", "ping_url"])
    )
    return AlertTargets(
        alert_urls=[AlertTarget(mask_url(url), fingerprint(url)) for url in urls],
        ping_url=mask_url(ping_url) if ping_url else "",
        from_page=from_page,
    )


async def add_alert_urls(
    settings: Settings, text: str, *, actor: Actor, address: str, now: dt.datetime
) -> int:
    """Add the URLs in ``text`` (one a line) to those in effect; return how many were new."""
    if len(text) > MAX_ALERT_URLS * (MAX_URL_LENGTH + 2):
        raise InvalidInput("That is more text than the alert URLs can take.", field="alert_urls")
    added = [_alert_url(line) for line in text.splitlines() if line.strip()]
    if not added:
        raise InvalidInput("Enter at least one alert URL.", field="alert_urls")
    async with BackupSetting._meta.db.transaction(allow_nested=True):
        await _lock()
        current, _ = await alerts.effective_targets(settings)
        new = [url for url in dict.fromkeys(added) if url not in current]
        if len(current) + len(new) > MAX_ALERT_URLS:
            raise InvalidInput(
                f"At most {MAX_ALERT_URLS} alert URLs can be set.", field="alert_urls"
            )
        await _put("alert_urls", current + new, actor=actor, now=now)
        await audit.record(
            "backup.alerts.add",
            actor=actor,
            target="backups",
            address=address,
            details={"added": len(new), "total": len(current) + len(new)},
            at=now,
        )
    return len(new)


async def remove_alert_url(
    settings: Settings, handle: str, *, actor: Actor, address: str, now: dt.datetime
) -> None:
    async with BackupSetting._meta.db.transaction(allow_nested=True):
        await _lock()
        current, _ = await alerts.effective_targets(settings)
        kept = [url for url in current if fingerprint(url) != handle]
        if len(kept) == len(current):
            raise NotFound("That alert URL is no longer set.")
        await _put("alert_urls", kept, actor=actor, now=now)
        await audit.record(
            "backup.alerts.remove",
            actor=actor,
            target="backups",
            address=address,
            details={"removed": handle, "total": len(kept)},
            at=now,
        )


async def set_ping_url(value: str, *, actor: Actor, address: str, now: dt.datetime) -> None:
    """Set the ping URL, or clear it with ""."""
    url = _ping_url(value) if value.strip() else ""
    async with BackupSetting._meta.db.transaction(allow_nested=True):
        await _lock()
        await _put("ping_url", url, actor=actor, now=now)
        await audit.record(
            "backup.ping.set" if url else "backup.ping.clear",
            actor=actor,
            target="backups",
            address=address,
            details={"fingerprint": fingerprint(url)} if url else {},
            at=now,
        )


async def send_test_alert(
    settings: Settings, *, studio: str, actor: Actor, address: str, now: dt.datetime
) -> bool:
    """Send a test message to every alert channel at once; True when it was queued (a channel
    that refuses it keeps it in the outbox, shown on Admin → Notifications)."""
    urls, ping_url = await alerts.effective_targets(settings)
    if not urls:
        raise Conflict("Add an alert URL first.")
    notifier = alerts.Notifier(urls, ping_url, settings=settings)
    delivered = await notifier.send(
        "Test alert from the backups page",
        f"{actor.name} sent this test from {studio or 'the appliance'}. Alerts about backups "
        "will arrive here.",
    )
    await audit.record(
        "backup.alerts.test",
        actor=actor,
        outcome="success" if delivered else "failure",
        target="backups",
        address=address,
        details={"urls": len(urls)},
        at=now,
    )
    return delivered


# --- repositories -----------------------------------------------------------------------------


def _kind(url: str) -> str:
    head = url.split(":", 1)[0]
    return head if head in ("s3", "rest", "sftp") and ":" in url else "folder"


async def list_repositories(settings: Settings) -> list[RepositoryView]:
    """Every repository in use, the primary first; none carries a key."""
    return [
        RepositoryView(
            name=target.name,
            url=display_url(target.repository.url),
            offsite=target.offsite,
            from_admin=target.from_admin,
            kind=_kind(target.repository.url),
        )
        for target in await repositories.targets(settings)
    ]


def _repository_url(value: str) -> str:
    url = _clean_text(value, "url", "The repository URL", limit=500)
    if url.startswith(("s3:https://", "rest:https://")):
        parts = urllib.parse.urlsplit(url.split(":", 1)[1])
        if not parts.hostname or not parts.path.strip("/"):
            raise InvalidInput(
                "Name the server and the bucket or path, e.g. s3:https://s3.example.eu/bucket.",
                field="url",
            )
        return url
    if url.startswith("sftp:") and len(url) > len("sftp:") and not url.startswith("sftp:-"):
        return url
    raise InvalidInput("Use an s3:https://…, rest:https://… or sftp:… repository URL.", field="url")


def _repository(
    name: str, url: str, access_key: str, secret_key: str, region: str
) -> RepositorySettings:
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            "Use 1 to 31 lower-case letters, digits and dashes, starting with a letter or digit.",
            field="name",
        )
    url = _repository_url(url)
    access_key = _clean_text(access_key, "access_key", "The access key", limit=MAX_KEY_LENGTH)
    secret_key = _clean_text(secret_key, "secret_key", "The secret key", limit=MAX_KEY_LENGTH)
    region = region.strip()
    if not _REGION.fullmatch(region):
        raise InvalidInput("A region looks like eu-central-1.", field="region")
    if url.startswith("s3:") and not (access_key and secret_key):
        raise InvalidInput(
            "An S3 repository needs an access key and a secret key.", field="access_key"
        )
    if not url.startswith("s3:") and (access_key or secret_key or region):
        raise InvalidInput(
            "Keys and a region are only for S3 repositories; leave them empty.",
            field="access_key",
        )
    return RepositorySettings(
        name=name,
        url=url,
        offsite=True,
        access_key=access_key,
        secret_key=secret_key,
        region=region,
    )


async def add_repository(
    settings: Settings,
    *,
    name: str,
    url: str,
    access_key: str,
    secret_key: str,
    region: str,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> RepositorySettings:
    """Add an off-site repository; the worker initialises it before its first copy."""
    entry = _repository(name, url, access_key, secret_key, region)
    async with BackupSetting._meta.db.transaction(allow_nested=True):
        await _lock()
        added = await repositories.admin_repositories()
        in_use = {t.name for t in repositories.configured(settings)} | {e.name for e in added}
        if entry.name in in_use:
            raise InvalidInput(f"A repository named “{entry.name}” exists already.", field="name")
        if len(added) >= MAX_REPOSITORIES:
            raise InvalidInput(f"At most {MAX_REPOSITORIES} repositories can be added here.")
        stored = [msgspec.to_builtins(e) for e in [*added, entry]]
        await _put("repositories", stored, actor=actor, now=now)
        await audit.record(
            "backup.repository.add",
            actor=actor,
            target=f"repository:{entry.name}",
            address=address,
            details={"kind": _kind(entry.url), "url": mask_url(entry.url.split(":", 1)[1])},
            at=now,
        )
    return entry


async def remove_repository(name: str, *, actor: Actor, address: str, now: dt.datetime) -> None:
    """Stop using an added repository. Its data stays where it is: nothing is deleted there."""
    async with BackupSetting._meta.db.transaction(allow_nested=True):
        await _lock()
        added = await repositories.admin_repositories()
        kept = [e for e in added if e.name != name]
        if len(kept) == len(added):
            raise NotFound("No repository of that name was added on this page.")
        await _put("repositories", [msgspec.to_builtins(e) for e in kept], actor=actor, now=now)
        await audit.record(
            "backup.repository.remove",
            actor=actor,
            target=f"repository:{name}",
            address=address,
            at=now,
        )


# --- on demand --------------------------------------------------------------------------------


async def request_run(
    settings: Settings,
    kind: str,
    *,
    repository: str = "",
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> bool:
    """Queue a backup (into the primary) or a drill (of ``repository``) for the worker; False
    when one of that kind is queued or running already."""
    if kind not in _RUN_KINDS:
        raise InvalidInput("Unknown kind of job.")
    found = await repositories.targets(settings)
    if kind == "backup":
        repository = repositories.primary(found).name
    elif repository not in {t.name for t in found}:
        raise InvalidInput("Choose one of the repositories.", field="repository")
    # Under the page's lock: two admins clicking at the same moment queue one job.
    async with BackupSetting._meta.db.transaction(allow_nested=True):
        await _lock()
        if await jobs.pending(kind):
            return False
        queued = await jobs.enqueue(
            kind,
            f"{kind}:now:{now:%Y%m%dT%H%M%S}",
            now,
            repository=repository,
            requested_by=actor.id,
        )
    if queued:
        await audit.record(
            f"backup.{kind}.request",
            actor=actor,
            target=f"repository:{repository}",
            address=address,
            at=now,
        )
    return queued
