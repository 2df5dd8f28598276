"""Galleries for clients: create, edit, publish and archive, and arrange their sets."""

from __future__ import annotations

import datetime as dt
import re

import httpx

from appliance.audit.service import list_entries
from appliance.galleries.tables import Gallery, GallerySet
from tests.conftest import FakeClock
from tests.integration.flows import Admin, submit
from tests.integration.test_clients import ANNA, BEN, create, signed_in_owner


async def new_gallery(client: httpx.AsyncClient, client_id: int, **form: str) -> int:
    response = await submit(
        client, f"/galleries/new?client={client_id}", {"title": "Wedding", **form}
    )
    assert response.status_code == 303, response.text[-2000:]
    match = re.fullmatch(r"/galleries/(\d+)", response.headers["location"])
    assert match
    return int(match.group(1))


def set_names(html: str) -> list[str]:
    return re.findall(r'name="set_name" value="([^"]*)"', html)


async def test_new_gallery_is_a_draft_with_one_set_and_shows_on_the_client_page(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """A gallery belongs to its client, starts as a draft with "Highlights", and is audited."""
    await signed_in_owner(client, admin, clock)
    anna = await create(client, ANNA)
    gallery = await new_gallery(
        client, anna, event_date="2027-06-12", description="Our day at the lake."
    )
    page = await client.get(f"/galleries/{gallery}")
    assert "draft" in page.text and "Anna Berg" in page.text and "2027-06-12" in page.text
    assert set_names(page.text) == ["Highlights"]
    assert "Wedding" in (await client.get(f"/clients/{anna}")).text
    entry = next(e for e in await list_entries() if not e.action.endswith(".view"))
    assert (entry.action, entry.target, entry.details) == (
        "gallery.create",
        f"gallery:{gallery}",
        {"client": anna},
    )


async def test_bad_gallery_values_are_refused(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Empty title, impossible or past dates: 400 naming the field; nothing is created."""
    await signed_in_owner(client, admin, clock)
    anna = await create(client, ANNA)
    yesterday = (clock().date() - dt.timedelta(days=1)).isoformat()
    cases = [
        ({"title": ""}, "title", "required"),
        ({"title": "T" * 121}, "title", "at most 120"),
        ({"event_date": "2027-02-30"}, "event_date", "YYYY-MM-DD"),
        ({"expires_on": "soon"}, "expires_on", "YYYY-MM-DD"),
        ({"expires_on": yesterday}, "expires_on", "from today on"),
    ]
    for change, field, reason in cases:
        response = await submit(
            client, f"/galleries/new?client={anna}", {"title": "Wedding", **change}
        )
        assert response.status_code == 400, change
        assert reason in response.text
        assert f'aria-describedby="f-{field}-error"' in response.text
    assert await Gallery.count().run() == 0
    missing = await client.get("/galleries/new?client=99999")
    assert missing.status_code == 404


async def test_archived_client_gets_no_new_gallery(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Galleries are only created for active clients."""
    await signed_in_owner(client, admin, clock)
    ben = await create(client, BEN)
    await submit(client, f"/clients/{ben}", {}, action=f"/clients/{ben}/archive")
    response = await submit(client, f"/galleries/new?client={ben}", {"title": "Portraits"})
    assert response.status_code == 409 and "archived" in response.text
    assert await Gallery.count().run() == 0


async def test_publish_archive_and_expiry(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Publishing records when; an expired gallery cannot be published until its date moves."""
    await signed_in_owner(client, admin, clock)
    anna = await create(client, ANNA)
    tomorrow = (clock().date() + dt.timedelta(days=1)).isoformat()
    gallery = await new_gallery(client, anna, expires_on=tomorrow)
    page = f"/galleries/{gallery}"
    published = await submit(client, page, {"status": "published"}, action=f"{page}/status")
    assert published.headers["location"] == page
    again = await submit(client, page, {"status": "published"}, action=f"{page}/status")
    assert again.status_code == 409 and "already published" in again.text
    await submit(client, page, {"status": "draft"}, action=f"{page}/status")
    clock.advance(days=3)
    client.cookies.clear()
    await signed_in_owner(client, admin, clock)  # three days on, the session is long gone
    expired = await submit(client, page, {"status": "published"}, action=f"{page}/status")
    assert expired.status_code == 409 and "expired" in expired.text
    # Keeping the (past) date while editing other fields is allowed; a new past date is not.
    kept = await submit(client, f"{page}/edit", {"title": "Wedding 2027", "expires_on": tomorrow})
    assert kept.status_code == 303
    later = (clock().date() + dt.timedelta(days=30)).isoformat()
    await submit(client, f"{page}/edit", {"title": "Wedding 2027", "expires_on": later})
    assert (
        await submit(client, page, {"status": "published"}, action=f"{page}/status")
    ).status_code == 303
    bogus = await submit(client, page, {"status": "deleted"}, action=f"{page}/status")
    assert bogus.status_code == 400
    changes = [e for e in await list_entries() if not e.action.endswith(".view")]
    actions = [e.action for e in changes if e.target == f"gallery:{gallery}"]
    assert actions[:3] == ["gallery.published", "gallery.update", "gallery.update"]
    assert "gallery.draft" in actions


async def test_sets_are_added_renamed_moved_and_deleted(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Sets keep their order through moves and deletes; names are unique; one always stays."""
    await signed_in_owner(client, admin, clock)
    gallery = await new_gallery(client, await create(client, ANNA))
    page = f"/galleries/{gallery}"
    for name in ("Ceremony", "Portraits", "Party"):
        assert (
            await submit(client, page, {"set_name": name}, action=f"{page}/sets")
        ).status_code == 303
    duplicate = await submit(client, page, {"set_name": "ceremony"}, action=f"{page}/sets")
    assert duplicate.status_code == 400 and "already has a set" in duplicate.text
    ids = [
        row["id"]
        for row in await GallerySet.select(GallerySet.id)
        .where(GallerySet.gallery == gallery)
        .order_by(GallerySet.position)
        .run()
    ]
    await submit(client, page, {"direction": "up"}, action=f"{page}/sets/{ids[3]}/move")
    await submit(client, page, {"direction": "up"}, action=f"{page}/sets/{ids[0]}/move")
    names = set_names((await client.get(page)).text)
    assert names == ["Highlights", "Ceremony", "Party", "Portraits"]
    await submit(client, page, {"set_name": "Getting ready"}, action=f"{page}/sets/{ids[1]}/rename")
    await submit(client, page, {}, action=f"{page}/sets/{ids[0]}/delete")
    assert set_names((await client.get(page)).text) == ["Getting ready", "Party", "Portraits"]
    positions = [
        row["position"]
        for row in await GallerySet.select(GallerySet.position)
        .where(GallerySet.gallery == gallery)
        .order_by(GallerySet.position)
        .run()
    ]
    assert positions == [0, 1, 2]
    for set_id in ids[1:3]:
        await submit(client, page, {}, action=f"{page}/sets/{set_id}/delete")
    last = await submit(client, page, {}, action=f"{page}/sets/{ids[3]}/delete")
    assert last.status_code == 409 and "at least one set" in last.text


async def test_sets_of_another_gallery_cannot_be_touched(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """A set id from gallery B used under gallery A's address answers 404 and changes nothing."""
    await signed_in_owner(client, admin, clock)
    first = await new_gallery(client, await create(client, ANNA))
    second = await new_gallery(client, await create(client, BEN), title="Portraits")
    foreign = (
        await GallerySet.select(GallerySet.id).where(GallerySet.gallery == second).first().run()
    )
    assert foreign is not None
    for action, form in (
        ("rename", {"set_name": "Hijacked"}),
        ("move", {"direction": "up"}),
        ("delete", {}),
    ):
        response = await submit(
            client,
            f"/galleries/{first}",
            form,
            action=f"/galleries/{first}/sets/{foreign['id']}/{action}",
        )
        assert response.status_code == 404, action
    assert set_names((await client.get(f"/galleries/{second}")).text) == ["Highlights"]


async def test_gallery_list_filters_by_status(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """The list shows every gallery or those of one status; an unknown status is refused."""
    await signed_in_owner(client, admin, clock)
    anna = await create(client, ANNA)
    draft = await new_gallery(client, anna, title="Engagement")
    live = await new_gallery(client, anna, title="Wedding")
    await submit(
        client, f"/galleries/{live}", {"status": "published"}, action=f"/galleries/{live}/status"
    )
    everything = (await client.get("/galleries")).text
    assert "Engagement" in everything and "Wedding" in everything
    only = (await client.get("/galleries?status=published")).text
    assert "Wedding" in only and "Engagement" not in only
    assert (await client.get("/galleries?status=nonsense")).status_code == 400
    assert draft != live
