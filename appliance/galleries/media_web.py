"""Photo files for staff pages, behind signed short-lived URLs and the staff session."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream

from appliance.galleries import media
from appliance.web.auth import require_staff
from appliance.web.requests import AnyRequest

__all__ = ["StaffMediaController"]


class StaffMediaController(Controller):
    path = "/media/staff"
    guards = [require_staff]  # re-authorised on every request, whatever the URL says

    @get("/{photo_id:int}/{variant:str}", name="staff_media")
    async def file(
        self,
        request: AnyRequest,
        photo_id: FromPath[int],
        variant: FromPath[str],
        e: Annotated[int, QueryParameter(ge=0, le=2**40)],
        s: Annotated[str, QueryParameter(min_length=64, max_length=64)],
    ) -> Stream:
        media.verify_media_url(
            request.app.state.secret_key,
            scope="staff",
            photo_id=photo_id,
            variant=variant,
            expires=e,
            signature=s,
            now=request.app.state.clock(),
        )
        found = await media.photo_file(photo_id, variant)
        store = request.app.state.store
        # Checked before the answer starts: a missing object is a 404, not a cut-off 200.
        info = await store.stat(found["key"])
        safe_name = "".join(c if c.isalnum() or c in "._-" else "_" for c in found["filename"])
        disposition = "attachment" if variant == "original" else "inline"
        return Stream(
            store.get(found["key"]),
            media_type=found["content_type"],
            headers={
                "Content-Length": str(info.size),
                "Cache-Control": "private, max-age=300",
                "Content-Disposition": f'{disposition}; filename="{safe_name}"',
            },
        )
