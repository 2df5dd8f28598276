"""Derivatives of 24-megapixel JPEGs: our pyvips renderer against a plain Pillow baseline.

Each side runs in a process of its own, so its peak memory (max RSS growth over the
imports) is its own; both make the same thumbnail and preview from the same files in the
same run. Printed, not asserted on time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import pyvips

FILES = 4

OURS = """
import json, resource, sys, time
from pathlib import Path
import pyvips  # loaded before measuring, as Pillow is on the other side
from appliance.galleries.derivatives import render
pyvips.Image.black(8, 8).avg()  # libvips initialised
paths = [Path(p) for p in sys.argv[1:]]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
for path in paths:
    render(path)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before}))
"""

PILLOW = """
import io, json, resource, sys, time
from PIL import Image, ImageOps
Image.new("RGB", (8, 8)).save(io.BytesIO(), "JPEG")  # codecs initialised
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
for name in sys.argv[1:]:
    for edge in (400, 2048):
        with Image.open(name) as image:
            image = ImageOps.exif_transpose(image)
            image.thumbnail((edge, edge))
            image.convert("RGB").save(io.BytesIO(), "JPEG", quality=85)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before}))
"""


def _run(script: str, paths: list[Path]) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_pyvips_derivatives_against_pillow(tmp_path: Path) -> None:
    """Throughput and peak memory of both renderers on the same 24 MP JPEGs."""
    pytest.importorskip("PIL")
    paths = []
    for number in range(FILES):
        image = pyvips.Image.gaussnoise(6000, 4000, mean=128, sigma=40 + number).cast("uchar")
        image = image.bandjoin([image, image]).copy(interpretation="srgb")
        path = tmp_path / f"24mp-{number}.jpg"
        image.write_to_file(str(path), Q=90)
        paths.append(path)
    ours = _run(OURS, paths)
    pillow = _run(PILLOW, paths)
    print(
        f"\n{FILES} x 24 MP JPEG, thumbnail + preview each:"
        f"\n  Pillow (baseline): {pillow['seconds']:6.2f} s, peak {pillow['rss_mb']:6.0f} MB"
        f"\n  pyvips (ours):     {ours['seconds']:6.2f} s, peak {ours['rss_mb']:6.0f} MB"
        f"\n  throughput ratio (ours / baseline): {pillow['seconds'] / ours['seconds']:.2f}x"
        f"\n  peak memory ratio (ours / baseline): {ours['rss_mb'] / pillow['rss_mb']:.2f}"
    )
