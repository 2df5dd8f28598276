"""Does the web process stay responsive while sign-ins are checked? How late a /healthz probe
answers while a burst of password checks runs: argon2 on worker threads (as shipped) against
argon2 on the event loop (the baseline), in the same process and run."""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx
import pytest
from litestar import Litestar

from appliance.accounts import passwords, signin
from tests.conftest import make_client
from tests.integration.flows import Admin, csrf_of

pytestmark = pytest.mark.shipped_password_cost

BURST = 12
TICK = 0.005


async def _probe_until(client: httpx.AsyncClient, done: asyncio.Future[object]) -> list[float]:
    """Every TICK, ask /healthz; record how long each answer took from when it was due."""
    delays = []
    due = time.perf_counter()
    while not done.done():
        await client.get("/healthz")
        delays.append(time.perf_counter() - due)
        due += TICK
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
    return delays


async def _burst(app: Litestar, client: httpx.AsyncClient, round_: int) -> tuple[float, float]:
    """(median, worst) /healthz delay while BURST sign-ins, each from its own address, run."""
    async with make_client(app, "10.9.9.9") as proxy:  # the configured trusted proxy
        token = csrf_of((await proxy.get("/login")).text)

        async def sign_in_once(number: int) -> int:
            response = await proxy.post(
                "/login",
                data={"username": f"user{number}", "password": "wrong password!!", "_csrf": token},
                headers={"X-Forwarded-For": f"198.51.{round_}.{number}"},
            )
            return response.status_code

        burst = asyncio.gather(*(sign_in_once(n) for n in range(BURST)))
        delays = await _probe_until(client, burst)
        assert set(await burst) == {401}  # every attempt really ran argon2
    return statistics.median(delays), max(delays)


async def test_health_latency_during_sign_in_burst(
    app: Litestar, client: httpx.AsyncClient, admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/healthz delay during a burst of sign-ins, threads against on-loop hashing."""
    threaded = await _burst(app, client, 1)

    async def on_loop(password: str, password_hash: str | None) -> bool:
        return passwords.verify_password(password, password_hash)

    monkeypatch.setattr(signin, "verify_password_async", on_loop)
    blocking = await _burst(app, client, 2)
    print(
        f"\n{BURST} sign-ins in flight, /healthz delay (median / worst):"
        f"\n  argon2 on threads (ours): {threaded[0] * 1000:6.1f} / {threaded[1] * 1000:6.1f} ms"
        f"\n  argon2 on the loop:       {blocking[0] * 1000:6.1f} / {blocking[1] * 1000:6.1f} ms"
        f"\n  worst, threads / loop:    {threaded[1] / blocking[1]:.2f}"
    )
