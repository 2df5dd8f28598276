"""The setup wizard's pages: token, studio, first admin, authenticator, recovery codes."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.params import FromQuery
from litestar.response import Redirect

from appliance.accounts import service as accounts
from appliance.accounts import two_factor
from appliance.errors import ApplianceError, Conflict, Forbidden, TooManyAttempts
from appliance.setup import service
from appliance.web.auth import require_admin, signed_in
from appliance.web.cookies import make_cookie, read_cookie
from appliance.web.pages import (
    FORM,
    client_address,
    error_context,
    redirect,
    render,
    retry_after,
    status_of,
)
from appliance.web.requests import AnyRequest

__all__ = ["SetupController", "StudioSettingsController"]

SETUP_COOKIE = "fs_setup"


class TokenForm(msgspec.Struct):
    token: str = ""


class StudioForm(msgspec.Struct):
    studio_name: str = ""
    contact_email: str = ""
    contact_phone: str = ""


class AdminForm(msgspec.Struct):
    username: str = ""
    email: str = ""
    display_name: str = ""
    password: str = ""
    confirm: str = ""


class CodeForm(msgspec.Struct):
    code: str = ""


class SetupController(Controller):
    path = "/setup"

    async def _gate(self, request: AnyRequest) -> str | Redirect:
        """The valid setup token from the cookie, or where to send the browser instead."""
        if await service.is_setup_complete():
            return redirect("/login")
        token = read_cookie(request, SETUP_COOKIE)
        if not token:
            return redirect("/setup")
        try:
            await service.check_token(
                token,
                now=request.app.state.clock(),
                address=client_address(request),
                rules=request.app.state.settings.throttle,
            )
        except Forbidden:
            return redirect("/setup")
        except Conflict:
            return redirect("/login")
        return token

    def _with_token(self, request: AnyRequest, token: str, path: str) -> Redirect:
        cookie = make_cookie(request, SETUP_COOKIE, token, samesite="strict")
        return redirect(path, cookies=[cookie])

    @get("/", name="setup:start")
    async def start(
        self,
        request: AnyRequest,
        token: FromQuery[str | None] = None,
    ) -> Response[Any]:
        """The token form; a token in the link goes into a cookie and out of the URL."""
        if await service.is_setup_complete():
            return redirect("/login")
        if token is not None:
            return await self._accept_token(request, token)
        if read_cookie(request, SETUP_COOKIE):
            gate = await self._gate(request)
            if isinstance(gate, str):
                return redirect(f"/setup/{(await service.wizard_state()).next_step}")
        return render(request, "setup/token.html")

    @post("/", name="setup:token")
    async def submit_token(
        self,
        request: AnyRequest,
        data: Annotated[TokenForm, FORM],
    ) -> Response[Any]:
        return await self._accept_token(request, data.token.strip())

    async def _accept_token(self, request: AnyRequest, token: str) -> Response[Any]:
        try:
            await service.check_token(
                token,
                now=request.app.state.clock(),
                address=client_address(request),
                rules=request.app.state.settings.throttle,
            )
        except Conflict:
            return redirect("/login")
        except (Forbidden, TooManyAttempts) as exc:
            return render(
                request,
                "setup/token.html",
                error_context(exc),
                status_code=status_of(exc),
                headers=retry_after(exc),
            )
        next_step = (await service.wizard_state()).next_step
        return self._with_token(request, token, f"/setup/{next_step}")

    @get("/studio", name="setup:studio")
    async def studio_page(self, request: AnyRequest) -> Response[Any]:
        gate = await self._gate(request)
        if not isinstance(gate, str):
            return gate
        studio = await service.get_studio()
        form = StudioForm(
            studio_name=studio.name if studio else "",
            contact_email=studio.contact_email if studio else "",
            contact_phone=studio.contact_phone if studio else "",
        )
        return render(request, "setup/studio.html", {"form": form, "step": 1})

    @post("/studio", name="setup:studio_save")
    async def studio_save(
        self,
        request: AnyRequest,
        data: Annotated[StudioForm, FORM],
    ) -> Response[Any]:
        gate = await self._gate(request)
        if not isinstance(gate, str):
            return gate
        try:
            await service.save_studio(
                gate,
                name=data.studio_name,
                contact_email=data.contact_email,
                contact_phone=data.contact_phone,
                address=client_address(request),
                now=request.app.state.clock(),
            )
        except ApplianceError as exc:
            return render(
                request,
                "setup/studio.html",
                {"form": data, "step": 1, **error_context(exc)},
                status_code=status_of(exc),
            )
        return redirect(f"/setup/{(await service.wizard_state()).next_step}")

    @get("/admin", name="setup:admin")
    async def admin_page(self, request: AnyRequest) -> Response[Any]:
        gate = await self._gate(request)
        if not isinstance(gate, str):
            return gate
        state = await service.wizard_state()
        if state.next_step != "admin":
            return redirect(f"/setup/{state.next_step}")
        return render(request, "setup/admin.html", {"form": AdminForm(), "step": 2})

    @post("/admin", name="setup:admin_save")
    async def admin_save(
        self,
        request: AnyRequest,
        data: Annotated[AdminForm, FORM],
    ) -> Response[Any]:
        gate = await self._gate(request)
        if not isinstance(gate, str):
            return gate
        try:
            await service.create_setup_admin(
                gate,
                username=data.username,
                email=data.email,
                display_name=data.display_name,
                password=data.password,
                confirm=data.confirm,
                address=client_address(request),
                settings=request.app.state.settings,
                now=request.app.state.clock(),
            )
        except Conflict:
            return redirect(f"/setup/{(await service.wizard_state()).next_step}")
        except ApplianceError as exc:
            kept = msgspec.structs.replace(data, password="", confirm="")
            return render(
                request,
                "setup/admin.html",
                {"form": kept, "step": 2, **error_context(exc)},
                status_code=status_of(exc),
            )
        return redirect("/setup/two-factor")

    async def _enrolment(self, request: AnyRequest) -> dict[str, Any]:
        state = await service.wizard_state()
        assert state.admin_id is not None
        studio = await service.get_studio()
        enrolment = await two_factor.begin_enrolment(
            state.admin_id, issuer=studio.name if studio else "Fotostudio"
        )
        member = await accounts.get_member(state.admin_id)
        return {"enrolment": enrolment, "member": member, "step": 3}

    @get("/two-factor", name="setup:two_factor")
    async def two_factor_page(self, request: AnyRequest) -> Response[Any]:
        gate = await self._gate(request)
        if not isinstance(gate, str):
            return gate
        state = await service.wizard_state()
        if state.next_step != "two-factor":
            return redirect(f"/setup/{state.next_step}")
        return render(request, "setup/two_factor.html", await self._enrolment(request))

    @post("/two-factor", name="setup:two_factor_confirm")
    async def two_factor_confirm(
        self,
        request: AnyRequest,
        data: Annotated[CodeForm, FORM],
    ) -> Response[Any]:
        gate = await self._gate(request)
        if not isinstance(gate, str):
            return gate
        state = await service.wizard_state()
        if state.next_step != "two-factor":
            return redirect(f"/setup/{state.next_step}")
        try:
            codes = await service.complete_setup(
                gate,
                code=data.code,
                address=client_address(request),
                now=request.app.state.clock(),
            )
        except ApplianceError as exc:
            context = {**await self._enrolment(request), **error_context(exc)}
            return render(request, "setup/two_factor.html", context, status_code=status_of(exc))
        # The wizard is closed: the setup cookie has no further use.
        expired = make_cookie(request, SETUP_COOKIE, "", max_age=0, samesite="strict")
        return render(request, "setup/done.html", {"codes": codes}, cookies=[expired])


class SettingsForm(msgspec.Struct):
    studio_name: str = ""
    contact_email: str = ""
    contact_phone: str = ""
    require_2fa_for_all: str = ""


class StudioSettingsController(Controller):
    """The admin's settings page: studio details and whether every account needs 2FA."""

    path = "/admin/settings"
    guards = [require_admin]

    @get("/", name="admin_settings")
    async def page(self, request: AnyRequest) -> Response[Any]:
        return render(request, "admin/settings.html", {"studio": await service.get_studio()})

    @post("/", name="admin_settings_save")
    async def save(
        self,
        request: AnyRequest,
        data: Annotated[SettingsForm, FORM],
    ) -> Response[Any]:
        signed = await signed_in(request)
        try:
            studio = await service.update_studio(
                name=data.studio_name,
                contact_email=data.contact_email,
                contact_phone=data.contact_phone,
                require_2fa_for_all=data.require_2fa_for_all == "1",
                actor=signed.member,
                address=client_address(request),
                now=request.app.state.clock(),
            )
        except ApplianceError as exc:
            return render(
                request,
                "admin/settings.html",
                {"studio": await service.get_studio(), **error_context(exc)},
                status_code=status_of(exc),
            )
        return render(request, "admin/settings.html", {"studio": studio, "notice": "Saved."})
