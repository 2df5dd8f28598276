"""Piccolo tables of the galleries domain."""

from __future__ import annotations

from piccolo.columns import (
    BigInt,
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

__all__ = ["Gallery", "GallerySet", "Photo", "PhotoJob", "PhotoUpload", "PhotoUploadChunk"]


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
