"""What signing in and auditing cost, as ratios against baselines measured in the same process.

Run with ``make bench``; figures are printed, never asserted on time (these machines are noisy).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from argon2 import PasswordHasher
from litestar import Litestar

from appliance.accounts.passwords import hash_password, verify_password
from appliance.audit import service as audit
from appliance.audit.service import Actor

pytestmark = pytest.mark.shipped_password_cost

ROUNDS = 15


def _median_seconds(run: Callable[[], object], rounds: int = ROUNDS) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def _median_seconds_async(run: Callable[[], Awaitable[object]], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def test_password_check_costs_what_argon2_costs() -> None:
    """Our verification (libpass, argon2id) against argon2-cffi alone, and unknown vs known user."""
    password = "quiet harbour lantern 42 maple"
    ours = hash_password(password)
    baseline_hasher = PasswordHasher()
    baseline_hash = baseline_hasher.hash(password)
    baseline = _median_seconds(lambda: baseline_hasher.verify(baseline_hash, password))
    known = _median_seconds(lambda: verify_password(password, ours))
    unknown = _median_seconds(lambda: verify_password(password, None))
    print(
        f"\nargon2-cffi verify (baseline): {baseline * 1000:.1f} ms"
        f"\nverify_password, known user:   {known * 1000:.1f} ms  ratio {known / baseline:.2f}"
        f"\nverify_password, unknown user: {unknown * 1000:.1f} ms  ratio {unknown / baseline:.2f}"
        f"\nunknown / known:               {unknown / known:.2f}"
    )
    assert known > 0 and unknown > 0


async def test_audit_append_overhead(app: Litestar, clean_db: None, database_url: str) -> None:
    """A chained, locked audit append against a plain single-row INSERT on the same server."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "CREATE TEMP TABLE plain_log (id serial primary key, at timestamptz, actor text,"
            " action text, details text)"
        )

        async def plain() -> None:
            await conn.execute(
                "INSERT INTO plain_log (at, actor, action, details) VALUES (now(), $1, $2, $3)",
                "bench",
                "bench.action",
                "{}",
            )

        async def chained() -> None:
            await audit.record("bench.action", actor=Actor(id=None, name="bench"))

        rounds = 200
        baseline = await _median_seconds_async(plain, rounds)
        # With the app's connection pool running, as in the web process.
        ours = await _median_seconds_async(chained, rounds)
        started = time.perf_counter()
        report = await audit.verify_chain()
        verify = time.perf_counter() - started
    finally:
        await conn.close()
    print(
        f"\nplain INSERT (baseline):   {baseline * 1000:.2f} ms"
        f"\naudit.record (chained):    {ours * 1000:.2f} ms  ratio {ours / baseline:.1f}"
        f"\nverify_chain, {report.checked} entries: {verify * 1000:.1f} ms"
        f" ({verify / report.checked * 1e6:.0f} us an entry)"
    )
    assert report.intact and report.checked == rounds
