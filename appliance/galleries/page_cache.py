"""Rendered client gallery pages, kept in memory and keyed by everything they show.

A 500-photo page takes tens of milliseconds to render and is the same for every request of a
link within a minute: the same photos (``gallery.version``, raised by database triggers), the
same lists (``share_link.selection_version``), the same signed URLs (their expiry is rounded
to the minute, see ``media.url_window``). What differs per browser, the CSRF token, is put in
by replacing a placeholder. Nothing is ever invalidated by hand: a change makes a new key, and
old keys fall out of the bounded LRU.

Pages are sent gzip-compressed to browsers that accept it (a page shrinks about fourfold,
which matters on a phone). The part before ``SPLIT_MARKER`` holds no per-browser value, so it
is compressed once, ending on a full flush (later blocks refer to nothing before it); per
request only the short rest, with this browser's token, is compressed, and the gzip trailer
gets the CRC continued from the head's. The page also shows text other holders of the link
typed (list names, notes), so the token is masked afresh for every response (see
``web.csrf``): compression then cannot be used to guess it (BREACH).
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Hashable

from markupsafe import Markup

__all__ = ["CSRF_PLACEHOLDER", "SPLIT_MARKER", "CachedPage", "PageCache", "accepts_gzip"]

# Rendered where the page's CSRF token goes. It holds "<", which autoescaping never lets
# through from text people typed, so only the template's own placeholders are replaced.
CSRF_PLACEHOLDER = Markup("<csrf-token>")
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
        self._head_crc = zlib.crc32(self._head)

    def plain(self, token: str) -> bytes:
        return self._head + self._tail.replace(CSRF_PLACEHOLDER, token).encode()

    def gzipped(self, token: str) -> bytes:
        tail = self._tail.replace(CSRF_PLACEHOLDER, token).encode()
        rest = zlib.compressobj(6, zlib.DEFLATED, -15)  # raw deflate: blocks continuing the head
        blocks = rest.compress(tail) + rest.flush()
        crc = zlib.crc32(tail, self._head_crc)
        size = (len(self._head) + len(tail)) & 0xFFFFFFFF
        return self._head_gzip + blocks + struct.pack("<II", crc, size)

    @property
    def size(self) -> int:
        return len(self._head) + len(self._tail) + len(self._head_gzip)


class PageCache:
    """A small LRU of rendered pages: the most recent, at most ``size`` of them and at most
    ``max_bytes`` in all."""

    def __init__(self, size: int = 128, max_bytes: int = 32 * 1024 * 1024) -> None:
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0
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
            old = self._pages.pop(key, None)
            self._bytes -= old.size if old else 0
            self._pages[key] = page
            self._bytes += page.size
            while len(self._pages) > self._size or (
                self._bytes > self._max_bytes and len(self._pages) > 1
            ):
                _, dropped = self._pages.popitem(last=False)
                self._bytes -= dropped.size

    def __len__(self) -> int:
        return len(self._pages)
