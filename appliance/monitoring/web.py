"""``/healthz`` (the process answers) and ``/readyz`` (database reachable, migrations current)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from appliance import __version__
from appliance.db.engine import engine, pending_migrations
from appliance.web.requests import AnyRequest

__all__ = ["HealthController"]


class HealthController(Controller):
    path = "/"

    @get("/healthz", name="healthz", cache_control=None)
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @get("/readyz", name="readyz")
    async def readyz(self, request: AnyRequest) -> Response[dict[str, Any]]:
        checks: dict[str, Any] = {}
        ready = True
        try:
            await engine().run_ddl("SELECT 1")
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
            ready = False
        if ready:
            try:
                pending = await pending_migrations()
            except Exception as exc:
                pending = [f"unknown: {type(exc).__name__}"]
            checks["migrations"] = "current" if not pending else {"pending": pending}
            ready = not pending
        return Response(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=HTTP_200_OK if ready else HTTP_503_SERVICE_UNAVAILABLE,
        )
