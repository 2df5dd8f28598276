"""The huey instance and the periodic schedule; tasks live in each domain's ``tasks.py``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from huey import Huey, RedisHuey, SqliteHuey

from appliance.config import Settings

__all__ = ["make_huey", "run_async"]

T = TypeVar("T")
_local = threading.local()


def make_huey(settings: Settings, *, immediate: bool = False) -> Huey:
    """SQLite queue in the data folder by default; Redis when ``queue.url`` is set."""
    if settings.queue.url:
        huey: Huey = RedisHuey("appliance", url=settings.queue.url, immediate=immediate)
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        huey = SqliteHuey(
            "appliance", filename=str(settings.data_dir / "queue.db"), immediate=immediate
        )
    from appliance.accounts import tasks as account_tasks

    account_tasks.register(huey, settings)
    return huey


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a service coroutine on this worker thread's own event loop.

    huey tasks are synchronous; each consumer thread keeps one loop so connections made on it
    are reused by the same thread and never shared with another loop.
    """
    loop = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
    return loop.run_until_complete(coro)
