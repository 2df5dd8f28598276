"""Index the audit log's targets by their lower-case form.

An erasure finds the entries about a staff member's address case-insensitively (an address
typed with capitals is the same address), and ``lower(target)`` cannot use the index on
``target``: without this one every purge and every erasure re-applied after a restore reads
the whole log, which only ever grows.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-30T07:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index lower(audit_entry.target)"

# IF NOT EXISTS: an index of the same name made by hand ahead of an upgrade is kept.
_STATEMENT = (
    "CREATE INDEX IF NOT EXISTS audit_entry_target_lower_idx ON audit_entry (lower(target))"
)


class _Raw(Table, tablename="audit_entry"):
    pass


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="audit", description=DESCRIPTION)

    async def run() -> None:
        await _Raw.raw(_STATEMENT)

    manager.add_raw(run)
    return manager
