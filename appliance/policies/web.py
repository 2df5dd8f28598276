"""The public privacy-policy and sub-processors pages, staff confirmations, and the admins'
editor (draft, preview, publish, who confirmed which version)."""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.params import FromPath, QueryParameter

from appliance.errors import ApplianceError, InvalidInput
from appliance.policies import processors, service
from appliance.setup import service as setup
from appliance.validation import parse_id
from appliance.web.acting import acting
from appliance.web.auth import current_staff, require_admin, require_staff, signed_in
from appliance.web.pages import (
    FORM,
    NO_STORE,
    error_context,
    redirect,
    render,
    status_of,
)
from appliance.web.requests import AnyRequest

__all__ = ["PolicyAdminController", "PrivacyPolicyController"]

ADMIN = "/admin/privacy-policy"
# ASCII digits only: "²".isdigit() is true, but int("²") fails.
_REVISION = re.compile(r"[0-9]{1,9}")
NOTICES = {
    "saved": "Draft saved. Nothing is public until you publish it.",
    "discarded": "The draft was thrown away.",
    "published": "Published. Staff were e-mailed and asked to confirm they read it.",
    "acknowledged": "Thank you: your confirmation is recorded.",
}


class DraftForm(msgspec.Struct):
    body: str = ""
    summary: str = ""
    revision: str = "0"
    # "preview" saves and then shows the preview; anything else saves and stays.
    then: str = ""


class PublishForm(msgspec.Struct):
    """Publishing or throwing away the draft: the revision the admin last saw."""

    revision: str = ""


class AcknowledgeForm(msgspec.Struct):
    number: str = ""


def _revision(text: str) -> int:
    """The draft's revision the form was opened at (0: there was no draft then)."""
    text = text.strip()
    if not _REVISION.fullmatch(text):
        raise InvalidInput(
            "This form was damaged on its way. Reload the page and try again.", field="revision"
        )
    return int(text)


def _notice(done: str) -> str | None:
    return NOTICES.get(done)


async def _current(request: AnyRequest) -> service.Version:
    """The current version; on the first visit the default text in the studio's language."""
    language = request.app.state.settings.notify.language
    return await service.current_version(request.app.state.clock(), language=language)


async def _studio() -> dict[str, Any]:
    studio = await setup.get_studio()
    return {"studio": studio, "studio_name": studio.name if studio else "Fotostudio"}


class PrivacyPolicyController(Controller):
    """Public pages: anyone may read the policy, its versions and the sub-processors."""

    path = "/privacy"

    async def _policy(
        self, request: AnyRequest, version: service.Version, *, latest: int, done: str = ""
    ) -> Response[Any]:
        signed = await current_staff(request)
        pending = None
        if signed is not None and signed.session.stage == "full":
            pending = await service.pending_acknowledgement(signed.member.id)
        context = {
            **await _studio(),
            "version": version,
            "blocks": service.blocks(version.body),
            "language": request.app.state.settings.notify.language,
            "latest": latest,
            "versions": await service.list_versions(),
            "pending": pending if pending and pending.number == version.number else None,
            "notice": _notice(done),
        }
        return render(request, "policies/policy.html", context)

    @get("/", name="privacy_policy")
    async def current(
        self, request: AnyRequest, done: Annotated[str, QueryParameter(max_length=20)] = ""
    ) -> Response[Any]:
        version = await _current(request)
        return await self._policy(request, version, latest=version.number, done=done)

    @get("/versions/{number:int}", name="privacy_policy_version")
    async def version(self, request: AnyRequest, number: FromPath[int]) -> Response[Any]:
        latest = await _current(request)
        if number == latest.number:
            return redirect("/privacy")
        return await self._policy(request, await service.get_version(number), latest=latest.number)

    @get("/processors", name="privacy_processors")
    async def processors(self, request: AnyRequest) -> Response[Any]:
        found = await processors.list_processors(request.app.state.settings)
        return render(request, "policies/processors.html", {**await _studio(), "processors": found})

    @post("/acknowledge", name="privacy_policy_acknowledge", guards=[require_staff])
    async def acknowledge(
        self, request: AnyRequest, data: Annotated[AcknowledgeForm, FORM]
    ) -> Response[Any]:
        signed = await signed_in(request)
        await service.acknowledge(
            parse_id(data.number, field="number"),
            staff_id=signed.member.id,
            **await acting(request),
        )
        return redirect("/privacy?done=acknowledged")


class PolicyAdminController(Controller):
    """Admin → Privacy policy: write a draft, preview it, publish it, see who confirmed."""

    path = ADMIN
    guards = [require_admin]

    async def _editor(
        self,
        request: AnyRequest,
        *,
        form: DraftForm | None = None,
        exc: ApplianceError | None = None,
        done: str = "",
    ) -> Response[Any]:
        current = await _current(request)
        draft = await service.get_draft()
        if form is None:
            form = DraftForm(
                body=draft.body if draft else current.body,
                summary=draft.summary if draft else "",
                revision=str(draft.revision if draft else 0),
            )
        context = {
            "current": current,
            "draft": draft,
            "form": form,
            "versions": await service.list_versions(),
            "confirmations": await service.acknowledgements(current.number),
            "max_body": service.MAX_BODY,
            "max_summary": service.MAX_SUMMARY,
            "notice": _notice(done),
            **(error_context(exc) if exc else {}),
        }
        status = status_of(exc) if exc else 200
        return render(request, "policies/admin.html", context, status_code=status, headers=NO_STORE)

    @get("/", name="policy_admin")
    async def index(
        self, request: AnyRequest, done: Annotated[str, QueryParameter(max_length=20)] = ""
    ) -> Response[Any]:
        return await self._editor(request, done=done)

    @post("/draft", name="policy_draft_save")
    async def save(self, request: AnyRequest, data: Annotated[DraftForm, FORM]) -> Response[Any]:
        try:
            await service.save_draft(
                data.body, data.summary, revision=_revision(data.revision), **await acting(request)
            )
        except ApplianceError as exc:
            return await self._editor(request, form=data, exc=exc)
        return redirect(f"{ADMIN}/preview" if data.then == "preview" else f"{ADMIN}?done=saved")

    @post("/discard", name="policy_draft_discard")
    async def discard(
        self, request: AnyRequest, data: Annotated[PublishForm, FORM]
    ) -> Response[Any]:
        try:
            await service.discard_draft(revision=_revision(data.revision), **await acting(request))
        except ApplianceError as exc:
            return await self._editor(request, exc=exc)
        return redirect(f"{ADMIN}?done=discarded")

    async def _preview(
        self, request: AnyRequest, exc: ApplianceError | None = None
    ) -> Response[Any]:
        draft = await service.get_draft()
        if draft is None:
            if exc is not None:
                raise exc  # nothing left to preview: the error page says what happened
            return redirect(ADMIN)
        current = await _current(request)
        context = {
            "draft": draft,
            "blocks": service.blocks(draft.body),
            "language": request.app.state.settings.notify.language,
            "number": current.number + 1,
            **(error_context(exc) if exc else {}),
        }
        status = status_of(exc) if exc else 200
        return render(
            request, "policies/preview.html", context, status_code=status, headers=NO_STORE
        )

    @get("/preview", name="policy_draft_preview")
    async def preview(self, request: AnyRequest) -> Response[Any]:
        return await self._preview(request)

    @post("/publish", name="policy_publish")
    async def publish(
        self, request: AnyRequest, data: Annotated[PublishForm, FORM]
    ) -> Response[Any]:
        try:
            await service.publish_draft(
                request.app.state.settings,
                revision=_revision(data.revision),
                **await acting(request),
            )
        except ApplianceError as exc:
            return await self._preview(request, exc)
        return redirect(f"{ADMIN}?done=published")

    @get("/versions/{number:int}", name="policy_confirmations")
    async def confirmations(self, request: AnyRequest, number: FromPath[int]) -> Response[Any]:
        context = {
            "confirmations": await service.acknowledgements(number),
        }
        return render(request, "policies/confirmations.html", context, headers=NO_STORE)
