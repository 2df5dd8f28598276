"""Pages of privacy requests: the client's form under a share link, and Admin → Privacy requests.

The client's pages start from the link's token like every page under it: a withdrawn or
expired link gets a page that says so and names the studio's address, and records nothing. A
link with a password asks for it first, as the gallery does. A link shows only the requests
sent through it: a guest's link to the same gallery does not show the couple's.

A client being erased is gone for staff: their requests leave the queue and their pages answer
404, as the client's own pages do; only Admin → Erasure still shows the erasure.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.params import FromPath, QueryParameter

from appliance.clients import service as clients
from appliance.errors import ApplianceError, NotFound
from appliance.galleries import sharing
from appliance.galleries.share_web import visitor_value
from appliance.galleries.sharing import Opening
from appliance.privacy.erasure import erased_client_ids, is_erased
from appliance.privacy_requests import service
from appliance.privacy_requests.service import RequestRecord
from appliance.setup import service as studio
from appliance.web.access import record_access
from appliance.web.acting import acting
from appliance.web.auth import require_admin
from appliance.web.pages import (
    FORM,
    NO_STORE,
    client_address,
    error_context,
    redirect,
    render,
    retry_after,
    status_of,
)
from appliance.web.requests import AnyRequest

__all__ = ["ClientPrivacyController", "PrivacyRequestAdminController"]

PAGE = "/admin/privacy-requests"
NOTICES = {
    "fulfilled": "The request is answered; the client is told by e-mail when the studio has "
    "their address.",
    # A copy request answered with an export: not answered until the export's link exists.
    "exporting": "The export is started. The request counts as answered, and the client is "
    "told, once you make the export's download link.",
    "done": "The correction request is marked done.",
    # A deletion answered: the client is being erased, so their request left the queue.
    "erasing": "The request is answered; the client is told by e-mail when the studio has "
    "their address. The client is being deleted: until the purge, Admin → Erasure shows it "
    "and can still cancel it.",
    "refused": "The request is refused; the client is told the reason.",
    "extended": "The deadline is extended by two months; the client is told the reason.",
}


class AskForm(msgspec.Struct):
    kind: str = ""
    details: str = ""


class NoteForm(msgspec.Struct):
    note: str = ""


class ReasonForm(msgspec.Struct):
    reason: str = ""


class RefusalForm(msgspec.Struct):
    refusal: str = ""


async def _studio(request: AnyRequest) -> dict[str, str]:
    profile = await studio.get_studio()
    return {
        "studio_name": profile.name if profile else "Fotostudio",
        "studio_email": profile.contact_email if profile else "",
    }


class ClientPrivacyController(Controller):
    path = "/s/{token:str}/privacy"

    async def _open(self, request: AnyRequest, token: str) -> Opening | Response[Any]:
        """The working link, or the page to show instead: the reason it does not work, or the
        gallery's password form."""
        try:
            opening = await sharing.open_link(
                token, request.app.state.clock(), visitor=visitor_value(request)
            )
        except NotFound as exc:
            return render(
                request,
                "privacy_requests/unavailable.html",
                {"reason": exc.message, **await _studio(request)},
                status_code=404,
                headers=NO_STORE,
            )
        if opening.link.has_password and (opening.visit is None or not opening.visit.unlocked):
            return redirect(f"/s/{token}")
        return opening

    async def _ask_page(
        self,
        request: AnyRequest,
        token: str,
        form: AskForm,
        *,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> Response[Any]:
        return render(
            request,
            "privacy_requests/ask.html",
            {
                "base": f"/s/{token}",
                "form": form,
                "kinds": service.KINDS,
                "max_text": service.MAX_TEXT,
                **await _studio(request),
                **extra,
            },
            status_code=status_code,
            headers={**NO_STORE, **(headers or {})},
        )

    @get("/", name="privacy_request_ask")
    async def ask(
        self,
        request: AnyRequest,
        token: FromPath[str],
        kind: Annotated[str, QueryParameter(max_length=20)] = "",
    ) -> Response[Any]:
        opened = await self._open(request, token)
        if isinstance(opened, Response):
            return opened
        return await self._ask_page(request, token, AskForm(kind=kind))

    @post("/", name="privacy_request_send")
    async def send(
        self, request: AnyRequest, token: FromPath[str], data: Annotated[AskForm, FORM]
    ) -> Response[Any]:
        opened = await self._open(request, token)
        if isinstance(opened, Response):
            return opened
        try:
            received = await service.receive_request(
                request.app.state.settings,
                client_id=opened.gallery.client_id,
                link_id=opened.link.id,
                link_recipient=opened.link.recipient,
                link_email=opened.link.email,
                kind=data.kind,
                details=data.details,
                address=client_address(request),
                now=request.app.state.clock(),
            )
        except ApplianceError as exc:
            return await self._ask_page(
                request,
                token,
                data,
                status_code=status_of(exc),
                headers=retry_after(exc),
                **error_context(exc),
            )
        merged = int(received.merged)
        return redirect(f"/s/{token}/privacy/sent?request={received.request.id}&merged={merged}")

    @get("/sent", name="privacy_request_sent")
    async def sent(
        self,
        request: AnyRequest,
        token: FromPath[str],
        request_id: Annotated[int, QueryParameter(name="request", ge=1, le=2**31 - 1)],
        merged: Annotated[int, QueryParameter(ge=0, le=1)] = 0,
    ) -> Response[Any]:
        opened = await self._open(request, token)
        if isinstance(opened, Response):
            return opened
        found = await service.get_request(request_id)
        through = {s.link_id for s in await service.list_submissions(found.id)}
        if found.client_id != opened.gallery.client_id or opened.link.id not in through:
            # Not sent through this link (another client's, or sent through another link to
            # the same client's gallery, e.g. the couple's seen from a guest's link): the same
            # answer as one that does not exist.
            raise NotFound("There is no such privacy request.")
        return render(
            request,
            "privacy_requests/sent.html",
            {
                "base": f"/s/{token}",
                "found": found,
                "merged": bool(merged),
                **await _studio(request),
            },
            headers=NO_STORE,
        )


async def _visible(request_id: int) -> RequestRecord:
    """The request, unless its client is being erased: then it is not there for staff."""
    found = await service.get_request(request_id)
    if await is_erased("client", found.client_id):
        raise NotFound("There is no such privacy request.")
    return found


class PrivacyRequestAdminController(Controller):
    path = PAGE
    guards = [require_admin]

    async def _show(
        self,
        request: AnyRequest,
        found: RequestRecord,
        *,
        status_code: int = 200,
        **extra: Any,
    ) -> Response[Any]:
        client = (await clients.get_clients([found.client_id])).get(found.client_id)
        return render(
            request,
            "privacy_requests/show.html",
            {
                "found": found,
                "client": client,
                "submissions": await service.list_submissions(found.id),
                "timer": service.countdown(found, request.app.state.clock()),
                "max_note": service.MAX_NOTE,
                **extra,
            },
            status_code=status_code,
            headers=NO_STORE,
        )

    @get("/", name="privacy_requests")
    async def index(
        self,
        request: AnyRequest,
        done: Annotated[str, QueryParameter(max_length=20)] = "",
    ) -> Response[Any]:
        from appliance.notify.admins import admin_recipients

        await service.settle_requests(request.app.state.settings, request.app.state.clock())
        erased = await erased_client_ids()
        open_requests = [
            r for r in await service.list_requests(open_only=True) if r.client_id not in erased
        ]
        answered = [
            r
            for r in await service.list_requests(open_only=False, limit=50)
            if r.client_id not in erased
        ]
        names = await clients.get_clients(r.client_id for r in [*open_requests, *answered])
        now = request.app.state.clock()
        return render(
            request,
            "privacy_requests/index.html",
            {
                "open_requests": open_requests,
                "answered": answered,
                "names": {key: value.name for key, value in names.items()},
                "timers": {r.id: service.countdown(r, now) for r in open_requests},
                "unreachable": (await admin_recipients(request.app.state.settings)).nobody,
                "notice": NOTICES.get(done),
            },
            headers=NO_STORE,
        )

    @get("/{request_id:int}", name="privacy_request")
    async def show(
        self,
        request: AnyRequest,
        request_id: FromPath[int],
        done: Annotated[str, QueryParameter(max_length=20)] = "",
    ) -> Response[Any]:
        await service.settle_requests(request.app.state.settings, request.app.state.clock())
        found = await _visible(request_id)
        # The page shows the client's name, address and what they wrote: an access to their
        # data, so it is in their access log like the client's own page.
        await record_access(
            request, "privacy_request.view", f"client:{found.client_id}", privacy_request=found.id
        )
        if done == "fulfilled" and found.status == "in_progress":
            done = "exporting"
        return await self._show(request, found, notice=NOTICES.get(done))

    async def _act(
        self, request: AnyRequest, request_id: int, action: str, text: str
    ) -> Response[Any]:
        client_id = (await _visible(request_id)).client_id
        arguments = await acting(request)
        settings = request.app.state.settings
        try:
            if action == "fulfilled":
                await service.fulfil_request(settings, request_id, **arguments)
            elif action == "done":
                await service.complete_correction(settings, request_id, text, **arguments)
            elif action == "refused":
                await service.refuse_request(settings, request_id, text, **arguments)
            else:
                await service.extend_request(settings, request_id, text, **arguments)
        except ApplianceError as exc:
            found = await service.get_request(request_id)
            return await self._show(
                request,
                found,
                status_code=status_of(exc),
                typed={"action": action, "text": text},
                **error_context(exc),
            )
        if await is_erased("client", client_id):
            # A deletion answered: the request went with its client, back to the queue.
            return redirect(f"{PAGE}?done=erasing")
        return redirect(f"{PAGE}/{request_id}?done={action}")

    @post("/{request_id:int}/fulfil", name="privacy_request_fulfil")
    async def fulfil(self, request: AnyRequest, request_id: FromPath[int]) -> Response[Any]:
        return await self._act(request, request_id, "fulfilled", "")

    @post("/{request_id:int}/done", name="privacy_request_done")
    async def done(
        self, request: AnyRequest, request_id: FromPath[int], data: Annotated[NoteForm, FORM]
    ) -> Response[Any]:
        return await self._act(request, request_id, "done", data.note)

    @post("/{request_id:int}/refuse", name="privacy_request_refuse")
    async def refuse(
        self, request: AnyRequest, request_id: FromPath[int], data: Annotated[RefusalForm, FORM]
    ) -> Response[Any]:
        return await self._act(request, request_id, "refused", data.refusal)

    @post("/{request_id:int}/extend", name="privacy_request_extend")
    async def extend(
        self, request: AnyRequest, request_id: FromPath[int], data: Annotated[ReasonForm, FORM]
    ) -> Response[Any]:
        return await self._act(request, request_id, "extended", data.reason)
