"""PDF reports: any text a person typed prints without failing, with or without DejaVu."""

from __future__ import annotations

import datetime as dt
import re
import zlib

import pytest

from appliance.web import pdf
from appliance.web.pdf import Report

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
HOSTILE = "Łódź Ünïcödé \x00\x1b[31m <script>alert(1)</script> 日本 " + "x" * 3000


def _content(data: bytes) -> bytes:
    """The decompressed page streams, where the text is."""
    streams = re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S)
    out = b""
    for stream in streams:
        try:
            out += zlib.decompress(stream)
        except zlib.error:
            out += stream
    return out


def _report() -> bytes:
    report = Report("Report", subtitle=HOSTILE, created_at=NOW)
    report.heading(HOSTILE)
    report.paragraph(HOSTILE)
    report.fields([("Label", HOSTILE), ("Empty", "")])
    report.table(["A", "B"], [[HOSTILE[:50], "1"], ["", "2"]])
    return report.output()


def test_a_report_with_hostile_text_is_a_pdf() -> None:
    data = _report()
    assert data.startswith(b"%PDF-")
    assert data.rstrip().endswith(b"%%EOF")
    # Control characters have no glyph and are dropped, newlines kept.
    assert Report("x", created_at=NOW)._text("a\x00b\x1b[31mc\nd") == "ab[31mc\nd"


def test_without_dejavu_latin1_text_still_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pdf, "_FONT_DIRS", ())
    report = Report("Plain", created_at=NOW)
    assert report.family == "helvetica"
    report.paragraph("Grüße aus Köln - 日本")
    data = report.output()
    assert data.startswith(b"%PDF-")
    content = _content(data)
    assert b"Gr\\374\\337e aus K\\366ln" in content or "Grüße".encode("latin-1") in content
