"""Resumable photo uploads through the API: chunks, resume, checks, and nothing left behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pyvips
from litestar import Litestar

from appliance.audit.service import Actor, list_entries
from appliance.config import Settings, UploadSettings
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.galleries import derivatives, uploads
from appliance.galleries.tables import GallerySet, Photo, PhotoJob, PhotoUpload
from appliance.storage.base import ObjectStore
from tests.conftest import FakeClock, S3Server
from tests.integration.flows import Admin, csrf_of
from tests.integration.test_clients import ANNA, create, signed_in_owner
from tests.integration.test_galleries import new_gallery

OWNER = Actor(id=1, name="owner")


def image_bytes(suffix: str, width: int = 640, height: int = 480) -> bytes:
    """A real image of the given type, made with pyvips (a colour gradient, not blank)."""
    image = (
        pyvips.Image.xyz(width, height)[0]
        .cast("uchar")
        .bandjoin(
            [
                pyvips.Image.xyz(width, height)[1].cast("uchar"),
                (pyvips.Image.black(width, height) + 90).cast("uchar"),
            ]
        )
    )
    return bytes(image.write_to_buffer(suffix))


async def nothing_stored(store: ObjectStore) -> bool:
    """No object and no open multipart write anywhere in the store."""
    objects = [info.key async for info in store.list("")]
    writes = [info.key async for info in store.list_multipart("")]
    return objects == [] and writes == []


async def make_previews(app: Litestar, clock: FakeClock) -> int:
    """Run the derivative jobs that are due, as the worker does."""
    return await derivatives.process_pending(
        app.state.store, app.state.settings.data_dir / "tmp", clock()
    )


async def gallery_with_set(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> tuple[int, int]:
    await signed_in_owner(client, admin, clock)
    gallery = await new_gallery(client, await create(client, ANNA))
    row = await GallerySet.select(GallerySet.id).where(GallerySet.gallery == gallery).first().run()
    assert row is not None
    return gallery, row["id"]


async def api_upload(
    client: httpx.AsyncClient, gallery: int, set_id: int, name: str, data: bytes
) -> httpx.Response:
    """Start, send every chunk with its checksum, complete; returns the completion answer."""
    token = csrf_of((await client.get(f"/galleries/{gallery}")).text)
    headers = {"X-CSRF-Token": token}
    started = await client.post(
        f"/api/v1/galleries/{gallery}/uploads",
        headers=headers,
        json={"filename": name, "size": len(data), "set_id": set_id},
    )
    if started.status_code != 201:
        return started
    state = started.json()
    size = state["chunk_size"]
    for index in range(state["chunks"]):
        piece = data[index * size : (index + 1) * size]
        sent = await client.put(
            f"/api/v1/galleries/{gallery}/uploads/{state['token']}/chunks/{index}",
            content=piece,
            headers={
                **headers,
                "X-Chunk-SHA256": hashlib.sha256(piece).hexdigest(),
                "Content-Type": "application/octet-stream",
            },
        )
        assert sent.status_code == 200, sent.text
    return await client.post(
        f"/api/v1/galleries/{gallery}/uploads/{state['token']}/complete", headers=headers
    )


async def sent_in_one_chunk(
    store: ObjectStore, gallery: int, set_id: int, name: str, data: bytes, clock: FakeClock
) -> uploads.UploadState:
    """An upload started through the service with all of ``data`` sent as its chunk 0."""
    state = await uploads.start_upload(
        gallery,
        set_id,
        filename=name,
        size=len(data),
        rules=UploadSettings(),
        store=store,
        actor=OWNER,
        now=clock(),
    )

    async def once() -> AsyncIterator[bytes]:
        yield data

    await uploads.receive_chunk(
        state.token, gallery, 0, once(), sha256=hashlib.sha256(data).hexdigest(), store=store
    )
    return state


async def finish(
    store: ObjectStore, gallery: int, token: str, clock: FakeClock
) -> uploads.PhotoRecord:
    """Complete an upload through the service, as the owner."""
    return await uploads.complete_upload(
        token, gallery, store=store, rules=UploadSettings(), actor=OWNER, address="x", now=clock()
    )


@pytest.mark.parametrize(
    "suffix,content_type",
    [
        (".jpg", "image/jpeg"),
        (".png", "image/png"),
        (".tif", "image/tiff"),
        (".webp", "image/webp"),
    ],
)
async def test_upload_stores_the_original_with_its_checksum(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    suffix: str,
    content_type: str,
) -> None:
    """Each supported type arrives whole: type sniffed, size and dimensions recorded at once,
    the SHA-256 by the worker when it reads the file for the previews."""
    gallery, set_id = await gallery_with_set(client, admin, clock)
    data = image_bytes(suffix)
    done = await api_upload(client, gallery, set_id, f"IMG_0001{suffix}", data)
    assert done.status_code == 201, done.text
    photo = done.json()
    assert (photo["content_type"], photo["size"], photo["width"], photo["height"]) == (
        content_type,
        len(data),
        640,
        480,
    )
    assert photo["status"] == "processing" and "sha256" not in photo
    row = await Photo.select().where(Photo.id == photo["id"]).first().run()
    assert row is not None and row["sha256"] == ""
    stored = b"".join([c async for c in app.state.store.get(row["original_key"])])
    assert stored == data
    assert [i.key async for i in app.state.store.list("")] == [row["original_key"]]
    assert [i async for i in app.state.store.list_multipart("")] == []
    assert await PhotoUpload.count().run() == 0
    assert (await list_entries())[0].action == "photo.upload"
    assert await make_previews(app, clock) == 1
    row = await Photo.select().where(Photo.id == photo["id"]).first().run()
    assert row is not None and row["status"] == "ready"
    assert row["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "name,data,message",
    [
        ("notes.jpg", b"just some text, not an image at all\n" * 10, "not a JPEG, PNG"),
        ("fake.png", b"\x89PNG\r\n\x1a\n" + os.urandom(3000), "cannot be read as an image"),
        ("fake.webp", b"RIFF\x00\x10\x00\x00WEBPVP8Z" + os.urandom(100), "cannot be read"),
        ("fake.tif", b"II*\x00" + os.urandom(3000), "cannot be read as an image"),
    ],
)
async def test_bad_files_are_refused_and_leave_nothing(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    name: str,
    data: bytes,
    message: str,
) -> None:
    """Non-images and files whose header is not an image's: 400 with the file's name, no
    object, no open write, no row."""
    gallery, set_id = await gallery_with_set(client, admin, clock)
    done = await api_upload(client, gallery, set_id, name, data)
    assert done.status_code == 400, done.text
    assert done.json()["error"].startswith(f"{name}: ") and message in done.json()["error"]
    assert await Photo.count().run() == 0
    assert await PhotoUpload.count().run() == 0
    assert await nothing_stored(app.state.store)


async def test_truncated_image_becomes_a_failed_photo_with_the_reason(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """A file cut short after an intact header passes the upload's header check; the worker's
    first full decode fails it at once (no retries), with the decoder's reason for staff."""
    gallery, set_id = await gallery_with_set(client, admin, clock)
    done = await api_upload(
        client, gallery, set_id, "cut.jpg", image_bytes(".jpg", 1200, 900)[:5000]
    )
    assert done.status_code == 201, done.text
    assert await make_previews(app, clock) == 1
    row = await Photo.select().where(Photo.id == done.json()["id"]).first().run()
    assert row is not None and row["status"] == "failed"
    assert "damaged or incomplete" in row["failure"] and "JPEG" in row["failure"]
    assert "/" not in row["failure"].split("(")[1]  # no scratch path in the reason
    job = await PhotoJob.select().where(PhotoJob.photo == row["id"]).first().run()
    assert job is not None and job["state"] == "failed" and job["attempts"] == 1
    assert row["sha256"]  # read whole all the same


@pytest.mark.parametrize(
    "options",
    [{}, {"lossless": True}, {"Q": 50, "alpha_q": 50}],
    ids=["lossy", "lossless", "alpha"],
)
def test_webp_dimensions_come_from_its_first_bytes(options: dict[str, object]) -> None:
    """WebP headers of each kind (VP8, VP8L, VP8X) give the dimensions libvips reads."""
    image = pyvips.Image.new_from_buffer(image_bytes(".png", 333, 221), "")
    if "alpha_q" in options:
        image = image.bandjoin(255)
    data = bytes(image.write_to_buffer(".webp", **options))
    assert uploads._webp_size(data[:30]) == (333, 221)


@pytest.mark.parametrize(
    "name,size,message",
    [
        ("empty.jpg", 0, "is empty"),
        ("../../etc/passwd", 10, "cannot contain"),
        ("a\\b.jpg", 10, "cannot contain"),
        ("bell\x07.jpg", 10, "control characters"),
        ("big.tif", 501 * 1024 * 1024, "larger than 500 MB"),
    ],
)
async def test_bad_starts_are_refused(
    client: httpx.AsyncClient,
    admin: Admin,
    clock: FakeClock,
    name: str,
    size: int,
    message: str,
) -> None:
    """Empty files, names with path separators or control characters, over-large files: 400."""
    gallery, set_id = await gallery_with_set(client, admin, clock)
    token = csrf_of((await client.get(f"/galleries/{gallery}")).text)
    started = await client.post(
        f"/api/v1/galleries/{gallery}/uploads",
        headers={"X-CSRF-Token": token},
        json={"filename": name, "size": size, "set_id": set_id},
    )
    assert started.status_code == 400 and message in started.json()["error"]
    assert await PhotoUpload.count().run() == 0


async def test_chunks_arrive_in_any_order_and_resume_after_a_break(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    settings: Settings,
    tmp_path: Path,
) -> None:
    """Out-of-order and re-sent chunks assemble correctly; the state says what is missing."""
    gallery, set_id = await gallery_with_set(client, admin, clock)
    rules = UploadSettings(chunk_mb=1)
    data = image_bytes(".tif", 1500, 1000)  # about 4.5 MB: five chunks of 1 MB
    store = app.state.store
    state = await uploads.start_upload(
        gallery,
        set_id,
        filename="scan.tif",
        size=len(data),
        rules=rules,
        store=store,
        actor=OWNER,
        now=clock(),
    )
    assert state.chunks == 5

    async def send(index: int, piece: bytes | None = None) -> uploads.UploadState:
        piece = (
            piece
            if piece is not None
            else data[index * state.chunk_size : (index + 1) * state.chunk_size]
        )

        async def body():  # type: ignore[no-untyped-def]
            yield piece

        return await uploads.receive_chunk(
            state.token,
            gallery,
            index,
            body(),
            sha256=hashlib.sha256(piece).hexdigest(),
            store=store,
        )

    # Each chunk's answer lists every chunk that has arrived, itself included.
    assert (await send(3)).received == [3]
    assert (await send(0)).received == [0, 3]
    assert (await send(0)).received == [0, 3]  # a resend after a dropped answer: counted once
    with pytest.raises(Conflict, match="Chunks still missing: 1, 2, 4"):
        await uploads.complete_upload(
            state.token,
            gallery,
            store=store,
            rules=rules,
            actor=OWNER,
            address="192.0.2.1",
            now=clock(),
        )
    # "The laptop was closed": a new request asks what arrived and sends only the rest.
    resumed = await uploads.upload_state(state.token, gallery)
    assert resumed.received == [0, 3]
    for index in (4, 1, 2):
        await send(index)
    photo = await uploads.complete_upload(
        state.token,
        gallery,
        store=store,
        rules=rules,
        actor=OWNER,
        address="192.0.2.1",
        now=clock(),
    )
    row = await Photo.select(Photo.original_key).where(Photo.id == photo.id).first().run()
    assert row is not None
    assert b"".join([c async for c in store.get(row["original_key"])]) == data
    assert [i async for i in store.list_multipart("")] == []


async def test_damaged_or_wrong_sized_chunks_are_discarded(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """A chunk with a wrong checksum, length or index is refused and not kept."""
    gallery, set_id = await gallery_with_set(client, admin, clock)
    data = image_bytes(".jpg")
    store = app.state.store
    state = await uploads.start_upload(
        gallery,
        set_id,
        filename="a.jpg",
        size=len(data),
        rules=UploadSettings(),
        store=store,
        actor=OWNER,
        now=clock(),
    )

    async def once(piece: bytes):  # type: ignore[no-untyped-def]
        yield piece

    with pytest.raises(InvalidInput, match="damaged"):
        await uploads.receive_chunk(
            state.token, gallery, 0, once(data), sha256="0" * 64, store=store
        )
    with pytest.raises(InvalidInput, match="were expected"):
        await uploads.receive_chunk(
            state.token,
            gallery,
            0,
            once(data[:-1]),
            sha256=hashlib.sha256(data[:-1]).hexdigest(),
            store=store,
        )
    with pytest.raises(InvalidInput, match="longer than"):
        await uploads.receive_chunk(
            state.token,
            gallery,
            0,
            once(data + b"x"),
            sha256=hashlib.sha256(data + b"x").hexdigest(),
            store=store,
        )
    with pytest.raises(InvalidInput, match="outside this file"):
        await uploads.receive_chunk(
            state.token,
            gallery,
            7,
            once(data),
            sha256=hashlib.sha256(data).hexdigest(),
            store=store,
        )
    assert (await uploads.upload_state(state.token, gallery)).received == []
    with pytest.raises(InvalidInput, match="X-Chunk-SHA256"):
        await uploads.receive_chunk(
            state.token, gallery, 0, once(data), sha256="not-a-checksum", store=store
        )
    assert [i.key async for i in store.list("")] == []


async def test_pixel_bound_and_duplicates(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, tmp_path: Path
) -> None:
    """An image over the pixel bound is refused (from its header); an exact duplicate is
    stored, and reported once the worker has read both."""
    gallery, set_id = await gallery_with_set(client, admin, clock)
    store = app.state.store
    small = UploadSettings(max_megapixels=1)
    big = image_bytes(".jpg", 1600, 1000)

    async def upload(data: bytes, rules: UploadSettings) -> uploads.PhotoRecord:
        state = await uploads.start_upload(
            gallery,
            set_id,
            filename="p.jpg",
            size=len(data),
            rules=rules,
            store=store,
            actor=OWNER,
            now=clock(),
        )

        async def once():  # type: ignore[no-untyped-def]
            yield data

        await uploads.receive_chunk(
            state.token, gallery, 0, once(), sha256=hashlib.sha256(data).hexdigest(), store=store
        )
        return await uploads.complete_upload(
            state.token,
            gallery,
            store=store,
            rules=rules,
            actor=OWNER,
            address="x",
            now=clock(),
        )

    with pytest.raises(InvalidInput, match="2 megapixels; the limit is 1"):
        await upload(big, small)
    assert await nothing_stored(store)
    first = await upload(big, UploadSettings())
    other = await upload(image_bytes(".jpg", 1600, 1001), UploadSettings())
    second = await upload(big, UploadSettings())
    assert await uploads.duplicates(gallery) == {}  # not read yet
    assert await make_previews(app, clock) == 3
    assert await uploads.duplicates(gallery) == {second.id: first.id}
    assert other.id not in await uploads.duplicates(gallery)


async def test_upload_api_needs_staff_and_its_own_gallery(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """Anonymous callers get 401; a set of another gallery or an unknown token gets 404."""
    gallery, set_id = await gallery_with_set(client, admin, clock)
    other = await new_gallery(client, await create(client, ANNA), title="Other")
    token = csrf_of((await client.get(f"/galleries/{gallery}")).text)
    wrong_set = await client.post(
        f"/api/v1/galleries/{other}/uploads",
        headers={"X-CSRF-Token": token},
        json={"filename": "a.jpg", "size": 10, "set_id": set_id},
    )
    assert wrong_set.status_code == 404
    unknown = await client.get(f"/api/v1/galleries/{gallery}/uploads/nope")
    assert unknown.status_code == 404
    malformed = await client.post(
        f"/api/v1/galleries/{gallery}/uploads",
        headers={"X-CSRF-Token": token},
        json={"filename": "a.jpg", "size": "big", "set_id": set_id},
    )
    assert malformed.status_code == 400
    client.cookies.clear()
    anonymous = await client.get(f"/api/v1/galleries/{gallery}/uploads/nope")
    assert anonymous.status_code == 401


async def test_set_with_photos_cannot_be_deleted(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Deleting a set that holds photos answers 409; the photos stay."""
    from tests.integration.flows import submit

    gallery, set_id = await gallery_with_set(client, admin, clock)
    page = f"/galleries/{gallery}"
    await submit(client, page, {"set_name": "Spare"}, action=f"{page}/sets")
    assert (
        await api_upload(client, gallery, set_id, "a.jpg", image_bytes(".jpg"))
    ).status_code == 201
    refused = await submit(client, page, {}, action=f"{page}/sets/{set_id}/delete")
    assert refused.status_code == 409 and "has photos" in refused.text
    assert await Photo.count().run() == 1


async def test_upload_through_an_s3_store(
    clean_db: None, app: Litestar, s3_server: S3Server, clock: FakeClock, tmp_path: Path
) -> None:
    """The same upload path works against a real S3 server: chunks of at least S3's 5 MiB
    become the parts of the original, sent in reverse order; a refused file leaves no open
    multipart upload; the worker reads the original from S3 and records its SHA-256."""
    import secrets

    from appliance.galleries import service as galleries
    from appliance.storage.s3 import S3Store

    store = S3Store(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        bucket=f"up-{secrets.token_hex(4)}",
        region="",
    )
    await store.ensure_ready()
    from appliance.clients import service as clients

    anna = await clients.create_client(
        clients.ClientDetails(name="Anna"), actor=OWNER, address="x", now=clock()
    )
    gallery = await galleries.create_gallery(
        anna.id, galleries.GalleryDetails(title="W"), actor=OWNER, address="x", now=clock()
    )
    set_id = (await galleries.list_sets(gallery.id))[0].id
    rules = UploadSettings(chunk_mb=1)
    data = image_bytes(".tif", 2200, 1800)  # about 11.9 MB: three chunks of 5 MiB
    state = await uploads.start_upload(
        gallery.id,
        set_id,
        filename="s.tif",
        size=len(data),
        rules=rules,
        store=store,
        actor=OWNER,
        now=clock(),
    )
    for index in reversed(range(state.chunks)):
        piece = data[index * state.chunk_size : (index + 1) * state.chunk_size]

        async def once(piece: bytes = piece):  # type: ignore[no-untyped-def]
            yield piece

        await uploads.receive_chunk(
            state.token,
            gallery.id,
            index,
            once(),
            sha256=hashlib.sha256(piece).hexdigest(),
            store=store,
        )
    photo = await uploads.complete_upload(
        state.token,
        gallery.id,
        store=store,
        rules=rules,
        actor=OWNER,
        address="x",
        now=clock(),
    )
    assert state.chunk_size == 5 * 1024 * 1024 and state.chunks == 3
    keys = [info.key async for info in store.list("")]
    assert len(keys) == 1 and keys[0].startswith(f"originals/{gallery.id}/")
    assert [info async for info in store.list_multipart("")] == []
    stored = b"".join([c async for c in store.get(keys[0])])
    assert stored == data and (photo.width, photo.height) == (2200, 1800)
    assert await derivatives.process_pending(store, tmp_path, clock()) == 1
    row = await Photo.select(Photo.sha256, Photo.status).where(Photo.id == photo.id).first()
    assert row == {"sha256": hashlib.sha256(data).hexdigest(), "status": "ready"}

    text = b"not an image, in one chunk\n" * 100
    refused = await uploads.start_upload(
        gallery.id,
        set_id,
        filename="notes.jpg",
        size=len(text),
        rules=rules,
        store=store,
        actor=OWNER,
        now=clock(),
    )

    async def body():  # type: ignore[no-untyped-def]
        yield text

    await uploads.receive_chunk(
        refused.token, gallery.id, 0, body(), sha256=hashlib.sha256(text).hexdigest(), store=store
    )
    with pytest.raises(InvalidInput, match="not a JPEG"):
        await uploads.complete_upload(
            refused.token,
            gallery.id,
            store=store,
            rules=rules,
            actor=OWNER,
            address="x",
            now=clock(),
        )
    assert [info.key async for info in store.list("originals/")] == keys
    assert [info async for info in store.list_multipart("")] == []


async def test_abandoned_uploads_are_removed_with_their_chunks(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """An upload left unfinished for a week goes, its open write and parts included; a recent
    one stays; an old open write that no upload owns is aborted too."""
    import datetime as dt

    gallery, set_id = await gallery_with_set(client, admin, clock)
    store = app.state.store
    data = image_bytes(".jpg")
    old = await uploads.start_upload(
        gallery,
        set_id,
        filename="old.jpg",
        size=len(data),
        rules=UploadSettings(),
        store=store,
        actor=OWNER,
        now=clock() - dt.timedelta(days=8),
    )
    fresh = await uploads.start_upload(
        gallery,
        set_id,
        filename="new.jpg",
        size=len(data),
        rules=UploadSettings(),
        store=store,
        actor=OWNER,
        now=clock(),
    )
    for state in (old, fresh):

        async def once():  # type: ignore[no-untyped-def]
            yield data

        await uploads.receive_chunk(
            state.token, gallery, 0, once(), sha256=hashlib.sha256(data).hexdigest(), store=store
        )
    removed = await uploads.purge_abandoned(store, clock(), older_than=dt.timedelta(days=7))
    assert removed == 1
    assert [row["filename"] for row in await PhotoUpload.select(PhotoUpload.filename).run()] == [
        "new.jpg"
    ]
    writes = [info.key async for info in store.list_multipart("")]
    assert writes == [uploads._original_key(gallery, fresh.token)]
    # A write nobody owns (its request died before the upload was recorded) goes once as
    # old as an abandoned upload; one that an upload owns stays, however old.
    await store.start_multipart(f"originals/{gallery}/orphan", content_type="image/jpeg")
    later = clock() + dt.timedelta(days=7, minutes=1)
    newer = await uploads.start_upload(
        gallery,
        set_id,
        filename="newer.jpg",
        size=len(data),
        rules=UploadSettings(),
        store=store,
        actor=OWNER,
        now=later,
    )
    assert await uploads.purge_abandoned(store, later, older_than=dt.timedelta(days=7)) == 1
    writes = [info.key async for info in store.list_multipart("")]
    assert writes == [uploads._original_key(gallery, newer.token)]
    assert [info.key async for info in store.list("")] == []


async def test_completing_the_same_upload_twice_makes_one_photo(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, tmp_path: Path
) -> None:
    """Two "complete" requests racing for one upload: one photo, the other refused with 409."""
    gallery, set_id = await gallery_with_set(client, admin, clock)
    store = app.state.store
    data = image_bytes(".jpg", 1600, 1200)
    state = await sent_in_one_chunk(store, gallery, set_id, "twice.jpg", data, clock)

    async def complete() -> object:
        try:
            return await uploads.complete_upload(
                state.token,
                gallery,
                store=store,
                rules=UploadSettings(),
                actor=OWNER,
                address="x",
                now=clock(),
            )
        except (Conflict, NotFound) as exc:
            return exc

    results = await asyncio.gather(complete(), complete())
    photos = [r for r in results if isinstance(r, uploads.PhotoRecord)]
    assert len(photos) == 1
    assert await Photo.count().run() == 1
    originals = [i.key async for i in store.list("originals/")]
    assert len(originals) == 1


@pytest.mark.parametrize("remembered", [True, False])
async def test_header_comes_from_the_first_chunk_or_else_from_the_store(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    remembered: bool,
) -> None:
    """Finishing reads the image's header from the first bytes the process saw in chunk 0,
    without reading the original back; without them (another process took the chunk, or
    this one restarted) it reads the header from the store, to the same result."""
    gallery, set_id = await gallery_with_set(client, admin, clock)
    store = app.state.store
    data = image_bytes(".jpg", 1600, 1200)
    state = await sent_in_one_chunk(store, gallery, set_id, "head.jpg", data, clock)
    if not remembered:
        monkeypatch.setattr(uploads, "_heads", uploads._Heads())
    reads: list[str] = []
    get = store.get

    def counted(key: str, **kwargs: int) -> object:
        reads.append(key)
        return get(key, **kwargs)

    monkeypatch.setattr(store, "get", counted)
    photo = await finish(store, gallery, state.token, clock)
    assert (photo.content_type, photo.width, photo.height) == ("image/jpeg", 1600, 1200)
    assert (reads == []) is remembered


async def test_set_with_uploads_in_progress_cannot_be_deleted(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """An open upload keeps its set: deleting it answers 409 instead of orphaning chunks."""
    from tests.integration.flows import submit

    gallery, set_id = await gallery_with_set(client, admin, clock)
    page = f"/galleries/{gallery}"
    await submit(client, page, {"set_name": "Spare"}, action=f"{page}/sets")
    await uploads.start_upload(
        gallery,
        set_id,
        filename="a.jpg",
        size=100,
        rules=UploadSettings(),
        store=app.state.store,
        actor=OWNER,
        now=clock(),
    )
    refused = await submit(client, page, {}, action=f"{page}/sets/{set_id}/delete")
    assert refused.status_code == 409 and "being uploaded" in refused.text


async def test_chunk_for_a_vanished_upload_leaves_nothing(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """A chunk arriving after its upload was removed answers 404 and its open write is
    aborted."""
    gallery, set_id = await gallery_with_set(client, admin, clock)
    store = app.state.store
    data = image_bytes(".jpg")
    state = await uploads.start_upload(
        gallery,
        set_id,
        filename="a.jpg",
        size=len(data),
        rules=UploadSettings(),
        store=store,
        actor=OWNER,
        now=clock(),
    )
    upload_id = (await PhotoUpload.select(PhotoUpload.id).first().run())["id"]  # type: ignore[index]

    async def body():  # type: ignore[no-untyped-def]
        yield data[:10]
        await PhotoUpload.delete().where(PhotoUpload.id == upload_id).run()  # removed meanwhile
        yield data[10:]

    with pytest.raises(NotFound):
        await uploads.receive_chunk(
            state.token, gallery, 0, body(), sha256=hashlib.sha256(data).hexdigest(), store=store
        )
    assert await nothing_stored(store)


async def test_full_disk_keeps_the_upload_for_later(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without room to join the file, finishing answers 409 and the chunks stay for a retry."""
    import shutil
    from collections import namedtuple

    gallery, set_id = await gallery_with_set(client, admin, clock)
    store = app.state.store
    data = image_bytes(".jpg")
    state = await sent_in_one_chunk(store, gallery, set_id, "a.jpg", data, clock)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9, 1024))
    with pytest.raises(Conflict, match="disk is too full"):
        await uploads.complete_upload(
            state.token,
            gallery,
            store=store,
            rules=UploadSettings(),
            actor=OWNER,
            address="x",
            now=clock(),
        )
    monkeypatch.undo()
    photo = await finish(store, gallery, state.token, clock)
    assert photo.size == len(data)


async def test_chunks_are_refused_while_the_upload_is_being_finished(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """Once "complete" has claimed an upload, a late resend of a chunk answers 409 instead of
    racing the join."""
    gallery, set_id = await gallery_with_set(client, admin, clock)
    store = app.state.store
    data = image_bytes(".jpg")
    state = await uploads.start_upload(
        gallery,
        set_id,
        filename="late.jpg",
        size=len(data),
        rules=UploadSettings(),
        store=store,
        actor=OWNER,
        now=clock(),
    )
    await PhotoUpload.update({PhotoUpload.completing_at: clock()}, force=True).run()

    async def once():  # type: ignore[no-untyped-def]
        yield data

    with pytest.raises(Conflict, match="being finished"):
        await uploads.receive_chunk(
            state.token,
            gallery,
            0,
            once(),
            sha256=hashlib.sha256(data).hexdigest(),
            store=store,
            now=clock(),
        )


async def test_a_part_lost_from_the_store_is_asked_for_again(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """When the store lacks a part the database counts, finishing answers 409 naming the
    chunk and forgets it, so the browser sends it again; then finishing works."""
    gallery, set_id = await gallery_with_set(client, admin, clock)
    store = app.state.store
    rules = UploadSettings(chunk_mb=1)
    data = image_bytes(".tif", 1000, 800)  # about 2.4 MB: three chunks of 1 MB
    state = await uploads.start_upload(
        gallery,
        set_id,
        filename="lost.tif",
        size=len(data),
        rules=rules,
        store=store,
        actor=OWNER,
        now=clock(),
    )

    async def send(index: int) -> None:
        piece = data[index * state.chunk_size : (index + 1) * state.chunk_size]

        async def once():  # type: ignore[no-untyped-def]
            yield piece

        await uploads.receive_chunk(
            state.token,
            gallery,
            index,
            once(),
            sha256=hashlib.sha256(piece).hexdigest(),
            store=store,
        )

    for index in range(state.chunks):
        await send(index)
    key = uploads._original_key(gallery, state.token)
    lost = store._folder(key) / "00002.part"  # the filesystem store's file of chunk 1
    await asyncio.to_thread(lost.unlink)

    async def complete() -> uploads.PhotoRecord:
        return await uploads.complete_upload(
            state.token, gallery, store=store, rules=rules, actor=OWNER, address="x", now=clock()
        )

    with pytest.raises(Conflict, match="Chunks still missing: 1"):
        await complete()
    assert (await uploads.upload_state(state.token, gallery)).received == [0, 2]
    await send(1)
    photo = await complete()
    row = await Photo.select(Photo.original_key).where(Photo.id == photo.id).first().run()
    assert row is not None
    assert b"".join([c async for c in store.get(row["original_key"])]) == data


async def test_malformed_chunk_checksum_header_is_refused(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """A chunk whose X-Chunk-SHA256 is not a SHA-256 answers 400 naming the header."""
    gallery, set_id = await gallery_with_set(client, admin, clock)
    token = csrf_of((await client.get(f"/galleries/{gallery}")).text)
    started = await client.post(
        f"/api/v1/galleries/{gallery}/uploads",
        headers={"X-CSRF-Token": token},
        json={"filename": "a.jpg", "size": 10, "set_id": set_id},
    )
    sent = await client.put(
        f"/api/v1/galleries/{gallery}/uploads/{started.json()['token']}/chunks/0",
        content=b"0123456789",
        headers={"X-CSRF-Token": token, "X-Chunk-SHA256": "zz" * 32},
    )
    assert sent.status_code == 400 and "X-Chunk-SHA256" in sent.json()["error"]
