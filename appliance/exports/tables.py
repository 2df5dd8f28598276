"""Piccolo tables of the exports domain: one row per requested export and its download link."""

from __future__ import annotations

from piccolo.columns import BigInt, Integer, Serial, Text, Timestamptz, Varchar
from piccolo.table import Table

__all__ = ["ExportJob"]


class ExportJob(Table, tablename="export_job"):
    """An export of one person's data: queued, built by the worker into the object store,
    downloaded through a link whose token is stored only as a hash, deleted when it expires.

    The database is the queue: the worker claims a queued job with a conditional UPDATE, and a
    running job whose heartbeat stopped (a killed worker) is claimed again.
    """

    id: Serial  # added by Piccolo; declared for the type checker
    kind = Varchar(length=8)  # "client" or "staff"
    subject_id = Integer(index=True)  # the client's or staff user's id; no foreign key
    # "queued", "running", "ready", "failed" or "expired" (the archive is gone)
    state = Varchar(length=12, default="queued", index=True)
    source = Varchar(length=8, default="staff")  # who asked: "staff" or "client"
    requested_by = Integer(null=True, default=None)  # staff user id; no foreign key
    requested_by_name = Varchar(length=100, default="")
    requested_at = Timestamptz()
    heartbeat_at = Timestamptz(null=True, default=None)  # while running
    finished_at = Timestamptz(null=True, default=None)
    expires_at = Timestamptz(null=True, default=None)  # when ready: the link and archive end
    attempts = Integer(default=0)
    error = Text(default="")  # why it failed, safe to show to staff
    object_key = Varchar(length=512, default="")
    size = BigInt(default=0)
    files = Integer(default=0)
    # SHA-256 of the current download link's token; a new link replaces the old one.
    token_hash = Varchar(length=64, null=True, default=None, unique=True)
    downloads = Integer(default=0)
