"""Failed sign-in throttling per account and per client address, kept in PostgreSQL.

Every process (each web worker, each instance behind the proxy) reads and writes the same rows,
so moving to another instance or restarting resets nothing. After ``free_failures`` failures each
further one blocks the key for a growing delay (1 s, 2 s, 4 s ... up to ``max_delay_seconds``);
at ``account_limit`` / ``address_limit`` failures within the window the key stays blocked until
the window ends. A blocked key gets 429 before its password is even looked at.

An attempt is counted as a failure *before* the credentials are checked and refunded when they
turn out right (:func:`reserve`, :func:`refund`). Counting afterwards would let a burst of
parallel requests all pass the check before any of them was counted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import math

import msgspec

from appliance.accounts.tables import LoginThrottle
from appliance.config import ThrottleSettings
from appliance.errors import TooManyAttempts

__all__ = [
    "Attempt",
    "account_key",
    "address_key",
    "clear",
    "purge",
    "refund",
    "reserve",
]


class Attempt(msgspec.Struct, frozen=True):
    """The keys an attempt was counted against, and those it put into a block."""

    keys: list[str]
    blocked: dict[str, int]  # key -> seconds of the block this attempt started


def account_key(username: str) -> str:
    """The key of a user name. Hashed: people type passwords into the name field."""
    digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return f"account:{digest}"


def address_key(address: str) -> str:
    """The key of a client address; IPv6 by /64, since one host commonly owns a whole /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "address:" + address[:64]
    if ip.version == 6:
        return f"address:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"address:{ip}"


def _limit(key: str, rules: ThrottleSettings) -> int:
    # Keys of one thing (an account, a share link) get the account limit; addresses, which
    # many people may share behind one router, the higher address limit.
    return rules.address_limit if "address:" in key else rules.account_limit


def _block_until(
    key: str, failures: int, window_start: dt.datetime, now: dt.datetime, rules: ThrottleSettings
) -> dt.datetime | None:
    if failures >= _limit(key, rules):
        return window_start + dt.timedelta(minutes=rules.window_minutes)
    if failures > rules.free_failures:
        delay = min(2 ** (failures - rules.free_failures - 1), rules.max_delay_seconds)
        return now + dt.timedelta(seconds=delay)
    return None


def _refusal(until: dt.datetime, now: dt.datetime) -> TooManyAttempts:
    wait = max(1, math.ceil((until - now).total_seconds()))
    return TooManyAttempts(
        f"Too many failed sign-in attempts. Try again in {_humanise(wait)}.", retry_after=wait
    )


async def reserve(keys: list[str], now: dt.datetime, rules: ThrottleSettings) -> Attempt:
    """Count one failure against every key now, or raise TooManyAttempts if any is blocked.

    Each key's row is locked while it is read and written, so concurrent attempts on the same
    key are counted one after another; keys are taken in sorted order so two attempts never
    wait on each other. Nothing is counted when the attempt is refused.
    """
    window = dt.timedelta(minutes=rules.window_minutes)
    blocked: dict[str, int] = {}
    async with LoginThrottle._meta.db.transaction(allow_nested=True):
        for key in sorted(set(keys)):
            await LoginThrottle.raw(
                "INSERT INTO login_throttle (key, failures, window_started_at)"
                " VALUES ({}, 0, {}) ON CONFLICT (key) DO NOTHING",
                key,
                now,
            )
            row = (
                await LoginThrottle.raw(
                    "SELECT failures, window_started_at, blocked_until FROM login_throttle"
                    " WHERE key = {} FOR UPDATE",
                    key,
                )
            )[0]
            if row["blocked_until"] is not None and row["blocked_until"] > now:
                raise _refusal(row["blocked_until"], now)
            expired = row["window_started_at"] + window <= now
            failures = 1 if expired else row["failures"] + 1
            window_start = now if expired else row["window_started_at"]
            until = _block_until(key, failures, window_start, now, rules)
            await (
                LoginThrottle.update(
                    {
                        LoginThrottle.failures: failures,
                        LoginThrottle.window_started_at: window_start,
                        LoginThrottle.blocked_until: until,
                    }
                )
                .where(LoginThrottle.key == key)
                .run()
            )
            if until is not None:
                blocked[key] = math.ceil((until - now).total_seconds())
    return Attempt(keys=sorted(set(keys)), blocked=blocked)


async def refund(
    attempt: Attempt, rules: ThrottleSettings, *, forget: tuple[str, ...] = ()
) -> None:
    """The attempt was right after all: take its failure back; keys in ``forget`` are cleared.

    A block the attempt started is lifted when the count falls back within the free failures;
    a block that earlier failures had earned stays.
    """
    async with LoginThrottle._meta.db.transaction(allow_nested=True):
        for key in attempt.keys:
            if key in forget:
                await clear(key)
                continue
            await LoginThrottle.raw(
                "UPDATE login_throttle SET failures = GREATEST(failures - 1, 0),"
                " blocked_until = CASE WHEN failures - 1 <= {} THEN NULL ELSE blocked_until END"
                " WHERE key = {}",
                rules.free_failures,
                key,
            )


async def clear(key: str) -> None:
    """Forget every failure of ``key`` (a complete sign-in, an admin reset, an unblock)."""
    await LoginThrottle.delete().where(LoginThrottle.key == key).run()


async def purge(now: dt.datetime, rules: ThrottleSettings) -> int:
    """Drop rows whose window and block are both over; returns how many."""
    cutoff = now - dt.timedelta(minutes=rules.window_minutes)
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
