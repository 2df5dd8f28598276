"""Answering a copy or deletion request starts the work in the domain that does it: an export
(``appliance.exports``) or an erasure (``appliance.privacy.erasure``).

Both are imported when called: those domains import a great deal, and a request page must not
load the purge or the ZIP writer to render.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from appliance.audit.service import Actor
from appliance.config import Settings
from appliance.errors import NotFound

if TYPE_CHECKING:
    from appliance.privacy.erasure import ErasureRequest

__all__ = ["clients_being_erased", "erasure_of", "start_erasure", "start_export"]


async def start_export(
    settings: Settings, *, client_id: int, actor: Actor, address: str, now: dt.datetime
) -> int:
    """Queue the export of everything about the client; the id of the export job."""
    from appliance.exports.service import request_export

    job = await request_export(
        settings,
        kind="client",
        subject_id=client_id,
        actor=actor,
        source="client",
        now=now,
        address=address,
    )
    return int(job.id)


async def start_erasure(
    settings: Settings, *, client_id: int, actor: str, actor_id: int | None, now: dt.datetime
) -> int:
    """Make the client unreachable now and schedule the purge; the id of the erasure request
    (the open one, when the client is already being erased)."""
    from appliance.privacy.erasure import request_erasure

    erasure = await request_erasure(
        settings,
        kind="client",
        subject_id=client_id,
        actor=actor,
        source="client",
        now=now,
        actor_id=actor_id,
    )
    return erasure.id


async def erasure_of(erasure_id: int) -> ErasureRequest | None:
    """The erasure a deletion request started: when it purges, or that it was cancelled; None
    once it is gone."""
    from appliance.privacy.erasure import get_request

    try:
        return await get_request(erasure_id)
    except NotFound:
        return None


async def clients_being_erased() -> set[int]:
    """Clients being or already erased: their requests leave the queue, and no alert asks an
    admin to answer one."""
    from appliance.privacy.erasure import erased_client_ids

    return await erased_client_ids()
