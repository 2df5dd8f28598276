"""No page the appliance serves loads anything from a third party: every GET route of the app,
and every page reachable from them by links, rendered for a visitor of a share link, a
photographer and an admin, names no other origin in its markup, its styles, its scripts, its
Content-Security-Policy or a redirect."""

from __future__ import annotations

import re
from collections import deque
from urllib.parse import urlsplit

import httpx
from litestar import Litestar
from litestar.routes import HTTPRoute

from appliance.privacy.tables import SecurityIncident
from tests.conftest import FakeClock
from tests.integration.flows import Admin
from tests.integration.sharing_flows import published_gallery, share, visitor
from tests.integration.test_clients import ANNA
from tests.integration.test_policies import ADMIN, photographer, publish, save_draft
from tests.unit.test_no_third_party import MarkupUrls, foreign_csp_sources, foreign_references

OWN_HOSTS = {"localhost", "127.0.0.1", "appliance.test"}
# Not pages: photo files, a ZIP of a gallery, the API schema; each is left out of the crawl.
SKIPPED = re.compile(r"^/(static|media|schema)/|/download$|\.(pdf|zip)$|^/logout$")
MAX_PAGES = 250  # per browser; the appliance has far fewer pages than this


def route_paths(app: Litestar, values: dict[str, str]) -> list[str]:
    """Every GET route of the app, path parameters filled from ``values`` (else ``1``)."""
    paths = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "GET" not in route.methods:
            continue
        path = re.sub(
            r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), "1"), route.path_format
        )
        if not SKIPPED.search(path):
            paths.append(path)
    return paths


def links(html: str) -> list[str]:
    """The same-origin paths a page links to or loads, without fragments."""
    markup = MarkupUrls()
    markup.feed(html)
    found = []
    for url in markup.urls:
        parts = urlsplit(url)
        if parts.scheme or parts.netloc or not parts.path.startswith("/"):
            continue
        found.append(parts.path + (f"?{parts.query}" if parts.query else ""))
    return found


async def crawl(browser: httpx.AsyncClient, seeds: list[str]) -> dict[str, list[str]]:
    """Open every seed and every page linked from one, breadth first; ``{path: problems}``
    for every page visited (an empty list where nothing foreign was found)."""
    seen: dict[str, list[str]] = {}
    queue = deque(seeds)
    while queue and len(seen) < MAX_PAGES:
        path = queue.popleft()
        if path in seen or SKIPPED.search(urlsplit(path).path):
            continue
        response = await browser.get(path)
        problems = foreign_csp_sources(response.headers.get("content-security-policy", ""))
        location = response.headers.get("location", "")
        if location:
            problems += foreign_references(f'<a href="{location}">', OWN_HOSTS)
            queue.append(location)
        if response.headers.get("content-type", "").startswith("text/html"):
            problems += foreign_references(response.text, OWN_HOSTS)
            queue.extend(links(response.text))
        seen[path] = problems
    return seen


async def test_no_page_loads_anything_from_a_third_party(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """Each browser reaches many pages, the policy pages among them, and none names another
    origin; the admin's crawl covers every GET route of the app."""
    async with photographer(client, app, admin, clock) as pia:
        gallery, photos = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
        token_path = await share(client, gallery)
        await save_draft(client, "# Hello\n\nA new text.", "A new text.")
        assert (await publish(client)).status_code == 303
        incident = SecurityIncident(
            kind="leak",
            title="Laptop stolen",
            detected_at=clock(),
            created_at=clock(),
            updated_at=clock(),
        )
        await incident.save().run()
        values = {
            "gallery_id": str(gallery),
            "photo_id": str(photos[0]),
            "token": token_path.removeprefix("/s/"),
            "incident_id": str(incident.id),
            "number": "1",
        }
        seeds = [*route_paths(app, values), token_path]
        async with visitor(app) as stranger:
            crawled = {
                "visitor": await crawl(stranger, [token_path, "/privacy", "/status"]),
                "photographer": await crawl(pia, seeds),
                "admin": await crawl(client, seeds),
            }
    problems = {
        f"{who}: {path}": found
        for who, pages in crawled.items()
        for path, found in pages.items()
        if found
    }
    assert problems == {}
    admin_pages = crawled["admin"]
    assert set(route_paths(app, values)) <= set(admin_pages)
    for page in ("/privacy", "/privacy/processors", "/privacy/versions/1", ADMIN, token_path):
        assert page in admin_pages, page
    assert {token_path, "/privacy", "/privacy/processors"} <= set(crawled["visitor"])
    assert len(admin_pages) > 40 and len(crawled["photographer"]) > 20
    home = await client.get("/")
    assert 'href="/privacy"' in home.text  # the footer link, on staff pages too
