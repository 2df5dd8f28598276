"""Admin → Security incidents: the register of policy §6 and GDPR Art. 33."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.params import FromPath, QueryParameter

from appliance.config import Settings
from appliance.errors import ApplianceError, InvalidInput
from appliance.localtime import format_local, local_input
from appliance.notify.admins import admin_recipients
from appliance.privacy import authority, decision, people, report, service
from appliance.privacy.authority import AuthorityInput
from appliance.privacy.service import Incident, IncidentInput
from appliance.setup import service as setup
from appliance.validation import parse_id
from appliance.web.acting import acting
from appliance.web.auth import require_admin
from appliance.web.form_keys import new_form_key
from appliance.web.pages import (
    FORM,
    NO_STORE,
    error_context,
    form_list,
    redirect,
    render,
    status_of,
)
from appliance.web.requests import AnyRequest

__all__ = ["SecurityIncidentController"]

PAGE = "/admin/security-incidents"
# The register holds what went wrong and whom it concerns: no copy in any cache.
NOTICES = {
    "created": "Incident recorded.",
    "saved": "Changes saved.",
    "unchanged": "Nothing was changed.",
    "authority": "The notification to the authority is recorded.",
    "added": "The people chosen are on the list.",
    "removed": "The person was taken off the list.",
    "decided": "The decision not to notify the authority is recorded.",
    "withdrawn": "The decision not to notify the authority is withdrawn; the deadline runs again.",
}


class IncidentForm(msgspec.Struct):
    kind: str = ""
    title: str = ""
    detected_at: str = ""
    occurred_at: str = ""
    timezone: str = "UTC"
    description: str = ""
    analysis: str = ""
    measures: str = ""
    status: str = "open"
    personal_data: str = ""
    data_categories: str = ""
    people_count: str = ""
    records_count: str = ""
    consequences: str = ""
    risk: str = "low"
    # The incident's updated_at when the form was opened: an edit saved by someone else in
    # between is not overwritten.
    version: str = ""
    # The one-time key of the "new" form (appliance.web.form_keys): sent twice, one incident.
    form_key: str = ""

    def input(self) -> IncidentInput:
        return IncidentInput(
            kind=self.kind,
            title=self.title,
            detected_at=self.detected_at,
            occurred_at=self.occurred_at,
            timezone=self.timezone,
            description=self.description,
            analysis=self.analysis,
            measures=self.measures,
            status=self.status,
            personal_data=self.personal_data == "1",
            data_categories=self.data_categories,
            people_count=self.people_count,
            records_count=self.records_count,
            consequences=self.consequences,
            risk=self.risk,
        )

    @classmethod
    def of(cls, incident: Incident) -> IncidentForm:
        def local(moment: dt.datetime | None) -> str:
            return "" if moment is None else local_input(moment, incident.timezone)

        return cls(
            kind=incident.kind,
            title=incident.title,
            detected_at=local(incident.detected_at),
            occurred_at=local(incident.occurred_at),
            timezone=incident.timezone,
            description=incident.description,
            analysis=incident.analysis,
            measures=incident.measures,
            status=incident.status,
            personal_data="1" if incident.personal_data else "",
            data_categories=incident.data_categories,
            people_count="" if incident.people_count is None else str(incident.people_count),
            records_count="" if incident.records_count is None else str(incident.records_count),
            consequences=incident.consequences,
            risk=incident.risk,
            version=incident.version,
        )


class AuthorityForm(msgspec.Struct):
    authority: str = ""
    notified_at: str = ""
    timezone: str = "UTC"
    reference: str = ""
    nature: str = ""
    data_categories: str = ""
    people_count: str = ""
    records_count: str = ""
    contact_name: str = ""
    contact_details: str = ""
    consequences: str = ""
    measures: str = ""
    delay_reasons: str = ""

    def input(self) -> AuthorityInput:
        return msgspec.convert(msgspec.structs.asdict(self), AuthorityInput)


class PeopleForm(msgspec.Struct):
    people: list[str] | str = msgspec.field(default_factory=list)


class NotifyForm(msgspec.Struct):
    subject: str = ""
    body: str = ""
    people: list[str] | str = msgspec.field(default_factory=list)
    again: str = ""
    # The one-time key of the form shown (appliance.web.form_keys): the same form sent twice
    # queues each notice once.
    form_key: str = ""


class MatchingForm(msgspec.Struct):
    q: str = ""
    everyone: str = ""


class NoNoticeForm(msgspec.Struct):
    reason: str = ""


def _when(incident: Incident, moment: dt.datetime | None) -> str:
    """A time in the incident's zone, with the zone, and in UTC when that differs."""
    return "" if moment is None else format_local(moment, incident.timezone)


class SecurityIncidentController(Controller):
    path = PAGE
    guards = [require_admin]

    def _base(self, request: AnyRequest) -> dict[str, Any]:
        return {
            "now": request.app.state.clock(),
            "kinds": service.KINDS,
            "statuses": service.STATUSES,
            "risks": service.RISKS,
            "when": _when,
            "countdown": service.countdown,
            "people_countdown": service.people_countdown,
            "no_notice": service.NO_NOTICE,
            "max_text": service.MAX_TEXT,
        }

    def _page(
        self, request: AnyRequest, template: str, context: dict[str, Any], status_code: int = 200
    ) -> Response[Any]:
        return render(
            request,
            f"privacy/{template}",
            {**self._base(request), **context},
            status_code=status_code,
            headers=NO_STORE,
        )

    async def _unreachable(self, request: AnyRequest) -> bool:
        """True when deadline alerts would reach nobody: no channel, no admin with an address."""
        return (await admin_recipients(request.app.state.settings)).nobody

    @get("/", name="security_incidents")
    async def index(self, request: AnyRequest) -> Response[Any]:
        context = {
            "incidents": await service.list_incidents(),
            "unreachable": await self._unreachable(request),
        }
        return self._page(request, "index.html", context)

    # --- the incident ---------------------------------------------------------------------

    def _form(
        self,
        request: AnyRequest,
        form: IncidentForm,
        incident: Incident | None,
        **extra: Any,
    ) -> Response[Any]:
        status = status_of(extra["exc"]) if "exc" in extra else 200
        context = error_context(extra.pop("exc")) if "exc" in extra else {}
        return self._page(
            request, "form.html", {"form": form, "incident": incident, **context}, status
        )

    @get("/new", name="security_incident_new")
    async def new(self, request: AnyRequest) -> Response[Any]:
        settings: Settings = request.app.state.settings
        now = request.app.state.clock()
        # The zone of the studio's schedule is the best guess of where the studio is.
        zone = settings.studio_zone
        form = IncidentForm(
            timezone=zone, detected_at=local_input(now, zone), form_key=new_form_key()
        )
        return self._form(request, form, None)

    @post("/new", name="security_incident_create")
    async def create(
        self, request: AnyRequest, data: Annotated[IncidentForm, FORM]
    ) -> Response[Any]:
        try:
            incident = await service.create_incident(
                data.input(), form_key=data.form_key, **await acting(request)
            )
        except ApplianceError as exc:
            return self._form(request, data, None, exc=exc)
        return redirect(f"{PAGE}/{incident.id}?done=created")

    @get("/{incident_id:int}", name="security_incident")
    async def show(
        self,
        request: AnyRequest,
        incident_id: FromPath[int],
        done: Annotated[str, QueryParameter(max_length=20)] = "",
        told: Annotated[int, QueryParameter(ge=0, le=1_000_000)] = 0,
        already: Annotated[int, QueryParameter(ge=0, le=1_000_000)] = 0,
        without: Annotated[int, QueryParameter(ge=0, le=1_000_000)] = 0,
    ) -> Response[Any]:
        notice = NOTICES.get(done)
        if done == "told":
            notice = _told(people.NoticeResult(told, already, without))
        return await self._show(request, incident_id, notice=notice)

    async def _show(
        self, request: AnyRequest, incident_id: int, *, status_code: int = 200, **extra: Any
    ) -> Response[Any]:
        incident = await service.get_incident(incident_id)
        affected = await people.list_affected(incident_id)
        untold = sum(1 for person in affected if not person.times_told)
        context = {
            "incident": incident,
            "changes": await service.list_changes(incident_id),
            "submissions": await authority.list_submissions(incident_id),
            "affected": affected,
            "people_timer": service.people_countdown(
                incident, untold, len(affected), request.app.state.clock()
            ),
            "untold": untold,
            "unreachable": await self._unreachable(request),
            **extra,
        }
        return self._page(request, "show.html", context, status_code)

    @get("/{incident_id:int}/edit", name="security_incident_edit")
    async def edit(self, request: AnyRequest, incident_id: FromPath[int]) -> Response[Any]:
        incident = await service.get_incident(incident_id)
        return self._form(request, IncidentForm.of(incident), incident)

    @post("/{incident_id:int}/edit", name="security_incident_update")
    async def update(
        self,
        request: AnyRequest,
        incident_id: FromPath[int],
        data: Annotated[IncidentForm, FORM],
    ) -> Response[Any]:
        before = await service.get_incident(incident_id)
        try:
            after = await service.update_incident(
                incident_id, data.input(), version=data.version, **await acting(request)
            )
        except ApplianceError as exc:
            return self._form(request, data, before, exc=exc)
        done = "unchanged" if after == before else "saved"
        return redirect(f"{PAGE}/{incident_id}?done={done}")

    # --- the decision not to notify -------------------------------------------------------

    @post("/{incident_id:int}/no-notice", name="security_incident_no_notice")
    async def no_notice(
        self,
        request: AnyRequest,
        incident_id: FromPath[int],
        data: Annotated[NoNoticeForm, FORM],
    ) -> Response[Any]:
        try:
            await decision.decide_no_notice(incident_id, data.reason, **await acting(request))
        except ApplianceError as exc:
            return await self._show(
                request,
                incident_id,
                status_code=status_of(exc),
                reason=data.reason[: service.MAX_TEXT],
                **error_context(exc),
            )
        return redirect(f"{PAGE}/{incident_id}?done=decided")

    @post("/{incident_id:int}/no-notice/withdraw", name="security_incident_no_notice_withdraw")
    async def no_notice_withdraw(
        self, request: AnyRequest, incident_id: FromPath[int]
    ) -> Response[Any]:
        try:
            await decision.withdraw_no_notice(incident_id, **await acting(request))
        except ApplianceError as exc:
            return await self._show(
                request, incident_id, status_code=status_of(exc), **error_context(exc)
            )
        return redirect(f"{PAGE}/{incident_id}?done=withdrawn")

    # --- the authority --------------------------------------------------------------------

    async def _authority_page(
        self,
        request: AnyRequest,
        incident: Incident,
        form: AuthorityForm,
        exc: ApplianceError | None = None,
    ) -> Response[Any]:
        context: dict[str, Any] = {
            "incident": incident,
            "form": form,
            "submissions": await authority.list_submissions(incident.id),
        }
        if exc is not None:
            context.update(error_context(exc))
        return self._page(
            request, "authority.html", context, status_of(exc) if exc is not None else 200
        )

    @get("/{incident_id:int}/authority", name="security_incident_authority")
    async def authority_form(
        self, request: AnyRequest, incident_id: FromPath[int]
    ) -> Response[Any]:
        incident = await service.get_incident(incident_id)
        submissions = await authority.list_submissions(incident_id)
        defaults = authority.form_defaults(
            incident,
            submissions[-1] if submissions else None,
            await setup.get_studio(),
            request.app.state.clock(),
        )
        form = msgspec.convert(msgspec.structs.asdict(defaults), AuthorityForm)
        return await self._authority_page(request, incident, form)

    @post("/{incident_id:int}/authority", name="security_incident_authority_record")
    async def authority_record(
        self,
        request: AnyRequest,
        incident_id: FromPath[int],
        data: Annotated[AuthorityForm, FORM],
    ) -> Response[Any]:
        incident = await service.get_incident(incident_id)
        try:
            await authority.record_submission(incident_id, data.input(), **await acting(request))
        except ApplianceError as exc:
            return await self._authority_page(request, incident, data, exc)
        return redirect(f"{PAGE}/{incident_id}?done=authority")

    # --- affected people ------------------------------------------------------------------

    @get("/{incident_id:int}/people", name="security_incident_people")
    async def people_page(
        self,
        request: AnyRequest,
        incident_id: FromPath[int],
        q: Annotated[str, QueryParameter(max_length=100)] = "",
    ) -> Response[Any]:
        incident = await service.get_incident(incident_id)
        try:
            found = await people.search_people(incident_id, q)
        except ApplianceError as exc:
            return await self._people_page(request, incident, "", exc)
        return await self._people_page(request, incident, q, found=found)

    async def _people_page(
        self,
        request: AnyRequest,
        incident: Incident,
        q: str,
        exc: ApplianceError | None = None,
        found: people.Search | None = None,
    ) -> Response[Any]:
        context: dict[str, Any] = {
            "incident": incident,
            "q": q,
            "found": found or people.Search([], 0, 0, 0),
            "max_matching": people.MAX_PEOPLE_MATCHING,
        }
        if exc is not None:
            context.update(error_context(exc))
        return self._page(
            request, "people.html", context, status_of(exc) if exc is not None else 200
        )

    @post("/{incident_id:int}/people/all", name="security_incident_people_all")
    async def people_all(
        self,
        request: AnyRequest,
        incident_id: FromPath[int],
        data: Annotated[MatchingForm, FORM],
    ) -> Response[Any]:
        incident = await service.get_incident(incident_id)
        try:
            await people.add_matching(
                incident_id, data.q, everyone=data.everyone == "1", **await acting(request)
            )
        except ApplianceError as exc:
            return await self._people_page(request, incident, data.q[:100], exc)
        return redirect(f"{PAGE}/{incident_id}?done=added")

    @post("/{incident_id:int}/people", name="security_incident_people_add")
    async def people_add(
        self,
        request: AnyRequest,
        incident_id: FromPath[int],
        data: Annotated[PeopleForm, FORM],
    ) -> Response[Any]:
        try:
            await people.add_people(
                incident_id, [key for key in form_list(data.people) if key], **await acting(request)
            )
        except ApplianceError as exc:
            return await self._show(
                request, incident_id, status_code=status_of(exc), **error_context(exc)
            )
        return redirect(f"{PAGE}/{incident_id}?done=added")

    @post("/{incident_id:int}/people/{row_id:int}/remove", name="security_incident_person_remove")
    async def person_remove(
        self, request: AnyRequest, incident_id: FromPath[int], row_id: FromPath[int]
    ) -> Response[Any]:
        try:
            await people.remove_person(incident_id, row_id, **await acting(request))
        except ApplianceError as exc:
            return await self._show(
                request, incident_id, status_code=status_of(exc), **error_context(exc)
            )
        return redirect(f"{PAGE}/{incident_id}?done=removed")

    async def _notify_page(
        self,
        request: AnyRequest,
        incident: Incident,
        form: NotifyForm,
        exc: ApplianceError | None = None,
    ) -> Response[Any]:
        context: dict[str, Any] = {
            "incident": incident,
            "form": form,
            "chosen": set(form_list(form.people)),
            "affected": await people.list_affected(incident.id),
        }
        if exc is not None:
            context.update(error_context(exc))
        return self._page(
            request, "notify.html", context, status_of(exc) if exc is not None else 200
        )

    @get("/{incident_id:int}/notify", name="security_incident_notify")
    async def notify_form(self, request: AnyRequest, incident_id: FromPath[int]) -> Response[Any]:
        settings: Settings = request.app.state.settings
        incident = await service.get_incident(incident_id)
        subject, body = people.default_notice(
            incident, await setup.get_studio(), settings.notify.language
        )
        untold = [str(p.id) for p in await people.list_affected(incident_id) if not p.times_told]
        form = NotifyForm(subject=subject, body=body, people=untold, form_key=new_form_key())
        return await self._notify_page(request, incident, form)

    @post("/{incident_id:int}/notify", name="security_incident_notify_send")
    async def notify_send(
        self,
        request: AnyRequest,
        incident_id: FromPath[int],
        data: Annotated[NotifyForm, FORM],
    ) -> Response[Any]:
        settings: Settings = request.app.state.settings
        incident = await service.get_incident(incident_id)
        studio = await setup.get_studio()
        try:
            chosen = [_row_id(key) for key in form_list(data.people) if key]
            result = await people.notify_people(
                incident_id,
                chosen,
                subject=data.subject,
                body=data.body,
                again=data.again == "1",
                form_key=data.form_key,
                language=settings.notify.language,
                studio=studio.name if studio else "",
                **await acting(request),
            )
        except ApplianceError as exc:
            return await self._notify_page(request, incident, data, exc)
        return redirect(
            f"{PAGE}/{incident_id}?done=told&told={result.told}"
            f"&already={result.already_told}&without={result.without_email}"
        )

    # --- the report -----------------------------------------------------------------------

    @get("/{incident_id:int}/report.json", name="security_incident_report_json")
    async def report_json(self, request: AnyRequest, incident_id: FromPath[int]) -> Response[bytes]:
        await service.get_incident(incident_id)
        data = await report.export_json(incident_id, **await acting(request))
        return _download(data, f"security-incident-{incident_id}.json", "application/json")

    @get("/{incident_id:int}/report.pdf", name="security_incident_report_pdf")
    async def report_pdf(self, request: AnyRequest, incident_id: FromPath[int]) -> Response[bytes]:
        await service.get_incident(incident_id)
        studio = await setup.get_studio()
        data = await report.export_pdf(
            incident_id, studio=studio.name if studio else "", **await acting(request)
        )
        return _download(data, f"security-incident-{incident_id}.pdf", "application/pdf")


def _row_id(key: str) -> int:
    """The id of a person's row on the list, as the notice form sends it."""
    try:
        return parse_id(key, field="people")
    except InvalidInput:
        raise InvalidInput("Choose people from the list.", field="people") from None


def _told(result: people.NoticeResult) -> str:
    parts = [
        f"{result.told} notice{'s' if result.told != 1 else ''} queued; the outbox sends them "
        "within a minute"
    ]
    if result.already_told:
        parts.append(
            f"{result.already_told} already told before (not sent again; tick “send again” "
            "to repeat)"
        )
    if result.without_email:
        parts.append(f"{result.without_email} without an e-mail address: tell them another way")
    return "; ".join(parts) + "."


def _download(data: bytes, filename: str, media_type: str) -> Response[bytes]:
    return Response(
        data,
        media_type=media_type,
        headers={**NO_STORE, "Content-Disposition": f'attachment; filename="{filename}"'},
    )
