"""Edge protections: CSRF, security headers, allowed hosts, and the framework's defaults."""

from __future__ import annotations

import httpx
from litestar import Litestar

from appliance.app import MAX_BODY_BYTES
from appliance.audit.service import list_entries
from tests.conftest import make_client
from tests.integration.flows import Admin, csrf_of


async def test_form_without_csrf_token_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, admin: Admin
) -> None:
    """A sign-in post with no token, a wrong one, or one for another cookie gets 403."""
    page = await client.get("/login")
    good = csrf_of(page.text)
    form = {"username": admin.username, "password": admin.password}
    for token in (None, "", "0" * 64, good[:-1] + ("0" if good[-1] != "0" else "1")):
        data = form if token is None else {**form, "_csrf": token}
        response = await client.post("/login", data=data)
        assert response.status_code == 403, token
        assert "expired or was sent from another site" in response.text
    async with make_client(client._transport.app) as other:  # type: ignore[attr-defined]
        await other.get("/login")  # a different browser with its own CSRF cookie
        stolen = await other.post("/login", data={**form, "_csrf": good})
        assert stolen.status_code == 403
    assert not [e for e in await list_entries() if e.action.startswith("login")]


async def test_cross_origin_post_is_refused_even_with_a_token(
    client: httpx.AsyncClient, admin: Admin
) -> None:
    """An Origin header naming another site is refused before anything else is looked at."""
    page = await client.get("/login")
    response = await client.post(
        "/login",
        data={"username": admin.username, "password": admin.password, "_csrf": csrf_of(page.text)},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    same = await client.post(
        "/login",
        data={"username": admin.username, "password": admin.password, "_csrf": csrf_of(page.text)},
        headers={"Origin": "https://localhost"},
    )
    assert same.status_code == 303


async def test_csrf_header_works_for_scripts(client: httpx.AsyncClient, admin: Admin) -> None:
    """A script may send the token in X-CSRF-Token instead of the form field."""
    page = await client.get("/login")
    response = await client.post(
        "/login",
        data={"username": admin.username, "password": admin.password},
        headers={"X-CSRF-Token": csrf_of(page.text)},
    )
    assert response.status_code == 303


def assert_security_headers(response: httpx.Response, *, tls: bool) -> None:
    csp = response.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert "script-src 'self'" in csp and "object-src 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    if tls:
        assert response.headers["strict-transport-security"].startswith("max-age=63072000")
    else:
        assert "strict-transport-security" not in response.headers


async def test_security_headers_on_pages_errors_and_static_files(
    client: httpx.AsyncClient,
) -> None:
    """Every kind of response carries the headers; HSTS over TLS; pages are not cached."""
    for path, status in (
        ("/setup", 200),
        ("/nowhere", 404),
        ("/static/app.css", 200),
        ("/healthz", 200),
        ("/invite/unknown", 404),
    ):
        response = await client.get(path)
        assert response.status_code == status, path
        assert_security_headers(response, tls=True)
    page = await client.get("/setup")
    assert page.headers["cache-control"] == "no-store"
    assert "no-store" not in (await client.get("/static/app.css")).headers.get("cache-control", "")


async def test_no_hsts_over_plain_http(app: Litestar, clean_db: None) -> None:
    """HSTS is only sent on responses that went out over TLS."""
    transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        assert_security_headers(await http.get("/setup"), tls=False)


async def test_unknown_host_is_refused(client: httpx.AsyncClient) -> None:
    """A Host header not in server.allowed_hosts gets 400 (any port of an allowed host is fine)."""
    refused = await client.get("/login", headers={"Host": "evil.example"})
    assert refused.status_code == 400 and "allowed_hosts" in refused.text
    assert_security_headers(refused, tls=True)
    allowed = await client.get("/healthz", headers={"Host": "appliance.test:8443"})
    assert allowed.status_code == 200


async def test_framework_defaults_are_the_safe_ones(app: Litestar) -> None:
    """Debug off, no CORS, a bounded request body, and no HTML docs that would load a CDN."""
    assert app.debug is False
    assert app.pdb_on_exception is False
    assert app.cors_config is None
    assert app.request_max_body_size == MAX_BODY_BYTES == 1024 * 1024
    assert app.csrf_config is None  # our guard replaces it and also covers sign-in forms
    assert app.openapi_config is not None
    assert [type(p).__name__ for p in app.openapi_config.render_plugins] == ["JsonRenderPlugin"]


async def test_oversized_body_is_refused_without_a_trace(
    client: httpx.AsyncClient, admin: Admin
) -> None:
    """A body over the limit gets 413 with a short message, never a stack trace."""
    page = await client.get("/login")
    response = await client.post(
        "/login",
        content=b"username=" + b"a" * (MAX_BODY_BYTES + 10),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-CSRF-Token": csrf_of(page.text),
        },
    )
    assert response.status_code == 413
    assert "Traceback" not in response.text


async def test_malformed_requests_get_clear_errors_not_500(
    client: httpx.AsyncClient, admin: Admin
) -> None:
    """Unknown methods, bad path parameters and broken bodies answer 4xx with a message."""
    page = await client.get("/login")
    token = csrf_of(page.text)
    cases = [
        await client.put("/login", headers={"X-CSRF-Token": token}),
        await client.post("/admin/users/not-a-number/role", headers={"X-CSRF-Token": token}),
        await client.post(
            "/login",
            content=b"\xff\xfe%%%",
            headers={"Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": token},
        ),
    ]
    for response in cases:
        assert 400 <= response.status_code < 500, (response.request.url, response.status_code)
        assert "Traceback" not in response.text


async def test_api_clients_get_json_errors(client: httpx.AsyncClient) -> None:
    """A client asking for JSON gets the error as JSON with the same message."""
    response = await client.get("/nowhere", headers={"Accept": "application/json"})
    assert response.status_code == 404
    assert response.json() == {"error": "There is no page here.", "field": None, "status": 404}
