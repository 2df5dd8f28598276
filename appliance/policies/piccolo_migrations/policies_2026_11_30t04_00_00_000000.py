"""Index policy drafts by the staff member who last changed them.

A staff member's export looks rows up by ``updated_by``.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-30T04:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index policy_draft.updated_by"

# IF NOT EXISTS: an index of the same name made by hand ahead of an upgrade is kept.
_STATEMENTS = [
    "CREATE INDEX IF NOT EXISTS policy_draft_updated_by_idx ON policy_draft (updated_by)",
]


class _Raw(Table, tablename="policy_draft"):
    pass


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="policies", description=DESCRIPTION)

    async def run() -> None:
        # One statement a call: a prepared statement cannot hold several.
        for statement in _STATEMENTS:
            await _Raw.raw(statement)

    manager.add_raw(run)
    return manager
