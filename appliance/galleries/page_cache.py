"""Rendered client gallery pages, kept in memory and keyed by everything they show.

A 500-photo page takes tens of milliseconds to render and is the same for every request of a
link within a minute: the same photos (``gallery.version``, raised by database triggers), the
same lists (``share_link.selection_version``), the same signed URLs (their expiry is rounded
to the minute, see ``media.url_window``). What differs per browser, the CSRF token, is put in
by replacing a placeholder. Nothing is ever invalidated by hand: a change makes a new key, and
old keys fall out of the bounded LRU.

Pages are sent gzip-compressed to browsers that accept it (a 500-photo page shrinks about
tenfold, which matters on a phone). The part before ``SPLIT_MARKER`` holds no per-browser
value, so it is compressed once, ending on a full flush; per request a copy of the compressor
only compresses the short rest with this browser's token. No value an attacker chooses is
reflected into these pages, and the secret parts are after the split, so the compression does
not open a BREACH-style guessing channel.
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

__all__ = ["CSRF_PLACEHOLDER", "SPLIT_MARKER", "CachedPage", "PageCache", "accepts_gzip"]

# Rendered where the page's CSRF token goes; URL-safe, so no template filter changes it.
CSRF_PLACEHOLDER = "csrf-placeholder-5b0c1d9e7a"
# Written by the template where the part that is the same for every browser ends.
SPLIT_MARKER = "<!-- per-visitor -->"


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (and does not give it q=0)."""
    for item in header.lower().split(","):
        name, _, params = item.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            quality = params.strip().removeprefix("q=")
            try:
                return not params or float(quality) > 0
            except ValueError:
                return False
    return False


class CachedPage:
    """One rendered page: plain, and its shared head compressed once."""

    def __init__(self, page: str) -> None:
        head, marker, tail = page.partition(SPLIT_MARKER)
        head, tail = (head, marker + tail) if marker else ("", page)
        self._head = head.encode()
        self._tail = tail
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: the gzip format
        self._head_gzip = compressor.compress(self._head) + compressor.flush(zlib.Z_FULL_FLUSH)
        self._compressor: Any = compressor

    def plain(self, token: str) -> bytes:
        return self._head + self._tail.replace(CSRF_PLACEHOLDER, token).encode()

    def gzipped(self, token: str) -> bytes:
        rest = self._compressor.copy()
        tail = self._tail.replace(CSRF_PLACEHOLDER, token).encode()
        return self._head_gzip + bytes(rest.compress(tail)) + bytes(rest.flush())


class PageCache:
    """A small LRU of rendered pages (the most recent ``size``)."""

    def __init__(self, size: int = 128) -> None:
        self._size = size
        self._pages: OrderedDict[Hashable, CachedPage] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> CachedPage | None:
        with self._lock:
            page = self._pages.get(key)
            if page is not None:
                self._pages.move_to_end(key)
            return page

    def put(self, key: Hashable, page: CachedPage) -> None:
        with self._lock:
            self._pages[key] = page
            self._pages.move_to_end(key)
            while len(self._pages) > self._size:
                self._pages.popitem(last=False)

    def __len__(self) -> int:
        return len(self._pages)
