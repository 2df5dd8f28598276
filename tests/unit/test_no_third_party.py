"""No page of the appliance loads or links anything from a third party: the templates, the
static files and the Content-Security-Policy name no other origin.

The scanner here is also used on rendered pages by tests/integration/test_policies_pages.py.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path

import pytest

from appliance.web.security import CONTENT_SECURITY_POLICY

WEB = Path(__file__).resolve().parents[2] / "appliance" / "web"
TEXT_SUFFIXES = {".html", ".css", ".js", ".svg"}  # plain-text e-mails load nothing

# Attributes whose value a browser loads, submits to or follows.
_URL_ATTRIBUTES = {
    "src",
    "href",
    "action",
    "formaction",
    "srcset",
    "imagesrcset",
    "poster",
    "data",
    "background",
    "xlink:href",
    "ping",
    "manifest",
}
_CSS_URL = re.compile(r"""url\(\s*(?:"([^"]*)"|'([^']*)'|([^)\s]*))\s*\)""", re.IGNORECASE)
_CSS_IMPORT = re.compile(r"""@import\s+(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
# Scripts: any absolute URL in a string (fetch, XMLHttpRequest, import, new Image...).
_SCRIPT_URL = re.compile(r"""["'`]((?:https?:)?//[^"'`\s]+)""", re.IGNORECASE)
# An absolute URL's host: scheme-relative "//host" or "scheme://user@host:port".
_ABSOLUTE = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//([^/?#\s]*)", re.IGNORECASE)
# A link a person chooses to follow (``<a href>``) loads nothing when the page opens; the few
# the pages have point admins to documentation. Each is named here, so a new one is a decision.
KNOWN_LINKS = frozenset({"https://github.com/caronc/apprise/wiki"})
# Sources a CSP may name that are not another origin.
_CSP_OWN = {"'self'", "'none'", "data:", "blob:", "'unsafe-inline'", "'strict-dynamic'"}


def host_of(reference: str) -> str | None:
    """The host an absolute or scheme-relative URL points to; None for a relative one."""
    match = _ABSOLUTE.match(reference)
    if match is None:
        return None
    authority = match.group(1).rsplit("@", 1)[-1]
    if authority.startswith("["):
        return authority[1:].partition("]")[0].lower()
    return authority.partition(":")[0].lower()


def _matches(pattern: re.Pattern[str], text: str) -> list[str]:
    return [
        next((group for group in match.groups() if group is not None), "")
        for match in pattern.finditer(text)
    ]


class MarkupUrls(HTMLParser):
    """The URLs of real tags only: text that merely looks like a tag (a client's name
    ``<img src=...>`` printed escaped) is data, and loads nothing."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self.links: set[str] = set()  # values of <a href>
        self._inside = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("srcset", "imagesrcset"):  # "url 2x, url 1x"
                self.urls += [part.split()[0] for part in value.split(",") if part.split()]
            elif name in _URL_ATTRIBUTES:
                self.urls.append(value.strip())
                if tag == "a" and name == "href":
                    self.links.add(value.strip())
            elif name == "style":
                self.urls += _matches(_CSS_URL, value) + _matches(_CSS_IMPORT, value)
            elif name == "content" and tag == "meta":  # refresh "0; url=...", og:image...
                self.urls.append(value.rpartition("url=")[2].strip())
        self._inside = tag if tag in ("style", "script") else ""

    def handle_endtag(self, tag: str) -> None:
        self._inside = ""

    def handle_data(self, data: str) -> None:
        if self._inside == "style":
            self.urls += _matches(_CSS_URL, data) + _matches(_CSS_IMPORT, data)
        elif self._inside == "script":
            self.urls += _matches(_SCRIPT_URL, data)


def _references(text: str, suffix: str) -> tuple[list[str], set[str]]:
    """The URLs in ``text`` and which of them are plain links."""
    if suffix in (".html", ".svg"):
        markup = MarkupUrls()
        markup.feed(text)
        markup.close()
        return markup.urls, markup.links
    if suffix == ".css":
        return _matches(_CSS_URL, text) + _matches(_CSS_IMPORT, text), set()
    return _matches(_SCRIPT_URL, text), set()


def foreign_references(
    text: str, own_hosts: Iterable[str] = (), suffix: str = ".html"
) -> list[str]:
    """Every URL in ``text`` that points to a host other than ``own_hosts``, but for the
    documentation links of :data:`KNOWN_LINKS` as plain links. Template expressions
    (``{{ ... }}``) are skipped: the values they print are checked on the rendered pages."""
    own = {host.lower() for host in own_hosts}
    urls, links = _references(text, suffix)
    found = []
    for reference in urls:
        if reference.startswith(("{{", "{%")):
            continue
        if reference in KNOWN_LINKS and reference in links:
            continue
        host = host_of(reference)
        if host is not None and host not in own:
            found.append(reference)
    return list(dict.fromkeys(found))  # a URL named twice is reported once


def foreign_csp_sources(policy: str) -> list[str]:
    """Sources of a Content-Security-Policy that allow another origin (a host or a scheme
    such as ``https:``)."""
    found = []
    for directive in policy.split(";"):
        _, *sources = directive.split()
        found.extend(s for s in sources if s.lower() not in _CSP_OWN)
    return found


def scan_tree(root: Path) -> dict[str, list[str]]:
    """``{relative path: foreign references}`` for every text file under ``root`` with any."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.suffix not in TEXT_SUFFIXES or not path.is_file():
            continue
        bad = foreign_references(path.read_text(encoding="utf-8"), suffix=path.suffix)
        if bad:
            found[str(path.relative_to(root))] = bad
    return found


def test_templates_and_static_files_name_no_other_origin() -> None:
    """No template (pages and e-mails) and no static file names a URL on another host."""
    assert scan_tree(WEB / "templates") == {}
    assert scan_tree(WEB / "static") == {}
    assert sum(1 for _ in (WEB / "templates").rglob("*.html")) > 20  # the scan saw the pages


def test_content_security_policy_allows_only_this_origin() -> None:
    """The CSP every response carries lets the browser load from this origin only."""
    assert foreign_csp_sources(CONTENT_SECURITY_POLICY) == []
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY


def test_a_broken_copy_is_caught(tmp_path: Path) -> None:
    """A copy of the web folder with a web font, a CDN script, a remote CSS import and a
    tracking pixel planted in it is reported, file by file."""
    copy = tmp_path / "web"
    shutil.copytree(WEB, copy)
    base = copy / "templates" / "base.html"
    base.write_text(
        base.read_text(encoding="utf-8").replace(
            "</head>",
            '<link rel="stylesheet" href="https://fonts.googleapis.com/css2?family=Inter">\n'
            "<script src=//cdn.example.net/lib.js></script>\n</head>",
        ),
        encoding="utf-8",
    )
    css = copy / "static" / "app.css"
    css.write_text(
        "@import 'https://cdn.example.net/reset.css';\n"
        + css.read_text(encoding="utf-8")
        + '\nbody { background: URL( "https://img.example.org/bg.png" ); }\n',
        encoding="utf-8",
    )
    script = copy / "static" / "confirm.js"
    script.write_text(
        script.read_text(encoding="utf-8") + '\nnew Image().src = "https://t.example.com/p";\n',
        encoding="utf-8",
    )
    assert scan_tree(copy / "templates") == {
        "base.html": ["https://fonts.googleapis.com/css2?family=Inter", "//cdn.example.net/lib.js"]
    }
    assert scan_tree(copy / "static") == {
        "app.css": ["https://img.example.org/bg.png", "https://cdn.example.net/reset.css"],
        "confirm.js": ["https://t.example.com/p"],
    }


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ('<img src="/static/a.png"><a href="/privacy">x</a>', []),
        ('<a href="https://appliance.test/s/abc">share</a>', []),
        ('<a href="mailto:hello@lumen.example">mail</a>', []),
        (
            '<img srcset="/a.png 1x, https://cdn.example.net/a.png 2x">',
            ["https://cdn.example.net/a.png"],
        ),
        ("<form action='https://collect.example.com/f'>", ["https://collect.example.com/f"]),
        ('<div style="background:url(//cdn.example.net/x.png)">', ["//cdn.example.net/x.png"]),
        (
            '<a href="https://user:pw@evil.example:8443/">x</a>',
            ["https://user:pw@evil.example:8443/"],
        ),
    ],
)
def test_scanner_tells_own_from_foreign(page: str, expected: list[str]) -> None:
    """Relative URLs, this appliance's own host and mailto: pass; other hosts are named."""
    assert foreign_references(page, own_hosts=["appliance.test"]) == expected


def test_csp_with_a_cdn_is_caught() -> None:
    """A policy that admits a CDN or every https: origin is reported."""
    policy = "default-src 'self'; script-src 'self' https://cdn.example.net; img-src https:"
    assert foreign_csp_sources(policy) == ["https://cdn.example.net", "https:"]


def test_a_known_documentation_link_only_passes_as_a_link() -> None:
    """The apprise documentation may be linked to, but not loaded as a script or image."""
    link = '<a href="https://github.com/caronc/apprise/wiki">apprise URLs</a>'
    assert foreign_references(link) == []
    loaded = '<script src="https://github.com/caronc/apprise/wiki"></script>'
    assert foreign_references(loaded) == ["https://github.com/caronc/apprise/wiki"]


def test_escaped_text_that_looks_like_a_tag_is_not_a_reference() -> None:
    """A client's name printed escaped loads nothing and is not reported; the same as a tag is."""
    escaped = "<td>&lt;img src=https://tracker.example/p.gif&gt;</td>"
    assert foreign_references(escaped) == []
    assert foreign_references("<td><img src=https://tracker.example/p.gif></td>") == [
        "https://tracker.example/p.gif"
    ]
