"""Derivatives of 24-megapixel JPEGs: our pyvips renderer against a plain Pillow baseline.

Each side runs in a process of its own, so its peak memory (how far its resident memory rises
during the work, above what the process held before it) is its own; both make the same
thumbnail and preview from the same files in the same run. Printed, not asserted on time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import pyvips

FILES = 4

# Shared by both sides. The peak is this process's own high-water mark (VmHWM), reset just
# before the work, minus its resident size then. Not ru_maxrss: Linux carries that across fork
# and exec, so a child starts with its parent's peak (pytest's, here), which hid most of both
# sides' memory in earlier runs of this benchmark.
MEASURE = """
import json, sys, time

def status(field):
    with open("/proc/self/status") as lines:
        for line in lines:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise LookupError(field)

def measure(work):
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current resident size
    before = status("VmRSS")
    started = time.perf_counter()
    work()
    print(json.dumps({"seconds": time.perf_counter() - started,
                      "rss_mb": status("VmHWM") - before}))
"""

OURS = """
from pathlib import Path
import pyvips  # loaded before measuring, as Pillow is on the other side
from appliance.galleries.derivatives import render
pyvips.Image.black(8, 8).avg()  # libvips initialised
watermark = sys.argv[1] or None
paths = [Path(p) for p in sys.argv[2:]]

def work():
    for path in paths:
        render(path, watermark=watermark)

measure(work)
"""

PILLOW = """
import io
from PIL import Image, ImageOps
Image.new("RGB", (8, 8)).save(io.BytesIO(), "JPEG")  # codecs initialised

def work():
    for name in sys.argv[1:]:
        for edge in (400, 2048):
            with Image.open(name) as image:
                image = ImageOps.exif_transpose(image)
                image.thumbnail((edge, edge))
                image.convert("RGB").save(io.BytesIO(), "JPEG", quality=85)

measure(work)
"""


def _run(script: str, *args: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", MEASURE + script, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_pyvips_derivatives_against_pillow(tmp_path: Path) -> None:
    """Throughput and peak memory of both renderers on the same 24 MP JPEGs."""
    pytest.importorskip("PIL")
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("peak memory is read from Linux's /proc/self/status")
    paths = []
    for number in range(FILES):
        image = pyvips.Image.gaussnoise(6000, 4000, mean=128, sigma=40 + number).cast("uchar")
        image = image.bandjoin([image, image]).copy(interpretation="srgb")
        path = tmp_path / f"24mp-{number}.jpg"
        image.write_to_file(str(path), Q=90)
        paths.append(path)
    names = [str(path) for path in paths]
    ours = _run(OURS, "", *names)
    pillow = _run(PILLOW, *names)
    marked = _run(OURS, "Studio Example", *names)
    print(
        f"\n{FILES} x 24 MP JPEG, thumbnail + preview each:"
        f"\n  Pillow (baseline): {pillow['seconds']:6.2f} s, peak {pillow['rss_mb']:6.0f} MB"
        f"\n  pyvips (ours):     {ours['seconds']:6.2f} s, peak {ours['rss_mb']:6.0f} MB"
        f"\n  ours, watermarked: {marked['seconds']:6.2f} s, peak {marked['rss_mb']:6.0f} MB"
        f"\n  throughput ratio (ours / baseline): {pillow['seconds'] / ours['seconds']:.2f}x"
        f"\n  peak memory ratio (ours / baseline): {ours['rss_mb'] / pillow['rss_mb']:.2f}"
    )
