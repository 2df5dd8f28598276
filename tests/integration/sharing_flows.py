"""Steps the share-link tests share: a published gallery with photos, a link, a visitor."""

from __future__ import annotations

import html
import re
import zlib

import httpx
from litestar import Litestar

from appliance.galleries import derivatives
from appliance.galleries.tables import GallerySet, Photo
from tests.conftest import FakeClock, make_client
from tests.integration.flows import csrf_of, submit
from tests.integration.test_clients import create
from tests.integration.test_galleries import new_gallery
from tests.integration.test_uploads import api_upload, image_bytes

VISITOR_ADDRESS = "198.51.100.20"


async def published_gallery(
    staff: httpx.AsyncClient,
    app: Litestar,
    clock: FakeClock,
    person: dict[str, str],
    names: list[str],
    *,
    title: str = "Wedding",
) -> tuple[int, list[int]]:
    """A published gallery of a new client with ready photos ``names``; the staff browser
    must be signed in. Returns the gallery id and the photo ids in upload order."""
    gallery = await new_gallery(staff, await create(staff, person), title=title)
    row = await GallerySet.select(GallerySet.id).where(GallerySet.gallery == gallery).first().run()
    assert row is not None
    for index, name in enumerate(names):
        # Different names make different pictures, so two galleries never hold the same bytes.
        data = image_bytes(".jpg", 600 + index * 8, 400 + zlib.crc32(name.encode()) % 200)
        done = await api_upload(staff, gallery, row["id"], name, data)
        assert done.status_code == 201, done.text
    await derivatives.process_pending(app.state.store, app.state.settings.data_dir / "tmp", clock())
    published = await submit(
        staff,
        f"/galleries/{gallery}",
        {"status": "published"},
        action=f"/galleries/{gallery}/status",
    )
    assert published.status_code == 303, published.text[-2000:]
    rows = await Photo.select(Photo.id).where(Photo.gallery == gallery).order_by(Photo.id).run()
    return gallery, [item["id"] for item in rows]


async def share(staff: httpx.AsyncClient, gallery: int, **form: str) -> str:
    """Create a link (web downloads and favourites on unless ``form`` says otherwise);
    returns its path, ``/s/<token>``."""
    fields = {"recipient": "Anna", "download_web": "on", "favourites": "on", **form}
    fields = {key: value for key, value in fields.items() if value}
    created = await submit(
        staff, f"/galleries/{gallery}/shares/new", fields, action=f"/galleries/{gallery}/shares"
    )
    assert created.status_code == 201, created.text[-3000:]
    match = re.search(
        r'id="share-url"[^>]*value="https?://[^/"]+(/s/[A-Za-z0-9_-]{43})"', created.text
    )
    assert match, created.text[-3000:]
    return match.group(1)


def visitor(app: Litestar) -> httpx.AsyncClient:
    """A fresh browser of a client, from an address other than the studio's."""
    return make_client(app, VISITOR_ADDRESS)


async def unlock(browser: httpx.AsyncClient, path: str, password: str) -> httpx.Response:
    page = await browser.get(path)
    return await browser.post(
        f"{path}/unlock", data={"password": password, "_csrf": csrf_of(page.text)}
    )


def media_urls(page: str, variant: str = "thumb") -> dict[int, str]:
    """Photo id to the ``variant`` URL handed out on a share page (in an attribute, or in the
    page's JSON, where "&" is written as a unicode escape)."""
    amp = r"(?:&amp;|&|\\u0026)"
    found = re.findall(rf"(/media/share/\d+/(\d+)/{variant}\?e=\d+{amp}s=[0-9a-f]{{64}})", page)
    return {int(photo): html.unescape(url.replace("\\u0026", "&")) for url, photo in found}


async def file_urls(browser: httpx.AsyncClient, path: str, variant: str) -> dict[int, str]:
    """Photo id to the ``variant`` URL the page's script gets from ``<path>/urls``."""
    answer = await browser.get(f"{path}/urls", headers={"Accept": "application/json"})
    assert answer.status_code == 200, answer.text
    photos = answer.json()["photos"]
    return {int(key): urls[variant] for key, urls in photos.items() if variant in urls}
