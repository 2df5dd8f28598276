"""Piccolo tables of the policies domain: published versions, the one draft, acknowledgements.

People are kept as staff ids of the accounts domain, never as copies of their names, so an
erased staff member leaves no name behind here.
"""

from __future__ import annotations

from piccolo.columns import ForeignKey, Integer, OnDelete, Serial, Text, Timestamptz, Varchar
from piccolo.table import Table

from appliance.accounts.tables import StaffUser

__all__ = ["PolicyAcknowledgement", "PolicyDraft", "PolicyVersion"]


class PolicyVersion(Table, tablename="policy_version"):
    """One published version of the privacy policy; never changed once published."""

    id: Serial  # added by Piccolo; declared for the type checker
    number = Integer(unique=True)  # 1, 2, 3...: /privacy/versions/<number>
    body = Text()
    summary = Text(default="")  # what changed, in a sentence or two
    published_at = Timestamptz()
    # The admin who published it; null for the default text the appliance seeded, which
    # nobody is asked to acknowledge. No foreign key: the history outlives the account.
    published_by = Integer(null=True, default=None)


class PolicyDraft(Table, tablename="policy_draft"):
    """The draft admins edit before publishing; at most one row (``slot`` = "draft")."""

    id: Serial
    slot = Varchar(length=8, unique=True, default="draft")
    body = Text()
    summary = Text(default="")
    # Bumped by every save: a publish names the revision it previewed, so a draft changed by
    # another admin in between is not published unseen.
    revision = Integer(default=1)
    updated_at = Timestamptz()
    updated_by = Integer(null=True, default=None)


class PolicyAcknowledgement(Table, tablename="policy_acknowledgement"):
    """A staff member's confirmation that they read one version."""

    id: Serial
    version = ForeignKey(references=PolicyVersion, index=True, on_delete=OnDelete.cascade)
    # A foreign key, so erasing the staff member (whose rows are found through foreign keys)
    # removes their confirmations with them.
    staff = ForeignKey(references=StaffUser, index=True, on_delete=OnDelete.cascade)
    # "<version number>:<staff id>", unique: a confirmation sent twice is recorded once.
    slot = Varchar(length=32, unique=True)
    acknowledged_at = Timestamptz()
