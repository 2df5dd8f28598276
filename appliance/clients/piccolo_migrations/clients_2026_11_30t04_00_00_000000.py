"""Index clients by lower-case e-mail address and by the staff member who created them.

Exports find the rows naming a person's address by ``lower(email)``, and a staff member's
rows by ``created_by``.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-30T04:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index client lower(email) and created_by"

# IF NOT EXISTS: an index of the same name made by hand ahead of an upgrade is kept.
_STATEMENTS = [
    "CREATE INDEX IF NOT EXISTS client_email_lower_idx ON client (lower(email))",
    "CREATE INDEX IF NOT EXISTS client_created_by_idx ON client (created_by)",
]


class _Raw(Table, tablename="client"):
    pass


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="clients", description=DESCRIPTION)

    async def run() -> None:
        # One statement a call: a prepared statement cannot hold several.
        for statement in _STATEMENTS:
            await _Raw.raw(statement)

    manager.add_raw(run)
    return manager
