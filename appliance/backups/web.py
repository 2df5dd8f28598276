"""The admins' backups page: state of the backups, on-demand runs, alert targets, repositories."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Controller, Response, get, post
from litestar.params import FromPath, FromQuery

from appliance.backups import admin, overview, repositories
from appliance.backups.restic import display_url
from appliance.config import Settings
from appliance.errors import ApplianceError
from appliance.localtime import format_duration
from appliance.setup import service as setup
from appliance.web.acting import acting
from appliance.web.auth import require_admin
from appliance.web.pages import (
    FORM,
    NO_STORE,
    error_context,
    redirect,
    render,
    status_of,
)
from appliance.web.requests import AnyRequest

__all__ = ["BackupsController"]

log = logging.getLogger(__name__)

PAGE = "/admin/backups"
# What a redirect after a change may announce: fixed texts, so nothing from the request is
# ever reflected into the page.
NOTICES = {
    "password": "Noted. The password will not be shown again.",
    "backup": "A backup is queued; the worker starts it within a minute.",
    "backup-busy": "A backup is already queued or running.",
    "drill": "A restore drill is queued; the worker starts it within a minute.",
    "drill-busy": "A restore drill is already queued or running.",
    "alerts": "Alert URLs saved.",
    "alert-removed": "Alert URL removed.",
    "ping": "Ping URL saved.",
    "ping-cleared": "Ping URL removed.",
    "test-sent": "The test alert was sent to every alert channel; Admin → Notifications "
    "lists any channel that did not take it, and retries it.",
    "repository": "Repository added. The worker sets it up and copies the backups there.",
    "repository-removed": "Repository removed. Its data there was not touched.",
}
ERRORS = {
    "test-failed": "The test alert could not be queued; the log says why.",
}


class DrillForm(msgspec.Struct):
    repository: str = ""


class AlertUrlsForm(msgspec.Struct):
    alert_urls: str = ""


class RemoveAlertForm(msgspec.Struct):
    fingerprint: str = ""


class PingForm(msgspec.Struct):
    ping_url: str = ""


class RepositoryForm(msgspec.Struct):
    name: str = ""
    url: str = ""
    access_key: str = ""
    secret_key: str = ""
    region: str = ""


def _password(settings: Settings) -> tuple[str, str]:
    """The repository password (made now when missing), or why it cannot be shown."""
    try:
        repositories.ensure_password(settings)
        return repositories.read_password(settings), ""
    except (OSError, ValueError) as exc:
        log.warning("the repository password cannot be shown: %s", exc)
        return "", "The repository password file cannot be read or made; the log says why."


class BackupsController(Controller):
    path = PAGE
    guards = [require_admin]

    async def _page(
        self,
        request: AnyRequest,
        *,
        status_code: int = 200,
        **extra: Any,
    ) -> Response[Any]:
        settings: Settings = request.app.state.settings
        now = request.app.state.clock()
        password, password_problem = "", ""
        if await admin.password_confirmed_at() is None:
            password, password_problem = await anyio.to_thread.run_sync(_password, settings)
        context = {
            "overview": await overview.load_overview(settings, now),
            "now": now,
            "password": password,
            "password_problem": password_problem,
            "targets": await admin.alert_targets(settings),
            "repositories": await admin.list_repositories(settings),
            "limits": {
                "urls": admin.MAX_ALERT_URLS,
                "url_length": admin.MAX_URL_LENGTH,
                "key_length": admin.MAX_KEY_LENGTH,
            },
            "repository_form": extra.pop("repository_form", RepositoryForm()),
            "size": _size,
            "span": format_duration,
            **extra,
        }
        return render(
            request, "backups/index.html", context, status_code=status_code, headers=NO_STORE
        )

    async def _refused(
        self, request: AnyRequest, exc: ApplianceError, **extra: Any
    ) -> Response[Any]:
        return await self._page(request, status_code=status_of(exc), **error_context(exc), **extra)

    @get("/", name="admin_backups")
    async def page(self, request: AnyRequest, done: FromQuery[str | None] = None) -> Response[Any]:
        return await self._page(
            request, notice=NOTICES.get(done or ""), error=ERRORS.get(done or "")
        )

    @post("/password-stored", name="admin_backups_password_stored")
    async def password_stored(self, request: AnyRequest) -> Response[Any]:
        await admin.confirm_password(**await acting(request))
        return redirect(f"{PAGE}?done=password")

    @post("/run", name="admin_backups_run")
    async def run(self, request: AnyRequest) -> Response[Any]:
        queued = await admin.request_run(
            request.app.state.settings, "backup", **await acting(request)
        )
        return redirect(f"{PAGE}?done={'backup' if queued else 'backup-busy'}")

    @post("/drill", name="admin_backups_drill")
    async def drill(self, request: AnyRequest, data: Annotated[DrillForm, FORM]) -> Response[Any]:
        try:
            queued = await admin.request_run(
                request.app.state.settings,
                "drill",
                repository=data.repository,
                **await acting(request),
            )
        except ApplianceError as exc:
            return await self._refused(request, exc)
        return redirect(f"{PAGE}?done={'drill' if queued else 'drill-busy'}")

    @post("/alerts", name="admin_backups_alerts")
    async def add_alerts(
        self, request: AnyRequest, data: Annotated[AlertUrlsForm, FORM]
    ) -> Response[Any]:
        try:
            await admin.add_alert_urls(
                request.app.state.settings, data.alert_urls, **await acting(request)
            )
        except ApplianceError as exc:
            # The URLs typed are not shown again: they may carry tokens.
            return await self._refused(request, exc)
        return redirect(f"{PAGE}?done=alerts")

    @post("/alerts/remove", name="admin_backups_alert_remove")
    async def remove_alert(
        self, request: AnyRequest, data: Annotated[RemoveAlertForm, FORM]
    ) -> Response[Any]:
        try:
            await admin.remove_alert_url(
                request.app.state.settings, data.fingerprint, **await acting(request)
            )
        except ApplianceError as exc:
            return await self._refused(request, exc)
        return redirect(f"{PAGE}?done=alert-removed")

    @post("/alerts/test", name="admin_backups_alert_test")
    async def test_alert(self, request: AnyRequest) -> Response[Any]:
        studio = await setup.get_studio()
        try:
            delivered = await admin.send_test_alert(
                request.app.state.settings,
                studio=studio.name if studio else "",
                **await acting(request),
            )
        except ApplianceError as exc:
            return await self._refused(request, exc)
        return redirect(f"{PAGE}?done={'test-sent' if delivered else 'test-failed'}")

    @post("/ping", name="admin_backups_ping")
    async def set_ping(self, request: AnyRequest, data: Annotated[PingForm, FORM]) -> Response[Any]:
        try:
            await admin.set_ping_url(data.ping_url, **await acting(request))
        except ApplianceError as exc:
            return await self._refused(request, exc)
        return redirect(f"{PAGE}?done={'ping' if data.ping_url.strip() else 'ping-cleared'}")

    @post("/repositories", name="admin_backups_repository_add")
    async def add_repository(
        self, request: AnyRequest, data: Annotated[RepositoryForm, FORM]
    ) -> Response[Any]:
        try:
            await admin.add_repository(
                request.app.state.settings,
                name=data.name,
                url=data.url,
                access_key=data.access_key,
                secret_key=data.secret_key,
                region=data.region,
                **await acting(request),
            )
        except ApplianceError as exc:
            # Keys are typed again; a URL is kept only when it carries no password.
            url = data.url if display_url(data.url) == data.url else ""
            kept = RepositoryForm(name=data.name, url=url, region=data.region)
            return await self._refused(request, exc, repository_form=kept)
        return redirect(f"{PAGE}?done=repository")

    @post("/repositories/{name:str}/remove", name="admin_backups_repository_remove")
    async def remove_repository(self, request: AnyRequest, name: FromPath[str]) -> Response[Any]:
        try:
            await admin.remove_repository(name, **await acting(request))
        except ApplianceError as exc:
            return await self._refused(request, exc)
        return redirect(f"{PAGE}?done=repository-removed")


def _size(count: int | float) -> str:
    """Bytes for people: 1.4 GB."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
