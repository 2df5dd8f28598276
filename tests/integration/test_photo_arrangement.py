"""Arranging photos: cover, order, sets, deletion and the watermark switch, as staff do it
and as the client then sees it."""

from __future__ import annotations

import re

import httpx
from litestar import Litestar

from appliance.audit.service import list_entries
from appliance.galleries import derivatives, service
from appliance.galleries.tables import Gallery, GallerySet, Photo, PhotoJob, SelectionItem
from tests.conftest import FakeClock
from tests.integration.flows import Admin, csrf_of
from tests.integration.sharing_flows import media_urls, published_gallery, share, visitor
from tests.integration.test_clients import ANNA, BEN, signed_in_owner


async def post(client: httpx.AsyncClient, gallery: int, action: str, **data: str) -> httpx.Response:
    token = csrf_of((await client.get(f"/galleries/{gallery}")).text)
    return await client.post(f"/galleries/{gallery}/{action}", data={**data, "_csrf": token})


async def client_order(app: Litestar, path: str) -> list[int]:
    async with visitor(app) as browser:
        page = (await browser.get(path)).text
    return [int(found) for found in re.findall(r'<li id="p(\d+)"', page)]


async def test_cover_goes_first_and_order_and_sort_are_what_the_client_sees(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    await signed_in_owner(client, admin, clock)
    gallery, photos = await published_gallery(client, app, clock, ANNA, ["c.jpg", "a.jpg", "b.jpg"])
    path = await share(client, gallery)
    assert await client_order(app, path) == photos
    assert (
        await post(client, gallery, f"photos/{photos[2]}/move", direction="up")
    ).status_code == 303
    assert await client_order(app, path) == [photos[0], photos[2], photos[1]]
    assert (
        await post(client, gallery, f"photos/{photos[0]}/move", direction="up")
    ).status_code == 303
    assert await client_order(app, path) == [photos[0], photos[2], photos[1]]  # already first
    set_id = (await GallerySet.select(GallerySet.id).where(GallerySet.gallery == gallery).run())[0][
        "id"
    ]
    assert (await post(client, gallery, f"sets/{set_id}/sort", key="name")).status_code == 303
    assert await client_order(app, path) == [photos[1], photos[2], photos[0]]  # a, b, c
    assert (await post(client, gallery, "cover", photo=str(photos[0]))).status_code == 303
    assert await client_order(app, path) == [photos[0], photos[1], photos[2]]
    row = await Gallery.select(Gallery.cover_photo).where(Gallery.id == gallery).first().run()
    assert row == {"cover_photo": photos[0]}
    assert (await post(client, gallery, "cover", photo="")).status_code == 303
    assert await client_order(app, path) == [photos[1], photos[2], photos[0]]
    actions = {entry.action for entry in await list_entries(limit=100)}
    assert {"gallery.photo.move", "gallery.set.sort", "gallery.cover"} <= actions


async def test_bad_arrangement_requests_are_refused_and_change_nothing(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    await signed_in_owner(client, admin, clock)
    gallery, photos = await published_gallery(client, app, clock, ANNA, ["a.jpg", "b.jpg"])
    other, other_photos = await published_gallery(client, app, clock, BEN, ["x.jpg"], title="Other")
    before = (
        await Photo.select(Photo.id, Photo.position, Photo.gallery_set).order_by(Photo.id).run()
    )
    refused = [
        await post(client, gallery, "cover", photo=str(other_photos[0])),
        await post(client, gallery, "cover", photo="1; DROP TABLE photo"),
        await post(client, gallery, f"photos/{photos[0]}/move", direction="sideways"),
        await post(client, gallery, f"photos/{other_photos[0]}/move", direction="up"),
        await post(client, gallery, f"photos/{other_photos[0]}/delete"),
        await post(client, gallery, "sets/999999/sort", key="name"),
        await post(client, gallery, f"photos/{photos[0]}/set", set_id="999999"),
    ]
    set_id = (await GallerySet.select(GallerySet.id).where(GallerySet.gallery == gallery).run())[0][
        "id"
    ]
    refused.append(await post(client, gallery, f"sets/{set_id}/sort", key="random()"))
    assert [r.status_code for r in refused] == [404, 400, 400, 404, 404, 404, 404, 400]
    for response in refused:
        assert "Traceback" not in response.text
    after = await Photo.select(Photo.id, Photo.position, Photo.gallery_set).order_by(Photo.id).run()
    assert after == before
    assert other  # Ben's gallery is untouched too (its photo is in "before")


async def test_moving_between_sets_and_deleting_a_photo(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    await signed_in_owner(client, admin, clock)
    gallery, photos = await published_gallery(client, app, clock, ANNA, ["a.jpg", "b.jpg"])
    assert (await post(client, gallery, "sets", set_name="Portraits")).status_code == 303
    sets = (
        await GallerySet.select(GallerySet.id)
        .where(GallerySet.gallery == gallery)
        .order_by(GallerySet.position)
        .run()
    )
    moved = await post(client, gallery, f"photos/{photos[0]}/set", set_id=str(sets[1]["id"]))
    assert moved.status_code == 303
    row = await Photo.select(Photo.gallery_set).where(Photo.id == photos[0]).first().run()
    assert row == {"gallery_set": sets[1]["id"]}
    # A client has the photo on a list and as the cover; then staff delete it.
    path = await share(client, gallery)
    assert (await post(client, gallery, "cover", photo=str(photos[1]))).status_code == 303
    async with visitor(app) as browser:
        page = (await browser.get(path)).text
        list_id = re.search(r"/lists/(\d+)/send", page).group(1)  # type: ignore[union-attr]
        marked = await browser.post(
            f"{path}/lists/{list_id}/photos/{photos[1]}",
            data={"chosen": "1", "_csrf": csrf_of(page)},
        )
        assert marked.status_code == 303
        thumb = media_urls(page)[photos[1]]
        keys = (
            await Photo.select(Photo.original_key, Photo.thumb_key, Photo.preview_key)
            .where(Photo.id == photos[1])
            .first()
            .run()
        )
        assert keys
        deleted = await post(client, gallery, f"photos/{photos[1]}/delete")
        assert deleted.status_code == 303
        assert (await browser.get(thumb)).status_code == 404
        assert f'id="p{photos[1]}"' not in (await browser.get(path)).text
    store = app.state.store
    for key in keys.values():
        assert not [item async for item in store.list(key)]
    assert not await SelectionItem.exists().where(SelectionItem.photo == photos[1]).run()
    row = await Gallery.select(Gallery.cover_photo).where(Gallery.id == gallery).first().run()
    assert row == {"cover_photo": None}


async def test_switching_the_watermark_remakes_the_previews(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    await signed_in_owner(client, admin, clock)
    gallery, photos = await published_gallery(client, app, clock, ANNA, ["a.jpg", "b.jpg"])
    queued_before = await PhotoJob.count().where(PhotoJob.state == "queued").run()
    edit = (await client.get(f"/galleries/{gallery}/edit")).text
    assert 'name="watermark"' in edit
    saved = await client.post(
        f"/galleries/{gallery}/edit",
        data={"title": "Wedding", "watermark": "on", "_csrf": csrf_of(edit)},
    )
    assert saved.status_code == 303
    row = await Gallery.select(Gallery.watermark).where(Gallery.id == gallery).first().run()
    assert row == {"watermark": True}
    queued = await PhotoJob.select(PhotoJob.photo).where(PhotoJob.state == "queued").run()
    assert queued_before == 0 and sorted(item["photo"] for item in queued) == photos
    # The worker remakes them with the studio's name on the preview only.
    store = app.state.store
    keys = (
        await Photo.select(Photo.thumb_key, Photo.preview_key)
        .where(Photo.id == photos[0])
        .first()
        .run()
    )
    assert keys
    before = {name: await read(store, key) for name, key in keys.items()}
    assert await service.watermark_text(gallery_id=gallery, photo_id=photos[0]) == "© Studio Lumen"
    await derivatives.process_pending(
        store, app.state.settings.data_dir / "tmp", clock(), watermark=service.watermark_text
    )
    after = {name: await read(store, key) for name, key in keys.items()}
    assert after["thumb_key"] == before["thumb_key"]
    assert after["preview_key"] != before["preview_key"]


async def read(store: object, key: str) -> bytes:
    return b"".join([piece async for piece in store.get(key)])  # type: ignore[attr-defined]


async def test_gallery_page_shows_why_a_photo_failed_and_which_files_repeat(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    await signed_in_owner(client, admin, clock)
    gallery, photos = await published_gallery(client, app, clock, ANNA, ["a.jpg", "b.jpg"])
    await (
        Photo.update(
            {Photo.status: "failed", Photo.failure: "This file cannot be shown: <broken>."}
        )
        .where(Photo.id == photos[1])
        .run()
    )
    first = await Photo.select(Photo.sha256).where(Photo.id == photos[0]).first().run()
    assert first
    await Photo.update({Photo.sha256: first["sha256"]}).where(Photo.id == photos[1]).run()
    page = (await client.get(f"/galleries/{gallery}")).text
    assert "This file cannot be shown: &lt;broken&gt;." in page
    assert "the same file as a.jpg" in page
