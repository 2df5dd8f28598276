"""Piccolo tables of the setup domain."""

from __future__ import annotations

from piccolo.columns import Boolean, Integer, Serial, Timestamptz, Varchar
from piccolo.table import Table

__all__ = ["SetupToken", "Studio"]


class Studio(Table, tablename="studio"):
    """The studio's own settings: one row (id 1), created by the wizard, edited by admins."""

    id: Serial  # added by Piccolo; declared for the type checker

    name = Varchar(length=120)
    contact_email = Varchar(length=254)
    contact_phone = Varchar(length=40, default="")
    require_2fa_for_all = Boolean(default=False)
    setup_admin_id = Integer(null=True, default=None)
    setup_completed_at = Timestamptz(null=True, default=None)
    updated_at = Timestamptz()


class SetupToken(Table, tablename="setup_token"):
    """The one-time token proving that whoever runs the wizard can read the server console."""

    id: Serial  # added by Piccolo; declared for the type checker

    token_hash = Varchar(length=64, unique=True)
    created_at = Timestamptz()
    expires_at = Timestamptz()
    used_at = Timestamptz(null=True, default=None)
