"""Photo files reach staff browsers only through signed URLs that expire within five minutes."""

from __future__ import annotations

import re

import httpx
import pyvips
from litestar import Litestar

from appliance.galleries import derivatives
from tests.conftest import FakeClock
from tests.integration.flows import Admin
from tests.integration.test_uploads import api_upload, gallery_with_set, image_bytes


async def gallery_with_ready_photo(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, tmp_path: object
) -> tuple[int, str]:
    """A gallery with one processed photo; returns its id and the thumbnail URL on its page."""
    gallery, set_id = await gallery_with_set(client, admin, clock)
    done = await api_upload(client, gallery, set_id, "IMG_0042.jpg", image_bytes(".jpg", 900, 600))
    assert done.status_code == 201
    await derivatives.process_pending(app.state.store, app.state.settings.data_dir / "tmp", clock())
    page = await client.get(f"/galleries/{gallery}")
    match = re.search(r'<img src="(/media/staff/\d+/thumb\?e=\d+&amp;s=[0-9a-f]{64})"', page.text)
    assert match, page.text[-3000:]
    return gallery, match.group(1).replace("&amp;", "&")


async def test_thumbnail_url_on_the_page_serves_the_image(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, tmp_path: object
) -> None:
    """The gallery page's thumbnail URL answers with a JPEG, cacheable only privately."""
    _, url = await gallery_with_ready_photo(client, app, admin, clock, tmp_path)
    response = await client.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "private, max-age=300"
    image = pyvips.Image.new_from_buffer(response.content, "")
    assert max(image.width, image.height) == derivatives.THUMB_EDGE


async def test_expired_tampered_or_borrowed_urls_are_refused(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, tmp_path: object
) -> None:
    """A changed signature, variant or photo, or a URL older than five minutes: 403."""
    _, url = await gallery_with_ready_photo(client, app, admin, clock, tmp_path)
    path, _, query = url.partition("?")
    signature = query.split("s=")[1]
    forged = [
        url.replace(signature, ("0" if signature[0] != "0" else "1") + signature[1:]),
        url.replace("/thumb?", "/original?"),
        re.sub(r"/media/staff/(\d+)/", lambda m: f"/media/staff/{int(m.group(1)) + 1}/", url),
        url.replace("e=", "e=9"),
    ]
    for bad in forged:
        assert (await client.get(bad)).status_code == 403, bad
    clock.advance(minutes=5, seconds=2)
    expired = await client.get(url)
    assert expired.status_code == 403 and "expired" in expired.text
    assert (await client.get(f"{path}?e=1&s={'a' * 64}")).status_code == 403
    assert (await client.get(f"{path}?e=1")).status_code == 400


async def test_media_needs_the_staff_session_on_every_request(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, tmp_path: object
) -> None:
    """A valid URL copied into a browser without a staff session gets nothing."""
    _, url = await gallery_with_ready_photo(client, app, admin, clock, tmp_path)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("192.0.2.9", 1)),
        base_url="https://localhost",
    ) as stranger:
        response = await stranger.get(url)
        assert response.status_code == 303 and response.headers["location"] == "/login"


async def test_missing_file_answers_404_not_a_broken_200(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, tmp_path: object
) -> None:
    """When the object is gone from the store the signed URL answers 404 with a message."""
    from appliance.galleries.tables import Photo

    _, url = await gallery_with_ready_photo(client, app, admin, clock, tmp_path)
    row = await Photo.select(Photo.thumb_key).first().run()
    assert row is not None
    await app.state.store.delete(row["thumb_key"])
    response = await client.get(url)
    assert response.status_code == 404 and "missing from storage" in response.text
