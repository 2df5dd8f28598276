"""Admin → Notifications: the SMTP relay, alert channels, and messages that failed."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.params import FromPath, FromQuery

from appliance.config import Settings
from appliance.errors import ApplianceError
from appliance.notify import admin, relay
from appliance.notify.relay import RelayForm, effective_relay
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

__all__ = ["NotifyAdminController"]

PAGE = "/admin/notifications"
# What a redirect may announce: fixed texts, so nothing from the request is reflected.
NOTICES = {
    "smtp": "SMTP relay saved: the connection test passed.",
    "test-email": "Test e-mail queued; it should arrive within a minute. If it does not, it "
    "shows up below with the reason.",
    "channel": "Alert channel added.",
    "channel-enabled": "Alert channel switched on.",
    "channel-disabled": "Alert channel switched off.",
    "channel-removed": "Alert channel removed.",
    "channel-test": "Test alert queued; it should arrive within a minute. If it does not, it "
    "shows up below with the reason.",
    "retry": "The message will be sent again within a minute.",
    "discard": "The message was discarded.",
    "retry-failed": "The failed messages will be sent again within a minute.",
}


class TestEmailForm(msgspec.Struct):
    to: str = ""
    language: str = "en"


class ChannelForm(msgspec.Struct):
    name: str = ""
    url: str = ""


class ChannelTestForm(msgspec.Struct):
    key: str = ""


class NotifyAdminController(Controller):
    path = PAGE
    guards = [require_admin]

    async def _page(
        self, request: AnyRequest, *, status_code: int = 200, **extra: Any
    ) -> Response[Any]:
        settings: Settings = request.app.state.settings
        now = request.app.state.clock()
        current = await effective_relay(settings)
        form = extra.pop("relay_form", None) or RelayForm(
            host=current.host,
            port=str(current.port),
            security=current.security,
            username=current.username,
            mail_from=current.mail_from,
            mail_from_name=current.mail_from_name,
        )
        context = {
            "relay": current,
            "relay_form": form,
            "has_password": bool(current.password),
            "channels": await admin.list_channels(settings),
            "outbox": await admin.outbox_overview(settings, now),
            "test_form": extra.pop("test_form", TestEmailForm()),
            "channel_form": extra.pop("channel_form", ChannelForm()),
            "now": now,
            **extra,
        }
        return render(
            request, "notify/index.html", context, status_code=status_code, headers=NO_STORE
        )

    async def _refused(
        self, request: AnyRequest, exc: ApplianceError, **extra: Any
    ) -> Response[Any]:
        return await self._page(request, status_code=status_of(exc), **error_context(exc), **extra)

    @get("/", name="admin_notifications")
    async def page(self, request: AnyRequest, done: FromQuery[str | None] = None) -> Response[Any]:
        return await self._page(request, notice=NOTICES.get(done or ""))

    @post("/smtp", name="admin_notifications_smtp")
    async def save_smtp(
        self, request: AnyRequest, data: Annotated[RelayForm, FORM]
    ) -> Response[Any]:
        try:
            await relay.save_relay(request.app.state.settings, data, **await acting(request))
        except ApplianceError as exc:
            # The form comes back as typed, but never the password.
            kept = msgspec.structs.replace(data, password="")
            return await self._refused(request, exc, relay_form=kept)
        return redirect(f"{PAGE}?done=smtp")

    @post("/test-email", name="admin_notifications_test_email")
    async def test_email(
        self, request: AnyRequest, data: Annotated[TestEmailForm, FORM]
    ) -> Response[Any]:
        studio = await setup.get_studio()
        try:
            await admin.queue_test_email(
                request.app.state.settings,
                data.to,
                language=data.language,
                studio=studio.name if studio else "",
                **await acting(request),
            )
        except ApplianceError as exc:
            return await self._refused(request, exc, test_form=data)
        return redirect(f"{PAGE}?done=test-email")

    @post("/channels", name="admin_notifications_channel_add")
    async def add_channel(
        self, request: AnyRequest, data: Annotated[ChannelForm, FORM]
    ) -> Response[Any]:
        try:
            await admin.add_channel(data.name, data.url, **await acting(request))
        except ApplianceError as exc:
            # The URL typed is not shown again: it may carry a token.
            return await self._refused(request, exc, channel_form=ChannelForm(name=data.name))
        return redirect(f"{PAGE}?done=channel")

    @post("/channels/test", name="admin_notifications_channel_test")
    async def test_channel(
        self, request: AnyRequest, data: Annotated[ChannelTestForm, FORM]
    ) -> Response[Any]:
        studio = await setup.get_studio()
        try:
            await admin.test_channel(
                request.app.state.settings,
                data.key,
                studio=studio.name if studio else "",
                **await acting(request),
            )
        except ApplianceError as exc:
            return await self._refused(request, exc)
        return redirect(f"{PAGE}?done=channel-test")

    async def _switch(self, request: AnyRequest, channel_id: int, enabled: bool) -> Response[Any]:
        try:
            await admin.set_channel_enabled(channel_id, enabled, **await acting(request))
        except ApplianceError as exc:
            return await self._refused(request, exc)
        return redirect(f"{PAGE}?done=channel-{'enabled' if enabled else 'disabled'}")

    @post("/channels/{channel_id:int}/enable", name="admin_notifications_channel_enable")
    async def enable_channel(self, request: AnyRequest, channel_id: FromPath[int]) -> Response[Any]:
        return await self._switch(request, channel_id, True)

    @post("/channels/{channel_id:int}/disable", name="admin_notifications_channel_disable")
    async def disable_channel(
        self, request: AnyRequest, channel_id: FromPath[int]
    ) -> Response[Any]:
        return await self._switch(request, channel_id, False)

    @post("/channels/{channel_id:int}/remove", name="admin_notifications_channel_remove")
    async def remove_channel(self, request: AnyRequest, channel_id: FromPath[int]) -> Response[Any]:
        try:
            await admin.remove_channel(channel_id, **await acting(request))
        except ApplianceError as exc:
            return await self._refused(request, exc)
        return redirect(f"{PAGE}?done=channel-removed")

    @post("/messages/{message_id:int}/retry", name="admin_notifications_retry")
    async def retry(self, request: AnyRequest, message_id: FromPath[int]) -> Response[Any]:
        try:
            await admin.retry_message(message_id, **await acting(request))
        except ApplianceError as exc:
            return await self._refused(request, exc)
        return redirect(f"{PAGE}?done=retry")

    @post("/messages/retry-failed", name="admin_notifications_retry_failed")
    async def retry_failed(self, request: AnyRequest) -> Response[Any]:
        try:
            await admin.retry_all_failed(**await acting(request))
        except ApplianceError as exc:
            return await self._refused(request, exc)
        return redirect(f"{PAGE}?done=retry-failed")

    @post("/messages/{message_id:int}/discard", name="admin_notifications_discard")
    async def discard(self, request: AnyRequest, message_id: FromPath[int]) -> Response[Any]:
        try:
            await admin.discard_message(message_id, **await acting(request))
        except ApplianceError as exc:
            return await self._refused(request, exc)
        return redirect(f"{PAGE}?done=discard")
