"""Piccolo tables of the galleries domain."""

from __future__ import annotations

from piccolo.columns import (
    BigInt,
    Boolean,
    Date,
    ForeignKey,
    Integer,
    OnDelete,
    Serial,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table

from appliance.clients.tables import Client

__all__ = [
    "Gallery",
    "GallerySet",
    "Photo",
    "PhotoJob",
    "PhotoUpload",
    "PhotoUploadChunk",
    "SelectionItem",
    "SelectionList",
    "ShareEvent",
    "ShareLink",
    "ShareVisit",
]


class Gallery(Table, tablename="gallery"):
    """Photos of one shoot for one client."""

    id: Serial  # added by Piccolo; declared for the type checker
    # RESTRICT: a client with galleries is archived, not deleted; erasure removes both on purpose.
    client = ForeignKey(Client, on_delete=OnDelete.restrict)
    title = Varchar(length=120)
    description = Text(default="")
    event_date = Date(null=True, default=None)
    status = Varchar(length=16, default="draft")  # "draft", "published" or "archived"
    expires_on = Date(null=True, default=None)
    created_by = Integer(null=True, default=None)
    created_at = Timestamptz()
    updated_at = Timestamptz()
    published_at = Timestamptz(null=True, default=None)
    # The photo shown first and on the client's cover; a plain id (a Photo refers to its
    # gallery, so a foreign key back would be circular); a photo of another gallery never counts.
    cover_photo = Integer(null=True, default=None)
    watermark = Boolean(default=False)  # previews carry the studio's name
    # Raised by database triggers on every change of the gallery, its sets or its photos:
    # the client's page is cached per version (see share_page.py).
    version = BigInt(default=0)


class GallerySet(Table, tablename="gallery_set"):
    """A section of a gallery ("Ceremony", "Portraits"), shown in ``position`` order."""

    id: Serial  # added by Piccolo; declared for the type checker
    gallery = ForeignKey(Gallery, on_delete=OnDelete.cascade)
    name = Varchar(length=80)
    position = Integer(default=0)


class Photo(Table, tablename="photo"):
    """One original image in a gallery; its bytes live in the object store under
    ``original_key``."""

    id: Serial  # added by Piccolo; declared for the type checker
    gallery = ForeignKey(Gallery, on_delete=OnDelete.cascade)
    gallery_set = ForeignKey(GallerySet, on_delete=OnDelete.restrict)
    filename = Varchar(length=255)
    content_type = Varchar(length=40)
    size = BigInt()
    sha256 = Varchar(length=64, index=True)
    width = Integer()
    height = Integer()
    original_key = Varchar(length=512, unique=True)
    status = Varchar(length=16, default="processing")  # "processing", "ready" or "failed"
    thumb_key = Varchar(length=512, default="")
    preview_key = Varchar(length=512, default="")
    failure = Text(default="")  # why the derivatives could not be made, shown to staff
    position = Integer(default=0)
    created_by = Integer(null=True, default=None)
    created_at = Timestamptz()


class PhotoJob(Table, tablename="photo_job"):
    """Derivatives to make for a photo. The database is the queue: a worker claims a job with a
    conditional UPDATE, so a job whose worker died is claimed again once it is stale."""

    id: Serial  # added by Piccolo; declared for the type checker
    photo = ForeignKey(Photo, on_delete=OnDelete.cascade)
    state = Varchar(length=16, default="queued")  # "queued", "running", "done" or "failed"
    attempts = Integer(default=0)
    last_error = Text(default="")
    not_before = Timestamptz()
    claimed_at = Timestamptz(null=True, default=None)
    updated_at = Timestamptz()


class PhotoUpload(Table, tablename="photo_upload"):
    """A resumable upload in progress: chunks arrive in any order, each at most once counted."""

    id: Serial  # added by Piccolo; declared for the type checker
    token = Varchar(length=64, unique=True)
    gallery = ForeignKey(Gallery, on_delete=OnDelete.cascade)
    gallery_set = ForeignKey(GallerySet, on_delete=OnDelete.cascade)
    filename = Varchar(length=255)
    size = BigInt()
    chunk_size = Integer()
    created_by = Integer(null=True, default=None)
    created_at = Timestamptz()
    # Set while a request completes the upload: a second "complete" (a retry, a double click)
    # is refused instead of making a second photo.
    completing_at = Timestamptz(null=True, default=None)


class PhotoUploadChunk(Table, tablename="photo_upload_chunk"):
    """A chunk that arrived whole and with the right checksum."""

    id: Serial  # added by Piccolo; declared for the type checker
    upload = ForeignKey(PhotoUpload, on_delete=OnDelete.cascade)
    chunk_key = Varchar(length=80, unique=True)  # "<upload id>:<index>": one row per chunk
    position = Integer()
    size = Integer()
    sha256 = Varchar(length=64)


class ShareLink(Table, tablename="share_link"):
    """A gallery shared with one recipient. The token itself is never stored, only its SHA-256;
    the password and the download PIN only as argon2id hashes."""

    id: Serial  # added by Piccolo; declared for the type checker
    gallery = ForeignKey(Gallery, on_delete=OnDelete.cascade)
    recipient = Varchar(length=120)
    email = Varchar(length=254, default="")
    token_hash = Varchar(length=64, unique=True)
    password_hash = Varchar(length=255, null=True, default=None)
    pin_hash = Varchar(length=255, null=True, default=None)
    can_download_web = Boolean(default=True)
    can_download_original = Boolean(default=False)
    can_favourite = Boolean(default=True)
    expires_at = Timestamptz(null=True, default=None)
    revoked_at = Timestamptz(null=True, default=None)
    created_by = Integer(null=True, default=None)
    created_at = Timestamptz()
    last_opened_at = Timestamptz(null=True, default=None)
    # Raised by database triggers on every change of the link's selection lists.
    selection_version = BigInt(default=0)


class ShareVisit(Table, tablename="share_visit"):
    """One browser's visit of a link: what it has unlocked (the password, the download PIN).

    The browser holds a random visitor value in a cookie; rows store its SHA-256 per link.
    """

    id: Serial  # added by Piccolo; declared for the type checker
    link = ForeignKey(ShareLink, on_delete=OnDelete.cascade)
    visit_key = Varchar(length=80, unique=True)  # "<link id>:<visitor digest>"
    unlocked = Boolean(default=False)
    pin_ok = Boolean(default=False)
    created_at = Timestamptz()
    last_seen_at = Timestamptz()


class ShareEvent(Table, tablename="share_event"):
    """The access log of a link, shown to the photographer: opened, viewed, downloaded what."""

    id: Serial  # added by Piccolo; declared for the type checker
    link = ForeignKey(ShareLink, on_delete=OnDelete.cascade)
    at = Timestamptz(index=True)
    kind = Varchar(length=32)
    photo = Integer(null=True, default=None)
    detail = Varchar(length=200, default="")
    address = Varchar(length=64, default="")


class SelectionList(Table, tablename="selection_list"):
    """A named list of favourites a recipient keeps ("Favourites", "For the album")."""

    id: Serial  # added by Piccolo; declared for the type checker
    link = ForeignKey(ShareLink, on_delete=OnDelete.cascade)
    name = Varchar(length=60)
    note = Text(default="")  # what the client wrote when sending
    created_at = Timestamptz()
    sent_at = Timestamptz(null=True, default=None)


class SelectionItem(Table, tablename="selection_item"):
    """One photo on a selection list."""

    id: Serial  # added by Piccolo; declared for the type checker
    selection = ForeignKey(SelectionList, on_delete=OnDelete.cascade)
    photo = ForeignKey(Photo, on_delete=OnDelete.cascade)
    item_key = Varchar(length=40, unique=True)  # "<selection id>:<photo id>": once per list
    created_at = Timestamptz()
