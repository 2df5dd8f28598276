"""Share links end to end against the real database and store: tokens, passwords, revocation,
permissions, the access log, favourites and the streamed ZIP."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import zipfile

import httpx
from litestar import Litestar

from appliance.galleries.tables import Photo, ShareEvent, ShareLink
from appliance.notify.tables import OutboxMessage
from tests.conftest import FakeClock
from tests.integration.flows import Admin, csrf_of
from tests.integration.sharing_flows import (
    file_urls,
    media_urls,
    published_gallery,
    share,
    unlock,
    visitor,
)
from tests.integration.test_clients import ANNA, BEN, signed_in_owner


async def test_token_is_stored_only_as_a_hash_and_opens_the_gallery(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """The page shows the link once; the database holds its SHA-256, never the token; the
    client's page under it lists the photos and sends no-referrer and noindex."""
    await signed_in_owner(client, admin, clock)
    gallery, photos = await published_gallery(client, app, clock, ANNA, ["a.jpg", "b.jpg"])
    path = await share(client, gallery)
    token = path.removeprefix("/s/")
    rows = await ShareLink.select().run()
    assert len(rows) == 1
    assert rows[0]["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(rows)
    async with visitor(app) as browser:
        page = await browser.get(path)
        assert page.status_code == 200, page.text[-2000:]
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "noindex" in page.headers["x-robots-tag"]
        assert sorted(media_urls(page.text)) == photos
        thumb = await browser.get(media_urls(page.text)[photos[0]])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"


async def test_unknown_malformed_or_tampered_tokens_get_a_clear_404(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    await signed_in_owner(client, admin, clock)
    gallery, _ = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    path = await share(client, gallery)
    flipped = path[:-1] + ("A" if path[-1] != "A" else "B")
    async with visitor(app) as browser:
        for bad in [flipped, path[:-1], path + "x", "/s/..%2F..%2Fetc", "/s/" + "a" * 5000]:
            response = await browser.get(bad)
            assert response.status_code == 404, bad
            assert "link does not exist" in response.text or "no page here" in response.text
            assert "Traceback" not in response.text


async def test_password_is_checked_by_post_and_wrong_ones_are_throttled_and_logged(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    await signed_in_owner(client, admin, clock)
    gallery, photos = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    path = await share(client, gallery, password="blue-harbour-7")
    async with visitor(app) as browser:
        locked = await browser.get(path)
        assert locked.status_code == 200 and 'name="password"' in locked.text
        assert not media_urls(locked.text)
        # A password in the query string counts for nothing.
        assert not media_urls((await browser.get(path + "?password=blue-harbour-7")).text)
        wrong = await unlock(browser, path, "red-harbour-7")
        assert wrong.status_code == 400 and "password is not right" in wrong.text
        answers = [(await unlock(browser, path, f"guess-{n}")).status_code for n in range(12)]
        assert 429 in answers, answers
        refused = await unlock(browser, path, "blue-harbour-7")
        assert refused.status_code == 429 and "Retry-After" in refused.headers
        clock.advance(minutes=16)
        opened = await unlock(browser, path, "blue-harbour-7")
        assert opened.status_code == 303
        page = await browser.get(path)
        assert sorted(media_urls(page.text)) == photos
    kinds = [row["kind"] for row in await ShareEvent.select(ShareEvent.kind).run()]
    assert kinds.count("password_failed") >= 3 and "unlocked" in kinds


async def test_file_urls_need_the_browser_that_opened_the_link(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """A file URL copied out of an unlocked browser does not open in another one."""
    await signed_in_owner(client, admin, clock)
    gallery, photos = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    path = await share(client, gallery, password="blue-harbour-7")
    async with visitor(app) as browser, visitor(app) as stranger:
        assert (await unlock(browser, path, "blue-harbour-7")).status_code == 303
        url = media_urls((await browser.get(path)).text)[photos[0]]
        assert (await browser.get(url)).status_code == 200
        borrowed = await stranger.get(url)
        assert borrowed.status_code == 403 and "Open the gallery" in borrowed.text
        await stranger.get(path)  # opening the link without the password is not enough
        assert (await stranger.get(url)).status_code == 403


async def test_revoking_stops_the_page_every_file_url_and_the_zip(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    await signed_in_owner(client, admin, clock)
    gallery, photos = await published_gallery(client, app, clock, ANNA, ["a.jpg", "b.jpg"])
    path = await share(client, gallery, download_original="on")
    async with visitor(app) as browser:
        page = (await browser.get(path)).text
        urls = [
            *media_urls(page, "thumb").values(),
            *(await file_urls(browser, path, "preview")).values(),
            *(await file_urls(browser, path, "original")).values(),
        ]
        assert len(urls) >= 3 * len(photos)
        for url in urls:
            assert (await browser.get(url)).status_code == 200, url
        link = (await ShareLink.select(ShareLink.id).first().run()) or {}
        revoked = await client.post(
            f"/galleries/{gallery}/shares/{link['id']}/revoke",
            data={"_csrf": csrf_of((await client.get(f"/galleries/{gallery}")).text)},
        )
        assert revoked.status_code == 303
        gone = await browser.get(path)
        assert gone.status_code == 404 and "withdrawn" in gone.text
        for url in urls:
            assert (await browser.get(url)).status_code == 404, url
        assert (await browser.get(f"{path}/download?size=web")).status_code == 404
    staff_page = (await client.get(f"/galleries/{gallery}")).text
    assert "revoked" in staff_page


async def test_expiry_of_the_link_and_unpublishing_the_gallery_close_it(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    await signed_in_owner(client, admin, clock)
    gallery, _ = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    tomorrow = (clock() + dt.timedelta(days=1)).date().isoformat()
    path = await share(client, gallery, expires_on=tomorrow)
    async with visitor(app) as browser:
        assert (await browser.get(path)).status_code == 200
        clock.advance(days=2)
        expired = await browser.get(path)
        assert expired.status_code == 404 and "expired" in expired.text
    await signed_in_owner(client, admin, clock)  # two days on, the staff session has ended
    path = await share(client, gallery)
    draft = await client.post(
        f"/galleries/{gallery}/status",
        data={
            "status": "draft",
            "_csrf": csrf_of((await client.get(f"/galleries/{gallery}")).text),
        },
    )
    assert draft.status_code == 303
    async with visitor(app) as browser:
        hidden = await browser.get(path)
        assert hidden.status_code == 404 and "not available" in hidden.text


async def test_permissions_and_download_pin(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """Without the permission an original is refused even with a valid signed URL; with a PIN,
    nothing downloads before the PIN is entered."""
    await signed_in_owner(client, admin, clock)
    gallery, photos = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    view_only = await share(client, gallery, download_web="", favourites="")
    async with visitor(app) as browser:
        page = (await browser.get(view_only)).text
        assert "/download?size" not in page
        assert not await file_urls(browser, view_only, "original")
        assert not await file_urls(browser, view_only, "download")
        preview = (await file_urls(browser, view_only, "preview"))[photos[0]]
        assert (await browser.get(preview)).status_code == 200
        assert (await browser.get(preview + "&dl=1")).status_code == 403
        assert (await browser.get(f"{view_only}/download?size=web")).status_code == 403
        assert (await browser.get(f"{view_only}/download?size=original")).status_code == 403
        assert (await browser.get(f"{view_only}/download?size=../../x")).status_code == 404
    with_pin = await share(client, gallery, pin="4711", download_original="on")
    async with visitor(app) as browser:
        page = (await browser.get(with_pin)).text
        assert 'name="pin"' in page
        original = (await file_urls(browser, with_pin, "original"))[photos[0]]
        assert (await browser.get(original)).status_code == 403
        assert (await browser.get(f"{with_pin}/download?size=original")).status_code == 403
        wrong = await browser.post(f"{with_pin}/pin", data={"pin": "0000", "_csrf": csrf_of(page)})
        assert wrong.status_code == 400 and "PIN is not right" in wrong.text
        right = await browser.post(f"{with_pin}/pin", data={"pin": "4711", "_csrf": csrf_of(page)})
        assert right.status_code == 303
        got = await browser.get(original)
        assert got.status_code == 200 and got.headers["content-disposition"].startswith(
            "attachment"
        )
        stored = await Photo.select(Photo.sha256).where(Photo.id == photos[0]).first().run()
        assert stored and hashlib.sha256(got.content).hexdigest() == stored["sha256"]


async def test_favourites_lists_and_sending_reach_the_photographer(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    await signed_in_owner(client, admin, clock)
    names = ["DSC_0001.jpg", "DSC_0002.jpg", "DSC_0003.jpg"]
    gallery, photos = await published_gallery(client, app, clock, ANNA, names)
    path = await share(client, gallery)
    async with visitor(app) as browser:
        page = (await browser.get(path)).text
        token = csrf_of(page)
        list_id = int(re.search(r"/lists/(\d+)/send", page).group(1))  # type: ignore[union-attr]
        for photo in photos[:2]:
            marked = await browser.post(
                f"{path}/lists/{list_id}/photos/{photo}",
                data={"chosen": "1"},
                headers={"X-CSRF-Token": token, "Accept": "application/json"},
            )
            assert marked.status_code == 200 and marked.json()["chosen"] is True
        assert marked.json()["count"] == 2
        again = await browser.post(
            f"{path}/lists/{list_id}/photos/{photos[0]}",
            data={"chosen": "1"},
            headers={"X-CSRF-Token": token, "Accept": "application/json"},
        )
        assert again.json() == {"chosen": True, "count": 2}  # idempotent
        forged = await browser.post(
            f"{path}/lists/{list_id}/photos/{photos[0]}", data={"chosen": "0"}
        )
        assert forged.status_code == 403  # no CSRF token
        album = await browser.post(f"{path}/lists", data={"name": "For the album", "_csrf": token})
        assert album.status_code == 303
        duplicate = await browser.post(
            f"{path}/lists", data={"name": "for the ALBUM", "_csrf": token}
        )
        assert duplicate.status_code == 400 and "already have a list" in duplicate.text
        sent = await browser.post(
            f"{path}/lists/{list_id}/send", data={"note": "Two for the wall", "_csrf": token}
        )
        assert sent.status_code == 303 and "sent=1" in sent.headers["location"]
    staff_page = (await client.get(f"/galleries/{gallery}")).text
    assert "Selections received" in staff_page and "Two for the wall" in staff_page
    assert "DSC_0001.jpg, DSC_0002.jpg" in staff_page and "DSC_0003.jpg, " not in staff_page
    link = await ShareLink.select(ShareLink.id).first().run()
    log = (await client.get(f"/galleries/{gallery}/shares/{link['id']}")).text  # type: ignore[index]
    assert "sent a selection" in log and "opened the gallery" in log
    home = (await client.get("/")).text
    assert "Anna sent “Favourites”" in home and "(2 photos)" in home
    mails = await OutboxMessage.select().where(OutboxMessage.template == "selection_received").run()
    assert [m["recipient"] for m in mails] == ["owner@lumen.example"]  # the photographer
    assert mails[0]["subject"] == 'Anna sent "Favourites" (2 photos) for Wedding'
    assert "Two for the wall" in mails[0]["body_text"]
    assert f"/galleries/{gallery}#selections" in mails[0]["body_html"]
    found = re.search(r'href="/clients/(\d+)"', (await client.get(f"/galleries/{gallery}")).text)
    assert found
    person = (await client.get(f"/clients/{found.group(1)}")).text
    assert "shared with" in person and "Anna</a>: active" in person


async def test_zip_streams_every_photo_with_safe_unique_names(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    await signed_in_owner(client, admin, clock)
    names = ["same.jpg", "same.jpg", "..hidden.jpg"]
    gallery, _ = await published_gallery(client, app, clock, ANNA, names)
    path = await share(client, gallery, download_original="on")
    async with visitor(app) as browser:
        direct = await browser.get(f"{path}/download?size=original")
        assert direct.status_code == 403 and "Open the gallery" in direct.text  # page first
        assert (await browser.get(path)).status_code == 200
        response = await browser.get(f"{path}/download?size=original")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(response.content))
        assert archive.testzip() is None
        entries = archive.namelist()
        assert len(entries) == 3 and len(set(entries)) == 3
        for entry in entries:
            assert not entry.startswith(("/", ".")) and ".." not in entry.split("/")
        stored = {
            row["sha256"]
            for row in await Photo.select(Photo.sha256).where(Photo.gallery == gallery).run()
        }
        assert {hashlib.sha256(archive.read(e)).hexdigest() for e in entries} == stored
        web = zipfile.ZipFile(io.BytesIO((await browser.get(f"{path}/download?size=web")).content))
        assert all(name.endswith(".jpg") for name in web.namelist()) and len(web.namelist()) == 3


async def test_nothing_through_bens_link_returns_annas_photos(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """Ben's link, however its URLs are bent, never yields a byte of Anna's gallery."""
    await signed_in_owner(client, admin, clock)
    anna_gallery, anna_photos = await published_gallery(client, app, clock, ANNA, ["anna.jpg"])
    ben_gallery, ben_photos = await published_gallery(
        client, app, clock, BEN, ["ben.jpg"], title="Portraits"
    )
    ben_path = await share(client, ben_gallery, recipient="Ben", download_original="on")
    await share(client, anna_gallery)
    anna_hashes = {
        row["sha256"]
        for row in await Photo.select(Photo.sha256).where(Photo.gallery == anna_gallery).run()
    }
    async with visitor(app) as browser:
        page = (await browser.get(ben_path)).text
        assert "anna.jpg" not in page and sorted(media_urls(page)) == ben_photos
        token = csrf_of(page)
        ben_url = (await file_urls(browser, ben_path, "original"))[ben_photos[0]]
        link_id = int(re.search(r"/media/share/(\d+)/", ben_url).group(1))  # type: ignore[union-attr]
        # A correctly signed URL for Anna's photo under Ben's link (as if the key leaked).
        from appliance.galleries import media

        for variant in ("thumb", "preview", "original"):
            signed = media.media_url(
                app.state.secret_key,
                scope=media.share_scope(link_id),
                photo_id=anna_photos[0],
                variant=variant,
                now=clock(),
            )
            assert (await browser.get(signed)).status_code == 404
        swapped = ben_url.replace(f"/{ben_photos[0]}/", f"/{anna_photos[0]}/")
        assert (await browser.get(swapped)).status_code == 403
        list_id = int(re.search(r"/lists/(\d+)/send", page).group(1))  # type: ignore[union-attr]
        stolen = await browser.post(
            f"{ben_path}/lists/{list_id}/photos/{anna_photos[0]}",
            data={"chosen": "1", "_csrf": token},
        )
        assert stolen.status_code == 404
        archive = zipfile.ZipFile(
            io.BytesIO((await browser.get(f"{ben_path}/download?size=original")).content)
        )
        got = {hashlib.sha256(archive.read(name)).hexdigest() for name in archive.namelist()}
        assert got and not got & anna_hashes


async def test_visits_are_purged_once_their_cookie_has_expired(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    from appliance.galleries import sharing
    from appliance.galleries.tables import ShareVisit

    await signed_in_owner(client, admin, clock)
    gallery, _ = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    path = await share(client, gallery)
    async with visitor(app) as browser:
        assert (await browser.get(path)).status_code == 200
    assert await ShareVisit.count().run() == 1
    assert await sharing.purge_visits(clock() + dt.timedelta(days=30)) == 0
    assert await sharing.purge_visits(clock() + dt.timedelta(days=32)) == 1
    assert await ShareVisit.count().run() == 0


async def test_cached_page_follows_every_change_and_carries_each_browsers_own_token(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """The client's page is cached, but a favourite, a move or a new photo shows at once, and
    no browser ever gets another browser's CSRF token."""
    await signed_in_owner(client, admin, clock)
    gallery, photos = await published_gallery(client, app, clock, ANNA, ["a.jpg", "b.jpg"])
    path = await share(client, gallery)
    async with visitor(app) as first, visitor(app) as second:
        page_one = (await first.get(path)).text
        page_two = (await second.get(path)).text
        assert csrf_of(page_one) != csrf_of(page_two)
        assert page_one.replace(csrf_of(page_one), "") == page_two.replace(csrf_of(page_two), "")
        list_id = re.search(r"/lists/(\d+)/send", page_one).group(1)  # type: ignore[union-attr]
        marked = await first.post(
            f"{path}/lists/{list_id}/photos/{photos[1]}",
            data={"chosen": "1", "_csrf": csrf_of(page_one)},
        )
        assert marked.status_code == 303
        assert f'id="p{photos[1]}" class="tile chosen"' in (await second.get(path)).text
        moved = await client.post(
            f"/galleries/{gallery}/photos/{photos[1]}/move",
            data={
                "direction": "up",
                "_csrf": csrf_of((await client.get(f"/galleries/{gallery}")).text),
            },
        )
        assert moved.status_code == 303
        order = re.findall(r'<li id="p(\d+)"', (await second.get(path)).text)
        assert [int(found) for found in order] == [photos[1], photos[0]]
        await Photo.update({Photo.status: "processing"}).where(Photo.id == photos[0]).run()
        assert f'id="p{photos[0]}"' not in (await first.get(path)).text


async def test_a_gallery_with_photos_sets_and_lists_can_still_be_deleted_in_the_database(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """The version triggers do not get in the way of cascades (erasure will rely on them)."""
    from appliance.galleries.tables import Gallery, SelectionItem

    await signed_in_owner(client, admin, clock)
    gallery, photos = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    path = await share(client, gallery)
    async with visitor(app) as browser:
        page = (await browser.get(path)).text
        list_id = re.search(r"/lists/(\d+)/send", page).group(1)  # type: ignore[union-attr]
        await browser.post(
            f"{path}/lists/{list_id}/photos/{photos[0]}",
            data={"chosen": "1", "_csrf": csrf_of(page)},
        )
    assert await SelectionItem.count().run() == 1
    await Gallery.delete().where(Gallery.id == gallery).run()
    assert await Photo.count().run() == 0 and await SelectionItem.count().run() == 0
    assert await ShareLink.count().run() == 0


async def test_a_large_gallery_comes_in_pages_in_set_order_with_the_cover_first_in_its_set(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """130 photos in two sets: the page holds the first 60, the script's /tiles the rest in
    the same order, /urls the whole order; without the script, ?page=2 shows the next 60."""
    from appliance.galleries.tables import GallerySet

    await signed_in_owner(client, admin, clock)
    gallery, first = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    token = csrf_of((await client.get(f"/galleries/{gallery}")).text)
    added = await client.post(
        f"/galleries/{gallery}/sets", data={"set_name": "Party", "_csrf": token}
    )
    assert added.status_code == 303
    sets = (
        await GallerySet.select(GallerySet.id)
        .where(GallerySet.gallery == gallery)
        .order_by(GallerySet.position)
        .run()
    )
    template = await Photo.select().where(Photo.id == first[0]).first().run()
    assert template
    for number in range(1, 130):
        row = {key: value for key, value in template.items() if key != "id"}
        row.update(
            gallery_set=sets[0]["id"] if number < 70 else sets[1]["id"],
            filename=f"IMG_{number:04d}.jpg",
            original_key=f"{template['original_key']}-{number}",
            position=number,
        )
        await Photo.insert(Photo(**row)).run()
    ordered = (
        await Photo.select(Photo.id)
        .where(Photo.gallery == gallery)
        .order_by(Photo.gallery_set)
        .order_by(Photo.position)
        .order_by(Photo.id)
        .run()
    )
    expected = [row["id"] for row in ordered]
    cover = expected[100]  # in the second set
    token = csrf_of((await client.get(f"/galleries/{gallery}")).text)
    assert (
        await client.post(f"/galleries/{gallery}/cover", data={"photo": str(cover), "_csrf": token})
    ).status_code == 303
    expected.remove(cover)
    expected.insert(70, cover)  # first of its set

    path = await share(client, gallery)
    async with visitor(app) as browser:
        page = (await browser.get(path)).text
        on_page = [int(found) for found in re.findall(r'<li id="p(\d+)"', page)]
        assert on_page == expected[:60]
        assert "More photos (70 more)" in page and f"{path}?page=2" in page
        assert f"/media/share/1/{cover}/preview" in page  # the cover, large, at the top
        tiles = (await browser.get(f"{path}/tiles?page=2")).json()
        assert [tile["id"] for tile in tiles["tiles"]] == expected[60:120]
        assert tiles["next"] == 3 and set(tiles["sets"]) == {str(s["id"]) for s in sets}
        assert all("/thumb?" in tile["thumb"] for tile in tiles["tiles"])
        last = (await browser.get(f"{path}/tiles?page=3")).json()
        assert [tile["id"] for tile in last["tiles"]] == expected[120:] and last["next"] is None
        everything = (await browser.get(f"{path}/urls")).json()
        assert everything["order"] == expected and len(everything["names"]) == 130
        second = (await browser.get(f"{path}?page=2")).text
        assert [int(found) for found in re.findall(r'<li id="p(\d+)"', second)] == expected[60:120]
        for bad in ("page=0", "page=-1", "page=abc", "page=99999999999"):
            assert (await browser.get(f"{path}/tiles?{bad}")).status_code == 400, bad
        assert (await browser.get(f"{path}/tiles?page=50")).json()["tiles"] == []


async def test_hostile_values_get_clear_answers_never_a_server_error(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """Non-ASCII signatures and CSRF tokens, ids past what the database holds, a year 9999
    expiry, a list name that looks like the page's token placeholder."""
    await signed_in_owner(client, admin, clock)
    gallery, photos = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    path = await share(client, gallery)
    staff_token = csrf_of((await client.get(f"/galleries/{gallery}/shares/new")).text)
    far = await client.post(
        f"/galleries/{gallery}/shares",
        data={"recipient": "X", "expires_on": "9999-12-31", "_csrf": staff_token},
    )
    assert far.status_code == 400 and "Choose a date before" in far.text
    for url in (f"/galleries/{2**40}/shares/new", f"/galleries/{gallery}/shares/{2**40}"):
        answer = await client.get(url)
        assert answer.status_code in (400, 404) and "Traceback" not in answer.text, url
    async with visitor(app) as browser:
        page = (await browser.get(path)).text
        token = csrf_of(page)
        thumb = media_urls(page)[photos[0]]
        signature = thumb.split("s=")[1]
        odd = await browser.get(thumb.replace(signature, "\u00e9" * 64))
        assert odd.status_code in (400, 403)
        for bad in ("\u00e9", "x" * 128, token[:-1] + ("0" if token[-1] != "0" else "1")):
            refused = await browser.post(f"{path}/lists", data={"name": "Prints", "_csrf": bad})
            assert refused.status_code == 403, bad
        list_id = re.search(r"/lists/(\d+)/send", page).group(1)  # type: ignore[union-attr]
        huge = await browser.post(
            f"{path}/lists/{list_id}/photos/{2**31}", data={"chosen": "1", "_csrf": token}
        )
        assert huge.status_code in (400, 404) and "Traceback" not in huge.text
        named = await browser.post(f"{path}/lists", data={"name": "<csrf-token>", "_csrf": token})
        assert named.status_code == 303
        shown = (await browser.get(named.headers["location"])).text
        assert "&lt;csrf-token&gt;" in shown and "<csrf-token>" not in shown


async def test_opening_a_link_without_cookies_again_and_again_stays_bounded(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """Each cookieless opening makes a visit, but the access log says "opened" once an hour
    per address, forms never make visits, and the link keeps at most its newest visits."""
    from appliance.galleries import sharing
    from appliance.galleries.tables import ShareVisit

    await signed_in_owner(client, admin, clock)
    gallery, _ = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    path = await share(client, gallery)
    for _ in range(5):
        async with visitor(app) as browser:
            assert (await browser.get(path)).status_code == 200
    opened = await ShareEvent.count().where(ShareEvent.kind == "opened").run()
    assert opened == 1
    async with visitor(app) as browser:
        token = csrf_of((await client.get(f"/galleries/{gallery}")).text)
        browser.cookies.set("fs_csrf", "x")  # a form sent by a browser that never opened it
        posted = await browser.post(f"{path}/unlock", data={"password": "x", "_csrf": token})
        assert posted.status_code == 403
    visits = await ShareVisit.count().run()
    assert visits == 5
    original, sharing.MAX_VISITS_PER_LINK = sharing.MAX_VISITS_PER_LINK, 3
    try:
        async with visitor(app) as browser:
            assert (await browser.get(path)).status_code == 200
        assert await ShareVisit.count().run() == 3
    finally:
        sharing.MAX_VISITS_PER_LINK = original


async def test_a_link_runs_at_most_two_zips_at_once(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """A third "download all" while two run is refused with Retry-After; the slot comes back
    when a download ends."""
    await signed_in_owner(client, admin, clock)
    gallery, _ = await published_gallery(client, app, clock, ANNA, ["a.jpg"])
    path = await share(client, gallery)
    link = await ShareLink.select(ShareLink.id).first().run()
    assert link
    slots = app.state.zip_slots
    async with visitor(app) as browser:
        assert (await browser.get(path)).status_code == 200
        slots[link["id"]] = 2  # two downloads of this link under way
        try:
            busy = await browser.get(f"{path}/download?size=web")
            assert busy.status_code == 429 and "Retry-After" in busy.headers
        finally:
            del slots[link["id"]]
        done = await browser.get(f"{path}/download?size=web")
        assert done.status_code == 200 and zipfile.ZipFile(io.BytesIO(done.content)).namelist()
    assert link["id"] not in slots  # given back when the archive ended
