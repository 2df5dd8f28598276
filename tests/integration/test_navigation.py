"""Every admin page is reachable from the menu: a page that e-mails and docs send admins to
("Admin → Privacy requests") must be one click away, not an address to type."""

from __future__ import annotations

import re

import httpx
from litestar import Litestar

from tests.conftest import FakeClock
from tests.integration.flows import Admin
from tests.integration.test_clients import signed_in_owner

# Pages under /admin reached from another admin page, not from the menu.
NOT_IN_MENU: set[str] = set()


def admin_pages(app: Litestar) -> set[str]:
    """The app's top-level admin pages: GET routes /admin/<name>, without parameters."""
    return {
        route.path
        for route in app.routes
        if re.fullmatch(r"/admin/[a-z-]+", route.path) and "GET" in getattr(route, "methods", set())
    }


async def test_the_admin_menu_links_every_admin_page(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    await signed_in_owner(client, admin, clock)
    home = await client.get("/")
    assert home.status_code == 200
    menu = re.search(r'<nav aria-label="Main">(.*?)</nav>', home.text, re.S)
    assert menu is not None
    linked = set(re.findall(r'href="(/admin/[a-z-]+)"', menu.group(1)))
    pages = admin_pages(app)
    assert {"/admin/privacy-requests", "/admin/erasure", "/admin/audit"} <= pages  # read
    assert pages - NOT_IN_MENU - linked == set()
    for page in sorted(linked):
        assert (await client.get(page)).status_code == 200, page
