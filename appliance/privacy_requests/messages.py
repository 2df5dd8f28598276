"""What the admins and the client are told about a privacy request, through the outbox.

Alerts and admins' e-mails leave the appliance (chat services, mail relays): they name the
request by number and kind only, never the client or what the client wrote. The client's own
e-mails go to the address the studio keeps for them, in their language.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from appliance.clients import service as clients
from appliance.config import Settings
from appliance.errors import NotFound
from appliance.localtime import format_duration, format_local
from appliance.notify.admins import AdminNotice, admin_recipients, tell_admins
from appliance.notify.languages import language_for
from appliance.notify.messages import Severity, queue_email
from appliance.setup import service as studio

if TYPE_CHECKING:
    from appliance.privacy_requests.service import RequestRecord

__all__ = ["CLIENT_KINDS", "tell_client", "tell_staff"]

# How the client's e-mails name what they asked for.
CLIENT_KINDS = {
    "copy": "a copy of your data",
    "correction": "a correction of your data",
    "deletion": "the deletion of your data",
}
_TITLES = {
    "received": "Privacy request #{id} received ({kind}): answer by {due}",
    "soon": "Privacy request #{id} ({kind}) is due {due}, {left} left",
    "overdue": "Privacy request #{id} ({kind}) is overdue: it was due {due}",
}
_SEVERITY: dict[str, Severity] = {"received": "info", "soon": "warning", "overdue": "failure"}


def _day(day: dt.date) -> str:
    return f"{day:%d %B %Y}".lstrip("0")


def _staff_context(request: RequestRecord, event: str, now: dt.datetime) -> dict[str, Any]:
    left = (request.deadline_at - now).total_seconds()
    return {
        "event": event,
        "request_id": request.id,
        "kind": request.kind_label.lower(),
        "received": format_local(request.received_at, request.timezone),
        "due": f"{_day(request.due_on)} ({request.timezone})",
        "left": format_duration(abs(left)),
        "extended": request.extended_at is not None,
    }


def _alert_text(context: dict[str, Any]) -> tuple[str, str]:
    title = _TITLES[context["event"]].format(
        id=context["request_id"], kind=context["kind"], due=context["due"], left=context["left"]
    )
    lines = [
        f"A client asked the studio for {context['kind']} through a share link "
        f"on {context['received']}.",
        "GDPR Art. 12(3) asks for an answer within one month of receipt"
        + (" (extended by two months)" if context["extended"] else "")
        + f", by the end of {context['due']}.",
        "Open Admin → Privacy requests on the appliance to answer it.",
    ]
    return title, "\n".join(lines)


async def tell_staff(
    settings: Settings, request: RequestRecord, event: str, now: dt.datetime
) -> int:
    """A new request (``received``), its deadline near (``soon``) or passed (``overdue``): on
    every alert channel, or else by e-mail to each active admin. The messages queued."""
    to = await admin_recipients(settings)
    context = _staff_context(request, event, now)
    title, body = _alert_text(context)
    notice = AdminNotice(
        title=title,
        body=body,
        severity=_SEVERITY[event],
        template="privacy_request_staff",
        context=context,
        source="privacy_requests",
        dedupe_key=f"privacy-request:{request.id}:{event}:{request.deadline_at.isoformat()}",
    )
    return await tell_admins(settings, to, notice, now)


async def tell_client(
    settings: Settings, request: RequestRecord, event: str, now: dt.datetime
) -> bool:
    """Tell the client their request was ``received``, ``extended``, answered (``done``) or
    ``refused``; False when the studio has no e-mail address for them."""
    try:
        client = await clients.get_client(request.client_id)
    except NotFound:
        return False
    if not client.email:
        return False
    profile = await studio.get_studio()
    outbox_id = await queue_email(
        to=client.email,
        template="privacy_request_client",
        context={
            "event": event,
            "name": client.name,
            "studio": profile.name if profile else "",
            "studio_email": profile.contact_email if profile else "",
            "kind": request.kind,
            "asked_for": CLIENT_KINDS.get(request.kind, request.kind),
            "received": _day(request.received_on),
            "due": _day(request.due_on),
            # Only the reasons the client must be given; a done note stays with the studio.
            "reason": {"extended": request.extension_reason, "refused": request.answer_note}.get(
                event, ""
            ),
        },
        language=language_for(client.language, settings.notify.language),
        source="privacy_requests",
        now=now,
        dedupe_key=f"privacy-request:{request.id}:client:{event}",
    )
    return outbox_id is not None
