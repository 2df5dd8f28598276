"""Rendering one photo's thumbnail and preview: sizes, colour, metadata and the watermark."""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvips

from appliance.galleries.derivatives import PREVIEW_EDGE, THUMB_EDGE, render

STRIPPED = ("exif-data", "xmp-data", "iptc-data", "icc-profile-data", "orientation")


def textured(width: int, height: int) -> pyvips.Image:
    """An 8-bit sRGB image with detail everywhere, so every part of a JPEG of it differs."""
    red = (pyvips.Image.xyz(width, height)[0] % 256).cast("uchar")
    green = (pyvips.Image.xyz(width, height)[1] % 256).cast("uchar")
    blue = pyvips.Image.gaussnoise(width, height, mean=128, sigma=30).cast("uchar")
    return red.bandjoin([green, blue]).copy(interpretation="srgb")


def decoded(data: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(data, "")


def write(path: Path, image: pyvips.Image, **options: object) -> Path:
    image.write_to_file(str(path), **options)
    return path


@pytest.mark.parametrize(
    ("size", "preview_long"),
    [
        ((6000, 4000), PREVIEW_EDGE),  # shrunk by libjpeg while decoding, then resized
        ((4096, 2731), PREVIEW_EDGE),  # exactly a factor of two
        ((2000, 3000), PREVIEW_EDGE),
        ((1200, 800), 1200),  # smaller than a preview: never enlarged
        ((300, 200), 300),
    ],
)
def test_sizes_fit_the_edges_and_never_enlarge(
    tmp_path: Path, size: tuple[int, int], preview_long: int
) -> None:
    """The long sides are PREVIEW_EDGE and THUMB_EDGE, or the photo's own when it is smaller,
    and the proportions are kept."""
    path = write(tmp_path / "photo.jpg", textured(*size), Q=90)
    thumb, preview = map(decoded, render(path))
    for image, long_side in ((preview, preview_long), (thumb, min(THUMB_EDGE, preview_long))):
        assert max(image.width, image.height) == long_side
        assert (image.width > image.height) == (size[0] > size[1])
        expected_short = min(size) * long_side / max(size)
        assert abs(min(image.width, image.height) - expected_short) <= 1


def test_metadata_is_stripped_from_both_sizes(tmp_path: Path) -> None:
    """EXIF (GPS, serial number), XMP, IPTC, the ICC profile and the orientation tag are gone."""
    image = textured(900, 600).copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", 6)
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Artist", "Anna Example")
    image.set_type(pyvips.GValue.blob_type, "xmp-data", b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>')
    image = image.icc_transform("p3", input_profile="srgb")
    path = write(tmp_path / "photo.jpg", image, Q=90)
    original = pyvips.Image.new_from_file(str(path))
    assert {"exif-data", "xmp-data", "icc-profile-data"} <= set(original.get_fields())
    for data in render(path):
        fields = set(decoded(data).get_fields())
        assert fields.isdisjoint(STRIPPED), fields & set(STRIPPED)
        assert b"Anna Example" not in data


def test_orientation_is_applied(tmp_path: Path) -> None:
    """A photo stored sideways (orientation 6) comes out upright: portrait."""
    image = textured(900, 600).copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", 6)
    path = write(tmp_path / "photo.jpg", image)
    for data in render(path):
        rendered = decoded(data)
        assert rendered.height > rendered.width


def test_photo_with_its_own_profile_is_converted_to_srgb(tmp_path: Path) -> None:
    """Pixels tagged as Display P3 come out as the sRGB colour they stand for."""
    srgb_red = [220, 20, 20]
    red = (pyvips.Image.black(64, 64) + srgb_red).cast("uchar").copy(interpretation="srgb")
    p3 = red.icc_transform("p3", input_profile="srgb")
    assert abs(p3.getpoint(8, 8)[1] - srgb_red[1]) > 20  # the P3 numbers really differ
    path = write(tmp_path / "p3.jpg", p3, Q=95)
    for data in render(path):
        pixel = decoded(data).getpoint(8, 8)
        assert all(abs(got - want) <= 6 for got, want in zip(pixel, srgb_red, strict=True))


def test_untagged_photo_keeps_its_colours(tmp_path: Path) -> None:
    """Without a profile the pixels are taken as sRGB and left as they are."""
    colour = [40, 160, 90]
    image = (pyvips.Image.black(64, 64) + colour).cast("uchar").copy(interpretation="srgb")
    path = write(tmp_path / "plain.jpg", image, Q=95)
    for data in render(path):
        pixel = decoded(data).getpoint(8, 8)
        assert all(abs(got - want) <= 4 for got, want in zip(pixel, colour, strict=True))


def test_cmyk_photo_becomes_rgb(tmp_path: Path) -> None:
    """A CMYK JPEG without a profile comes out as three-band sRGB."""
    cmyk = pyvips.Image.black(64, 64).new_from_image([0, 200, 200, 0]).cast("uchar")
    path = write(tmp_path / "cmyk.jpg", cmyk.copy(interpretation="cmyk"))
    for data in render(path):
        image = decoded(data)
        assert image.bands == 3 and image.interpretation == "srgb"
        red, green, blue = image.getpoint(8, 8)
        assert red > 150 and green < 120 and blue < 120


def test_transparency_is_flattened_on_white(tmp_path: Path) -> None:
    """Transparent pixels of a PNG become white in the JPEGs."""
    image = textured(400, 300).bandjoin(pyvips.Image.black(400, 300).cast("uchar"))
    path = write(tmp_path / "clear.png", image.copy(interpretation="srgb"))
    for data in render(path):
        rendered = decoded(data)
        assert rendered.bands == 3 and rendered.min() >= 250


def test_watermark_marks_the_lower_right_of_the_preview_only(tmp_path: Path) -> None:
    """The watermarked preview differs from the plain one in its lower-right quarter and
    nowhere else; the thumbnail is byte for byte the same."""
    path = write(tmp_path / "photo.jpg", textured(3000, 2000), Q=90)
    plain_thumb, plain_preview = render(path)
    thumb, preview = render(path, watermark="Studio Example")
    assert thumb == plain_thumb
    plain, marked = decoded(plain_preview), decoded(preview)
    assert (marked.width, marked.height) == (plain.width, plain.height)
    difference = (plain.cast("int") - marked.cast("int")).abs()
    width, height = plain.width, plain.height
    corner = difference.crop(width // 2, height * 3 // 4, width // 2, height // 4)
    assert corner.avg() > 1 and corner.max() > 80  # visible
    assert corner.max() < 255  # semi-transparent: the photo shows through
    assert difference.crop(0, 0, width, height * 3 // 4).max() == 0
    assert difference.crop(0, 0, width // 2, height).max() == 0


def test_watermark_text_is_not_read_as_markup(tmp_path: Path) -> None:
    """Text with &, < and > is drawn as written instead of failing as Pango markup."""
    path = write(tmp_path / "photo.jpg", textured(1200, 800), Q=90)
    _, plain = render(path)
    _, marked = render(path, watermark="Smith & <Sons>")
    assert marked != plain


@pytest.mark.parametrize("blank", [None, "", "   "])
def test_no_or_blank_watermark_leaves_the_preview_plain(tmp_path: Path, blank: str | None) -> None:
    """None, empty or blank text means no watermark at all."""
    path = write(tmp_path / "photo.jpg", textured(1200, 800), Q=90)
    assert render(path, watermark=blank) == render(path)


def test_heif_container_photo_is_rendered(tmp_path: Path) -> None:
    """A HEIF-container photo (AV1-coded here, the codec this libvips can write) renders
    upright like a JPEG."""
    image = textured(900, 600).copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", 6)
    try:
        data = image.write_to_buffer(".heif", compression="av1")
        pyvips.Image.new_from_buffer(data, "").avg()
    except pyvips.Error as exc:
        reason = f"libvips cannot write and read AV1 HEIF here: {exc}"
        print(reason)
        pytest.skip(reason)
    path = tmp_path / "photo.heif"
    path.write_bytes(data)
    for rendered in map(decoded, render(path)):
        assert rendered.height > rendered.width
        assert set(rendered.get_fields()).isdisjoint(STRIPPED)
