"""A client whose erasure is pending is gone from every staff page at once, not only from their
share links, and comes back when an admin cancels (real PostgreSQL and object store)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
from litestar import Litestar

from appliance.clients.tables import Client
from appliance.exports import service as exports
from appliance.exports.tables import ExportJob
from appliance.galleries import media
from appliance.galleries.tables import Gallery, ShareLink
from appliance.privacy.tables import ErasureRequest as ErasureRow
from tests.conftest import FakeClock
from tests.integration.flows import Admin, csrf_of, submit
from tests.integration.sharing_flows import published_gallery, visitor
from tests.integration.test_clients import ANNA, BEN, signed_in_owner

ANNA_TITLE = "Lakeside wedding"
BEN_TITLE = "Studio portraits"
_LINK = re.compile(r'id="export-link" readonly size="80" value="https?://[^/"]+(/export/[^"]+)"')


@dataclass
class Person:
    """A client as the tests know them: ids of the client, the gallery and its one photo."""

    client_id: int
    gallery_id: int
    photo_id: int


async def _client(
    title: str, person: dict[str, str], staff: httpx.AsyncClient, app: Litestar, clock: FakeClock
) -> Person:
    gallery, photos = await published_gallery(staff, app, clock, person, ["p.jpg"], title=title)
    row = await Gallery.select(Gallery.client).where(Gallery.id == gallery).first().run()
    assert row is not None
    return Person(client_id=row["client"], gallery_id=gallery, photo_id=photos[0])


async def _anna_and_ben(
    staff: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> tuple[Person, Person]:
    await signed_in_owner(staff, admin, clock)
    anna = await _client(ANNA_TITLE, ANNA, staff, app, clock)
    ben = await _client(BEN_TITLE, BEN, staff, app, clock)
    return anna, ben


def _pages(app: Litestar, clock: FakeClock, person: Person) -> list[str]:
    """Every staff address that opens this client or their data."""
    urls = [
        f"/clients/{person.client_id}",
        f"/clients/{person.client_id}/edit",
        f"/galleries/new?client={person.client_id}",
        f"/galleries/{person.gallery_id}",
        f"/galleries/{person.gallery_id}/edit",
        f"/galleries/{person.gallery_id}/shares/new",
    ]
    for variant in ("thumb", "preview", "original"):
        urls.append(
            media.media_url(
                app.state.secret_key,
                scope="staff",
                photo_id=person.photo_id,
                variant=variant,
                now=clock(),
            )
        )
    return urls


async def _statuses(staff: httpx.AsyncClient, urls: list[str]) -> dict[str, int]:
    return {url: (await staff.get(url)).status_code for url in urls}


async def _listed(staff: httpx.AsyncClient) -> dict[str, bool]:
    """Whether Anna appears on each staff list (and the search for her)."""
    lists = {
        "clients": ("/clients", ANNA["name"]),
        "search": ("/clients?q=Berg", ANNA["name"]),
        "galleries": ("/galleries", ANNA_TITLE),
        "published": ("/galleries?status=published", ANNA_TITLE),
    }
    found = {}
    for name, (url, needle) in lists.items():
        page = await staff.get(url)
        assert page.status_code == 200, (url, page.status_code)
        found[name] = needle in page.text
    return found


async def _erase(staff: httpx.AsyncClient, client_id: int) -> int:
    """Erase the client the way an admin does, on Admin → Erasure; returns the request's id."""
    done = await submit(
        staff,
        f"/admin/erasure/new?kind=client&subject={client_id}",
        {"kind": "client", "subject_id": str(client_id)},
        action="/admin/erasure",
    )
    assert done.status_code == 303, done.text[-2000:]
    row = await ErasureRow.select(ErasureRow.id).where(ErasureRow.subject_id == client_id).first()
    assert row is not None
    return int(row["id"])


async def _cancel(staff: httpx.AsyncClient, client_id: int, request_id: int) -> None:
    """The admin finds the pending request on Admin → Erasure and cancels it there."""
    listing = await staff.get("/admin/erasure")
    assert listing.status_code == 200
    assert f"client #{client_id}" in listing.text
    assert f"/admin/erasure/{request_id}/cancel" in listing.text
    cancelled = await submit(
        staff, "/admin/erasure", {}, action=f"/admin/erasure/{request_id}/cancel"
    )
    assert cancelled.status_code == 303, cancelled.text[-2000:]


async def _post(staff: httpx.AsyncClient, action: str, data: dict[str, str]) -> httpx.Response:
    """A form post with a valid CSRF token (taken from a page that stays open)."""
    token = csrf_of((await staff.get("/clients/new")).text)
    return await staff.post(action, data={**data, "_csrf": token})


async def test_staff_pages_lists_and_files_hide_a_client_being_erased_until_cancelled(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """While Anna's erasure is pending her client page, edit page, galleries and photo files
    answer 404 and no list or search shows her; Ben is untouched; changes to her are refused;
    the admin still sees the request and cancels it, and everything is back."""
    anna, ben = await _anna_and_ben(client, app, admin, clock)
    every = {"clients": True, "search": True, "galleries": True, "published": True}
    anna_pages, ben_pages = _pages(app, clock, anna), _pages(app, clock, ben)
    assert set((await _statuses(client, anna_pages)).values()) == {200}
    assert await _listed(client) == every

    request_id = await _erase(client, anna.client_id)

    assert await _statuses(client, anna_pages) == dict.fromkeys(anna_pages, 404)
    assert set((await _statuses(client, ben_pages)).values()) == {200}
    assert await _listed(client) == dict.fromkeys(every, False)
    clients_page = (await client.get("/clients")).text
    assert BEN["name"] in clients_page and BEN_TITLE in (await client.get("/galleries")).text
    edit = await _post(client, f"/clients/{anna.client_id}/edit", {"name": "Someone Else"})
    archive = await _post(client, f"/clients/{anna.client_id}/archive", {})
    status = await _post(client, f"/galleries/{anna.gallery_id}/status", {"status": "archived"})
    new = await _post(client, f"/galleries/new?client={anna.client_id}", {"title": "Another"})
    assert [edit.status_code, archive.status_code, status.status_code, new.status_code] == [404] * 4
    # No new way in: no share link for her gallery, no upload into it.
    links = await ShareLink.count().where(ShareLink.gallery == anna.gallery_id).run()
    shared = await _post(client, f"/galleries/{anna.gallery_id}/shares/", {"download_web": "on"})
    token = csrf_of((await client.get("/clients/new")).text)
    upload = await client.post(
        f"/api/v1/galleries/{anna.gallery_id}/uploads",
        headers={"X-CSRF-Token": token},
        json={"filename": "late.jpg", "size": 10, "set_id": 1},
    )
    assert [shared.status_code, upload.status_code] == [404, 404]
    assert await ShareLink.count().where(ShareLink.gallery == anna.gallery_id).run() == links
    row = await Client.select(Client.name, Client.status).where(Client.id == anna.client_id).first()
    assert row == {"name": ANNA["name"], "status": "active"}
    assert await Gallery.count().where(Gallery.client == anna.client_id).run() == 1
    gallery = await Gallery.select(Gallery.status).where(Gallery.id == anna.gallery_id).first()
    assert gallery == {"status": "published"}

    await _cancel(client, anna.client_id, request_id)

    assert set((await _statuses(client, _pages(app, clock, anna))).values()) == {200}
    assert await _listed(client) == every


async def test_a_client_being_erased_gets_no_export_link_or_download_until_cancelled(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """An export made before the erasure: its page and a new link are 404 and its download
    link stops (410); a new export is refused with the reason, and one queued before is not
    built; Ben's export goes on; after cancelling, Anna's export and link work again."""
    anna, ben = await _anna_and_ben(client, app, admin, clock)
    settings, store = app.state.settings, app.state.store
    asked = await _post(client, f"/exports/client/{anna.client_id}", {})
    assert asked.status_code == 303
    page = asked.headers["location"]
    assert await exports.run_pending(settings, store, clock()) == 1
    made = await _post(client, f"{page}/link", {})
    match = _LINK.search(made.text)
    assert match, made.text[-2000:]
    link = match.group(1)
    again = await _post(client, f"/exports/client/{anna.client_id}", {})
    queued = int(again.headers["location"].rsplit("/", 1)[1])  # a new job: the first is ready
    assert again.headers["location"] != page

    request_id = await _erase(client, anna.client_id)

    assert (await client.get(page)).status_code == 404
    assert (await _post(client, f"{page}/link", {})).status_code == 404
    async with visitor(app) as browser:
        assert (await browser.get(link)).status_code == 410
    refused = await _post(client, f"/exports/client/{anna.client_id}", {})
    assert refused.status_code == 409
    assert "being deleted" in refused.text and "Admin → Erasure" in refused.text
    assert await exports.run_pending(settings, store, clock()) == 1
    failed = (
        await ExportJob.select(ExportJob.state, ExportJob.object_key)
        .where(ExportJob.id == queued)
        .first()
    )
    assert failed is not None and failed["state"] == "failed" and not failed["object_key"]
    assert await ExportJob.count().where(ExportJob.subject_id == anna.client_id).run() == 2
    assert (await _post(client, f"/exports/client/{ben.client_id}", {})).status_code == 303

    await _cancel(client, anna.client_id, request_id)

    assert (await client.get(page)).status_code == 200
    async with visitor(app) as browser:
        assert (await browser.get(link)).status_code == 200
    assert (await _post(client, f"/exports/client/{anna.client_id}", {})).status_code == 303
