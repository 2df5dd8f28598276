"""Share links: a gallery shared with one recipient, and what that recipient may do.

A link's token is ``secrets.token_urlsafe(32)`` (256 bits). Only its SHA-256 is stored, looked
up by that hash and compared in constant time; the optional password and download PIN are
argon2id hashes and only ever arrive in a POST body. A browser that opens a link gets a visit
(a random visitor cookie, stored hashed per link) that remembers what it has unlocked.

Every request under a link, including each photo file and each ZIP entry, calls
:func:`active_link` again, so revoking a link, its expiry, or the gallery being taken back
stops all of it at once. Failed passwords and PINs are throttled per link and per address with
the same PostgreSQL counters as staff sign-in.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import msgspec

from appliance.accounts import throttle
from appliance.accounts.passwords import (
    MAX_PASSWORD_LENGTH,
    hash_password_async,
    verify_password_async,
)
from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.config import ThrottleSettings
from appliance.errors import Conflict, InvalidInput, NotFound, TooManyAttempts
from appliance.galleries.service import GalleryRecord, gallery_from_row, get_gallery
from appliance.galleries.tables import ShareEvent, ShareLink, ShareVisit
from appliance.tokens import new_token, same, token_digest
from appliance.validation import clean_email, clean_text

__all__ = [
    "MAX_LINKS_PER_GALLERY",
    "TOKEN_PATTERN",
    "LinkOptions",
    "LinkRecord",
    "Opening",
    "ShareEventRecord",
    "Visit",
    "active_link",
    "create_link",
    "enter_secret",
    "get_link",
    "list_events",
    "list_links",
    "open_link",
    "purge_visits",
    "record_event",
    "revoke_link",
    "seen",
    "start_visit",
]

TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_LINKS_PER_GALLERY = 200
MAX_EXPIRY_YEAR = 2999
MIN_PASSWORD_LENGTH = 6
_PIN = re.compile(r"[0-9]{4,8}")
# A visit outlives its browser cookie (share_web.VISITOR_DAYS) by a day, then it is removed.
VISIT_LIFETIME = dt.timedelta(days=31)
VIEW_LOG_INTERVAL = dt.timedelta(hours=1)
LOG_ONCE_PER = {
    "opened": VIEW_LOG_INTERVAL,
    "viewed": VIEW_LOG_INTERVAL,
    "downloaded": dt.timedelta(minutes=10),
    "zip": dt.timedelta(minutes=10),
}
# Browsers a link remembers; beyond this the ones seen longest ago are forgotten (they enter
# the password again), so opening a link again and again without cookies cannot fill the disk.
MAX_VISITS_PER_LINK = 2000


class LinkOptions(msgspec.Struct, frozen=True):
    """What the photographer types when sharing; ``expires_on`` as YYYY-MM-DD or ""."""

    recipient: str
    email: str = ""
    password: str = ""
    pin: str = ""
    expires_on: str = ""
    can_download_web: bool = True
    can_download_original: bool = False
    can_favourite: bool = True


class LinkRecord(msgspec.Struct, frozen=True):
    id: int
    gallery_id: int
    recipient: str
    email: str
    has_password: bool
    has_pin: bool
    can_download_web: bool
    can_download_original: bool
    can_favourite: bool
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    created_at: dt.datetime
    last_opened_at: dt.datetime | None

    def state(self, now: dt.datetime) -> str:
        """ "revoked", "expired" or "active"."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    @property
    def can_download(self) -> bool:
        return self.can_download_web or self.can_download_original


class Visit(msgspec.Struct, frozen=True):
    id: int
    link_id: int
    unlocked: bool
    pin_ok: bool
    last_seen_at: dt.datetime | None = None


class ShareEventRecord(msgspec.Struct, frozen=True):
    at: dt.datetime
    kind: str
    photo_id: int | None
    detail: str
    address: str


_COLUMNS = (
    ShareLink.id,
    ShareLink.gallery,
    ShareLink.recipient,
    ShareLink.email,
    ShareLink.password_hash,
    ShareLink.pin_hash,
    ShareLink.can_download_web,
    ShareLink.can_download_original,
    ShareLink.can_favourite,
    ShareLink.expires_at,
    ShareLink.revoked_at,
    ShareLink.created_at,
    ShareLink.last_opened_at,
)


def _record(row: dict[str, Any]) -> LinkRecord:
    return LinkRecord(
        id=row["id"],
        gallery_id=row["gallery"],
        recipient=row["recipient"],
        email=row["email"],
        has_password=row["password_hash"] is not None,
        has_pin=row["pin_hash"] is not None,
        can_download_web=row["can_download_web"],
        can_download_original=row["can_download_original"],
        can_favourite=row["can_favourite"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        created_at=row["created_at"],
        last_opened_at=row["last_opened_at"],
    )


def _expiry(value: str, today: dt.date) -> dt.datetime | None:
    value = value.strip()
    if not value:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidInput("Enter a date as YYYY-MM-DD.", field="expires_on") from None
    if day < today:
        raise InvalidInput("Choose a date from today on, or leave it empty.", field="expires_on")
    if day.year > MAX_EXPIRY_YEAR:
        raise InvalidInput(
            f"Choose a date before {MAX_EXPIRY_YEAR + 1}, or leave it empty.", field="expires_on"
        )
    # The link works through the whole of that day (UTC).
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


def _check_secret(value: str, *, field: str) -> None:
    if field == "pin":
        if not _PIN.fullmatch(value):
            raise InvalidInput("A download PIN is 4 to 8 digits.", field=field)
        return
    if len(value) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"Use at least {MIN_PASSWORD_LENGTH} characters.", field=field)
    if len(value) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"Use at most {MAX_PASSWORD_LENGTH} characters.", field=field)


async def create_link(
    gallery_id: int, options: LinkOptions, *, actor: Actor, address: str, now: dt.datetime
) -> tuple[LinkRecord, str]:
    """A new link and its token. The token is returned this once and never stored."""
    gallery = await get_gallery(gallery_id)
    if gallery.status == "archived":
        raise Conflict("This gallery is archived. Publish it again to share it.")
    recipient = clean_text(options.recipient, field="recipient", max_length=120)
    email = clean_email(options.email, required=False)
    expires_at = _expiry(options.expires_on, now.date())
    password_hash = pin_hash = None
    if options.password:
        _check_secret(options.password, field="password")
        password_hash = await hash_password_async(options.password)
    if options.pin:
        _check_secret(options.pin, field="pin")
        pin_hash = await hash_password_async(options.pin)
    if options.pin and not (options.can_download_web or options.can_download_original):
        raise InvalidInput("A download PIN needs a download permission.", field="pin")
    token = new_token()
    async with ShareLink._meta.db.transaction(allow_nested=True):
        count = await ShareLink.count().where(ShareLink.gallery == gallery_id).run()
        if count >= MAX_LINKS_PER_GALLERY:
            raise Conflict(f"A gallery has at most {MAX_LINKS_PER_GALLERY} share links.")
        rows = await ShareLink.insert(
            ShareLink(
                gallery=gallery_id,
                recipient=recipient,
                email=email,
                token_hash=token_digest(token),
                password_hash=password_hash,
                pin_hash=pin_hash,
                can_download_web=options.can_download_web,
                can_download_original=options.can_download_original,
                can_favourite=options.can_favourite,
                expires_at=expires_at,
                created_by=actor.id,
                created_at=now,
            )
        ).returning(ShareLink.id)
        link_id = rows[0]["id"]
        await audit.record(
            "share.create",
            actor=actor,
            target=f"gallery:{gallery_id}",
            address=address,
            details={
                "link": link_id,
                "password": password_hash is not None,
                "pin": pin_hash is not None,
                "originals": options.can_download_original,
            },
            at=now,
        )
    return await get_link(link_id), token


async def get_link(link_id: int) -> LinkRecord:
    row = await ShareLink.select(*_COLUMNS).where(ShareLink.id == link_id).first().run()
    if row is None:
        raise NotFound("There is no such share link.")
    return _record(row)


async def list_links(gallery_id: int) -> list[LinkRecord]:
    rows = (
        await ShareLink.select(*_COLUMNS)
        .where(ShareLink.gallery == gallery_id)
        .order_by(ShareLink.created_at, ascending=False)
        .run()
    )
    return [_record(row) for row in rows]


async def revoke_link(
    gallery_id: int, link_id: int, *, actor: Actor, address: str, now: dt.datetime
) -> LinkRecord:
    """Withdraw a link: from now on its pages, files and downloads are refused."""
    async with ShareLink._meta.db.transaction(allow_nested=True):
        rows = (
            await ShareLink.update({ShareLink.revoked_at: now})
            .where(ShareLink.id == link_id)
            .where(ShareLink.gallery == gallery_id)
            .where(ShareLink.revoked_at.is_null())
            .returning(ShareLink.id)
            .run()
        )
        if not rows:
            link = await get_link(link_id)  # NotFound for an unknown one
            if link.gallery_id != gallery_id:
                raise NotFound("There is no such share link.")
            raise Conflict("This link was already withdrawn.")
        await ShareVisit.delete().where(ShareVisit.link == link_id).run()
        await audit.record(
            "share.revoke",
            actor=actor,
            target=f"gallery:{gallery_id}",
            address=address,
            details={"link": link_id},
            at=now,
        )
    return await get_link(link_id)


class Opening(msgspec.Struct, frozen=True):
    """A working link as one request sees it: the link, its gallery, this browser's visit
    (None before its first request) and the counter of the link's selection lists."""

    link: LinkRecord
    gallery: GalleryRecord
    visit: Visit | None
    selection_version: int


# One round trip for every request under a link: the link, its gallery (with the client's
# name and the version the client's page is cached by) and this browser's visit.
_OPEN_SQL = """
SELECT l.id, l.gallery, l.recipient, l.email, l.password_hash, l.pin_hash,
       l.can_download_web, l.can_download_original, l.can_favourite, l.expires_at,
       l.revoked_at, l.created_at, l.last_opened_at, l.selection_version, l.token_hash,
       g.client AS g_client, c.name AS g_client_name, g.title AS g_title,
       g.description AS g_description, g.event_date AS g_event_date, g.status AS g_status,
       g.expires_on AS g_expires_on, g.created_at AS g_created_at,
       g.updated_at AS g_updated_at, g.published_at AS g_published_at,
       g.cover_photo AS g_cover_photo, g.watermark AS g_watermark, g.version AS g_version,
       v.id AS v_id, v.unlocked AS v_unlocked, v.pin_ok AS v_pin_ok,
       v.last_seen_at AS v_last_seen_at
FROM share_link l
JOIN gallery g ON g.id = l.gallery
JOIN client c ON c.id = g.client
LEFT JOIN share_visit v ON v.visit_key = l.id::text || ':' || {}
WHERE """


def _opening(row: dict[str, Any] | None, now: dt.datetime) -> Opening:
    if row is None:
        raise NotFound("This link does not exist. Check that it was copied whole.")
    link = _record(row)
    state = link.state(now)
    if state == "revoked":
        raise NotFound("This link was withdrawn by the studio.")
    if state == "expired":
        raise NotFound("This link has expired. Ask the studio for a new one.")
    # The gallery's columns come aliased "g_<column>", as galleries.service reads them.
    gallery = gallery_from_row(
        {"id": row["gallery"], **{key[2:]: value for key, value in row.items() if key[:2] == "g_"}}
    )
    if gallery.expired(now.date()):
        raise NotFound("This gallery has expired. Ask the studio if you still need it.")
    if gallery.status != "published":
        raise NotFound("This gallery is not available at the moment.")
    current = None
    if row["v_id"] is not None:
        current = Visit(
            id=row["v_id"],
            link_id=link.id,
            unlocked=row["v_unlocked"],
            pin_ok=row["v_pin_ok"],
            last_seen_at=row["v_last_seen_at"],
        )
    return Opening(
        link=link, gallery=gallery, visit=current, selection_version=row["selection_version"]
    )


def _visitor_digest(visitor: str) -> str:
    return token_digest(visitor) if visitor else ""


async def open_link(token: str, now: dt.datetime, *, visitor: str = "") -> Opening:
    """The link a token opens, its gallery and this browser's visit, or NotFound saying why
    the link does not work."""
    if not TOKEN_PATTERN.fullmatch(token):
        raise NotFound("This link does not exist. Check that it was copied whole.")
    digest = token_digest(token)
    rows = await ShareLink.raw(_OPEN_SQL + "l.token_hash = {}", _visitor_digest(visitor), digest)
    row = rows[0] if rows else None
    # The index found the row by its hash; compare once more in constant time all the same.
    if row is not None and not same(row["token_hash"], digest):
        row = None
    return _opening(row, now)


async def active_link(link_id: int, now: dt.datetime, *, visitor: str = "") -> Opening:
    """Re-check a link by id (for files and ZIP entries): NotFound once it no longer works."""
    rows = await ShareLink.raw(_OPEN_SQL + "l.id = {}", _visitor_digest(visitor), link_id)
    return _opening(rows[0] if rows else None, now)


async def seen(current: Visit, *, address: str, now: dt.datetime) -> None:
    """Note that the visit's browser opened the link; logged once an hour per visit."""
    if current.last_seen_at is not None and current.last_seen_at > now - VIEW_LOG_INTERVAL:
        return
    await ShareVisit.update({ShareVisit.last_seen_at: now}).where(ShareVisit.id == current.id).run()
    await record_event(current.link_id, "opened", now=now, address=address)


def _visit_key(link_id: int, visitor: str) -> str:
    return f"{link_id}:{token_digest(visitor)}"


async def start_visit(link: LinkRecord, visitor: str, *, address: str, now: dt.datetime) -> Visit:
    """The visit of a browser seeing ``link`` for the first time (logged as "opened")."""
    key = _visit_key(link.id, visitor)
    rows = await ShareVisit.raw(
        "INSERT INTO share_visit (link, visit_key, unlocked, pin_ok, created_at, last_seen_at)"
        " SELECT {}, {}, {}, false, {}, {} WHERE EXISTS"
        " (SELECT 1 FROM share_link WHERE id = {} AND revoked_at IS NULL)"
        " ON CONFLICT (visit_key) DO UPDATE SET last_seen_at = share_visit.last_seen_at"
        " RETURNING id, unlocked, pin_ok",
        link.id,
        key,
        not link.has_password,
        now,
        now,
        link.id,
    )
    if not rows:  # withdrawn in between
        raise NotFound("This link was withdrawn by the studio.")
    await ShareVisit.raw(
        "DELETE FROM share_visit WHERE id IN (SELECT id FROM share_visit WHERE link = {}"
        " ORDER BY last_seen_at DESC, id DESC OFFSET {})",
        link.id,
        MAX_VISITS_PER_LINK,
    )
    await ShareLink.update({ShareLink.last_opened_at: now}).where(ShareLink.id == link.id).run()
    await record_event(link.id, "opened", now=now, address=address)
    row = rows[0]
    return Visit(
        id=row["id"],
        link_id=link.id,
        unlocked=row["unlocked"],
        pin_ok=row["pin_ok"],
        last_seen_at=now,
    )


async def enter_secret(
    link: LinkRecord,
    current: Visit,
    kind: str,
    value: str,
    *,
    address: str,
    now: dt.datetime,
    rules: ThrottleSettings,
) -> None:
    """Check the link's ``kind`` ("password" or "pin") for this visit and remember it.

    Every try is counted against the link and the address before the check, as at sign-in,
    and refunded when it was right; a wrong one is written to the access log.
    """
    if kind == "password":
        column, flag, needed, done = (
            ShareLink.password_hash,
            ShareVisit.unlocked,
            link.has_password,
            current.unlocked,
        )
    else:
        column, flag, needed, done = (
            ShareLink.pin_hash,
            ShareVisit.pin_ok,
            link.has_pin,
            current.pin_ok,
        )
    if not needed or done:
        return
    stored = await ShareLink.select(column).where(ShareLink.id == link.id).first().run()
    stored_hash = stored[column._meta.name] if stored else None
    # The address's key is one of its own: clients guessing on the studio's Wi-Fi must not
    # lock the staff out of signing in, nor the other way round.
    keys = [f"share:{link.id}:{kind}", "share-" + throttle.address_key(address)]
    label = "password" if kind == "password" else "PIN"
    try:
        attempt = await throttle.reserve(keys, now, rules)
    except TooManyAttempts as exc:
        raise TooManyAttempts(
            f"Too many wrong tries of the {label}. Try again in {exc.retry_after} seconds.",
            retry_after=exc.retry_after,
        ) from None
    if not await verify_password_async(value[: MAX_PASSWORD_LENGTH + 1], stored_hash):
        await record_event(link.id, f"{kind}_failed", now=now, address=address)
        raise InvalidInput(f"That {label} is not right.", field=kind)
    await throttle.refund(attempt, rules)
    await (
        ShareVisit.update({flag: True, ShareVisit.last_seen_at: now})
        .where(ShareVisit.id == current.id)
        .run()
    )
    await record_event(
        link.id, "unlocked" if kind == "password" else "pin_ok", now=now, address=address
    )


async def record_event(
    link_id: int,
    kind: str,
    *,
    now: dt.datetime,
    address: str,
    photo_id: int | None = None,
    detail: str = "",
) -> None:
    """Append to the link's access log. The same entry from the same address is written once
    per ``LOG_ONCE_PER[kind]`` (an hour for "opened" and "viewed", ten minutes for downloads),
    so reloading, paging back and forth or a script cannot bury the log."""
    interval = LOG_ONCE_PER.get(kind)
    if interval is not None:
        same_photo = (
            ShareEvent.photo.is_null() if photo_id is None else ShareEvent.photo == photo_id
        )
        recent = (
            await ShareEvent.exists()
            .where(
                (ShareEvent.link == link_id)
                & (ShareEvent.kind == kind)
                & same_photo
                & (ShareEvent.detail == detail[:200])
                & (ShareEvent.address == address)
                & (ShareEvent.at > now - interval)
            )
            .run()
        )
        if recent:
            return
    await ShareEvent.insert(
        ShareEvent(
            link=link_id, at=now, kind=kind, photo=photo_id, detail=detail[:200], address=address
        )
    ).run()


async def list_events(link_id: int, *, limit: int = 500) -> list[ShareEventRecord]:
    """The newest ``limit`` entries of a link's access log, newest first."""
    rows = (
        await ShareEvent.select(
            ShareEvent.at, ShareEvent.kind, ShareEvent.photo, ShareEvent.detail, ShareEvent.address
        )
        .where(ShareEvent.link == link_id)
        .order_by(ShareEvent.at, ascending=False)
        .order_by(ShareEvent.id, ascending=False)
        .limit(limit)
        .run()
    )
    return [
        ShareEventRecord(
            at=row["at"],
            kind=row["kind"],
            photo_id=row["photo"],
            detail=row["detail"],
            address=row["address"],
        )
        for row in rows
    ]


async def purge_visits(now: dt.datetime) -> int:
    """Remove visits older than any visitor cookie can be; returns how many."""
    rows = (
        await ShareVisit.delete()
        .where(ShareVisit.created_at < now - VISIT_LIFETIME)
        .returning(ShareVisit.id)
        .run()
    )
    return len(rows)
