"""The huey instance and the periodic schedule; tasks live in each domain's ``tasks.py``."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from huey import Huey, RedisHuey, SqliteHuey

from appliance.config import Settings

__all__ = ["JobLoop", "close_thread_loop", "make_huey", "run_async"]

T = TypeVar("T")
log = logging.getLogger(__name__)
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
    from appliance.exports import tasks as export_tasks
    from appliance.galleries import tasks as gallery_tasks
    from appliance.monitoring import tasks as monitoring_tasks
    from appliance.privacy import tasks as privacy_tasks
    from appliance.privacy_requests import tasks as privacy_request_tasks

    account_tasks.register(huey, settings)
    export_tasks.register(huey, settings)
    gallery_tasks.register(huey, settings)
    monitoring_tasks.register(huey, settings)
    privacy_tasks.register(huey, settings)
    privacy_request_tasks.register(huey, settings)
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


def close_thread_loop() -> None:
    """Close this thread's loop; a thread that ends should, or the loop is left to the garbage
    collector, which may finalise its sockets first and then fail to close it."""
    loop = getattr(_local, "loop", None)
    _local.loop = None
    if loop is not None and not loop.is_closed():
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class JobLoop(threading.Thread):
    """Claims photo jobs from the database every ``interval`` seconds until stopped.

    The database is this queue, not huey: a job is claimed with a conditional UPDATE, and one
    whose worker died is claimed again when stale, so nothing is lost when a worker is killed.
    """

    def __init__(self, settings: Settings, *, interval: float = 2.0) -> None:
        super().__init__(name="photo-jobs", daemon=True)
        self.settings = settings
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        from appliance.clock import utcnow
        from appliance.galleries.derivatives import process_pending
        from appliance.galleries.service import watermark_text
        from appliance.storage import open_store

        store = open_store(self.settings)
        scratch = self.settings.data_dir / "tmp"
        while not self.stopping.is_set():
            try:
                # One job per call, so each claim and its updates get the time they happen at.
                taken = run_async(
                    process_pending(store, scratch, utcnow(), limit=1, watermark=watermark_text)
                )
            except Exception:  # the loop must survive a database or store outage
                log.exception("photo jobs: could not claim or run jobs; trying again")
                taken = 0
            if not taken:
                self.stopping.wait(self.interval)
        close_thread_loop()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        self.join(timeout)
