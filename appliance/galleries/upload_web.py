"""The upload API the gallery page's script uses: start, send chunks, ask what arrived, finish.

JSON under ``/api/v1``; staff session and CSRF header as for every other unsafe request.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post, put
from litestar.params import FromPath, HeaderParameter, JSONBody

from appliance.galleries import service, uploads
from appliance.web.acting import acting
from appliance.web.auth import require_staff, signed_in
from appliance.web.requests import AnyRequest

__all__ = ["UploadController"]

# The most one chunk request may carry (the largest chunk_mb); the service checks the exact
# length of each chunk against the file's declared size.
MAX_CHUNK_BYTES = 64 * 1024 * 1024


class UploadStart(msgspec.Struct, forbid_unknown_fields=True):
    filename: str
    size: int
    set_id: int


class UploadController(Controller):
    path = "/api/v1/galleries/{gallery_id:int}/uploads"
    guards = [require_staff]

    @post("/", name="upload_start", status_code=201)
    async def start(
        self, request: AnyRequest, gallery_id: FromPath[int], data: JSONBody[UploadStart]
    ) -> uploads.UploadState:
        signed = await signed_in(request)
        await service.get_gallery(gallery_id, hide_erased=True)  # none for a client being erased
        return await uploads.start_upload(
            gallery_id,
            data.set_id,
            filename=data.filename,
            size=data.size,
            rules=request.app.state.settings.uploads,
            store=request.app.state.store,
            actor=signed.member.actor,
            now=request.app.state.clock(),
        )

    @get("/{token:str}", name="upload_state")
    async def state(self, gallery_id: FromPath[int], token: FromPath[str]) -> uploads.UploadState:
        return await uploads.upload_state(token, gallery_id)

    @put(
        "/{token:str}/chunks/{index:int}",
        name="upload_chunk",
        request_max_body_size=MAX_CHUNK_BYTES,
    )
    async def chunk(
        self,
        request: AnyRequest,
        gallery_id: FromPath[int],
        token: FromPath[str],
        index: FromPath[int],
        sha256: Annotated[str, HeaderParameter(name="x-chunk-sha256", max_length=64)],
    ) -> uploads.UploadState:
        return await uploads.receive_chunk(
            token,
            gallery_id,
            index,
            request.stream(),
            sha256=sha256,
            store=request.app.state.store,
            now=request.app.state.clock(),
        )

    @post("/{token:str}/complete", name="upload_complete", status_code=201)
    async def complete(
        self, request: AnyRequest, gallery_id: FromPath[int], token: FromPath[str]
    ) -> dict[str, Any]:
        await service.get_gallery(gallery_id, hide_erased=True)
        photo = await uploads.complete_upload(
            token,
            gallery_id,
            store=request.app.state.store,
            rules=request.app.state.settings.uploads,
            **await acting(request),
        )
        return msgspec.to_builtins(photo)  # type: ignore[no-any-return]
