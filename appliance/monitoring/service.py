"""Readiness of this process: can it reach its database, and is the schema current?"""

from __future__ import annotations

from typing import Any

import msgspec

from appliance.db.engine import engine, pending_migrations

__all__ = ["Readiness", "readiness"]


class Readiness(msgspec.Struct, frozen=True):
    ready: bool
    checks: dict[str, Any]


async def readiness() -> Readiness:
    """Check the database, then the migrations; any failure means "not ready", named."""
    try:
        await engine().run_ddl("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - whatever the failure, the answer is "not ready"
        return Readiness(ready=False, checks={"database": f"unreachable: {type(exc).__name__}"})
    try:
        pending = await pending_migrations()
    except Exception as exc:  # noqa: BLE001 - as above
        pending = [f"unknown: {type(exc).__name__}"]
    checks: dict[str, Any] = {
        "database": "ok",
        "migrations": "current" if not pending else {"pending": pending},
    }
    return Readiness(ready=not pending, checks=checks)
