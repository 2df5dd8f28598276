"""The appliance in a real browser: first-run wizard, sign-in with TOTP, and a clean stop.

Inputs are found by their labels, as a person (or a screen reader) finds them, which also proves
that every field has a visible label tied to it. TOTP codes come from RFC 6238 implemented here
with the standard library, independently of the code under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import struct
import subprocess
import time

import pytest
from playwright.sync_api import Locator, expect

from tests.e2e.conftest import Appliance, Tab, http_status

pytestmark = pytest.mark.e2e

STUDIO_NAME = "Studio Lumen"
CONTACT_EMAIL = "hello@lumen.example"
CONTACT_PHONE = "+49 30 1234567"
USERNAME = "owner"
DISPLAY_NAME = "Ada Lumen"
ADMIN_EMAIL = "ada@lumen.example"
PASSWORD = "quiet harbour lantern 42 maple"
SESSION_COOKIE = "__Host-fs_session"
STOP_SECONDS = 10.0
RECOVERY_CODE_COUNT = 10


def totp_counter(when: float | None = None) -> int:
    """The RFC 6238 time step (30 s) for ``when`` in seconds since the epoch (default: now)."""
    return int(time.time() if when is None else when) // 30


def totp_code(secret: str, counter: int) -> str:
    """RFC 6238 TOTP over RFC 4226 HOTP: HMAC-SHA-1, dynamic truncation, 6 digits."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    start = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[start : start + 4])[0] & 0x7FFFFFFF
    return f"{number % 1_000_000:06d}"


def test_totp_helper_matches_the_rfc_6238_test_vector() -> None:
    """The test's own TOTP gives the SHA-1 code RFC 6238 lists for T = 59 s."""
    secret = base64.b32encode(b"12345678901234567890").decode()
    assert totp_code(secret, totp_counter(59)) == "287082"  # RFC 6238 appendix B: 94287082


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _enter_studio(appliance: Appliance, tab: Tab) -> None:
    """Open the printed setup link and fill in the studio's details."""
    page, base = tab.page, appliance.base_url
    page.goto(appliance.setup_link)
    expect(page).to_have_url(f"{base}/setup/studio")  # the token left the address bar
    tab.screenshot("setup-studio")
    page.get_by_label("Studio name", exact=True).fill(STUDIO_NAME)
    page.get_by_label("Contact e-mail", exact=True).fill(CONTACT_EMAIL)
    page.get_by_label("Contact phone (optional)", exact=True).fill(CONTACT_PHONE)
    page.get_by_role("button", name="Save and continue").click()
    expect(page).to_have_url(f"{base}/setup/admin")


def _create_admin(appliance: Appliance, tab: Tab) -> None:
    """Create the first admin account; the wizard moves on to the authenticator."""
    page = tab.page
    page.get_by_label("User name", exact=True).fill(USERNAME)
    page.get_by_label("Your name", exact=True).fill(DISPLAY_NAME)
    page.get_by_label("E-mail", exact=True).fill(ADMIN_EMAIL)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Repeat the password", exact=True).fill(PASSWORD)
    tab.screenshot("setup-admin")
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(f"{appliance.base_url}/setup/two-factor")


def _qr_code(tab: Tab) -> Locator:
    return tab.page.get_by_role("img", name="QR code for your authenticator app")


def _confirm_authenticator(tab: Tab) -> tuple[str, int]:
    """Type the current code for the shown secret; the secret and the time step used."""
    page = tab.page
    expect(_qr_code(tab)).to_be_visible()
    expect(_qr_code(tab)).to_have_attribute("src", re.compile(r"^data:image/"))
    secret = page.locator("code#totp-secret").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{16,}", secret), secret
    tab.screenshot("setup-two-factor")
    step = totp_counter()
    page.get_by_label("Code from the app", exact=True).fill(totp_code(secret, step))
    page.get_by_role("button", name="Confirm and finish").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Set-up complete")
    return secret, step


def _keep_recovery_codes(appliance: Appliance, tab: Tab) -> None:
    """Check the ten recovery codes and follow the link to the sign-in page."""
    page = tab.page
    codes = page.locator("ol.recovery-codes li code").all_inner_texts()
    assert len(codes) == RECOVERY_CODE_COUNT, codes
    assert len(set(codes)) == RECOVERY_CODE_COUNT, f"recovery codes repeat: {codes}"
    tab.screenshot("setup-complete")
    continue_link = page.get_by_role("link", name="Continue to sign in")
    expect(continue_link).to_have_attribute("href", "/login")
    continue_link.click()
    expect(page).to_have_url(f"{appliance.base_url}/login")


def test_owner_sets_up_the_studio_and_signs_in_with_an_authenticator_code(
    appliance: Appliance, tab: Tab
) -> None:
    """An owner finishes the wizard from the printed link, then signs in with password and TOTP."""
    page, base = tab.page, appliance.base_url
    _enter_studio(appliance, tab)
    _create_admin(appliance, tab)
    secret, enrol_step = _confirm_authenticator(tab)
    _keep_recovery_codes(appliance, tab)

    page.goto(appliance.setup_link)
    expect(page).to_have_url(f"{base}/login")  # the wizard never runs twice

    page.get_by_label("User name", exact=True).fill(USERNAME)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    tab.screenshot("login")
    page.get_by_role("button", name="Sign in").click()

    expect(page).to_have_url(f"{base}/login/two-factor")
    # The code used to enrol may not be used again: take the next time step's code, which the
    # server accepts at once (it allows one step of clock drift either way).
    sign_in_step = max(totp_counter(), enrol_step) + 1
    page.get_by_label("Code from your authenticator app, or a recovery code", exact=True).fill(
        totp_code(secret, sign_in_step)
    )
    tab.screenshot("login-two-factor")
    page.get_by_role("button", name="Verify").click()

    expect(page).to_have_url(f"{base}/")
    expect(page.get_by_role("heading", level=1)).to_have_text(STUDIO_NAME)
    expect(page.locator("main")).to_contain_text(f"Signed in as {DISPLAY_NAME}")
    sign_out = page.get_by_role("button", name="Sign out")
    expect(sign_out).to_be_visible()
    tab.screenshot("home")

    sessions = [c for c in tab.context.cookies() if c["name"].endswith("fs_session")]
    assert [c["name"] for c in sessions] == [SESSION_COOKIE], tab.context.cookies()
    assert sessions[0]["httpOnly"], sessions[0]
    assert sessions[0]["secure"], sessions[0]

    sign_out.click()
    expect(page).to_have_url(f"{base}/login")
    assert not [c for c in tab.context.cookies() if c["name"] == SESSION_COOKIE]

    foreign = [url for url in tab.requests if not url.startswith((f"{base}/", "data:"))]
    assert not foreign, f"resources loaded from outside the appliance: {foreign}"
    assert tab.requests, "no requests were recorded"
    assert not tab.console_errors, f"the browser console reported errors: {tab.console_errors}"


def test_two_factor_page_shows_a_qr_code_the_browser_can_draw(
    appliance: Appliance, tab: Tab
) -> None:
    """The authenticator step shows a QR code image that decodes to a picture, not a broken icon."""
    _enter_studio(appliance, tab)
    _create_admin(appliance, tab)
    qr = _qr_code(tab)
    expect(qr).to_be_visible()
    qr.evaluate("image => image.decode().catch(() => undefined)")
    tab.screenshot("qr-code")
    width = qr.evaluate("image => image.complete ? image.naturalWidth : -1")
    assert width > 0, f"the QR code image did not load (natural width {width})"


def test_appliance_stops_with_exit_code_zero_on_sigterm_while_a_browser_is_connected(
    appliance: Appliance, tab: Tab
) -> None:
    """SIGTERM stops the appliance, its children and its database within 10 s, exit code 0."""
    tab.page.goto(appliance.setup_link)
    expect(tab.page).to_have_url(f"{appliance.base_url}/setup/studio")
    tab.screenshot("before-stop")

    try:
        code = appliance.stop(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {STOP_SECONDS:.0f} s after SIGTERM:\n{appliance.log_tail()}")

    assert code == 0, f"exit code {code} after SIGTERM:\n{appliance.log_tail()}"
    assert http_status(f"{appliance.base_url}/readyz", timeout=1.0) is None
    children = appliance.child_pids()
    assert len(children) == 2, appliance.log_tail()
    assert not [pid for pid in children if _alive(pid)], "a child process outlived the stop"
    assert not (appliance.data_dir / "postgres" / "postmaster.pid").exists(), (
        "the embedded database is still running"
    )
