"""Thumbnails and previews of photos, made by the worker with pyvips.

Every copy a client can see is made here: turned upright by its EXIF orientation, converted to
sRGB, and saved with no metadata at all (no GPS position, camera serial number or owner name);
the original stays untouched in the store.

The queue is the ``photo_job`` table. Steps of one job:
1. claim it with a conditional UPDATE (``FOR UPDATE SKIP LOCKED``), so two workers never take
   the same one; a job running for longer than ``STALE_AFTER`` belonged to a worker that died
   and is claimed again;
2. copy the original to a scratch file, hashing it on the way: the photo's SHA-256 is recorded
   here, since an upload is finished without reading its bytes back;
3. render both sizes on a thread (the preview with a watermark when the caller's
   ``WatermarkLookup`` gives text for the photo), store them. This is the first full decode of
   an uploaded file (the upload checked only its header), so a damaged or truncated original
   fails here: the photo is marked failed at once, with the decoder's reason for staff;
4. mark the photo ready; on any other failure retry later with a growing pause, and after
   ``MAX_ATTEMPTS`` mark the photo failed with the reason, so nothing is silently missing.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import html
import logging
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.to_thread

from appliance.galleries.tables import Photo, PhotoJob
from appliance.storage.base import ObjectStore

__all__ = [
    "MAX_ATTEMPTS",
    "PREVIEW_EDGE",
    "THUMB_EDGE",
    "DamagedImage",
    "WatermarkLookup",
    "claim_job",
    "libvips",
    "process_pending",
    "queue_derivatives",
    "render",
]

log = logging.getLogger(__name__)

THUMB_EDGE = 400
PREVIEW_EDGE = 2048
MAX_ATTEMPTS = 3
STALE_AFTER = dt.timedelta(minutes=10)

# "keep none" drops EXIF, GPS, XMP, IPTC and the ICC profile (the pixels are sRGB, which
# viewers assume of untagged files). Optimised Huffman tables cost about 50 ms and 15 MB a
# photo and make previews 3-5 % smaller, over a third on smooth backdrops.
_JPEG: dict[str, Any] = {"Q": 85, "keep": "none", "optimize_coding": True}


class DamagedImage(Exception):
    """The original cannot be decoded (truncated, corrupt, not what its header says); trying
    again cannot help. The message is the decoder's reason, fit to show staff."""


class WatermarkLookup(Protocol):
    """The watermark text for a photo's preview, or None (or blank) for none."""

    async def __call__(self, *, gallery_id: int, photo_id: int) -> str | None: ...


async def queue_derivatives(photo_id: int, now: dt.datetime) -> None:
    """Record that a photo needs its derivatives (in the caller's transaction)."""
    await PhotoJob.insert(PhotoJob(photo=photo_id, not_before=now, updated_at=now)).run()


async def claim_job(now: dt.datetime) -> dict[str, Any] | None:
    """Take the next job that is due (or whose worker died); None when there is none."""
    rows = await PhotoJob.raw(
        """
        UPDATE photo_job SET state = 'running', claimed_at = {}, updated_at = {},
                             attempts = attempts + 1
        WHERE id = (
            SELECT id FROM photo_job
            WHERE (state = 'queued' AND not_before <= {})
               OR (state = 'running' AND claimed_at < {})
            ORDER BY not_before, id
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        RETURNING id, photo, attempts, claimed_at
        """,
        now,
        now,
        now,
        now - STALE_AFTER,
    )
    return rows[0] if rows else None


def render(path: Path, *, watermark: str | None = None) -> tuple[bytes, bytes]:
    """Thumbnail and preview JPEGs (long side at most THUMB_EDGE / PREVIEW_EDGE): upright,
    sRGB, without metadata. With ``watermark`` (non-blank text), the preview carries it,
    visibly; the thumbnail is the same either way.

    Steps (each photo is decoded once, and never held whole in memory):
    1. read only the header, to pick the JPEG shrink-on-load factor and to see whether the
       photo has a colour profile of its own;
    2. decode sequentially, letting libjpeg scale while it decodes (1/2, 1/4 or 1/8, never
       below PREVIEW_EDGE), then resize, turn upright, convert to sRGB (only when the photo
       has a profile: untagged pixels are taken as sRGB already) and flatten any alpha;
    3. encode the preview; the thumbnail is made from those encoded bytes, again shrinking
       while decoding, so the preview's pixels need not be kept;
    4. with a watermark, the preview's pixels are kept (a few MB) so the marked preview is
       encoded from them and not from a second decode of the original.
    """
    pyvips = libvips()
    text = (watermark or "").strip()
    header = None
    try:
        header = pyvips.Image.new_from_file(str(path))
        load: dict[str, Any] = {}
        if header.get("vips-loader") == "jpegload":
            load["shrink"] = _jpeg_shrink(max(header.width, header.height))
        colour = {"export_profile": "srgb"} if header.get_typeof("icc-profile-data") else {}
        image = pyvips.Image.new_from_file(str(path), access="sequential", fail_on="error", **load)
        preview = image.thumbnail_image(PREVIEW_EDGE, height=PREVIEW_EDGE, size="down", **colour)
        if preview.hasalpha():
            preview = preview.flatten(background=[255, 255, 255])
        if text:
            preview = preview.copy_memory()
        # libvips decodes lazily: the pixels are read here, so this is where damage shows.
        clean = bytes(preview.write_to_buffer(".jpg", **_JPEG))
    except pyvips.Error as exc:
        if header is not None and _is_hevc(header):
            # Most iPhone photos: libvips reads the header, but a build without an HEVC
            # decoder (libde265) cannot decode the pixels. The file itself is fine.
            raise DamagedImage(HEVC_UNSUPPORTED) from None
        raise DamagedImage(_decoder_reason(exc, path)) from None
    thumb = pyvips.Image.thumbnail_buffer(clean, THUMB_EDGE, height=THUMB_EDGE, size="down")
    thumb_bytes = bytes(thumb.write_to_buffer(".jpg", **_JPEG))
    if not text:
        return thumb_bytes, clean
    return thumb_bytes, bytes(_watermarked(preview, text).write_to_buffer(".jpg", **_JPEG))


def _jpeg_shrink(long_side: int) -> int:
    """The largest libjpeg scale-down (1, 2, 4 or 8) that keeps the long side at or above
    PREVIEW_EDGE, so the resize after it only ever shrinks."""
    shrink = 1
    while shrink < 8 and long_side // (shrink * 2) >= PREVIEW_EDGE:
        shrink *= 2
    return shrink


HEVC_UNSUPPORTED = (
    "an HEIC photo compressed with HEVC, which this appliance's image library cannot decode; "
    "export it as JPEG (on an iPhone: Settings, Camera, Formats, Most Compatible)"
)


def _is_hevc(header: Any) -> bool:
    return bool(header.get_typeof("heif-compression") and header.get("heif-compression") == "hevc")


def _decoder_reason(exc: Exception, path: Path) -> str:
    """The last line of a libvips error (the decoder's own words), without the scratch path."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = (lines[-1] if lines else "unreadable").replace(str(path), "the file")
    return reason[:200]


@functools.cache
def libvips() -> Any:
    """pyvips, set up once per process: its operation cache off, since every photo is read
    once and cached results would only hold on to their memory (40-50 MB a large photo, in
    the worker and in the web process, which reads the headers of uploads)."""
    import pyvips

    pyvips.cache_set_max(0)
    return pyvips


def _watermarked(image: Any, text: str) -> Any:
    """``image`` with ``text`` in its lower-right corner: white at half opacity over a soft
    dark shadow, so it reads on light and dark photos alike, sized to the image.

    The text is escaped because libvips reads it as Pango markup ("Smith & Co" would fail).
    """
    pyvips = libvips()
    short = min(image.width, image.height)
    margin = max(short // 40, 2)
    blur = max(short / 800, 0.5)
    mask = pyvips.Image.text(
        html.escape(text, quote=False),
        font="sans bold",
        width=max(image.width // 3, 8),
        height=max(short // 12, 8),
    )
    pad = int(blur * 3) + 1
    mask = mask.embed(pad, pad, mask.width + 2 * pad, mask.height + 2 * pad)
    width, height = min(mask.width, image.width), min(mask.height, image.height)
    mask = mask.crop(0, 0, width, height)
    left, top = max(image.width - width - margin, 0), max(image.height - height - margin, 0)
    white = 65535 if image.format == "ushort" else 255
    ink = mask / 255 * 0.5
    shadow = mask.gaussblur(blur) / 255 * 0.35
    area = image.crop(left, top, width, height)
    area = area * (1 - shadow)
    area = area * (1 - ink) + ink * white
    return image.insert(area.cast(image.format), left, top)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _make(
    photo: dict[str, Any], store: ObjectStore, scratch: Path, watermark: str | None
) -> tuple[str, str]:
    await anyio.to_thread.run_sync(lambda: scratch.mkdir(parents=True, exist_ok=True))
    base = f"derivatives/{photo['gallery']}/{photo['id']}"
    with tempfile.NamedTemporaryFile(dir=scratch, suffix=".original") as original:
        target = anyio.wrap_file(original)
        digest = hashlib.sha256()
        async for piece in store.get(photo["original_key"]):
            digest.update(piece)
            await target.write(piece)
        await target.flush()
        if photo["sha256"] != digest.hexdigest():
            # Recorded before rendering, so a photo that fails to render has it too.
            await (
                Photo.update({Photo.sha256: digest.hexdigest()})
                .where(Photo.id == photo["id"])
                .run()
            )
        thumb, preview = await anyio.to_thread.run_sync(
            functools.partial(render, Path(original.name), watermark=watermark)
        )
    await store.put(f"{base}/thumb.jpg", _once(thumb), content_type="image/jpeg")
    await store.put(f"{base}/preview.jpg", _once(preview), content_type="image/jpeg")
    return f"{base}/thumb.jpg", f"{base}/preview.jpg"


async def _run(
    job: dict[str, Any],
    store: ObjectStore,
    scratch: Path,
    now: dt.datetime,
    watermark: WatermarkLookup | None,
) -> None:
    photo = (
        await Photo.select(Photo.id, Photo.gallery, Photo.original_key, Photo.sha256)
        .where(Photo.id == job["photo"])
        .first()
        .run()
    )
    if photo is None:  # deleted meanwhile: nothing to make
        await PhotoJob.delete().where(PhotoJob.id == job["id"]).run()
        return
    failure = "The previews could not be made."
    try:
        # Asked inside the try: if the lookup fails, the job is retried rather than a
        # preview published without the watermark its gallery asks for.
        text = (
            await watermark(gallery_id=photo["gallery"], photo_id=photo["id"])
            if watermark is not None
            else None
        )
        thumb_key, preview_key = await _make(photo, store, scratch, text)
    except Exception as exc:  # noqa: BLE001 - any failure is recorded and retried, not lost
        reason = f"{type(exc).__name__}: {exc}"[:500]
        final = job["attempts"] >= MAX_ATTEMPTS
        if isinstance(exc, DamagedImage):  # the same bytes will fail the same way
            final = True
            failure = (
                f"This file cannot be shown: {exc}."
                if str(exc) == HEVC_UNSUPPORTED
                else f"This file is damaged or incomplete and cannot be shown ({exc}). Export "
                "it again from the original and upload the new file."
            )
        log.warning(
            "derivatives of photo %s failed (attempt %s): %s", photo["id"], job["attempts"], reason
        )
        async with PhotoJob._meta.db.transaction(allow_nested=True):
            await (
                PhotoJob.update(
                    {
                        PhotoJob.state: "failed" if final else "queued",
                        PhotoJob.last_error: reason,
                        PhotoJob.not_before: now + dt.timedelta(minutes=2 ** job["attempts"]),
                        PhotoJob.updated_at: now,
                    }
                )
                .where(PhotoJob.id == job["id"])
                .run()
            )
            if final:
                await (
                    Photo.update({Photo.status: "failed", Photo.failure: failure})
                    .where(Photo.id == photo["id"])
                    .run()
                )
        return
    async with PhotoJob._meta.db.transaction(allow_nested=True):
        await (
            Photo.update(
                {
                    Photo.status: "ready",
                    Photo.thumb_key: thumb_key,
                    Photo.preview_key: preview_key,
                    Photo.failure: "",
                }
            )
            .where(Photo.id == photo["id"])
            .run()
        )
        await (
            PhotoJob.update({PhotoJob.state: "done", PhotoJob.updated_at: now})
            .where(PhotoJob.id == job["id"])
            .run()
        )


async def process_pending(
    store: ObjectStore,
    scratch: Path,
    now: dt.datetime,
    *,
    limit: int = 20,
    watermark: WatermarkLookup | None = None,
) -> int:
    """Work through up to ``limit`` due jobs; returns how many were taken.

    ``watermark`` is asked, for each photo, which text its preview carries; without it no
    preview is watermarked.
    """
    done = 0
    while done < limit:
        job = await claim_job(now)
        if job is None:
            break
        await _run(job, store, scratch, now, watermark)
        done += 1
    return done
