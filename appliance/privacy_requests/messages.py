"""What the admins and the client are told about a privacy request, through the outbox.

Alerts and admins' e-mails leave the appliance (chat services, mail relays): they name the
request by number and kind only, never the client or what the client wrote. The client's own
e-mails go to the address the studio keeps for them, in their language.

The e-mails' contexts hold the request's days, time left and kind as plain values, which each
language's templates word themselves; only the alerts, which are English, are worded here.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from appliance.clients import service as clients
from appliance.config import Settings
from appliance.errors import NotFound
from appliance.localtime import format_day, format_duration, format_local, zone
from appliance.notify.admins import AdminNotice, admin_recipients, tell_admins
from appliance.notify.languages import language_for
from appliance.notify.messages import Severity, queue_email
from appliance.privacy_requests import fulfilment
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


def _staff_context(request: RequestRecord, event: str, now: dt.datetime) -> dict[str, Any]:
    """What the admins' alert and e-mail say: ``kind`` is the English label (alerts and the
    English e-mail), ``kind_code`` the request's own; ``left_seconds`` the time to the deadline,
    or past it once overdue."""
    return {
        "event": event,
        "request_id": request.id,
        "kind": request.kind_label.lower(),
        "kind_code": request.kind,
        "received": format_local(request.received_at, request.timezone),
        "due_on": request.due_on,
        "timezone": request.timezone,
        "left_seconds": abs((request.deadline_at - now).total_seconds()),
        "extended": request.extended_at is not None,
    }


def _alert_text(context: dict[str, Any]) -> tuple[str, str]:
    due = f"{format_day(context['due_on'])} ({context['timezone']})"
    title = _TITLES[context["event"]].format(
        id=context["request_id"],
        kind=context["kind"],
        due=due,
        left=format_duration(context["left_seconds"]),
    )
    lines = [
        f"A client asked the studio for {context['kind']} through a share link "
        f"on {context['received']}.",
        "GDPR Art. 12(3) asks for an answer within one month of receipt"
        + (" (extended by two months)" if context["extended"] else "")
        + f", by the end of {due}.",
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
    purge_on, key = None, f"privacy-request:{request.id}:client:{event}"
    if event == "done" and request.erasure_id is not None:
        # The day the data goes for good, as the erasure has it: its grace period counts from
        # the answer, not from the request. Keyed by the erasure, so a deletion answered again
        # after a cancelled erasure tells the client its new day.
        erasure = await fulfilment.erasure_of(request.erasure_id)
        if erasure is not None:
            purge_on = erasure.purge_after.astimezone(zone(settings.studio_zone)).date()
        key += f":erasure:{request.erasure_id}"
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
            "received_on": request.received_on,
            "due_on": request.due_on,
            "purge_on": purge_on,
            # Only the reasons the client must be given; a done note stays with the studio.
            "reason": {"extended": request.extension_reason, "refused": request.answer_note}.get(
                event, ""
            ),
        },
        language=language_for(client.language, settings.notify.language),
        source="privacy_requests",
        now=now,
        dedupe_key=key,
    )
    return outbox_id is not None
