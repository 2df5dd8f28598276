"""Edge middleware: trusted proxies, Host checking and the security headers on responses."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.web.security import (
    CONTENT_SECURITY_POLICY,
    TrustedProxies,
    allowed_hosts,
    forwarded_for,
    host_of,
    security_headers,
)

PROXIES = TrustedProxies(["10.0.0.0/8", "192.168.1.1", "fd00::/8"])


class InnerApp:
    """An ASGI app that records the scope it saw and answers 200 with the given headers."""

    def __init__(self, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.headers = headers or [(b"content-type", b"text/plain")]
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": list(self.headers)})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})


def http_scope(
    *,
    path: str = "/",
    headers: list[tuple[bytes, bytes]] | None = None,
    client: tuple[str, int] | None = ("203.0.113.9", 50000),
    scheme: str = "http",
    scope_type: str = "http",
) -> dict[str, Any]:
    return {
        "type": scope_type,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers if headers is not None else [(b"host", b"localhost")],
        "client": client,
        "server": ("127.0.0.1", 8000),
    }


async def run(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    """Call an ASGI app once; return the messages it sent."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def response_headers(sent: list[dict[str, Any]]) -> dict[str, list[str]]:
    start = next(message for message in sent if message["type"] == "http.response.start")
    headers: dict[str, list[str]] = {}
    for name, value in start["headers"]:
        headers.setdefault(name.decode().lower(), []).append(value.decode())
    return headers


# TrustedProxies


def test_rightmost_untrusted_hop_is_the_client() -> None:
    """The last address a trusted proxy saw that is not itself a proxy is the client."""
    forwarded = "198.51.100.1, 203.0.113.5, 10.0.0.2"
    assert PROXIES.client_of("10.0.0.1", forwarded) == "203.0.113.5"


def test_forged_leftmost_forwarded_for_is_ignored() -> None:
    """Addresses the client wrote before the proxy appended the real one are ignored."""
    assert PROXIES.client_of("10.0.0.1", "1.2.3.4, 203.0.113.5") == "203.0.113.5"


def test_forged_trusted_address_cannot_hide_the_real_client() -> None:
    """A client claiming to be a proxy address does not shift the choice past its own hop."""
    assert PROXIES.client_of("10.0.0.1", "10.0.0.7, 203.0.113.5") == "203.0.113.5"


def test_all_trusted_chain_gives_the_leftmost_hop() -> None:
    """When every hop is a trusted proxy, the farthest one is the client."""
    assert PROXIES.client_of("10.0.0.1", "10.0.0.3, 192.168.1.1, 10.0.0.2") == "10.0.0.3"


def test_garbage_rightmost_hop_falls_back_to_the_peer() -> None:
    """A hop that is not an address stops the walk; the peer is used, not an earlier hop."""
    assert PROXIES.client_of("10.0.0.1", "203.0.113.5, not-an-address") == "10.0.0.1"


def test_address_with_port_is_taken_without_its_port() -> None:
    """Hops written as 203.0.113.5:4711 or [2001:db8::1]:443 give the bare address."""
    assert PROXIES.client_of("10.0.0.1", "203.0.113.5:4711") == "203.0.113.5"
    assert PROXIES.client_of("10.0.0.1", "[2001:db8::1]:443") == "2001:db8::1"


def test_ipv4_mapped_peer_matches_an_ipv4_proxy_network() -> None:
    """A proxy seen as ::ffff:10.0.0.1 (server listening on ::) is still trusted."""
    assert "::ffff:10.0.0.1" in PROXIES
    assert PROXIES.client_of("::ffff:10.0.0.1", "::ffff:203.0.113.9") == "203.0.113.9"


@pytest.mark.parametrize("header", ["example.com:", "example.com.", "EXAMPLE.com.:8000"])
def test_host_with_empty_port_or_trailing_dot_is_the_same_host(header: str) -> None:
    """An empty port and a fully qualified trailing dot name the same host."""
    assert host_of(header) == "example.com"


@pytest.mark.parametrize("forwarded", ["", " ", ", ,"])
def test_empty_forwarded_for_gives_the_peer(forwarded: str) -> None:
    """An empty or blank X-Forwarded-For leaves the direct peer as the client."""
    assert PROXIES.client_of("10.0.0.1", forwarded) == "10.0.0.1"


def test_ipv6_client_address_is_normalised() -> None:
    """An IPv6 hop is returned in its compressed lower-case form."""
    assert PROXIES.client_of("fd00::1", "2001:DB8:0:0::1") == "2001:db8::1"


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        ("10.1.2.3", True),
        ("192.168.1.1", True),
        ("fd00::abcd", True),
        ("192.168.1.2", False),
        ("11.0.0.1", False),
        ("2001:db8::1", False),
        ("not-an-address", False),
        ("", False),
        ("10.0.0.0/8", False),
    ],
)
def test_membership_checks_networks_and_refuses_invalid_addresses(
    address: str, trusted: bool
) -> None:
    """`in` is true only for a valid address inside a configured network."""
    assert (address in PROXIES) is trusted


def test_no_proxies_trusts_nothing() -> None:
    """An empty proxy list trusts no address at all."""
    assert "127.0.0.1" not in TrustedProxies([])


def test_invalid_network_is_refused() -> None:
    """TrustedProxies raises ValueError for an entry that is not a network."""
    with pytest.raises(ValueError, match=r"proxy\.local"):
        TrustedProxies(["proxy.local"])


# host_of


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("example.com:8000", "example.com"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("EXAMPLE.com", "example.com"),
        ("10.0.0.1", "10.0.0.1"),
        ("10.0.0.1:443", "10.0.0.1"),
        (" example.com ", "example.com"),
        ("", ""),
    ],
)
def test_host_of_strips_port_and_lowercases(header: str, host: str) -> None:
    """host_of gives the lower-case host name without port or IPv6 brackets."""
    assert host_of(header) == host


def test_host_of_keeps_a_non_numeric_suffix() -> None:
    """A colon followed by something other than digits is not taken as a port."""
    assert host_of("example.com:http") == "example.com:http"


# allowed_hosts


def host_headers(host: str) -> list[tuple[bytes, bytes]]:
    return [(b"host", host.encode()), (b"accept", b"*/*")]


async def test_foreign_host_gets_400_and_inner_app_is_not_called() -> None:
    """A request for a host name not in allowed_hosts is answered 400 by the middleware."""
    inner = InnerApp()
    app = allowed_hosts(["studio.example"])(inner)
    sent = await run(app, http_scope(headers=host_headers("evil.example")))
    assert inner.scopes == []
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 400
    body = b"".join(message.get("body", b"") for message in sent[1:])
    assert b"server.allowed_hosts" in body
    assert response_headers(sent)["content-length"] == [str(len(body))]


@pytest.mark.parametrize(
    "host", ["studio.example", "studio.example:8443", "STUDIO.Example", "localhost:8000"]
)
async def test_allowed_host_reaches_inner_app_on_any_port(host: str) -> None:
    """An allowed host name passes whatever its port and letter case."""
    inner = InnerApp()
    app = allowed_hosts(["studio.example", "localhost"])(inner)
    sent = await run(app, http_scope(headers=host_headers(host)))
    assert len(inner.scopes) == 1
    assert sent[0]["status"] == 200


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("a.studio.example", True),
        ("a.b.studio.example:8443", True),
        ("studio.example", False),
        ("evilstudio.example", False),
        ("studio.example.evil.test", False),
    ],
)
async def test_wildcard_allows_sub_domains_only(host: str, allowed: bool) -> None:
    """`*.studio.example` allows every sub-domain but not the bare or look-alike domains."""
    inner = InnerApp()
    app = allowed_hosts(["*.studio.example"])(inner)
    sent = await run(app, http_scope(headers=host_headers(host)))
    assert bool(inner.scopes) is allowed
    assert sent[0]["status"] == (200 if allowed else 400)


async def test_ipv6_literal_host_is_matched_without_brackets() -> None:
    """A Host of [::1]:8000 matches the allowed host ::1."""
    inner = InnerApp()
    sent = await run(allowed_hosts(["::1"])(inner), http_scope(headers=host_headers("[::1]:8000")))
    assert sent[0]["status"] == 200


async def test_missing_host_header_is_refused() -> None:
    """A request without a Host header gets 400."""
    inner = InnerApp()
    sent = await run(allowed_hosts(["localhost"])(inner), http_scope(headers=[]))
    assert inner.scopes == []
    assert sent[0]["status"] == 400


async def test_star_allows_every_host() -> None:
    """allowed_hosts ["*"] lets any Host through."""
    inner = InnerApp()
    sent = await run(allowed_hosts(["*"])(inner), http_scope(headers=host_headers("any.test")))
    assert sent[0]["status"] == 200


async def test_foreign_host_websocket_is_dropped_without_reaching_the_app() -> None:
    """A websocket to a foreign host never reaches the inner app and gets no HTTP answer."""
    inner = InnerApp()
    scope = http_scope(headers=host_headers("evil.example"), scope_type="websocket")
    sent = await run(allowed_hosts(["localhost"])(inner), scope)
    assert inner.scopes == []
    assert sent == []


async def test_lifespan_passes_the_host_check() -> None:
    """Non-HTTP scopes such as lifespan are handed on unchecked."""
    inner = InnerApp()
    await run(allowed_hosts(["localhost"])(inner), {"type": "lifespan"})
    assert inner.scopes == [{"type": "lifespan"}]


# security_headers


async def test_security_headers_are_added_to_responses() -> None:
    """Every HTTP response gets CSP, nosniff, frame, referrer and isolation headers."""
    sent = await run(security_headers(InnerApp()), http_scope(path="/login"))
    headers = response_headers(sent)
    csp = headers["content-security-policy"]
    assert csp == [CONTENT_SECURITY_POLICY]
    assert "'unsafe-inline'" not in csp[0]
    assert "'unsafe-eval'" not in csp[0]
    assert "frame-ancestors 'none'" in csp[0]
    assert "default-src 'self'" in csp[0]
    assert headers["x-content-type-options"] == ["nosniff"]
    assert headers["x-frame-options"] == ["DENY"]
    assert headers["referrer-policy"] == ["no-referrer"]
    assert headers["cross-origin-opener-policy"] == ["same-origin"]
    assert headers["content-type"] == ["text/plain"]
    assert sent[1]["body"] == b"ok"


async def test_hsts_only_over_https() -> None:
    """Strict-Transport-Security is sent for https scopes and never for plain http."""
    plain = response_headers(await run(security_headers(InnerApp()), http_scope(scheme="http")))
    tls = response_headers(await run(security_headers(InnerApp()), http_scope(scheme="https")))
    assert "strict-transport-security" not in plain
    assert tls["strict-transport-security"] == ["max-age=63072000"]


async def test_pages_are_not_stored_but_static_files_may_be() -> None:
    """Cache-Control no-store is added everywhere except under /static/."""
    page = response_headers(await run(security_headers(InnerApp()), http_scope(path="/account")))
    asset = response_headers(
        await run(security_headers(InnerApp()), http_scope(path="/static/app.css"))
    )
    assert page["cache-control"] == ["no-store"]
    assert "cache-control" not in asset
    assert asset["x-content-type-options"] == ["nosniff"]


async def test_no_store_applies_to_a_path_that_only_starts_like_static() -> None:
    """/staticfiles is a page, not the static mount, and still gets no-store."""
    page = response_headers(
        await run(security_headers(InnerApp()), http_scope(path="/staticfiles"))
    )
    assert page["cache-control"] == ["no-store"]


async def test_headers_set_by_the_app_are_kept_and_not_duplicated() -> None:
    """A header the app already set (any case) is left alone and not added twice."""
    inner = InnerApp([(b"Cache-Control", b"max-age=60"), (b"x-frame-options", b"SAMEORIGIN")])
    headers = response_headers(await run(security_headers(inner), http_scope(path="/healthz")))
    assert headers["cache-control"] == ["max-age=60"]
    assert headers["x-frame-options"] == ["SAMEORIGIN"]
    assert headers["referrer-policy"] == ["no-referrer"]


async def test_security_headers_leave_non_http_scopes_alone() -> None:
    """Websocket and lifespan scopes pass through without their messages being changed."""
    inner = InnerApp()
    sent = await run(security_headers(inner), {"type": "lifespan"})
    assert inner.scopes == [{"type": "lifespan"}]
    assert sent == []


# forwarded_for


def proxied_headers(forwarded: str, proto: str | None = None) -> list[tuple[bytes, bytes]]:
    headers = [(b"host", b"localhost"), (b"x-forwarded-for", forwarded.encode())]
    if proto is not None:
        headers.append((b"x-forwarded-proto", proto.encode()))
    return headers


async def test_trusted_peer_rewrites_client_and_scheme() -> None:
    """Behind a trusted proxy the client is the forwarded address and the scheme its proto."""
    inner = InnerApp()
    app = forwarded_for(PROXIES)(inner)
    scope = http_scope(
        headers=proxied_headers("1.2.3.4, 203.0.113.5", "HTTPS"), client=("10.0.0.1", 41000)
    )
    await run(app, scope)
    seen = inner.scopes[0]
    assert seen["client"] == ("203.0.113.5", 41000)
    assert seen["scheme"] == "https"
    # Changed in place, so the server's own access log shows the real client as well.
    assert scope["client"] == ("203.0.113.5", 41000)


async def test_several_forwarded_for_lines_are_one_list() -> None:
    """Two X-Forwarded-For header lines are read in order, the rightmost untrusted hop wins."""
    inner = InnerApp()
    app = forwarded_for(PROXIES)(inner)
    headers = [
        (b"host", b"localhost"),
        (b"x-forwarded-for", b"203.0.113.5"),
        (b"x-forwarded-for", b"198.51.100.7"),
    ]
    await run(app, http_scope(headers=headers, client=("10.0.0.1", 1)))
    assert inner.scopes[0]["client"] == ("198.51.100.7", 1)


async def test_two_host_headers_are_refused() -> None:
    """A request with two Host headers is refused even when both name an allowed host."""
    inner = InnerApp()
    app = allowed_hosts(["localhost"])(inner)
    headers = [(b"host", b"localhost"), (b"host", b"localhost")]
    sent = await run(app, http_scope(headers=headers))
    assert not inner.scopes
    assert sent[0]["status"] == 400


async def test_forged_forwarded_for_is_ignored_from_untrusted_peer() -> None:
    """A direct client's X-Forwarded-For and X-Forwarded-Proto change nothing."""
    inner = InnerApp()
    app = forwarded_for(PROXIES)(inner)
    scope = http_scope(headers=proxied_headers("10.0.0.5", "https"), client=("203.0.113.9", 50000))
    await run(app, scope)
    seen = inner.scopes[0]
    assert seen["client"] == ("203.0.113.9", 50000)
    assert seen["scheme"] == "http"


async def test_unknown_forwarded_proto_is_ignored() -> None:
    """Only http and https are believed as X-Forwarded-Proto values."""
    inner = InnerApp()
    scope = http_scope(headers=proxied_headers("203.0.113.5", "ftp"), client=("10.0.0.1", 1))
    await run(forwarded_for(PROXIES)(inner), scope)
    assert inner.scopes[0]["scheme"] == "http"
    assert inner.scopes[0]["client"] == ("203.0.113.5", 1)


async def test_trusted_peer_without_forwarded_for_keeps_its_address() -> None:
    """A trusted proxy that sends only X-Forwarded-Proto changes the scheme, not the client."""
    inner = InnerApp()
    scope = http_scope(
        headers=[(b"host", b"localhost"), (b"x-forwarded-proto", b"https")],
        client=("10.0.0.1", 1),
    )
    await run(forwarded_for(PROXIES)(inner), scope)
    assert inner.scopes[0]["client"] == ("10.0.0.1", 1)
    assert inner.scopes[0]["scheme"] == "https"


async def test_scope_without_client_passes_unchanged() -> None:
    """A scope with no client (e.g. a Unix socket) is handed on as it is."""
    inner = InnerApp()
    scope = http_scope(headers=proxied_headers("203.0.113.5", "https"), client=None)
    await run(forwarded_for(PROXIES)(inner), scope)
    assert inner.scopes[0] is scope
