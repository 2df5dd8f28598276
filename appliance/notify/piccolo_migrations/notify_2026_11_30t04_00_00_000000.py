"""Index outbox messages by lower-case recipient and the notify tables by staff id.

An erasure deletes, and an export reads, a person's messages by ``lower(recipient)``; the
outbox keeps sent messages for weeks, so without an index that reads all of them.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-30T04:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index outbox_message lower(recipient), created_by and updated_by"

# IF NOT EXISTS: an index of the same name made by hand ahead of an upgrade is kept.
_STATEMENTS = [
    "CREATE INDEX IF NOT EXISTS outbox_message_recipient_lower_idx"
    " ON outbox_message (lower(recipient))",
    "CREATE INDEX IF NOT EXISTS alert_channel_created_by_idx ON alert_channel (created_by)",
    "CREATE INDEX IF NOT EXISTS notify_setting_updated_by_idx ON notify_setting (updated_by)",
]


class _Raw(Table, tablename="outbox_message"):
    pass


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="notify", description=DESCRIPTION)

    async def run() -> None:
        # One statement a call: a prepared statement cannot hold several.
        for statement in _STATEMENTS:
            await _Raw.raw(statement)

    manager.add_raw(run)
    return manager
