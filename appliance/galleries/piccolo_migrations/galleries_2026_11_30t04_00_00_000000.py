"""Index every foreign key of the gallery tables, the staff ids and the link addresses.

Piccolo's ForeignKey creates no index and PostgreSQL does not index a referencing column by
itself, so "the photos of a gallery", "the galleries of a client" and every delete that
cascades down from a gallery or link read whole tables. ``created_by`` is what a staff
member's export looks rows up by; link addresses are compared in lower case.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-30T04:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index the gallery tables' foreign keys, created_by and lower(email/recipient)"

# IF NOT EXISTS: an index of the same name made by hand ahead of an upgrade is kept.
_STATEMENTS = [
    "CREATE INDEX IF NOT EXISTS gallery_client_idx ON gallery (client)",
    "CREATE INDEX IF NOT EXISTS gallery_set_gallery_idx ON gallery_set (gallery)",
    "CREATE INDEX IF NOT EXISTS photo_gallery_idx ON photo (gallery)",
    "CREATE INDEX IF NOT EXISTS photo_gallery_set_idx ON photo (gallery_set)",
    "CREATE INDEX IF NOT EXISTS photo_job_photo_idx ON photo_job (photo)",
    "CREATE INDEX IF NOT EXISTS photo_upload_gallery_idx ON photo_upload (gallery)",
    "CREATE INDEX IF NOT EXISTS photo_upload_gallery_set_idx ON photo_upload (gallery_set)",
    "CREATE INDEX IF NOT EXISTS photo_upload_chunk_upload_idx ON photo_upload_chunk (upload)",
    "CREATE INDEX IF NOT EXISTS share_link_gallery_idx ON share_link (gallery)",
    "CREATE INDEX IF NOT EXISTS share_visit_link_idx ON share_visit (link)",
    "CREATE INDEX IF NOT EXISTS share_event_link_idx ON share_event (link)",
    "CREATE INDEX IF NOT EXISTS selection_list_link_idx ON selection_list (link)",
    "CREATE INDEX IF NOT EXISTS selection_item_selection_idx ON selection_item (selection)",
    "CREATE INDEX IF NOT EXISTS selection_item_photo_idx ON selection_item (photo)",
    "CREATE INDEX IF NOT EXISTS gallery_created_by_idx ON gallery (created_by)",
    "CREATE INDEX IF NOT EXISTS photo_created_by_idx ON photo (created_by)",
    "CREATE INDEX IF NOT EXISTS photo_upload_created_by_idx ON photo_upload (created_by)",
    "CREATE INDEX IF NOT EXISTS share_link_created_by_idx ON share_link (created_by)",
    "CREATE INDEX IF NOT EXISTS share_link_email_lower_idx ON share_link (lower(email))",
    "CREATE INDEX IF NOT EXISTS share_link_recipient_lower_idx ON share_link (lower(recipient))",
]


class _Raw(Table, tablename="gallery"):
    pass


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="galleries", description=DESCRIPTION)

    async def run() -> None:
        # One statement a call: a prepared statement cannot hold several.
        for statement in _STATEMENTS:
            await _Raw.raw(statement)

    manager.add_raw(run)
    return manager
