"""Piccolo tables of the galleries domain."""

from __future__ import annotations

from piccolo.columns import Date, ForeignKey, Integer, OnDelete, Serial, Text, Timestamptz, Varchar
from piccolo.table import Table

from appliance.clients.tables import Client

__all__ = ["Gallery", "GallerySet"]


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
