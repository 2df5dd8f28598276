"""Small PDF reports (the SLA report, the security-incident report) with fpdf2.

DejaVu Sans is used when the system has it (Debian's fonts-dejavu-core, installed in the
bundle), so names in any European script print as typed; without it the built-in Helvetica is
used, which only knows Latin-1, and other characters print as "?" instead of failing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos

__all__ = ["Report"]

_FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
_MARGIN = 18


def _font_files() -> tuple[Path, Path] | None:
    for folder in _FONT_DIRS:
        regular, bold = folder / "DejaVuSans.ttf", folder / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            return regular, bold
    return None


class Report:
    """A plain A4 report: a title, headings, paragraphs, label/value rows and tables."""

    def __init__(self, title: str, *, subtitle: str = "", created_at: dt.datetime) -> None:
        self.pdf = FPDF(format="A4")
        self.pdf.set_margins(_MARGIN, _MARGIN, _MARGIN)
        self.pdf.set_auto_page_break(auto=True, margin=_MARGIN)
        self.pdf.set_title(title)
        self.pdf.set_creation_date(created_at)
        fonts = _font_files()
        if fonts is None:
            self.family, self.unicode = "helvetica", False
        else:
            self.pdf.add_font("dejavu", "", str(fonts[0]))
            self.pdf.add_font("dejavu", "B", str(fonts[1]))
            self.family, self.unicode = "dejavu", True
        footer = f"{title} - created {created_at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"
        self.pdf.footer = lambda: self._footer(footer)  # type: ignore[method-assign]
        self.pdf.add_page()
        self._font(18, bold=True)
        self._cell(title, 10)
        if subtitle:
            self._font(11)
            self._cell(subtitle, 7)
        self.pdf.ln(4)

    def heading(self, text: str) -> None:
        self.pdf.ln(3)
        self._font(13, bold=True)
        self._cell(text, 8)

    def paragraph(self, text: str) -> None:
        self._font(10)
        self.pdf.multi_cell(0, 5, self._text(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.pdf.ln(1)

    def fields(self, rows: Sequence[tuple[str, str]]) -> None:
        """Label/value pairs, the value wrapped beside its label."""
        for label, value in rows:
            self._font(10, bold=True)
            self.pdf.multi_cell(
                55, 5, self._text(label), new_x=XPos.RIGHT, new_y=YPos.TOP, max_line_height=5
            )
            self._font(10)
            self.pdf.multi_cell(0, 5, self._text(value or "-"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            self.pdf.ln(1)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self._font(9)
        with self.pdf.table(text_align="LEFT", line_height=5) as table:
            row = table.row()
            for cell in header:
                row.cell(self._text(cell))
            for values in rows:
                row = table.row()
                for cell in values:
                    row.cell(self._text(cell))
        self.pdf.ln(2)

    def output(self) -> bytes:
        return bytes(self.pdf.output())

    def _footer(self, text: str) -> None:
        self.pdf.set_y(-12)
        self._font(8)
        self.pdf.cell(0, 5, self._text(f"{text} - page {self.pdf.page_no()}"), align="C")

    def _font(self, size: int, *, bold: bool = False) -> None:
        self.pdf.set_font(self.family, "B" if bold else "", size)

    def _cell(self, text: str, height: float) -> None:
        self.pdf.multi_cell(0, height, self._text(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def _text(self, text: str) -> str:
        # Control characters other than newlines have no glyph in any font.
        text = "".join(ch for ch in text if ch in "\n\t" or ch.isprintable())
        if self.unicode:
            return text
        return text.encode("latin-1", "replace").decode("latin-1")
