"""Admin pages for staff: the list, invitations, roles, disabling and password resets."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.params import FromPath

from appliance.accounts import invitations, service
from appliance.errors import ApplianceError
from appliance.privacy.erasure import erased_staff_ids
from appliance.web.acting import acting
from appliance.web.auth import require_admin, signed_in
from appliance.web.pages import FORM, client_address, render, status_of
from appliance.web.requests import AnyRequest

__all__ = ["StaffAdminController"]


class InviteForm(msgspec.Struct):
    email: str = ""
    role: str = "photographer"


class RoleForm(msgspec.Struct):
    role: str = ""


class ActiveForm(msgspec.Struct):
    active: str = ""


class ResetForm(msgspec.Struct):
    reset_2fa: str = ""


def _link(request: AnyRequest, path: str) -> str:
    """An absolute link for an admin to pass on; public_url wins over the request's own host."""
    public = request.app.state.settings.server.public_url.rstrip("/")
    base = public or f"{request.url.scheme}://{request.url.netloc}"
    return f"{base}{path}"


class StaffAdminController(Controller):
    path = "/admin/users"
    guards = [require_admin]

    async def _page(
        self,
        request: AnyRequest,
        *,
        status_code: int = 200,
        **extra: Any,
    ) -> Response[Any]:
        now = request.app.state.clock()
        context = {
            "members": await service.list_members(),
            # Switched off until the purge: only Admin → Erasure can give them back.
            "erasing": await erased_staff_ids(),
            "pending": await invitations.list_pending(now),
            "roles": service.ROLES,
            "form": extra.pop("form", InviteForm()),
            **extra,
        }
        return render(request, "admin/users.html", context, status_code=status_code)

    async def _actor(self, request: AnyRequest) -> service.StaffMember:
        signed = await signed_in(request)
        return signed.member

    @get("/", name="admin_users")
    async def users(self, request: AnyRequest) -> Response[Any]:
        return await self._page(request)

    @post("/invite", name="admin_invite")
    async def invite(
        self,
        request: AnyRequest,
        data: Annotated[InviteForm, FORM],
    ) -> Response[Any]:
        try:
            token = await invitations.invite(
                data.email,
                data.role,
                actor=await self._actor(request),
                address=client_address(request),
                settings=request.app.state.settings,
                now=request.app.state.clock(),
            )
        except ApplianceError as exc:
            return await self._page(
                request,
                status_code=status_of(exc),
                form=data,
                error=exc.message,
                error_field=exc.field,
            )
        return await self._page(
            request,
            link=_link(request, f"/invite/{token}"),
            link_for=data.email.strip(),
            link_kind="invitation",
        )

    @post("/{user_id:int}/role", name="admin_role")
    async def role(
        self,
        request: AnyRequest,
        user_id: FromPath[int],
        data: Annotated[RoleForm, FORM],
    ) -> Response[Any]:
        try:
            member = await service.set_role(
                user_id,
                data.role,
                actor=await self._actor(request),
                address=client_address(request),
                now=request.app.state.clock(),
            )
        except ApplianceError as exc:
            return await self._page(request, status_code=status_of(exc), error=exc.message)
        return await self._page(request, notice=f"{member.username} is now {member.role}.")

    @post("/{user_id:int}/active", name="admin_active")
    async def active(
        self,
        request: AnyRequest,
        user_id: FromPath[int],
        data: Annotated[ActiveForm, FORM],
    ) -> Response[Any]:
        try:
            member = await service.set_active(
                user_id,
                data.active == "1",
                actor=await self._actor(request),
                address=client_address(request),
                now=request.app.state.clock(),
            )
        except ApplianceError as exc:
            return await self._page(request, status_code=status_of(exc), error=exc.message)
        state = "enabled" if member.is_active else "disabled and signed out everywhere"
        return await self._page(request, notice=f"{member.username} is {state}.")

    @post("/{user_id:int}/reset", name="admin_reset")
    async def reset(
        self,
        request: AnyRequest,
        user_id: FromPath[int],
        data: Annotated[ResetForm, FORM],
    ) -> Response[Any]:
        try:
            token = await invitations.start_reset(
                user_id,
                reset_2fa=data.reset_2fa == "1",
                settings=request.app.state.settings,
                **await acting(request),
            )
        except ApplianceError as exc:
            return await self._page(request, status_code=status_of(exc), error=exc.message)
        member = await service.get_member(user_id)
        return await self._page(
            request,
            link=_link(request, f"/reset/{token}"),
            link_for=member.username if member else "",
            link_kind="password reset link",
        )

    @post("/invitations/{link_id:int}/revoke", name="admin_revoke")
    async def revoke(self, request: AnyRequest, link_id: FromPath[int]) -> Response[Any]:
        try:
            await invitations.revoke(
                link_id,
                actor=await self._actor(request),
                address=client_address(request),
                now=request.app.state.clock(),
            )
        except ApplianceError as exc:
            return await self._page(request, status_code=status_of(exc), error=exc.message)
        return await self._page(request, notice="The link no longer works.")
