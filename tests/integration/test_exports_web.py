"""Exports over HTTP: staff ask for one, make a download link, the client downloads it; the
link is single-purpose, expires with the export, is audit-logged, and a guess finds nothing."""

from __future__ import annotations

import io
import re
import zipfile

import httpx
from litestar import Litestar

from appliance.audit.service import list_entries
from appliance.exports import service
from appliance.exports.tables import ExportJob
from tests.conftest import FakeClock, make_client
from tests.integration.flows import Admin, csrf_of
from tests.integration.test_clients import create, signed_in_owner

_LINK = re.compile(
    r'id="export-link" readonly size="80" value="https?://[^/"]+(/export/[A-Za-z0-9_-]{43})"'
)


async def post_form(client: httpx.AsyncClient, page: str, action: str) -> httpx.Response:
    opened = await client.get(page)
    assert opened.status_code == 200, opened.text[-2000:]
    return await client.post(action, data={"_csrf": csrf_of(opened.text)})


async def test_client_export_link_downloads_expires_and_is_audited(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, app: Litestar
) -> None:
    """Staff export Anna from her page; the link downloads the ZIP (logged), works a limited
    number of times, and after export_link_hours answers 410 with a clear page."""
    await signed_in_owner(client, admin, clock)
    anna = await create(client, {"name": "Anna Berg", "email": "anna@example.org"})
    asked = await post_form(client, f"/clients/{anna}", f"/exports/client/{anna}")
    assert asked.status_code == 303
    page_path = asked.headers["location"]
    again = await post_form(client, f"/clients/{anna}", f"/exports/client/{anna}")
    assert again.headers["location"] == page_path  # the same job
    settings = app.state.settings
    assert await service.run_pending(settings, app.state.store, clock(), clock=clock) == 1
    page = await client.get(page_path)
    assert 'id="export-state">ready<' in page.text
    made = await post_form(client, page_path, f"{page_path}/link")
    match = _LINK.search(made.text)
    assert match, made.text[-2000:]
    link = match.group(1)
    row = await ExportJob.select(ExportJob.token_hash).first()
    assert row is not None and link.rsplit("/", 1)[1] not in str(row)  # only the hash is kept

    async with make_client(app, "198.51.100.7") as browser:
        got = await browser.get(link)
        assert got.status_code == 200 and got.headers["referrer-policy"] == "no-referrer"
        names = zipfile.ZipFile(io.BytesIO(got.content)).namelist()
        assert "data/client.json" in names and "summary.html" in names
        for _ in range(service.MAX_DOWNLOADS - 1):
            assert (await browser.get(link)).status_code == 200
        used_up = await browser.get(link)
        assert used_up.status_code == 410 and "used up" in used_up.text
        near = link[:-1] + ("A" if link[-1] != "A" else "B")
        for guess in (near, "/export/" + "x" * 43):
            missed = await browser.get(guess)
            assert missed.status_code == 404 and "does not exist" in missed.text
        clock.advance(hours=settings.privacy.export_link_hours, seconds=1)
        assert await service.expire_exports(app.state.store, clock()) == 1
        assert [o.key async for o in app.state.store.list("exports/")] == []
        expired = await browser.get(link)  # the archive is gone; the link says why
        assert expired.status_code == 410 and "expired" in expired.text

    entries = [e for e in await list_entries(limit=200) if e.action.startswith("export.")]
    actions = [(e.action, e.target, e.actor) for e in reversed(entries)]
    downloads = [a for a in actions if a[0] == "export.download"]
    assert len(downloads) == service.MAX_DOWNLOADS
    assert all(a[1] == f"client:{anna}" and a[2] == "anonymous" for a in downloads)
    assert ("export.request", f"client:{anna}", "owner") in actions
    assert ("export.link", f"client:{anna}", "owner") in actions


async def test_an_expired_link_says_so(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, app: Litestar
) -> None:
    """An out-of-time link gets a clear 410 page, before the archive is cleared away as after."""
    await signed_in_owner(client, admin, clock)
    anna = await create(client, {"name": "Anna Berg"})
    asked = await post_form(client, f"/clients/{anna}", f"/exports/client/{anna}")
    await service.run_pending(app.state.settings, app.state.store, clock(), clock=clock)
    made = await post_form(client, asked.headers["location"], f"{asked.headers['location']}/link")
    match = _LINK.search(made.text)
    assert match
    clock.advance(hours=app.state.settings.privacy.export_link_hours)
    gone = await client.get(match.group(1))
    assert gone.status_code == 410 and "expired" in gone.text
