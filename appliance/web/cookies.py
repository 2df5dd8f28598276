"""Cookie names and flags that follow how the request arrived.

Over TLS (or on the loopback address, which browsers treat as a secure context) cookies carry
``Secure`` and the ``__Host-`` prefix, which also pins them to this host and path ``/``. On plain
HTTP to a LAN address a browser would drop such a cookie, so there the prefix and ``Secure`` are
left off; a reverse proxy with TLS in front (Caddy in the bundle) avoids that case.
"""

from __future__ import annotations

import ipaddress

from litestar.datastructures import Cookie

from appliance.web.requests import AnyConnection

__all__ = ["cookie_name", "is_secure", "make_cookie", "read_cookie"]


def is_secure(connection: AnyConnection) -> bool:
    """Whether the browser treats this origin as secure (TLS, or the loopback address)."""
    if connection.url.scheme == "https":
        return True
    host = (connection.url.hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cookie_name(base: str, secure: bool) -> str:
    """``__Host-<base>`` on a secure origin, plain ``<base>`` otherwise."""
    return f"__Host-{base}" if secure else base


def read_cookie(connection: AnyConnection, base: str) -> str:
    """The value of cookie ``base`` under the name this origin uses, or ``""``."""
    return connection.cookies.get(cookie_name(base, is_secure(connection)), "")


def make_cookie(
    connection: AnyConnection,
    base: str,
    value: str,
    *,
    max_age: int | None = None,
    samesite: str = "lax",
) -> Cookie:
    """An HttpOnly cookie for ``base`` with the name and Secure flag this origin needs."""
    secure = is_secure(connection)
    return Cookie(
        key=cookie_name(base, secure),
        value=value,
        path="/",
        max_age=max_age,
        secure=secure,
        httponly=True,
        samesite=samesite,  # type: ignore[arg-type]
    )
