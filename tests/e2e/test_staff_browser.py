"""Staff in a real browser: the owner invites a photographer, who joins from a second browser.

The owner and the photographer each have a browser context of their own, so no cookie is shared
between them, as with two people on two machines. Both are checked for what every page loads
and logs: nothing from outside the appliance, and no console errors.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Locator, expect

from tests.e2e.conftest import Appliance, Tab
from tests.e2e.test_browser import (
    DISPLAY_NAME,
    PASSWORD,
    STUDIO_NAME,
    USERNAME,
    _confirm_authenticator,
    _create_admin,
    _enter_studio,
    _keep_recovery_codes,
    totp_code,
    totp_counter,
)

pytestmark = pytest.mark.e2e

PHOTOGRAPHER_EMAIL = "mira@lumen.example"
PHOTOGRAPHER_USERNAME = "mira"
PHOTOGRAPHER_NAME = "Mira Sol"
PHOTOGRAPHER_PASSWORD = "velvet compass orchard 77 river"
ADMIN_ONLY = "Only an admin can open this page."
FAILED_LOAD = "Failed to load resource: the server responded with a status of"


def _owner_signs_in(appliance: Appliance, tab: Tab) -> None:
    """Run the wizard, then sign in with the password and the next TOTP code."""
    page, base = tab.page, appliance.base_url
    _enter_studio(appliance, tab)
    _create_admin(appliance, tab)
    secret, enrol_step = _confirm_authenticator(tab)
    _keep_recovery_codes(appliance, tab)
    page.get_by_label("User name", exact=True).fill(USERNAME)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/login/two-factor")
    # The code used to enrol is spent; the next time step's code is accepted at once.
    code = totp_code(secret, max(totp_counter(), enrol_step) + 1)
    page.get_by_label("Code from your authenticator app, or a recovery code", exact=True).fill(code)
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(f"{base}/")
    expect(page.locator("main")).to_contain_text(f"Signed in as {DISPLAY_NAME}")


def _invite_photographer(appliance: Appliance, tab: Tab) -> str:
    """Open Staff from the menu and create an invitation; the one-time link it shows."""
    page, base = tab.page, appliance.base_url
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Staff").click()
    expect(page).to_have_url(f"{base}/admin/users")
    expect(page.get_by_role("heading", level=1)).to_have_text("Staff")
    page.get_by_label("E-mail", exact=True).fill(PHOTOGRAPHER_EMAIL)
    page.get_by_label("Role", exact=True).select_option("photographer")
    page.get_by_role("button", name="Create invitation link").click()

    shown = page.get_by_label("Link", exact=True)
    expect(shown).to_be_visible()
    expect(shown).to_have_attribute("readonly", "")
    expect(page.get_by_role("status")).to_contain_text(PHOTOGRAPHER_EMAIL)
    link = shown.input_value()
    assert re.fullmatch(rf"{re.escape(base)}/invite/[A-Za-z0-9_-]{{20,}}", link), link
    tab.screenshot("staff-invitation-link")

    # Shown once: the same page opened again lists the invitation, but not its link.
    page.goto(f"{base}/admin/users")
    expect(page.get_by_label("Link", exact=True)).to_have_count(0)
    expect(page.locator("ul.pending")).to_contain_text(PHOTOGRAPHER_EMAIL)
    assert link not in page.content()
    return link


def _photographer_joins(appliance: Appliance, second: Tab, link: str) -> None:
    """Open the invitation in another browser, create the account and sign in with it."""
    page, base = second.page, appliance.base_url
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("Create your account")
    expect(page.locator("main")).to_contain_text(f"photographer ({PHOTOGRAPHER_EMAIL})")
    page.get_by_label("User name", exact=True).fill(PHOTOGRAPHER_USERNAME)
    page.get_by_label("Your name", exact=True).fill(PHOTOGRAPHER_NAME)
    page.get_by_label("Password", exact=True).fill(PHOTOGRAPHER_PASSWORD)
    page.get_by_label("Repeat the password", exact=True).fill(PHOTOGRAPHER_PASSWORD)
    second.screenshot("join")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Account created")

    page.goto(f"{base}/login")
    page.get_by_label("User name", exact=True).fill(PHOTOGRAPHER_USERNAME)
    page.get_by_label("Password", exact=True).fill(PHOTOGRAPHER_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/")  # no second factor asked of a photographer by default
    expect(page.get_by_role("heading", level=1)).to_have_text(STUDIO_NAME)
    expect(page.locator("main")).to_contain_text(f"Signed in as {PHOTOGRAPHER_NAME} (photographer)")
    menu = page.get_by_role("navigation", name="Main")
    expect(menu.get_by_role("link", name=PHOTOGRAPHER_NAME)).to_be_visible()
    expect(menu.get_by_role("link", name="Staff")).to_have_count(0)
    second.screenshot("photographer-home")


def _staff_row(tab: Tab) -> Locator:
    return tab.page.locator("tbody tr").filter(has_text=PHOTOGRAPHER_EMAIL)


def _audit_rows(tab: Tab) -> list[tuple[str, str, str, str]]:
    """(who, action, outcome, target) of each entry on the audit page."""
    rows = []
    for row in tab.page.locator("tbody tr").all():
        cells = [text.strip() for text in row.locator("td").all_inner_texts()]
        rows.append((cells[2], cells[3], cells[4], cells[5]))
    return rows


def _assert_clean(tab: Tab, *, expected_errors: tuple[str, ...] = ()) -> None:
    """Nothing loaded from outside 127.0.0.1 (data: URLs aside); no console errors but these."""
    assert tab.requests, "no requests were recorded"
    foreign = [
        url
        for url in tab.requests
        if not url.startswith("data:") and urlsplit(url).hostname != "127.0.0.1"
    ]
    assert not foreign, f"resources loaded from outside the appliance: {foreign}"
    assert sorted(tab.console_errors) == sorted(expected_errors), tab.console_errors


def test_invited_photographer_joins_is_refused_admin_pages_and_is_signed_out_once_disabled(
    appliance: Appliance, tab: Tab, second_tab: Tab
) -> None:
    """An invited photographer joins, is refused admin pages, and loses access once disabled."""
    base = appliance.base_url
    _owner_signs_in(appliance, tab)
    link = _invite_photographer(appliance, tab)
    _photographer_joins(appliance, second_tab, link)

    photographer = second_tab.page
    response = photographer.goto(f"{base}/admin/users")
    assert response is not None
    assert response.status == 403, response.status
    expect(photographer.get_by_role("heading", level=1)).to_have_text("Not allowed")
    expect(photographer.locator("main p.message")).to_have_text(ADMIN_ONLY)
    expect(photographer.get_by_label("E-mail", exact=True)).to_have_count(0)
    second_tab.screenshot("admin-page-refused")

    owner = tab.page
    owner.goto(f"{base}/admin/users")
    row = _staff_row(tab)
    expect(row).to_have_count(1)
    expect(row).to_contain_text(PHOTOGRAPHER_NAME)
    expect(row).to_contain_text(PHOTOGRAPHER_USERNAME)
    expect(row.get_by_label(f"Role of {PHOTOGRAPHER_USERNAME}")).to_have_value("photographer")
    expect(row.locator("td").nth(3)).to_have_text("active")
    expect(owner.locator("ul.pending")).to_have_count(0)  # the invitation is used up
    row.get_by_role("button", name="Disable").click()
    expect(owner.get_by_role("status")).to_have_text(
        f"{PHOTOGRAPHER_USERNAME} is disabled and signed out everywhere."
    )
    expect(row.locator("td").nth(3)).to_have_text("disabled")
    expect(row.get_by_role("button", name="Enable")).to_be_visible()
    tab.screenshot("staff-photographer-disabled")

    photographer.reload()
    expect(photographer).to_have_url(f"{base}/login")
    photographer.goto(f"{base}/")
    expect(photographer).to_have_url(f"{base}/login")

    owner.get_by_role("navigation", name="Main").get_by_role("link", name="Audit log").click()
    expect(owner).to_have_url(f"{base}/admin/audit")
    entries = _audit_rows(tab)
    target = f"user:{PHOTOGRAPHER_USERNAME}"
    assert (USERNAME, "user.invite", "success", f"email:{PHOTOGRAPHER_EMAIL}") in entries, entries
    created = [e for e in entries if e[1:] == ("user.create", "success", target)]
    assert len(created) == 1, entries
    assert created[0][0].startswith("invitation:"), entries
    assert (USERNAME, "user.disable", "success", target) in entries, entries
    assert (PHOTOGRAPHER_USERNAME, "login", "success", target) in entries, entries
    assert (USERNAME, "login", "success", f"user:{USERNAME}") in entries, entries
    tab.screenshot("audit-log")

    _assert_clean(tab)
    # Chromium logs the 403 answer of the refused page itself as a failed load, once.
    refused = f"{FAILED_LOAD} 403 (Forbidden) ({base}/admin/users)"
    _assert_clean(second_tab, expected_errors=(refused,))
