"""Render pages, and the one table that maps errors to HTTP answers a person can act on."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg
from litestar import MediaType, Response
from litestar.datastructures import Cookie
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.params import Body
from litestar.response import Redirect, Template

from appliance.db.engine import DATABASE_UNAVAILABLE
from appliance.errors import (
    ApplianceError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    TooManyAttempts,
    Unauthenticated,
)
from appliance.localtime import format_local
from appliance.logs import redact_path
from appliance.monitoring.banner import BannerCache
from appliance.storage.base import ObjectNotFound, StorageError
from appliance.web.auth import AdminRequired, LoginRequired
from appliance.web.csrf import CSRF_FIELD, CsrfRefused, csrf_token
from appliance.web.requests import AnyRequest
from appliance.web.security import parse_address

__all__ = [
    "EXCEPTION_HANDLERS",
    "FORM",
    "NO_STORE",
    "banner_cache",
    "client_address",
    "error_context",
    "form_list",
    "load_maintenance_banner",
    "maintenance_banner",
    "maintenance_banner_key",
    "redirect",
    "render",
    "retry_after",
    "status_of",
]

log = logging.getLogger(__name__)

STATUS_OF: dict[type[ApplianceError], int] = {
    InvalidInput: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooManyAttempts: 429,
}


FORM = Body(media_type=RequestEncodingType.URL_ENCODED)
"""Marker for handler parameters that take an HTML form: ``data: Annotated[MyForm, FORM]``."""


def status_of(exc: ApplianceError) -> int:
    """The HTTP status for a domain error (the one mapping table of the web layer)."""
    return next((code for kind, code in STATUS_OF.items() if isinstance(exc, kind)), 400)


def retry_after(exc: ApplianceError) -> dict[str, str]:
    """The Retry-After header for a throttled request, else no header."""
    return {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyAttempts) else {}


def error_context(exc: ApplianceError) -> dict[str, Any]:
    """Template values that show ``exc`` at the top of a form and next to its field."""
    return {"error": exc.message, "error_field": exc.field}


def client_address(request: AnyRequest) -> str:
    """The client's address (already resolved through trusted proxies by the middleware)."""
    host = request.client.host if request.client else ""
    return parse_address(host) or host or "unknown"


def render(
    request: AnyRequest,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
    cookies: Iterable[Cookie] = (),
    headers: Mapping[str, str] | None = None,
) -> Template:
    """A page with the CSRF token, the signed-in member and any cookies queued for it."""
    full = {
        "csrf_value": csrf_token(request),
        "csrf_field": CSRF_FIELD,
        "signed": request.state.get("signed"),
        **maintenance_banner(request),
        **(context or {}),
    }
    return Template(
        template_name=template,
        context=full,
        status_code=status_code,
        cookies=[*request.state.get("set_cookies", []), *cookies],
        headers=dict(headers or {}),
    )


BANNER_STATE = "maintenance_banner"
# How long before it starts a window is shown to admins on the home page.
UPCOMING_ON_HOME = dt.timedelta(days=14)


def banner_cache(request: AnyRequest) -> BannerCache:
    """This app's cache of the maintenance windows the banner may show."""
    cache: BannerCache | None = request.app.state.get(BANNER_STATE)
    if cache is None:
        cache = BannerCache()
        request.app.state[BANNER_STATE] = cache
    return cache


async def load_maintenance_banner(request: AnyRequest) -> None:
    """A ``before_request`` hook: reload the banner's windows when older than 30 s, so the
    page about to render shows a change made in another process. Never raises: a database
    that is down must not change the answer of a health check."""
    await banner_cache(request).refresh_if_stale(request.app.state.clock())


def maintenance_banner_key(request: AnyRequest) -> tuple[str, str, tuple[str, ...]] | None:
    """What the running window's banner says, hashable: for pages cached by their content."""
    cache = banner_cache(request)
    running = cache.active(request.app.state.clock())
    if running is None:
        return None
    zone = request.app.state.settings.studio_zone
    return running.title, format_local(running.ends_at, zone), tuple(running.component_labels)


def maintenance_banner(request: AnyRequest) -> dict[str, Any]:
    """Template values of the banner: ``maintenance_now`` (the running window and when it
    ends, for every page) and ``maintenance_next`` (the next one, for admins on the home
    page). Read from the cache; a stale cache is reloaded in the background."""
    cache = banner_cache(request)
    now = request.app.state.clock()
    cache.refresh_soon(now)
    running = cache.active(now)
    zone = request.app.state.settings.studio_zone
    values: dict[str, Any] = {"maintenance_now": None, "maintenance_next": None}
    if running is not None:
        values["maintenance_now"] = {
            "title": running.title,
            "until": format_local(running.ends_at, zone),
            "components": running.component_labels,
        }
    signed = request.state.get("signed")
    if (
        request.url.path == "/"
        and signed is not None
        and signed.session.stage == "full"
        and signed.member.is_admin
    ):
        coming = cache.upcoming(now, UPCOMING_ON_HOME)
        if coming is not None:
            values["maintenance_next"] = {
                "title": coming.title,
                "starts": format_local(coming.starts_at, zone),
                "ends": format_local(coming.ends_at, zone),
            }
    return values


# Pages with settings, client data or reports: never kept by a browser or a proxy.
NO_STORE = {"Cache-Control": "no-store"}


def form_list(value: list[str] | str) -> list[str]:
    """A form field that may be sent once (a string) or several times (a list), as a list."""
    return [value] if isinstance(value, str) else list(value)


def redirect(path: str, *, cookies: Iterable[Cookie] = ()) -> Redirect:
    """303 See Other: after a form POST the browser follows with a GET."""
    return Redirect(path=path, status_code=303, cookies=list(cookies))


def _wants_json(request: AnyRequest) -> bool:
    accept = request.headers.get("accept", "")
    return request.url.path.startswith("/api/") or (
        "application/json" in accept and "text/html" not in accept
    )


def _error(
    request: AnyRequest,
    status_code: int,
    message: str,
    *,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[Any]:
    if _wants_json(request):
        return Response(
            content={"error": message, "field": field, "status": status_code},
            status_code=status_code,
            media_type=MediaType.JSON,
            headers=dict(headers or {}),
        )
    return render(
        request,
        "errors/error.html",
        {"status_code": status_code, "message": message},
        status_code=status_code,
        headers=headers,
    )


def _on_appliance_error(request: AnyRequest, exc: ApplianceError) -> Response[Any]:
    return _error(request, status_of(exc), exc.message, field=exc.field, headers=retry_after(exc))


def _on_login_required(request: AnyRequest, _: LoginRequired) -> Response[Any]:
    if _wants_json(request):
        return _error(request, 401, "Sign in first.")
    return redirect("/login")


def _on_admin_required(request: AnyRequest, _: AdminRequired) -> Response[Any]:
    return _error(request, 403, "Only an admin can open this page.")


def _on_csrf(request: AnyRequest, exc: CsrfRefused) -> Response[Any]:
    log.warning("CSRF refusal on %s %s: %s", request.method, redact_path(request.url.path), exc)
    return _error(
        request,
        403,
        "This form has expired or was sent from another site. Reload the page and try again.",
    )


def _on_validation(request: AnyRequest, exc: ValidationException) -> Response[Any]:
    return _error(
        request, 400, "The request was incomplete or malformed. Reload the page and try again."
    )


def _on_http(request: AnyRequest, exc: HTTPException) -> Response[Any]:
    if isinstance(exc, NotFoundException):
        return _error(request, 404, "There is no page here.")
    message = exc.detail if exc.status_code < 500 else "Something went wrong on the server."
    return _error(request, exc.status_code, message, headers=exc.headers)


def _on_storage(request: AnyRequest, exc: StorageError) -> Response[Any]:
    if isinstance(exc, ObjectNotFound):
        log.error("missing object on %s: %s", redact_path(request.url.path), exc)
        return _error(request, 404, "The file is missing from storage.")
    log.error("storage failure on %s: %s", redact_path(request.url.path), exc)
    if exc.permanent:
        return _error(request, 500, "The appliance cannot use its storage. The error was logged.")
    return _error(
        request,
        503,
        "The appliance cannot reach its storage right now. Try again in a minute.",
        headers={"Retry-After": "30"},
    )


def _on_data_error(request: AnyRequest, exc: asyncpg.exceptions.DataError) -> Response[Any]:
    # A number or text the database cannot hold (an id past 2**31 in a path, say): the
    # request is wrong, not the server.
    log.warning("value refused by the database on %s: %s", redact_path(request.url.path), exc)
    return _error(request, 400, "A value in the request is out of range.")


def _on_unexpected(request: AnyRequest, exc: Exception) -> Response[Any]:
    if isinstance(exc, DATABASE_UNAVAILABLE):
        log.error("database unavailable on %s: %r", redact_path(request.url.path), exc)
        return _error(
            request,
            503,
            "The appliance cannot reach its database right now. Try again in a minute.",
            headers={"Retry-After": "30"},
        )
    # The trace goes to the log for the studio's IT; the person sees no internals.
    log.exception("unhandled error on %s %s", request.method, redact_path(request.url.path))
    return _error(request, 500, "Something went wrong on the server. The error was logged.")


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    ApplianceError: _on_appliance_error,
    LoginRequired: _on_login_required,
    AdminRequired: _on_admin_required,
    CsrfRefused: _on_csrf,
    ValidationException: _on_validation,
    HTTPException: _on_http,
    StorageError: _on_storage,
    asyncpg.exceptions.DataError: _on_data_error,
    Exception: _on_unexpected,
}
