"""``/healthz`` (the process answers) and ``/readyz`` (database reachable, migrations current)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from appliance import __version__
from appliance.monitoring.service import readiness

__all__ = ["HealthController"]


class HealthController(Controller):
    path = "/"

    @get("/healthz", name="healthz")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @get("/readyz", name="readyz")
    async def readyz(self) -> Response[dict[str, Any]]:
        state = await readiness()
        return Response(
            {"status": "ready" if state.ready else "not ready", "checks": state.checks},
            status_code=HTTP_200_OK if state.ready else HTTP_503_SERVICE_UNAVAILABLE,
        )
