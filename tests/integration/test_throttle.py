"""Failed sign-ins are throttled per account and per address, in PostgreSQL, for every process."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litestar import Litestar

from appliance.accounts import throttle
from appliance.audit.service import list_entries
from appliance.config import Settings, ThrottleSettings
from appliance.errors import TooManyAttempts
from tests.conftest import FakeClock, make_client
from tests.integration.flows import Admin, csrf_of, sign_in
from tests.processes import AppProcess, free_port

ROOT = Path(__file__).resolve().parents[2]


async def test_account_is_blocked_after_free_failures_with_growing_delays(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, settings: Settings
) -> None:
    """After the free failures each one blocks longer (1 s, 2 s, 4 s); while blocked even the
    right password gets 429 with Retry-After."""
    free = settings.throttle.free_failures
    for _ in range(free + 1):
        assert (await sign_in(client, admin.username, "wrong password!!")).status_code == 401
    blocked = await sign_in(client, admin.username, admin.password)
    assert blocked.status_code == 429
    assert blocked.headers["retry-after"] == "1"
    assert "Too many failed sign-in attempts" in blocked.text
    clock.advance(seconds=1)
    assert (await sign_in(client, admin.username, "wrong password!!")).status_code == 401
    second = await sign_in(client, admin.username, admin.password)
    assert second.status_code == 429 and second.headers["retry-after"] == "2"
    clock.advance(seconds=2)
    assert (await sign_in(client, admin.username, "wrong password!!")).status_code == 401
    third = await sign_in(client, admin.username, admin.password)
    assert third.headers["retry-after"] == "4"
    clock.advance(seconds=4)
    ok = await sign_in(client, admin.username, admin.password)
    assert ok.headers["location"] == "/login/two-factor"
    # One entry per block that started (three failures past the free ones, two keys each),
    # none for the refused requests in between.
    blocks = [e for e in await list_entries() if e.action == "login.blocked"]
    assert len(blocks) == 6
    assert {e.details["by"] for e in blocks} == {"account", "address"}
    assert sorted(e.details["seconds"] for e in blocks if e.details["by"] == "account") == [1, 2, 4]


async def test_account_limit_blocks_until_the_window_ends(clean_db: None, clock: FakeClock) -> None:
    """At account_limit failures within the window the key stays blocked until the window ends."""
    rules = ThrottleSettings(free_failures=1, account_limit=4, window_minutes=60)
    key = throttle.account_key("owner")
    started = clock()
    for failure in range(1, 4):
        await throttle.reserve([key], clock(), rules)
        clock.advance(seconds=2 ** max(0, failure - 2))  # wait out each delay
    attempt = await throttle.reserve([key], clock(), rules)  # the fourth: the limit
    assert attempt.blocked[key] == pytest.approx(
        (started + dt.timedelta(minutes=60) - clock()).total_seconds(), abs=1
    )
    with pytest.raises(TooManyAttempts) as blocked:
        await throttle.reserve([key], clock(), rules)
    window_end = started + dt.timedelta(minutes=60)
    assert blocked.value.retry_after == pytest.approx((window_end - clock()).total_seconds(), abs=1)
    clock.now = window_end + dt.timedelta(seconds=1)
    await throttle.reserve([key], clock(), rules)  # a new window: allowed again


async def test_refund_lifts_only_the_block_the_attempt_started(
    clean_db: None, clock: FakeClock
) -> None:
    """A right attempt after the free failures is not blocked; earned blocks stay."""
    rules = ThrottleSettings(free_failures=2)
    key = throttle.address_key("192.0.2.1")
    for _ in range(2):
        await throttle.reserve([key], clock(), rules)
    right = await throttle.reserve([key], clock(), rules)
    assert right.blocked  # counted pessimistically first ...
    await throttle.refund(right, rules)
    await throttle.reserve([key], clock(), rules)  # ... and lifted by the refund
    with pytest.raises(TooManyAttempts):
        await throttle.reserve([key], clock(), rules)  # this failure's own block holds


async def test_parallel_burst_cannot_outrun_the_throttle(
    client: httpx.AsyncClient, admin: Admin, settings: Settings
) -> None:
    """Forty simultaneous wrong passwords: only the free failures and one more are checked."""
    import asyncio

    page = await client.get("/login")
    token = csrf_of(page.text)

    async def attempt() -> int:
        response = await client.post(
            "/login",
            data={"username": admin.username, "password": "wrong password!!", "_csrf": token},
        )
        return response.status_code

    statuses = await asyncio.gather(*(attempt() for _ in range(40)))
    checked = statuses.count(401)
    assert checked == settings.throttle.free_failures + 1, statuses
    assert statuses.count(429) == 40 - checked


async def test_one_address_trying_many_names_is_blocked(
    client: httpx.AsyncClient, admin: Admin, settings: Settings
) -> None:
    """Spraying passwords over many user names from one address hits the address throttle."""
    for number in range(settings.throttle.free_failures + 1):
        response = await sign_in(client, f"guess{number}", "wrong password!!")
        assert response.status_code == 401
    response = await sign_in(client, "yet-another-name", "wrong password!!")
    assert response.status_code == 429


async def test_forged_forwarded_for_does_not_reset_the_throttle(
    app: Litestar, admin: Admin, settings: Settings
) -> None:
    """A client that is not a trusted proxy cannot pick its address with X-Forwarded-For."""
    async with make_client(app, "198.51.100.7") as attacker:
        for number in range(settings.throttle.free_failures + 2):
            page = await attacker.get("/login")
            response = await attacker.post(
                "/login",
                data={
                    "username": f"name{number}",
                    "password": "x" * 12,
                    "_csrf": csrf_of(page.text),
                },
                headers={"X-Forwarded-For": f"203.0.113.{number}"},
            )
        assert response.status_code == 429
    entries = await list_entries()
    assert {e.address for e in entries if e.action == "login"} == {"198.51.100.7"}


async def test_trusted_proxy_passes_the_real_client_address(
    app: Litestar, admin: Admin, settings: Settings
) -> None:
    """Behind the configured proxy, each client is throttled and audited by its own address."""
    async with make_client(app, "10.9.9.9") as proxy:
        for number in range(settings.throttle.free_failures + 2):
            page = await proxy.get("/login", headers={"X-Forwarded-For": f"203.0.113.{number}"})
            response = await proxy.post(
                "/login",
                data={
                    "username": f"name{number}",
                    "password": "x" * 12,
                    "_csrf": csrf_of(page.text),
                },
                headers={"X-Forwarded-For": f"6.6.6.6, 203.0.113.{number}"},
            )
            assert response.status_code == 401, number
    addresses = {e.address for e in await list_entries() if e.action == "login"}
    assert addresses == {f"203.0.113.{n}" for n in range(settings.throttle.free_failures + 2)}


@pytest.mark.shipped_password_cost
async def test_unknown_name_costs_about_as_much_time_as_a_wrong_password(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """An unknown user name still runs an argon2 verification, so timing reveals no names."""

    async def timed(username: str) -> float:
        clock.advance(hours=2)  # keep the throttle out of the measurement
        page = await client.get("/login")
        started = time.perf_counter()
        await client.post(
            "/login",
            data={
                "username": username,
                "password": "wrong password!!",
                "_csrf": csrf_of(page.text),
            },
        )
        return time.perf_counter() - started

    known = [await timed(admin.username) for _ in range(5)]
    unknown = [await timed("no-such-user") for _ in range(5)]
    ratio = statistics.median(unknown) / statistics.median(known)
    # Skipping argon2 would make unknown names ~20x faster; noise stays far inside these bounds.
    assert 0.5 < ratio < 2.0, (known, unknown)


@pytest.fixture
def two_instances(settings: Settings, tmp_path: Path) -> Iterator[list[str]]:
    """Two `appliance web` processes on their own ports, sharing the test database."""
    env = {
        "APPLIANCE_DATABASE__URL": settings.database.url,
        "APPLIANCE_SECURITY__SECRET_KEY": settings.security.secret_key,
        "APPLIANCE_PATHS__DATA_DIR": str(tmp_path / "data"),
        "APPLIANCE_LOGGING__LEVEL": "WARNING",
    }
    args = ["web", "--no-migrate", "--no-setup-token"]
    servers = [AppProcess(args, workdir=tmp_path, port=free_port(), env=env) for _ in range(2)]
    try:
        for server in servers:
            server.wait_ready()
        yield [server.url for server in servers]
    finally:
        for server in servers:
            server.stop()


async def _post_login(http: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    """Sign-in form over plain HTTP to 127.0.0.1.

    The cookie is Secure there (browsers treat loopback as a secure context), which httpx's jar
    will not send over http://, so the CSRF cookie is passed on by hand as a browser would.
    """
    page = await http.get("/login")
    cookie = page.headers["set-cookie"].split(";")[0]
    return await http.post(
        "/login",
        data={"username": username, "password": password, "_csrf": csrf_of(page.text)},
        headers={"Cookie": cookie},
    )


async def test_throttle_is_shared_by_two_app_instances(
    admin: Admin, settings: Settings, two_instances: list[str]
) -> None:
    """Failures counted by one process block the account on another process too."""
    first, second = two_instances
    async with httpx.AsyncClient(base_url=first) as one, httpx.AsyncClient(base_url=second) as two:
        for _ in range(settings.throttle.free_failures + 1):
            response = await _post_login(one, admin.username, "wrong password!!")
            assert response.status_code == 401
        blocked = await _post_login(two, admin.username, admin.password)
        assert blocked.status_code == 429
        assert "Too many failed sign-in attempts" in blocked.text


async def test_right_password_does_not_reset_second_factor_failures(
    client: httpx.AsyncClient, admin: Admin, settings: Settings
) -> None:
    """Someone who knows the password cannot guess codes forever by signing in again."""
    from tests.integration.flows import submit

    for _ in range(settings.throttle.free_failures + 1):
        client.cookies.clear()
        assert (await sign_in(client, admin.username, admin.password)).status_code == 303
        wrong = await submit(client, "/login/two-factor", {"code": "000000"})
        assert wrong.status_code == 401
    client.cookies.clear()
    blocked = await sign_in(client, admin.username, admin.password)
    assert blocked.status_code == 429
    assert blocked.headers["retry-after"] == "1"


async def test_attacker_cannot_lock_the_owner_out_of_their_usual_browser(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, settings: Settings
) -> None:
    """Failures from elsewhere block the account, but not a browser that signed in before."""
    from tests.integration.flows import totp_code

    first = await sign_in(
        client, admin.username, admin.password, code=totp_code(admin.secret, clock())
    )
    assert first.headers["location"] == "/"
    await client.post("/logout", headers={"X-CSRF-Token": csrf_of((await client.get("/")).text)})
    clock.advance(seconds=30)  # the next TOTP step for the owner's second sign-in
    async with make_client(app, "203.0.113.66") as attacker:
        for _ in range(settings.throttle.free_failures + 1):
            await sign_in(attacker, admin.username, "wrong password!!")
        assert (await sign_in(attacker, admin.username, admin.password)).status_code == 429
    owner = await sign_in(
        client, admin.username, admin.password, code=totp_code(admin.secret, clock())
    )
    assert owner.headers["location"] == "/"
    async with make_client(app, "192.0.2.77") as new_browser:
        assert (await sign_in(new_browser, admin.username, admin.password)).status_code == 429


async def test_unblock_command_lifts_an_account_block(
    client: httpx.AsyncClient, admin: Admin, settings: Settings
) -> None:
    """`appliance staff unblock USER` lets the account sign in again at once."""
    import subprocess
    import sys

    for _ in range(settings.throttle.free_failures + 1):
        await sign_in(client, admin.username, "wrong password!!")
    async with make_client(client._transport.app, "192.0.2.78") as other:  # type: ignore[attr-defined]
        assert (await sign_in(other, admin.username, admin.password)).status_code == 429
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "appliance", "staff", "unblock", admin.username],
            env={**os.environ, "APPLIANCE_DATABASE__URL": settings.database.url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert (await sign_in(other, admin.username, admin.password)).status_code == 303


async def test_ten_wrong_codes_in_a_row_leave_only_recovery_codes(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """After ten wrong authenticator codes even the right one is refused until a recovery code
    signs in; waiting does not reset the run."""
    from tests.integration.flows import submit, totp_code

    for _ in range(10):
        clock.advance(hours=2)  # past every throttle window: only the run of failures counts
        client.cookies.clear()
        await sign_in(client, admin.username, admin.password)
        wrong = "000000" if totp_code(admin.secret, clock()) != "000000" else "111111"
        assert (await submit(client, "/login/two-factor", {"code": wrong})).status_code == 401
    clock.advance(days=30)
    client.cookies.clear()
    refused = await sign_in(
        client, admin.username, admin.password, code=totp_code(admin.secret, clock())
    )
    assert refused.status_code == 401 and "recovery codes" in refused.text
    client.cookies.clear()
    rescued = await sign_in(client, admin.username, admin.password, code=admin.recovery_codes[0])
    assert rescued.headers["location"] == "/"
    entry = next(e for e in await list_entries() if e.action == "login")
    assert entry.details == {"second_factor": "recovery code", "recovery_codes_left": 9}
    client.cookies.clear()
    clock.advance(seconds=30)
    again = await sign_in(
        client, admin.username, admin.password, code=totp_code(admin.secret, clock())
    )
    assert again.headers["location"] == "/"
