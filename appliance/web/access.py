"""Audit entries for what staff view and download of a client's data (confidentiality).

Pages and original files are logged, never the thumbnails and previews a page pulls in, so
opening a gallery of sixty photos is one entry, not sixty. Targets are ``client:<id>`` or
``gallery:<id>``: the ones a client's data export lists in its access log.
"""

from __future__ import annotations

from typing import Any

from appliance.audit import service as audit
from appliance.web.auth import current_staff
from appliance.web.pages import client_address
from appliance.web.requests import AnyRequest

__all__ = ["record_access"]


async def record_access(request: AnyRequest, action: str, target: str, **details: Any) -> None:
    """Audit one view or download by the signed-in member of staff; nothing for anyone else
    (a client opening a share link is not staff accessing the data)."""
    signed = await current_staff(request)
    if signed is None or signed.session.stage != "full":
        return
    await audit.record(
        action,
        actor=signed.member.actor,
        target=target,
        address=client_address(request),
        details=details,
        at=request.app.state.clock(),
    )
