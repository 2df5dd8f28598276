"""Failed sign-in throttling per account and per client address, kept in PostgreSQL.

Every process (each web worker, each instance behind the proxy) reads and writes the same rows,
so moving to another instance or restarting resets nothing. After ``free_failures`` failures each
further one blocks the key for a growing delay (1 s, 2 s, 4 s ... up to ``max_delay_seconds``);
at ``account_limit`` / ``address_limit`` failures within the window the key stays blocked until
the window ends. A blocked key gets 429 before its password is even looked at.
"""

from __future__ import annotations

import datetime as dt
import math

from appliance.accounts.tables import LoginThrottle
from appliance.config import ThrottleSettings
from appliance.errors import TooManyAttempts

__all__ = ["account_key", "address_key", "check", "clear", "record_failure"]


def account_key(username: str) -> str:
    return "account:" + username.strip().lower()[:150]


def address_key(address: str) -> str:
    return "address:" + address[:64]


async def check(keys: list[str], now: dt.datetime) -> None:
    """Raise TooManyAttempts when any key is blocked at ``now``."""
    rows = (
        await LoginThrottle.select(LoginThrottle.blocked_until)
        .where(LoginThrottle.key.is_in(keys))
        .where(LoginThrottle.blocked_until > now)
        .run()
    )
    if rows:
        until = max(row["blocked_until"] for row in rows)
        wait = max(1, math.ceil((until - now).total_seconds()))
        raise TooManyAttempts(
            f"Too many failed sign-in attempts. Try again in {_humanise(wait)}.",
            retry_after=wait,
        )


async def record_failure(key: str, now: dt.datetime, settings: ThrottleSettings) -> None:
    """Count one failure for ``key`` and block it for as long as its count calls for."""
    window = dt.timedelta(minutes=settings.window_minutes)
    # One statement, so two processes counting at once cannot lose a failure.
    rows = await LoginThrottle.raw(
        """
        INSERT INTO login_throttle (key, failures, window_started_at, blocked_until)
        VALUES ({}, 1, {}, NULL)
        ON CONFLICT (key) DO UPDATE SET
            failures = CASE WHEN login_throttle.window_started_at < {}
                            THEN 1 ELSE login_throttle.failures + 1 END,
            window_started_at = CASE WHEN login_throttle.window_started_at < {}
                                     THEN EXCLUDED.window_started_at
                                     ELSE login_throttle.window_started_at END
        RETURNING failures, window_started_at
        """,
        key,
        now,
        now - window,
        now - window,
    )
    failures = rows[0]["failures"]
    limit = settings.account_limit if key.startswith("account:") else settings.address_limit
    if failures >= limit:
        until = rows[0]["window_started_at"] + window
    elif failures > settings.free_failures:
        delay = min(2 ** (failures - settings.free_failures - 1), settings.max_delay_seconds)
        until = now + dt.timedelta(seconds=delay)
    else:
        return
    await (
        LoginThrottle.update({LoginThrottle.blocked_until: until})
        .where(LoginThrottle.key == key)
        .run()
    )


async def clear(key: str) -> None:
    """Forget the failures of ``key`` (after a successful sign-in of that account)."""
    await LoginThrottle.delete().where(LoginThrottle.key == key).run()


async def purge(now: dt.datetime, settings: ThrottleSettings) -> int:
    """Drop rows whose window and block are both over; returns how many."""
    cutoff = now - dt.timedelta(minutes=settings.window_minutes)
    rows = (
        await LoginThrottle.delete()
        .where(LoginThrottle.window_started_at < cutoff)
        .where((LoginThrottle.blocked_until.is_null()) | (LoginThrottle.blocked_until < now))
        .returning(LoginThrottle.id)
        .run()
    )
    return len(rows)


def _humanise(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"
