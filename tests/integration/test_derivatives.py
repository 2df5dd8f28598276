"""Thumbnails and previews: made by the worker, upright, without metadata, never lost."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import pyvips
from litestar import Litestar

from appliance.audit.service import Actor
from appliance.clients import service as clients
from appliance.config import Settings, UploadSettings
from appliance.galleries import derivatives, uploads
from appliance.galleries import service as galleries
from appliance.galleries.tables import Photo, PhotoJob
from tests.conftest import FakeClock
from tests.processes import AppProcess, free_port

OWNER = Actor(id=None, name="owner")


def turned_jpeg(width: int, height: int) -> bytes:
    """A JPEG stored sideways (EXIF orientation 6: show it turned 90 degrees clockwise)."""
    image = (
        pyvips.Image.xyz(width, height)[0]
        .cast("uchar")
        .bandjoin(
            [
                pyvips.Image.xyz(width, height)[1].cast("uchar"),
                (pyvips.Image.black(width, height) + 120).cast("uchar"),
            ]
        )
        .copy()
    )
    image.set_type(pyvips.GValue.gint_type, "orientation", 6)
    return bytes(image.write_to_buffer(".jpg"))


async def uploaded_photo(
    store: object,
    clock: FakeClock,
    tmp_path: Path,
    data: bytes,
    *,
    filename: str = "IMG.jpg",
    gallery_id: int | None = None,
) -> uploads.PhotoRecord:
    """A photo uploaded into ``gallery_id``, or into a new gallery of a new client."""
    if gallery_id is None:
        anna = await clients.create_client(
            clients.ClientDetails(name="Anna"), actor=OWNER, address="x", now=clock()
        )
        gallery = await galleries.create_gallery(
            anna.id, galleries.GalleryDetails(title="W"), actor=OWNER, address="x", now=clock()
        )
        gallery_id = gallery.id
    set_id = (await galleries.list_sets(gallery_id))[0].id
    rules = UploadSettings()
    state = await uploads.start_upload(
        gallery_id,
        set_id,
        filename=filename,
        size=len(data),
        rules=rules,
        store=store,  # type: ignore[arg-type]
        actor=OWNER,
        now=clock(),
    )

    async def once():  # type: ignore[no-untyped-def]
        yield data

    await uploads.receive_chunk(
        state.token, gallery_id, 0, once(), sha256=hashlib.sha256(data).hexdigest(), store=store
    )  # type: ignore[arg-type]
    return await uploads.complete_upload(
        state.token,
        gallery_id,
        store=store,  # type: ignore[arg-type]
        rules=rules,
        actor=OWNER,
        address="x",
        now=clock(),
    )


async def read(store: object, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.get(key)])  # type: ignore[attr-defined]


async def test_derivatives_are_upright_small_and_carry_no_metadata(
    clean_db: None, app: Litestar, clock: FakeClock, tmp_path: Path
) -> None:
    """Thumbnail and preview fit their size, follow the EXIF orientation and strip all EXIF;
    the original keeps its bytes."""
    store = app.state.store
    data = turned_jpeg(3000, 2000)
    photo = await uploaded_photo(store, clock, tmp_path, data)
    row = await Photo.select().where(Photo.id == photo.id).first().run()
    assert row is not None and row["status"] == "processing"
    assert await derivatives.process_pending(store, tmp_path, clock()) == 1
    row = await Photo.select().where(Photo.id == photo.id).first().run()
    assert row is not None and row["status"] == "ready"
    for key, edge in (
        (row["thumb_key"], derivatives.THUMB_EDGE),
        (row["preview_key"], derivatives.PREVIEW_EDGE),
    ):
        image = pyvips.Image.new_from_buffer(await read(store, key), "")
        assert max(image.width, image.height) == edge
        assert image.height > image.width  # turned upright: portrait
        assert "exif-data" not in image.get_fields() and "orientation" not in image.get_fields()
        assert "icc-profile-data" not in image.get_fields()
    assert await read(store, row["original_key"]) == data
    assert await derivatives.process_pending(store, tmp_path, clock()) == 0


async def test_failed_derivatives_are_retried_then_shown_as_failed(
    clean_db: None, app: Litestar, clock: FakeClock, tmp_path: Path
) -> None:
    """A failure that may pass (here the original cannot be read from the store) fails each
    attempt, waits longer each time, and after the last one the photo is marked failed with a
    reason (never silently missing)."""
    store = app.state.store
    photo = await uploaded_photo(store, clock, tmp_path, turned_jpeg(400, 300))
    row = await Photo.select().where(Photo.id == photo.id).first().run()
    assert row is not None
    await store.delete(row["original_key"])
    now = clock()
    for attempt in range(1, derivatives.MAX_ATTEMPTS + 1):
        assert await derivatives.process_pending(store, tmp_path, now) == 1
        job = await PhotoJob.select().where(PhotoJob.photo == photo.id).first().run()
        assert job is not None and job["attempts"] == attempt and job["last_error"]
        assert await derivatives.process_pending(store, tmp_path, now) == 0  # not due yet
        now += dt.timedelta(minutes=2**attempt, seconds=1)
    assert job["state"] == "failed"
    row = await Photo.select().where(Photo.id == photo.id).first().run()
    assert row is not None and row["status"] == "failed" and row["failure"]


async def test_an_undecodable_original_fails_at_once_with_the_reason(
    clean_db: None, app: Litestar, clock: FakeClock, tmp_path: Path
) -> None:
    """An original that cannot be decoded fails on the first attempt (the same bytes would
    fail again), with the decoder's reason for staff; its SHA-256 is recorded all the same."""
    store = app.state.store
    photo = await uploaded_photo(store, clock, tmp_path, turned_jpeg(400, 300))
    row = await Photo.select().where(Photo.id == photo.id).first().run()
    assert row is not None
    junk = b"\x89PNG\r\n\x1a\n not an image any more"

    async def once():  # type: ignore[no-untyped-def]
        yield junk

    await store.put(row["original_key"], once(), content_type="image/jpeg")
    assert await derivatives.process_pending(store, tmp_path, clock()) == 1
    job = await PhotoJob.select().where(PhotoJob.photo == photo.id).first().run()
    assert job is not None and job["state"] == "failed" and job["attempts"] == 1
    row = await Photo.select().where(Photo.id == photo.id).first().run()
    assert row is not None and row["status"] == "failed"
    assert row["failure"].startswith("This file is damaged or incomplete")
    assert row["sha256"] == hashlib.sha256(junk).hexdigest()


async def test_a_job_whose_worker_died_is_claimed_again(
    clean_db: None, app: Litestar, clock: FakeClock, tmp_path: Path
) -> None:
    """A job left running past the stale limit is taken again; a fresh running one is not."""
    store = app.state.store
    photo = await uploaded_photo(store, clock, tmp_path, turned_jpeg(400, 300))
    claimed = await derivatives.claim_job(clock())
    assert claimed is not None and claimed["photo"] == photo.id
    assert await derivatives.claim_job(clock() + dt.timedelta(minutes=1)) is None
    again = await derivatives.claim_job(clock() + derivatives.STALE_AFTER + dt.timedelta(seconds=1))
    assert again is not None and again["id"] == claimed["id"] and again["attempts"] == 2


async def test_two_workers_never_take_the_same_job(
    clean_db: None, app: Litestar, clock: FakeClock, tmp_path: Path
) -> None:
    """Claims racing each other each get a different job, or none."""
    store = app.state.store
    for _ in range(3):
        await uploaded_photo(store, clock, tmp_path, turned_jpeg(300, 200))
    claims = await asyncio.gather(*(derivatives.claim_job(clock()) for _ in range(6)))
    taken = [c["id"] for c in claims if c is not None]
    assert len(taken) == 3 and len(set(taken)) == 3


async def test_worker_process_makes_the_derivatives(
    clean_db: None, app: Litestar, clock: FakeClock, settings: Settings, tmp_path: Path
) -> None:
    """`appliance worker` picks up a new photo's job by itself within seconds."""
    photo = await uploaded_photo(app.state.store, clock, tmp_path, turned_jpeg(1200, 800))
    env = {
        "APPLIANCE_DATABASE__URL": settings.database.url,
        "APPLIANCE_PATHS__DATA_DIR": str(settings.data_dir),
        "APPLIANCE_QUEUE__URL": "",
    }
    worker = AppProcess(["worker"], workdir=tmp_path, port=free_port(), env=env)
    try:
        deadline = time.monotonic() + 30
        status = "processing"
        while time.monotonic() < deadline and status == "processing":
            await asyncio.sleep(0.3)
            row = await Photo.select(Photo.status).where(Photo.id == photo.id).first().run()
            status = row["status"] if row else "gone"
        assert status == "ready", worker.text()[-3000:]
    finally:
        worker.stop()
    assert worker.process.returncode == 0
    assert "Traceback" not in worker.text()


async def test_watermark_lookup_marks_only_the_previews_it_names(
    clean_db: None, app: Litestar, clock: FakeClock, tmp_path: Path
) -> None:
    """The lookup is asked for each photo with its gallery; the photo it gives text for gets
    a preview marked in its lower-right quarter only, while its thumbnail and original are
    the same as those of an unmarked copy."""
    store = app.state.store
    data = turned_jpeg(3000, 2000)
    marked = await uploaded_photo(store, clock, tmp_path, data)
    plain = await uploaded_photo(store, clock, tmp_path, data, gallery_id=marked.gallery_id)
    asked: list[tuple[int, int]] = []

    async def lookup(*, gallery_id: int, photo_id: int) -> str | None:
        asked.append((gallery_id, photo_id))
        return "Studio Example" if photo_id == marked.id else None

    assert await derivatives.process_pending(store, tmp_path, clock(), watermark=lookup) == 2
    assert sorted(asked) == sorted([(marked.gallery_id, marked.id), (plain.gallery_id, plain.id)])
    rows = {
        row["id"]: row
        for row in await Photo.select().where(Photo.id.is_in([marked.id, plain.id])).run()
    }
    assert all(row["status"] == "ready" for row in rows.values())
    marked_row, plain_row = rows[marked.id], rows[plain.id]
    assert await read(store, marked_row["thumb_key"]) == await read(store, plain_row["thumb_key"])
    assert await read(store, marked_row["original_key"]) == data
    with_mark = pyvips.Image.new_from_buffer(await read(store, marked_row["preview_key"]), "")
    without = pyvips.Image.new_from_buffer(await read(store, plain_row["preview_key"]), "")
    width, height = without.width, without.height
    assert (with_mark.width, with_mark.height) == (width, height) and height > width
    difference = (with_mark.cast("int") - without.cast("int")).abs()
    assert difference.crop(width // 2, height * 3 // 4, width // 2, height // 4).max() > 80
    assert difference.crop(0, 0, width, height * 3 // 4).max() == 0
    assert difference.crop(0, 0, width // 2, height).max() == 0


async def test_a_failing_watermark_lookup_publishes_no_preview(
    clean_db: None, app: Litestar, clock: FakeClock, tmp_path: Path
) -> None:
    """When the lookup fails, the job is retried later with the reason recorded, and no
    preview without the watermark is published meanwhile."""
    store = app.state.store
    photo = await uploaded_photo(store, clock, tmp_path, turned_jpeg(400, 300))

    async def broken(*, gallery_id: int, photo_id: int) -> str | None:
        raise RuntimeError("settings unavailable")

    assert await derivatives.process_pending(store, tmp_path, clock(), watermark=broken) == 1
    row = await Photo.select().where(Photo.id == photo.id).first().run()
    assert row is not None and row["status"] == "processing"
    assert row["preview_key"] == "" and row["thumb_key"] == ""
    assert [item async for item in store.list("derivatives/")] == []
    job = await PhotoJob.select().where(PhotoJob.photo == photo.id).first().run()
    assert job is not None and job["state"] == "queued"
    assert "settings unavailable" in job["last_error"]


def heic_or_skip(width: int, height: int) -> bytes:
    """A HEVC-coded HEIC of a sideways photo (orientation 6), as phones make them; the test
    is skipped, saying why, where this libvips cannot write or read one."""
    image = pyvips.Image.new_from_buffer(turned_jpeg(width, height), "")
    try:
        data = bytes(image.write_to_buffer(".heic", compression="hevc"))
        pyvips.Image.new_from_buffer(data, "").avg()  # decoded, not just its header read
    except pyvips.Error as exc:
        reason = "libvips here cannot write and decode HEVC HEIC: " + " ".join(str(exc).split())
        print(reason)
        pytest.skip(reason)
    return data


async def test_heic_photo_is_uploaded_and_gets_upright_derivatives(
    clean_db: None, app: Litestar, clock: FakeClock, tmp_path: Path
) -> None:
    """A HEIC upload is recognised as image/heic, and its thumbnail and preview are upright
    JPEGs without metadata; the original keeps its bytes."""
    store = app.state.store
    data = heic_or_skip(3000, 2000)
    photo = await uploaded_photo(store, clock, tmp_path, data, filename="IMG_0001.HEIC")
    assert photo.content_type == "image/heic"
    assert await derivatives.process_pending(store, tmp_path, clock()) == 1
    row = await Photo.select().where(Photo.id == photo.id).first().run()
    assert row is not None and row["status"] == "ready", row
    for key, edge in (
        (row["thumb_key"], derivatives.THUMB_EDGE),
        (row["preview_key"], derivatives.PREVIEW_EDGE),
    ):
        encoded = await read(store, key)
        assert encoded[:3] == b"\xff\xd8\xff"  # JPEG, which every browser shows
        image = pyvips.Image.new_from_buffer(encoded, "")
        assert max(image.width, image.height) == edge and image.height > image.width
        assert "exif-data" not in image.get_fields()
    assert await read(store, row["original_key"]) == data


def iphone_heic(tmp_path: Path) -> bytes:
    """A HEVC-coded HEIC made by libheif's own encoder, as an iPhone saves photos; skipped,
    saying why, where heif-enc is not installed (``scripts/install-tools.sh --test`` does)."""
    encoder = shutil.which("heif-enc")
    if encoder is None:
        pytest.skip("heif-enc (Debian libheif-examples) is not installed")
    source = tmp_path / "camera.jpg"
    source.write_bytes(turned_jpeg(1200, 800))
    target = tmp_path / "IMG_0002.HEIC"
    made = subprocess.run(
        [encoder, "-q", "80", "-o", str(target), str(source)], capture_output=True, text=True
    )
    if made.returncode != 0 or not target.exists():
        pytest.skip(f"heif-enc could not make an HEVC HEIC here: {made.stderr.strip()}")
    return target.read_bytes()


async def test_iphone_heic_is_shown_or_refused_with_a_reason_staff_can_act_on(
    clean_db: None, app: Litestar, clock: FakeClock, tmp_path: Path
) -> None:
    """Where libvips decodes HEVC the photo gets its previews; where it cannot (the bundled
    build has no HEVC decoder), the photo is marked failed at once, saying what to do, instead
    of being called damaged."""
    store = app.state.store
    data = iphone_heic(tmp_path)
    photo = await uploaded_photo(store, clock, tmp_path, data, filename="IMG_0002.HEIC")
    assert photo.content_type == "image/heic"
    await derivatives.process_pending(store, tmp_path, clock())
    row = await Photo.select().where(Photo.id == photo.id).first().run()
    assert row is not None
    try:
        pyvips.Image.new_from_buffer(data, "").avg()
        decodes = True
    except pyvips.Error:
        decodes = False
    if decodes:
        assert row["status"] == "ready", row["failure"]
    else:
        assert row["status"] == "failed"
        assert "compressed with HEVC" in row["failure"] and "Most Compatible" in row["failure"]
        assert "damaged" not in row["failure"]
        job = await PhotoJob.select().where(PhotoJob.photo == photo.id).first().run()
        assert job is not None and job["state"] == "failed" and job["attempts"] == 1
