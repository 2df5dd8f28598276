"""Piccolo tables of clients' privacy requests: what a client asked through a share link, and
how and when the studio answered (GDPR Art. 12(3): within one month, extendable once).

A request belongs to a client row and goes with it (``ON DELETE CASCADE``): when an erasure
purges the client, the requests and what the client typed in them go too; the audit log keeps
that they were made and answered, without their content.
"""

from __future__ import annotations

from piccolo.columns import (
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

__all__ = ["PrivacyRequest", "PrivacyRequestSubmission"]


class PrivacyRequest(Table, tablename="privacy_request"):
    """One request of one kind by one client; asking again while it is open adds a submission."""

    id: Serial  # added by Piccolo; declared for the type checker
    client = ForeignKey(references=Client, index=True, on_delete=OnDelete.cascade)
    kind = Varchar(length=12)  # copy, correction, deletion
    # open, in_progress (a copy whose export is not handed over yet), done, refused
    status = Varchar(length=12, default="open", index=True)
    received_at = Timestamptz()
    # The studio's zone at receipt: the deadline is a calendar date there, and stays so when
    # the setting changes later.
    timezone = Varchar(length=64, default="UTC")
    deadline_at = Timestamptz()  # the end of the last day to answer, as a UTC instant
    extended_at = Timestamptz(null=True, default=None)
    extended_by = Varchar(length=100, default="")
    extension_reason = Text(default="")
    # The last alert queued for the current deadline: 0 none, 1 "due soon", 2 "overdue".
    # Claimed with a conditional UPDATE so each goes out once; an extension sets it back.
    alerted = Integer(default=0)
    answered_at = Timestamptz(null=True, default=None)
    answered_by = Varchar(length=100, default="")
    answered_by_id = Integer(null=True, default=None)
    answer_note = Text(default="")  # what was done, or the reason for refusing
    # What the answer started in another domain: the export job or the erasure request.
    export_id = Integer(null=True, default=None)
    erasure_id = Integer(null=True, default=None)


class PrivacyRequestSubmission(Table, tablename="privacy_request_submission"):
    """One time a client sent the form: the first one made the request, later ones joined it.
    Also what the per-link rate limit counts."""

    id: Serial
    request = ForeignKey(references=PrivacyRequest, index=True, on_delete=OnDelete.cascade)
    link_id = Integer(index=True)  # the share link it came through; no key: links may go
    # Whom the studio gave that link, as it was then: a link can be forwarded or held by a
    # guest, so the admin checks who is asking before acting on it.
    link_recipient = Varchar(length=120, default="")
    link_email = Varchar(length=254, default="")
    details = Text(default="")  # what the client says is wrong (corrections), as typed
    at = Timestamptz()
