"""The worker's periodic housekeeping, run through huey as the worker process runs it."""

from __future__ import annotations

import asyncio
import datetime as dt

import msgspec
from huey.api import PeriodicTask

from appliance.accounts import sessions, throttle
from appliance.accounts.tables import LoginThrottle, StaffSession, StaffUser
from appliance.config import Settings
from appliance.db.engine import engine
from appliance.worker import close_thread_loop, make_huey
from tests.conftest import FakeClock


async def _user() -> int:
    now = dt.datetime.now(dt.UTC)
    rows = (
        await StaffUser.insert(
            StaffUser(
                username="pia",
                email="p@x.example",
                display_name="Pia",
                role="photographer",
                password_hash="!",
                password_changed_at=now,
                created_at=now,
            )
        )
        .returning(StaffUser.id)
        .run()
    )
    return int(rows[0]["id"])


async def test_purge_task_removes_expired_sessions_and_old_throttle_rows(
    clean_db: None, settings: Settings, clock: FakeClock, tmp_path: object
) -> None:
    """Sessions past either time-out and throttle rows past their window go; live ones stay."""
    user = await _user()
    real_now = dt.datetime.now(dt.UTC)
    old = real_now - dt.timedelta(hours=settings.security.session_absolute_hours + 1)
    idle = real_now - dt.timedelta(minutes=settings.security.session_idle_minutes + 1)
    for started in (old, idle, real_now):
        await sessions.create_session(
            user,
            "full",
            now=started,
            settings=settings.security,
            address="192.0.2.1",
            user_agent="test",
        )
    long_ago = real_now - dt.timedelta(minutes=settings.throttle.window_minutes + 5)
    await throttle.reserve([throttle.address_key("192.0.2.1")], long_ago, settings.throttle)
    await throttle.reserve([throttle.address_key("192.0.2.2")], real_now, settings.throttle)

    data = msgspec.structs.replace(settings.paths, data_dir=str(tmp_path))
    huey = make_huey(msgspec.structs.replace(settings, paths=data), immediate=True)
    tasks = [t for t in huey._registry._registry.values() if issubclass(t, PeriodicTask)]
    assert sorted(t.__name__ for t in tasks) == [
        "accounts.purge_expired",
        "exports.expire",
        "exports.run_pending",
        "galleries.purge_abandoned_uploads",
        "galleries.purge_share_visits",
        "monitoring.maintenance_notices",
        "privacy.check_deadlines",
        "privacy.purge_erasures",
        "privacy_requests.check_deadlines",
    ]
    tasks = [t for t in tasks if t.__name__ == "accounts.purge_expired"]
    # The task runs on a loop of its own in a worker thread, as in the worker process, which
    # has no connection pool: the web app's pool of this test process is set aside meanwhile.
    db = engine()
    pool, db.pool = db.pool, None
    try:

        def execute_once() -> None:
            try:
                huey.execute(tasks[0]())
            finally:
                close_thread_loop()  # as a worker thread does when it ends

        await asyncio.to_thread(execute_once)
    finally:
        db.pool = pool

    left = await StaffSession.select(StaffSession.last_seen_at).run()
    assert [row["last_seen_at"] for row in left] == [real_now]
    keys = [row["key"] for row in await LoginThrottle.select(LoginThrottle.key).run()]
    assert keys == [throttle.address_key("192.0.2.2")]
