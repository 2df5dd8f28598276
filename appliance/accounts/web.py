"""Sign-in pages (password, second factor, forced enrolment), sign-out, and the own-account page."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.datastructures import Cookie
from litestar.params import FromPath, FromQuery

from appliance.accounts import invitations, service, sessions, signin, two_factor
from appliance.accounts.signin import Stage
from appliance.errors import (
    ApplianceError,
    Conflict,
    NotFound,
    Unauthenticated,
)
from appliance.galleries import selections
from appliance.notify import languages
from appliance.setup import service as setup
from appliance.web.auth import (
    DEVICE_COOKIE,
    DEVICE_DAYS,
    SESSION_COOKIE,
    current_staff,
    device_cookie_value,
    device_user_id,
    require_staff,
    signed_in,
)
from appliance.web.cookies import make_cookie
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

__all__ = ["AccountController", "LinkController", "SignInController"]


# The home page lists the selections clients sent in this time.
RECENT_SELECTIONS = dt.timedelta(days=30)


class SignInForm(msgspec.Struct):
    username: str = ""
    password: str = ""


class CodeForm(msgspec.Struct):
    code: str = ""


class PasswordForm(msgspec.Struct):
    current_password: str = ""
    password: str = ""
    confirm: str = ""


class LanguageForm(msgspec.Struct):
    language: str = ""


class ConfirmPasswordForm(msgspec.Struct):
    password: str = ""


class JoinForm(msgspec.Struct):
    username: str = ""
    display_name: str = ""
    password: str = ""
    confirm: str = ""


class ResetForm(msgspec.Struct):
    password: str = ""
    confirm: str = ""


def _session_cookie(request: AnyRequest, token: str) -> Cookie:
    settings = request.app.state.settings.security
    return make_cookie(
        request, SESSION_COOKIE, token, max_age=settings.session_absolute_hours * 3600
    )


async def _new_stage(
    request: AnyRequest, stage: Stage, *, user_id: int | None = None
) -> list[Cookie]:
    """Cookies for a new session id at ``stage`` (and, once fully signed in, the device cookie).

    With ``user_id`` a fresh session starts (any current one ends): the password step, or after
    a password change ended them all. Without, the current session is rotated to ``stage``.
    """
    app_state = request.app.state
    now = app_state.clock()
    settings = app_state.settings.security
    address = client_address(request)
    user_agent = request.headers.get("user-agent", "")
    signed = await current_staff(request)
    if user_id is None:
        if signed is None:
            raise Unauthenticated("Sign in again.")
        user_id = signed.member.id
        try:
            token = await sessions.rotate_session(
                signed.token,
                stage,
                now=now,
                settings=settings,
                address=address,
                user_agent=user_agent,
            )
        except LookupError:
            # Another request of this browser rotated it first (a double submit).
            raise Unauthenticated("Sign in again.") from None
    else:
        if signed is not None:
            await sessions.end_session(signed.token)
        token = await sessions.create_session(
            user_id, stage, now=now, settings=settings, address=address, user_agent=user_agent
        )
    cookies = [_session_cookie(request, token)]
    if stage == "full":
        value = device_cookie_value(app_state.secret_key, user_id)
        cookies.append(make_cookie(request, DEVICE_COOKIE, value, max_age=DEVICE_DAYS * 86400))
    return cookies


class SignInController(Controller):
    path = "/"

    @get("/", name="home")
    async def home(self, request: AnyRequest) -> Response[Any]:
        if not await setup.is_setup_complete():
            return redirect("/setup")
        signed = await current_staff(request)
        if signed is None or signed.session.stage != "full":
            return redirect("/login")
        now = request.app.state.clock()
        from appliance.web.attention import for_admins, for_member

        settings = request.app.state.settings
        notices = await for_admins(settings, now) if signed.member.is_admin else []
        notices += await for_member(settings, signed.member.id)
        return render(
            request,
            "accounts/home.html",
            {
                "studio": await setup.get_studio(),
                "received": await selections.received(since=now - RECENT_SELECTIONS),
                "notices": notices,
            },
        )

    @get("/login", name="login")
    async def login_page(self, request: AnyRequest) -> Response[Any]:
        if not await setup.is_setup_complete():
            return redirect("/setup")
        signed = await current_staff(request)
        if signed is not None and signed.session.stage == "full":
            return redirect("/")
        return render(request, "accounts/login.html", {"form": SignInForm()})

    @post("/login", name="login_submit")
    async def login(
        self,
        request: AnyRequest,
        data: Annotated[SignInForm, FORM],
    ) -> Response[Any]:
        studio = await setup.get_studio()
        if studio is None or not studio.setup_complete:
            return redirect("/setup")
        try:
            result = await signin.sign_in(
                data.username[:200],
                data.password,
                address=client_address(request),
                settings=request.app.state.settings,
                now=request.app.state.clock(),
                require_2fa_for_all=studio.require_2fa_for_all,
                device_user_id=device_user_id(request),
            )
        except ApplianceError as exc:
            form = SignInForm(username=data.username[:64])
            return render(
                request,
                "accounts/login.html",
                {"form": form, **error_context(exc)},
                status_code=status_of(exc),
                headers=retry_after(exc),
            )
        cookies = await _new_stage(request, result.stage, user_id=result.user_id)
        target = {"second_factor": "/login/two-factor", "enrol": "/login/enrol"}.get(
            result.stage, "/"
        )
        return redirect(target, cookies=cookies)

    @get("/login/two-factor", name="login_two_factor")
    async def second_factor_page(self, request: AnyRequest) -> Response[Any]:
        signed = await current_staff(request)
        if signed is None or signed.session.stage != "second_factor":
            return redirect("/login")
        return render(request, "accounts/two_factor.html")

    @post("/login/two-factor", name="login_two_factor_submit")
    async def second_factor(
        self,
        request: AnyRequest,
        data: Annotated[CodeForm, FORM],
    ) -> Response[Any]:
        signed = await current_staff(request)
        if signed is None or signed.session.stage != "second_factor":
            return redirect("/login")
        try:
            await signin.verify_second_factor(
                signed.member.id,
                data.code[:64],
                device_user_id=device_user_id(request),
                address=client_address(request),
                settings=request.app.state.settings,
                now=request.app.state.clock(),
            )
        except ApplianceError as exc:
            return render(
                request,
                "accounts/two_factor.html",
                error_context(exc),
                status_code=status_of(exc),
                headers=retry_after(exc),
            )
        return redirect("/", cookies=await _new_stage(request, "full"))

    @get("/login/enrol", name="login_enrol")
    async def enrol_page(self, request: AnyRequest) -> Response[Any]:
        signed = await current_staff(request)
        if signed is None or signed.session.stage != "enrol":
            return redirect("/login")
        return render(request, "accounts/enrol.html", await _enrol_context(signed.member.id))

    @post("/login/enrol", name="login_enrol_submit")
    async def enrol(
        self,
        request: AnyRequest,
        data: Annotated[CodeForm, FORM],
    ) -> Response[Any]:
        signed = await current_staff(request)
        if signed is None or signed.session.stage != "enrol":
            return redirect("/login")
        try:
            codes = await two_factor.confirm_enrolment(
                signed.member.id,
                data.code[:64],
                address=client_address(request),
                now=request.app.state.clock(),
            )
        except ApplianceError as exc:
            context = {**await _enrol_context(signed.member.id), **error_context(exc)}
            return render(request, "accounts/enrol.html", context, status_code=status_of(exc))
        cookies = await _new_stage(request, "full")
        return render(request, "accounts/recovery_codes.html", {"codes": codes}, cookies=cookies)

    @post("/logout", name="logout")
    async def logout(self, request: AnyRequest) -> Response[Any]:
        signed = await current_staff(request)
        if signed is not None:
            await signin.sign_out(
                signed.token,
                actor=signed.member.actor,
                address=client_address(request),
                now=request.app.state.clock(),
            )
        return redirect("/login", cookies=[make_cookie(request, SESSION_COOKIE, "", max_age=0)])


async def _enrol_context(user_id: int) -> dict[str, Any]:
    studio = await setup.get_studio()
    enrolment = await two_factor.begin_enrolment(
        user_id, issuer=studio.name if studio else "Fotostudio"
    )
    return {"enrolment": enrolment, "member": await service.get_member(user_id)}


def _account_context(request: AnyRequest) -> dict[str, Any]:
    default = request.app.state.settings.notify.language
    return {"form": PasswordForm(), "languages": languages.choices(default)}


class AccountController(Controller):
    path = "/account"
    guards = [require_staff]

    @get("/", name="account")
    async def page(self, request: AnyRequest, done: FromQuery[str | None] = None) -> Response[Any]:
        notice = "Your e-mail language was saved." if done == "language" else None
        return render(
            request, "accounts/account.html", {**_account_context(request), "notice": notice}
        )

    @post("/language", name="account_language")
    async def change_language(
        self,
        request: AnyRequest,
        data: Annotated[LanguageForm, FORM],
    ) -> Response[Any]:
        signed = await signed_in(request)
        try:
            await service.set_language(
                signed.member.id,
                data.language[:16],
                address=client_address(request),
                now=request.app.state.clock(),
            )
        except ApplianceError as exc:
            return render(
                request,
                "accounts/account.html",
                {**_account_context(request), **error_context(exc)},
                status_code=status_of(exc),
            )
        return redirect("/account?done=language")

    @post("/password", name="account_password")
    async def change_password(
        self,
        request: AnyRequest,
        data: Annotated[PasswordForm, FORM],
    ) -> Response[Any]:
        signed = await signed_in(request)
        try:
            await service.change_password(
                signed.member.id,
                data.current_password,
                data.password,
                data.confirm,
                address=client_address(request),
                settings=request.app.state.settings,
                now=request.app.state.clock(),
            )
        except ApplianceError as exc:
            return render(
                request,
                "accounts/account.html",
                {**_account_context(request), **error_context(exc)},
                status_code=status_of(exc),
                headers=retry_after(exc),
            )
        # Every session ended with the change; this browser gets a fresh one.
        cookies = await _new_stage(request, "full", user_id=signed.member.id)
        return render(
            request,
            "accounts/account.html",
            {
                **_account_context(request),
                "notice": "Your password was changed. Every other session has been signed out.",
            },
            cookies=cookies,
        )

    @post("/recovery-codes", name="account_recovery_codes")
    async def new_recovery_codes(
        self,
        request: AnyRequest,
        data: Annotated[ConfirmPasswordForm, FORM],
    ) -> Response[Any]:
        signed = await signed_in(request)
        try:
            codes = await two_factor.regenerate_recovery_codes(
                signed.member.id,
                data.password,
                address=client_address(request),
                rules=request.app.state.settings.throttle,
                now=request.app.state.clock(),
            )
        except ApplianceError as exc:
            return render(
                request,
                "accounts/account.html",
                {**_account_context(request), **error_context(exc)},
                status_code=status_of(exc),
                headers=retry_after(exc),
            )
        return render(request, "accounts/recovery_codes.html", {"codes": codes})

    @get("/two-factor", name="account_two_factor")
    async def two_factor_page(self, request: AnyRequest) -> Response[Any]:
        signed = await signed_in(request)
        if signed.member.totp_enabled:
            return redirect("/account")
        return render(request, "accounts/enrol.html", await _enrol_context(signed.member.id))

    @post("/two-factor", name="account_two_factor_confirm")
    async def two_factor_confirm(
        self,
        request: AnyRequest,
        data: Annotated[CodeForm, FORM],
    ) -> Response[Any]:
        signed = await signed_in(request)
        try:
            codes = await two_factor.confirm_enrolment(
                signed.member.id,
                data.code[:64],
                address=client_address(request),
                now=request.app.state.clock(),
            )
        except Conflict:
            return redirect("/account")
        except ApplianceError as exc:
            context = {**await _enrol_context(signed.member.id), **error_context(exc)}
            return render(request, "accounts/enrol.html", context, status_code=status_of(exc))
        return render(request, "accounts/recovery_codes.html", {"codes": codes})


class LinkController(Controller):
    """Pages behind single-use links: accepting an invitation, completing a reset."""

    path = "/"

    async def _link_error(self, request: AnyRequest, exc: ApplianceError) -> Response[Any]:
        status = 404 if isinstance(exc, NotFound) else 410
        return render(
            request,
            "errors/error.html",
            {"status_code": status, "message": exc.message},
            status_code=status,
        )

    async def _open(
        self, request: AnyRequest, token: str, kind: str
    ) -> invitations.PendingLink | Response[Any]:
        """The live link of ``token``, or the page saying why it does not work (404 / 410)."""
        try:
            return await invitations.inspect_link(token, kind=kind, now=request.app.state.clock())
        except ApplianceError as exc:
            return await self._link_error(request, exc)

    @get("/invite/{token:str}", name="invite")
    async def invite_page(self, request: AnyRequest, token: FromPath[str]) -> Response[Any]:
        link = await self._open(request, token, "invite")
        if isinstance(link, Response):
            return link
        return render(request, "accounts/join.html", {"link": link, "form": JoinForm()})

    @post("/invite/{token:str}", name="invite_accept")
    async def accept(
        self,
        request: AnyRequest,
        token: FromPath[str],
        data: Annotated[JoinForm, FORM],
    ) -> Response[Any]:
        now = request.app.state.clock()
        link = await self._open(request, token, "invite")
        if isinstance(link, Response):
            return link
        try:
            await invitations.accept_invitation(
                token,
                username=data.username,
                display_name=data.display_name,
                password=data.password,
                confirm=data.confirm,
                address=client_address(request),
                settings=request.app.state.settings,
                now=now,
            )
        except Conflict as exc:
            return await self._link_error(request, exc)
        except ApplianceError as exc:
            kept = msgspec.structs.replace(data, password="", confirm="")
            return render(
                request,
                "accounts/join.html",
                {"link": link, "form": kept, **error_context(exc)},
                status_code=status_of(exc),
            )
        return render(request, "accounts/joined.html")

    @get("/reset/{token:str}", name="reset")
    async def reset_page(self, request: AnyRequest, token: FromPath[str]) -> Response[Any]:
        link = await self._open(request, token, "reset")
        if isinstance(link, Response):
            return link
        return render(request, "accounts/reset.html", {"link": link})

    @post("/reset/{token:str}", name="reset_complete")
    async def reset(
        self,
        request: AnyRequest,
        token: FromPath[str],
        data: Annotated[ResetForm, FORM],
    ) -> Response[Any]:
        now = request.app.state.clock()
        link = await self._open(request, token, "reset")
        if isinstance(link, Response):
            return link
        try:
            await invitations.complete_reset(
                token,
                password=data.password,
                confirm=data.confirm,
                address=client_address(request),
                settings=request.app.state.settings,
                now=now,
            )
        except Conflict as exc:
            return await self._link_error(request, exc)
        except ApplianceError as exc:
            return render(
                request,
                "accounts/reset.html",
                {"link": link, **error_context(exc)},
                status_code=status_of(exc),
            )
        return render(request, "accounts/joined.html", {"reset": True})
