"""CSRF protection for every unsafe request: a signed double-submit token, plus an Origin check.

The browser holds a random value in an HttpOnly cookie; forms carry HMAC(secret key, value) in
``_csrf`` (or scripts in ``X-CSRF-Token``). Another site can make the browser send the cookie but
can neither read it nor compute the HMAC, so its forged form carries no valid token.

Every page gets the HMAC masked with a fresh random pad (pad, then pad XOR HMAC), so the token's
bytes differ in every response: compression (the client gallery pages are gzipped) cannot be
used to guess it byte by byte (BREACH).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from litestar import Request
from litestar.handlers.base import BaseRouteHandler

from appliance.tokens import same
from appliance.web.cookies import make_cookie, read_cookie
from appliance.web.requests import AnyConnection, AnyRequest

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "CsrfRefused", "csrf_guard", "csrf_token"]

CSRF_COOKIE = "fs_csrf"
CSRF_FIELD = "_csrf"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS", "TRACE"}


class CsrfRefused(Exception):
    """The unsafe request carried no valid CSRF token or came from another origin."""


def _sign(secret_key: str, value: str) -> str:
    return hmac.new(secret_key.encode(), f"csrf:{value}".encode(), hashlib.sha256).hexdigest()


def _mask(token: str) -> str:
    signed = bytes.fromhex(token)
    pad = secrets.token_bytes(len(signed))
    return (pad + bytes(a ^ b for a, b in zip(pad, signed, strict=True))).hex()


def _unmask(submitted: str) -> str:
    """The HMAC inside a masked token; "" for anything that is not one."""
    if len(submitted) != 128 or not submitted.isascii():
        return ""
    try:
        raw = bytes.fromhex(submitted)
    except ValueError:
        return ""
    pad, masked = raw[:32], raw[32:]
    return bytes(a ^ b for a, b in zip(pad, masked, strict=True)).hex()


def csrf_token(request: AnyRequest) -> str:
    """The token for forms on this page (masked afresh on every call); sets the cookie on the
    response when it is new."""
    value = read_cookie(request, CSRF_COOKIE) or request.state.get("csrf_new_value", "")
    if not value or len(value) > 100:
        value = secrets.token_urlsafe(32)
        request.state.csrf_new_value = value
        request.state.setdefault("set_cookies", []).append(
            make_cookie(request, CSRF_COOKIE, value, samesite="strict")
        )
    return _mask(_sign(request.app.state.secret_key, value))


async def csrf_guard(connection: AnyConnection, _: BaseRouteHandler) -> None:
    """App-wide guard: refuse an unsafe method without a valid token or from a foreign origin."""
    if connection.scope.get("method", "GET") in _SAFE_METHODS:
        return
    origin = connection.headers.get("origin")
    if origin and origin != "null":
        expected = f"{connection.url.scheme}://{connection.url.netloc}"
        if origin.rstrip("/") != expected:
            raise CsrfRefused("cross-origin request")
    value = read_cookie(connection, CSRF_COOKIE)
    submitted = connection.headers.get(CSRF_HEADER, "")
    if not submitted and isinstance(connection, Request):
        content_type = connection.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await connection.form()
            field = form.get(CSRF_FIELD, "")
            submitted = field if isinstance(field, str) else ""
    secret_key = connection.app.state.secret_key
    unmasked = _unmask(submitted)
    if not value or not unmasked or not same(_sign(secret_key, value), unmasked):
        raise CsrfRefused("missing or invalid token")
