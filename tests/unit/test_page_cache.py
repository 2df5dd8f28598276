"""The page cache's compression: the shared head compressed once, each browser's token after."""

from __future__ import annotations

import gzip

import pytest

from appliance.galleries.page_cache import (
    CSRF_PLACEHOLDER,
    SPLIT_MARKER,
    CachedPage,
    PageCache,
    accepts_gzip,
)

PAGE = (
    "<html><body>"
    + "".join(f'<li id="p{n}"><img src="/media/share/1/{n}/thumb"></li>' for n in range(500))
    + SPLIT_MARKER
    + f'<form><input name="_csrf" value="{CSRF_PLACEHOLDER}"></form>'
    + f'<script type="application/json">{{"csrf": "{CSRF_PLACEHOLDER}"}}</script></body></html>'
)


def test_gzipped_and_plain_pages_say_the_same_with_each_browsers_token() -> None:
    page = CachedPage(PAGE)
    for token in ("a" * 64, "b" * 64):
        plain = page.plain(token).decode()
        assert plain == PAGE.replace(CSRF_PLACEHOLDER, token)
        packed = page.gzipped(token)
        assert gzip.decompress(packed).decode() == plain
        assert len(packed) < len(plain) / 5
    assert CSRF_PLACEHOLDER not in page.plain("c" * 64).decode()


def test_a_page_without_the_marker_is_served_whole() -> None:
    page = CachedPage(f"<p>{CSRF_PLACEHOLDER}</p>")
    assert gzip.decompress(page.gzipped("t")) == b"<p>t</p>" == page.plain("t")


@pytest.mark.parametrize(
    "header,expected",
    [
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("*", True),
        ("gzip;q=0", False),
        ("identity", False),
        ("", False),
        ("gzip;q=abc", False),
    ],
)
def test_accept_encoding(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_cache_keeps_the_most_recent_pages() -> None:
    cache = PageCache(size=2)
    for key in ("a", "b", "c"):
        cache.put(key, CachedPage(key))
    assert cache.get("a") is None and cache.get("b") is not None and len(cache) == 2
    cache.put("d", CachedPage("d"))  # "b" was used last, so "c" goes
    assert cache.get("c") is None and cache.get("b") is not None
