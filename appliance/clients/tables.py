"""Piccolo tables of the clients domain."""

from __future__ import annotations

from piccolo.columns import Integer, Serial, Text, Timestamptz, Varchar
from piccolo.columns.indexes import IndexMethod
from piccolo.table import Table

__all__ = ["Client"]


class Client(Table, tablename="client"):
    """A customer of the studio. Clients have no account: they reach what is shared with them
    through links."""

    id: Serial  # added by Piccolo; declared for the type checker
    name = Varchar(length=120, index=True, index_method=IndexMethod.btree)
    email = Varchar(length=254, default="")
    phone = Varchar(length=40, default="")
    postal_address = Text(default="")
    notes = Text(default="")
    # The language of the e-mail this client receives; "" means the studio's default.
    language = Varchar(length=8, default="")
    status = Varchar(length=16, default="active")  # "active" or "archived"
    created_by = Integer(null=True, default=None)  # staff user id; no foreign key: kept history
    created_at = Timestamptz()
    updated_at = Timestamptz()
    archived_at = Timestamptz(null=True, default=None)
