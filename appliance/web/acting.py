"""Who does a staff action, from where and when: the three values every audited service call takes.

It lives apart from :mod:`appliance.web.auth` because the address comes from
:mod:`appliance.web.pages`, which itself imports ``auth``.
"""

from __future__ import annotations

import datetime as dt
from typing import TypedDict

from appliance.audit.service import Actor
from appliance.web.auth import signed_in
from appliance.web.pages import client_address
from appliance.web.requests import AnyRequest

__all__ = ["Acting", "acting"]


class Acting(TypedDict):
    """The keyword arguments ``actor``, ``address`` and ``now`` of an audited service call.

    A TypedDict rather than a plain dict, so that ``service.f(..., **await acting(request))``
    is still checked against the service's parameters.
    """

    actor: Actor
    address: str
    now: dt.datetime


async def acting(request: AnyRequest) -> Acting:
    """The signed-in staff member behind this request, the client's address and the time now.

    Only for handlers behind :func:`~appliance.web.auth.require_staff` or ``require_admin``:
    like :func:`~appliance.web.auth.signed_in` it raises ``LoginRequired`` without a full
    session (and reuses the session already looked up for the request).
    """
    signed = await signed_in(request)
    return {
        "actor": signed.member.actor,
        "address": client_address(request),
        "now": request.app.state.clock(),
    }
