"""ASGI middleware at the edge: trusted-proxy resolution and security headers on every response.

``forwarded_for`` runs first: only when the direct peer is a configured trusted proxy are
``X-Forwarded-For`` and ``X-Forwarded-Proto`` believed, so a client cannot forge its address (to
dodge the sign-in throttle) or claim TLS. ``security_headers`` then adds the headers to every
response, including errors and static files.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from litestar.types import ASGIApp, Receive, Send

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "TrustedProxies",
    "allowed_hosts",
    "forwarded_for",
    "host_of",
    "parse_address",
    "security_headers",
]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; "
    "script-src 'self'; "
    "style-src 'self'; "
    "img-src 'self' data:; "
    "font-src 'self'; "
    "connect-src 'self'; "
    "form-action 'self'; "
    "frame-ancestors 'none'; "
    "base-uri 'none'; "
    "object-src 'none'"
)

_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # Pages carry tokens in their paths (invitations, share links): never leak them onward.
    (b"referrer-policy", b"no-referrer"),
    # Nothing here is for search engines: share-link pages least of all.
    (b"x-robots-tag", b"noindex, nofollow"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
]
# No includeSubDomains: other hosts of the studio's domain may not (yet) speak TLS.
_HSTS = (b"strict-transport-security", b"max-age=63072000")
_NO_STORE = (b"cache-control", b"no-store")


def parse_address(text: str) -> str | None:
    """An IP address from a forwarding hop or peer, in canonical form; None if it is not one.

    Accepts ``1.2.3.4:port`` and ``[v6]:port`` as some proxies write them, and turns
    IPv4-mapped IPv6 (``::ffff:10.0.0.1``, seen when listening on ``::``) into plain IPv4.
    """
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


class TrustedProxies:
    """The set of networks whose forwarding headers are believed."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in networks]

    def __contains__(self, address: str) -> bool:
        parsed = parse_address(address)
        if parsed is None:
            return False
        ip = ipaddress.ip_address(parsed)
        return any(ip in network for network in self.networks)

    def client_of(self, peer: str, forwarded: str) -> str:
        """The rightmost address in ``X-Forwarded-For`` that is not one of our proxies.

        Proxies append what they saw, so everything left of the last untrusted hop may have been
        written by the client and is ignored. A hop that is no address at all ends the walk at
        the peer: nothing further left can be trusted.
        """
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if hop not in self:
                return parse_address(hop) or peer
        return (parse_address(hops[0]) or peer) if hops else peer


# The scope state key set when a trusted proxy named the client (see forwarded_for).
FORWARDED_BY_TRUSTED_PROXY = "forwarded_by_trusted_proxy"


def forwarded_for(proxies: TrustedProxies) -> Callable[[ASGIApp], ASGIApp]:
    """Middleware factory: rewrite the client address and scheme for trusted peers.

    The scope is changed in place, so the server's access log shows the real client too.
    """

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Any, receive: Receive, send: Send) -> None:
            if scope["type"] in {"http", "websocket"} and scope.get("client"):
                peer, port = scope["client"]
                if peer in proxies:
                    # Several X-Forwarded-For lines are one list, in order.
                    forwarded = ",".join(
                        value.decode("latin-1")
                        for name, value in scope["headers"]
                        if name == b"x-forwarded-for"
                    )
                    protos = [
                        value.decode("latin-1").strip().lower()
                        for name, value in scope["headers"]
                        if name == b"x-forwarded-proto"
                    ]
                    if forwarded:
                        scope["client"] = (proxies.client_of(peer, forwarded), port)
                        # Said once, here, where the peer is still known: the client address
                        # the app sees was named by a proxy it trusts.
                        scope.setdefault("state", {})[FORWARDED_BY_TRUSTED_PROXY] = True
                    if protos and protos[-1] in {"http", "https"}:
                        scope["scheme"] = protos[-1]
            await app(scope, receive, send)

        return middleware

    return factory


def security_headers(app: ASGIApp) -> ASGIApp:
    """Middleware: the security headers on every HTTP response; HSTS only over TLS."""

    async def middleware(scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        over_tls = scope.get("scheme") == "https"
        is_static = scope.get("path", "").startswith("/static/")

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [header for header in _HEADERS if header[0] not in present]
                if over_tls and _HSTS[0] not in present:
                    extra.append(_HSTS)
                if not is_static and b"cache-control" not in present:
                    extra.append(_NO_STORE)
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware


def host_of(header: str) -> str:
    """The host name of a Host header, without the port; IPv6 literals keep no brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    name, colon, port = header.rpartition(":")
    if colon and name and (port.isdigit() or not port):
        header = name
    return header.rstrip(".")  # "example.com." is the same host as "example.com"


def allowed_hosts(hosts: Iterable[str]) -> Callable[[ASGIApp], ASGIApp]:
    """Middleware factory: answer 400 to a Host header that is not ours (any port is fine).

    ``*.example.com`` allows every sub-domain of example.com. This stops host-header tricks,
    such as links in pages built from a forged Host, and DNS rebinding against a LAN install.
    """
    exact = {host.lower() for host in hosts if not host.startswith("*.")}
    suffixes = tuple(host[1:].lower() for host in hosts if host.startswith("*."))
    allow_all = "*" in exact

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Any, receive: Receive, send: Send) -> None:
            if scope["type"] in {"http", "websocket"} and not allow_all:
                values = [value for name, value in scope["headers"] if name == b"host"]
                host = host_of(values[0].decode("latin-1")) if len(values) == 1 else ""
                # Exactly one Host: with two, parts of the stack could disagree on which counts.
                if not (host in exact or (suffixes and host.endswith(suffixes))):
                    if scope["type"] == "http":
                        await _plain_response(
                            send, 400, "Unknown host name. Add it to server.allowed_hosts."
                        )
                    return
            await app(scope, receive, send)

        return middleware

    return factory


async def _plain_response(send: Send, status: int, text: str) -> None:
    body = text.encode()
    start: Any = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})
