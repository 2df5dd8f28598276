"""Settings: defaults, the TOML file, environment overrides, secret files and validation."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import msgspec
import pytest

from appliance.config import ConfigError, Settings, ensure_secret_key, load_settings

GOOD_KEY = "s" * 40


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in an empty folder so a stray ./config.toml cannot leak in."""
    monkeypatch.chdir(tmp_path)


def write_toml(folder: Path, text: str, name: str = "settings.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def quoted(path: Path) -> str:
    """A path as a TOML basic string."""
    return json.dumps(str(path))


def config_error(path: Path | None = None, environ: dict[str, str] | None = None) -> str:
    """The message of the ConfigError that loading raises; it must be a single line."""
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ or {})
    message = str(caught.value)
    assert message, "a ConfigError must say what is wrong"
    assert "\n" not in message and "\r" not in message, message
    return message


# Defaults and where the file comes from


def test_defaults_load_without_file_or_environment() -> None:
    """With no config file and an empty environment every setting has its default."""
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8000
    assert settings.server.allowed_hosts == ["localhost", "127.0.0.1"]
    assert settings.server.trusted_proxies == []
    assert settings.database.url == ""
    assert settings.security.secret_key == ""
    assert settings.security.password_min_length == 12
    assert settings.logging.level == "INFO"


def test_default_settings_pass_their_own_validation(tmp_path: Path) -> None:
    """An empty config file gives the same settings as no file at all."""
    assert load_settings(write_toml(tmp_path, ""), environ={}) == Settings()


def test_config_toml_in_working_folder_is_read_when_no_path_given(tmp_path: Path) -> None:
    """Without a path or APPLIANCE_CONFIG, ./config.toml is used when it exists."""
    write_toml(tmp_path, "[server]\nport = 8123\n", name="config.toml")
    assert load_settings(environ={}).server.port == 8123


def test_appliance_config_variable_names_the_file(tmp_path: Path) -> None:
    """APPLIANCE_CONFIG points at the file and is not itself treated as an override."""
    path = write_toml(tmp_path, "[server]\nport = 8124\n")
    settings = load_settings(environ={"APPLIANCE_CONFIG": str(path)})
    assert settings.server.port == 8124


def test_explicit_path_wins_over_appliance_config_variable(tmp_path: Path) -> None:
    """A path passed by the caller is read instead of the one in APPLIANCE_CONFIG."""
    chosen = write_toml(tmp_path, "[server]\nport = 8125\n", name="chosen.toml")
    other = write_toml(tmp_path, "[server]\nport = 8126\n", name="other.toml")
    assert load_settings(chosen, {"APPLIANCE_CONFIG": str(other)}).server.port == 8125


# Values from the TOML file


def test_toml_values_are_loaded(tmp_path: Path) -> None:
    """Every section of the TOML file reaches the typed settings."""
    path = write_toml(
        tmp_path,
        f"""
[server]
host = "::"
port = 8443
public_url = "https://studio.example"
allowed_hosts = ["studio.example", "*.studio.example"]
trusted_proxies = ["10.0.0.0/8", "192.168.1.1"]

[database]
url = "postgresql://app@db/appliance"
pool_max_size = 20

[paths]
data_dir = "/srv/appliance"

[security]
secret_key = "{GOOD_KEY}"
session_idle_minutes = 45
session_absolute_hours = 8
password_min_length = 14

[throttle]
free_failures = 0
window_minutes = 15

[queue]
url = "postgresql://app@db/queue"
workers = 4

[logging]
level = "WARNING"
""",
    )
    settings = load_settings(path, environ={})
    assert settings.server.host == "::"
    assert settings.server.port == 8443
    assert settings.server.public_url == "https://studio.example"
    assert settings.server.allowed_hosts == ["studio.example", "*.studio.example"]
    assert settings.server.trusted_proxies == ["10.0.0.0/8", "192.168.1.1"]
    assert settings.database.url == "postgresql://app@db/appliance"
    assert settings.database.pool_max_size == 20
    assert settings.paths.data_dir == "/srv/appliance"
    assert settings.security.secret_key == GOOD_KEY
    assert settings.security.session_idle_minutes == 45
    assert settings.security.session_absolute_hours == 8
    assert settings.security.password_min_length == 14
    assert settings.throttle.free_failures == 0
    assert settings.throttle.window_minutes == 15
    assert settings.throttle.account_limit == 20
    assert settings.queue.url == "postgresql://app@db/queue"
    assert settings.queue.workers == 4
    assert settings.logging.level == "WARNING"


def test_postgres_scheme_alias_is_accepted(tmp_path: Path) -> None:
    """database.url may use the short postgres:// scheme as well as postgresql://."""
    path = write_toml(tmp_path, '[database]\nurl = "postgres://app@db/appliance"\n')
    assert load_settings(path, environ={}).database.url == "postgres://app@db/appliance"


def test_logging_level_is_accepted_in_any_case(tmp_path: Path) -> None:
    """logging.level "debug" is accepted as well as "DEBUG"."""
    path = write_toml(tmp_path, '[logging]\nlevel = "debug"\n')
    assert load_settings(path, environ={}).logging.level.upper() == "DEBUG"


def test_idle_timeout_equal_to_absolute_lifetime_is_allowed(tmp_path: Path) -> None:
    """session_idle_minutes may equal session_absolute_hours * 60."""
    path = write_toml(
        tmp_path, "[security]\nsession_idle_minutes = 120\nsession_absolute_hours = 2\n"
    )
    assert load_settings(path, environ={}).security.session_idle_minutes == 120


# Environment overrides


def test_environment_override_wins_over_file(tmp_path: Path) -> None:
    """APPLIANCE_SERVER__PORT replaces the port from the file, converted from a string."""
    path = write_toml(tmp_path, '[server]\nport = 8443\nhost = "studio.lan"\n')
    settings = load_settings(path, {"APPLIANCE_SERVER__PORT": "9000"})
    assert settings.server.port == 9000
    assert isinstance(settings.server.port, int)
    assert settings.server.host == "studio.lan"


def test_environment_override_creates_missing_section(tmp_path: Path) -> None:
    """An override applies even when the file has no table for that section."""
    path = write_toml(tmp_path, "[server]\nport = 8443\n")
    settings = load_settings(path, {"APPLIANCE_THROTTLE__ACCOUNT_LIMIT": "7"})
    assert settings.throttle.account_limit == 7


def test_environment_list_given_as_json(tmp_path: Path) -> None:
    """A list setting may be given as a JSON array in the environment."""
    path = write_toml(tmp_path, '[server]\nallowed_hosts = ["file.example"]\n')
    settings = load_settings(
        path,
        {
            "APPLIANCE_SERVER__ALLOWED_HOSTS": '["a.example", "b.example"]',
            "APPLIANCE_SERVER__TRUSTED_PROXIES": '["10.0.0.0/8"]',
        },
    )
    assert settings.server.allowed_hosts == ["a.example", "b.example"]
    assert settings.server.trusted_proxies == ["10.0.0.0/8"]


def test_environment_list_given_comma_separated() -> None:
    """A list setting may be given as "a,b" in the environment, as _env_value documents."""
    settings = load_settings(environ={"APPLIANCE_SERVER__ALLOWED_HOSTS": "a.example,b.example"})
    assert settings.server.allowed_hosts == ["a.example", "b.example"]


def test_unrelated_environment_variables_are_ignored() -> None:
    """Variables without the prefix or without a section separator change nothing."""
    settings = load_settings(
        environ={"PATH": "/usr/bin", "SERVER__PORT": "1", "APPLIANCE_DEBUG": "1"}
    )
    assert settings == Settings()


# Secret files


def test_secret_files_in_toml_are_read_and_stripped(tmp_path: Path) -> None:
    """database.url_file, security.secret_key_file and queue.url_file give stripped contents."""
    db = tmp_path / "db_url"
    db.write_text("  postgresql://app:pw@db/appliance\n", encoding="utf-8")
    key = tmp_path / "secret_key"
    key.write_text(f"{GOOD_KEY}\n\n", encoding="utf-8")
    queue = tmp_path / "queue_url"
    queue.write_text("postgresql://app:pw@db/queue\n", encoding="utf-8")
    path = write_toml(
        tmp_path,
        f"[database]\nurl_file = {quoted(db)}\n"
        f"[security]\nsecret_key_file = {quoted(key)}\n"
        f"[queue]\nurl_file = {quoted(queue)}\n",
    )
    settings = load_settings(path, environ={})
    assert settings.database.url == "postgresql://app:pw@db/appliance"
    assert settings.security.secret_key == GOOD_KEY
    assert settings.queue.url == "postgresql://app:pw@db/queue"


def test_secret_file_named_in_environment_is_read(tmp_path: Path) -> None:
    """APPLIANCE_DATABASE__URL_FILE reads the database URL from that file."""
    db = tmp_path / "db_url"
    db.write_text("postgresql://env@db/appliance\n", encoding="utf-8")
    path = write_toml(tmp_path, '[database]\nurl = "postgresql://file@db/appliance"\n')
    settings = load_settings(path, {"APPLIANCE_DATABASE__URL_FILE": str(db)})
    assert settings.database.url == "postgresql://env@db/appliance"


def test_environment_value_wins_over_secret_file_named_in_toml(tmp_path: Path) -> None:
    """APPLIANCE_DATABASE__URL beats a database.url_file written in the config file."""
    db = tmp_path / "db_url"
    db.write_text("postgresql://file@db/appliance\n", encoding="utf-8")
    path = write_toml(tmp_path, f"[database]\nurl_file = {quoted(db)}\n")
    settings = load_settings(path, {"APPLIANCE_DATABASE__URL": "postgresql://env@db/appliance"})
    assert settings.database.url == "postgresql://env@db/appliance"


def test_missing_secret_file_names_the_key(tmp_path: Path) -> None:
    """A secret file that cannot be read is a ConfigError naming <key>_file and the path."""
    missing = tmp_path / "nowhere" / "db_url"
    path = write_toml(tmp_path, f"[database]\nurl_file = {quoted(missing)}\n")
    message = config_error(path)
    assert message.startswith("database.url_file: ")
    assert str(missing) in message


def test_missing_secret_file_from_environment_names_the_key(tmp_path: Path) -> None:
    """A missing APPLIANCE_SECURITY__SECRET_KEY_FILE is reported as security.secret_key_file."""
    missing = tmp_path / "absent"
    message = config_error(environ={"APPLIANCE_SECURITY__SECRET_KEY_FILE": str(missing)})
    assert message.startswith("security.secret_key_file: ")


def test_secret_read_from_file_is_validated(tmp_path: Path) -> None:
    """A too-short key read from secret_key_file is refused like one written inline."""
    key = tmp_path / "secret_key"
    key.write_text("short\n", encoding="utf-8")
    path = write_toml(tmp_path, f"[security]\nsecret_key_file = {quoted(key)}\n")
    assert config_error(path).startswith("security.secret_key: ")


def test_file_suffix_on_a_non_secret_key_is_unknown(tmp_path: Path) -> None:
    """Only the secret keys accept a _file variant; server.host_file is an unknown setting."""
    path = write_toml(tmp_path, '[server]\nhost_file = "x"\n')
    assert config_error(path) == "server.host_file: unknown setting"


# Bad values: one line, starting with the dotted key

BAD_VALUES = [
    pytest.param({"APPLIANCE_SERVER__PORT": "abc"}, "", "server.port: ", id="port-not-a-number"),
    pytest.param({"APPLIANCE_SERVER__PORT": "70000"}, "", "server.port: ", id="port-too-big"),
    pytest.param({}, "[server]\nport = 0\n", "server.port: ", id="port-zero"),
    pytest.param(
        {},
        '[server]\ntrusted_proxies = ["10.0.0.0/8", "proxy.local"]\n',
        "server.trusted_proxies: ",
        id="proxy-not-an-address",
    ),
    pytest.param(
        {"APPLIANCE_SERVER__TRUSTED_PROXIES": '["10.0.0.0/33"]'},
        "",
        "server.trusted_proxies: ",
        id="proxy-bad-prefix",
    ),
    pytest.param({}, "[server]\nallowed_hosts = []\n", "server.allowed_hosts: ", id="no-hosts"),
    pytest.param(
        {}, '[server]\npublic_url = "studio.example"\n', "server.public_url: ", id="no-scheme"
    ),
    pytest.param(
        {"APPLIANCE_SERVER__PUBLIC_URL": "ftp://studio.example"},
        "",
        "server.public_url: ",
        id="wrong-scheme",
    ),
    pytest.param({}, '[logging]\nlevel = "LOUD"\n', "logging.level: ", id="log-level"),
    pytest.param(
        {"APPLIANCE_DATABASE__URL": "mysql://app@db/appliance"},
        "",
        "database.url: ",
        id="not-postgres",
    ),
    pytest.param({}, "[database]\npool_max_size = 0\n", "database.pool_max_size: ", id="pool-zero"),
    pytest.param(
        {"APPLIANCE_SECURITY__SECRET_KEY": "x" * 31},
        "",
        "security.secret_key: ",
        id="key-31-chars",
    ),
    pytest.param(
        {"APPLIANCE_SECURITY__PASSWORD_MIN_LENGTH": "11"},
        "",
        "security.password_min_length: ",
        id="min-length-11",
    ),
    pytest.param(
        {},
        "[security]\nsession_idle_minutes = 121\nsession_absolute_hours = 2\n",
        "security.session_idle_minutes: ",
        id="idle-longer-than-absolute",
    ),
    pytest.param(
        {}, "[security]\nsession_idle_minutes = 0\n", "security.session_idle_minutes: ", id="idle-0"
    ),
    pytest.param({}, "[throttle]\nfree_failures = 21\n", "throttle.free_failures: ", id="fails"),
    pytest.param({"APPLIANCE_QUEUE__WORKERS": "33"}, "", "queue.workers: ", id="workers-33"),
    pytest.param({}, "server = 5\n", "server: ", id="section-not-a-table"),
    pytest.param(
        {}, '[notify]\nsmtp_host = "mail.example"\n', "notify.mail_from: ", id="smtp-no-from"
    ),
    pytest.param(
        {}, '[notify]\nsmtp_username = "studio"\n', "notify.smtp_username: ", id="user-no-pw"
    ),
    pytest.param({}, '[notify]\nsmtp_security = "ssl"\n', "notify.smtp_security: ", id="sec"),
    pytest.param({}, '[notify]\nalert_urls = ["ntfy"]\n', "notify.alert_urls: ", id="alert"),
    pytest.param({}, '[notify]\nlanguage = "fr"\n', "notify.language: ", id="language"),
    pytest.param(
        {}, '[monitoring]\nstatus_page = "open"\n', "monitoring.status_page: ", id="status"
    ),
    pytest.param(
        {}, "[monitoring]\nprobe_interval_seconds = 5\n", "monitoring.probe_interval", id="5s"
    ),
    pytest.param(
        {}, '[monitoring]\ntls_url = "http://a.example"\n', "monitoring.tls_url: ", id="tls"
    ),
    pytest.param({}, '[monitoring]\nweb_url = "web:8000"\n', "monitoring.web_url: ", id="web"),
    pytest.param(
        {}, '[monitoring]\nheartbeat_url = "hc.example"\n', "monitoring.heartbeat_url", id="hb"
    ),
    pytest.param(
        {},
        "[monitoring]\ndisk_warn_percent = 5\ndisk_down_percent = 5\n",
        "monitoring.disk_down_percent: ",
        id="disk-order",
    ),
    pytest.param(
        {}, "[monitoring]\nqueue_down = 100\n", "monitoring.queue_down: ", id="queue-order"
    ),
    pytest.param(
        {"APPLIANCE_MONITORING__METRICS_TOKEN": "short"},
        "",
        "monitoring.metrics_token: ",
        id="metrics-token-short",
    ),
    pytest.param(
        {}, "[monitoring]\nsla_target_percent = 100.5\n", "monitoring.sla_target", id="sla"
    ),
]


@pytest.mark.parametrize(("environ", "toml_text", "prefix"), BAD_VALUES)
def test_bad_value_is_one_line_error_starting_with_the_key(
    tmp_path: Path, environ: dict[str, str], toml_text: str, prefix: str
) -> None:
    """Each invalid value raises a one-line ConfigError that starts with its dotted key."""
    path = write_toml(tmp_path, toml_text)
    message = config_error(path, environ)
    assert message.startswith(prefix), message
    assert len(message) > len(prefix), "the message must say what is wrong, not only where"


def test_port_out_of_range_message_states_the_limit() -> None:
    """server.port 70000 is refused with the upper bound in the message."""
    message = config_error(environ={"APPLIANCE_SERVER__PORT": "70000"})
    assert message.startswith("server.port: ")
    assert "65535" in message


def test_bad_trusted_proxy_message_quotes_the_entry(tmp_path: Path) -> None:
    """The trusted_proxies error quotes the entry that is not an address or network."""
    path = write_toml(tmp_path, '[server]\ntrusted_proxies = ["proxy.local"]\n')
    assert "'proxy.local'" in config_error(path)


def test_unknown_key_in_environment_names_the_key() -> None:
    """APPLIANCE_SERVER__NOPE is reported as the unknown setting server.nope."""
    assert config_error(environ={"APPLIANCE_SERVER__NOPE": "1"}) == "server.nope: unknown setting"


def test_unknown_key_in_file_names_the_key(tmp_path: Path) -> None:
    """An unknown key inside a known section of the file is reported as section.key."""
    path = write_toml(tmp_path, "[server]\nnope = 1\n")
    assert config_error(path) == "server.nope: unknown setting"


def test_unknown_section_in_environment_names_the_variable() -> None:
    """APPLIANCE_NOPE__X is refused with a message naming the variable and the section."""
    message = config_error(environ={"APPLIANCE_NOPE__X": "1"})
    assert message.startswith("APPLIANCE_NOPE__X: ")
    assert "'nope'" in message


def test_unknown_section_in_file_names_the_section(tmp_path: Path) -> None:
    """An unknown top-level table in the file gives a message starting with its name."""
    path = write_toml(tmp_path, "[nope]\nx = 1\n")
    assert config_error(path).startswith("nope")


def test_invalid_toml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    """A file that is not TOML gives a one-line ConfigError naming the file."""
    path = write_toml(tmp_path, "[server\nport = 1\n")
    message = config_error(path)
    assert message.startswith(f"config file {path}: not valid TOML")


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist gives a one-line ConfigError naming it."""
    path = tmp_path / "absent.toml"
    assert config_error(path) == f"config file {path}: not found"


def test_missing_file_named_by_appliance_config_is_a_config_error(tmp_path: Path) -> None:
    """APPLIANCE_CONFIG naming a missing file is an error, not a silent fall-back to defaults."""
    path = tmp_path / "absent.toml"
    assert config_error(environ={"APPLIANCE_CONFIG": str(path)}) == f"config file {path}: not found"


# The secret key kept in the data folder


def settings_with_data_dir(data_dir: Path, secret_key: str = "") -> Settings:
    base = Settings()
    return msgspec.structs.replace(
        base,
        paths=msgspec.structs.replace(base.paths, data_dir=str(data_dir)),
        security=msgspec.structs.replace(base.security, secret_key=secret_key),
    )


def test_configured_secret_key_is_returned_and_nothing_written(tmp_path: Path) -> None:
    """With security.secret_key set, that key is used and no key file is created."""
    data_dir = tmp_path / "data"
    assert ensure_secret_key(settings_with_data_dir(data_dir, GOOD_KEY)) == GOOD_KEY
    assert not (data_dir / "secret_key").exists()


def test_secret_key_is_created_once_with_private_mode(tmp_path: Path) -> None:
    """Without a configured key one is written to <data_dir>/secret_key (0600) and reused."""
    data_dir = tmp_path / "data"
    settings = settings_with_data_dir(data_dir)
    first = ensure_secret_key(settings)
    key_file = data_dir / "secret_key"
    assert key_file.read_text(encoding="utf-8") == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert ensure_secret_key(settings) == first


def test_existing_secret_key_file_is_reused(tmp_path: Path) -> None:
    """A key already in the data folder is returned, stripped, and left unchanged."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "secret_key").write_text(f"{GOOD_KEY}\n", encoding="utf-8")
    assert ensure_secret_key(settings_with_data_dir(data_dir)) == GOOD_KEY
    assert (data_dir / "secret_key").read_text(encoding="utf-8") == f"{GOOD_KEY}\n"


def test_separate_data_folders_get_different_keys(tmp_path: Path) -> None:
    """Generated keys are random, not a fixed value."""
    first = ensure_secret_key(settings_with_data_dir(tmp_path / "one"))
    second = ensure_secret_key(settings_with_data_dir(tmp_path / "two"))
    assert first != second


def test_empty_secret_key_file_does_not_give_an_empty_key(tmp_path: Path) -> None:
    """An empty key file is never used as an empty signing key."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "secret_key").write_text("", encoding="utf-8")
    try:
        key = ensure_secret_key(settings_with_data_dir(data_dir))
    except ConfigError:
        return
    assert len(key) >= 32


def test_s3_storage_needs_endpoint_keys_and_a_valid_bucket() -> None:
    """backend = "s3" without an endpoint, keys, or with a bad bucket name names the key."""
    base = {"APPLIANCE_STORAGE__BACKEND": "s3"}
    with pytest.raises(ConfigError, match=r"^storage\.endpoint: "):
        load_settings(environ=base)
    with_endpoint = {**base, "APPLIANCE_STORAGE__ENDPOINT": "http://minio:9000"}
    with pytest.raises(ConfigError, match=r"^storage\.access_key: "):
        load_settings(environ=with_endpoint)
    keys = {
        **with_endpoint,
        "APPLIANCE_STORAGE__ACCESS_KEY": "a",
        "APPLIANCE_STORAGE__SECRET_KEY": "b",
    }
    assert load_settings(environ=keys).storage.backend == "s3"
    with pytest.raises(ConfigError, match=r"^storage\.bucket: "):
        load_settings(environ={**keys, "APPLIANCE_STORAGE__BUCKET": "Bad_Bucket"})
    with pytest.raises(ConfigError, match=r"^storage\.backend: "):
        load_settings(environ={"APPLIANCE_STORAGE__BACKEND": "ftp"})


def test_storage_secret_key_can_come_from_a_file(tmp_path: Path) -> None:
    """storage.secret_key_file is read like the other secrets."""
    secret = tmp_path / "s3-secret"
    secret.write_text("from-a-file\n")
    settings = load_settings(environ={"APPLIANCE_STORAGE__SECRET_KEY_FILE": str(secret)})
    assert settings.storage.secret_key == "from-a-file"
