"""Index the backup tables by the staff member who asked for or changed something.

A staff member's export looks rows up by these ids.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-30T04:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index backup_job.requested_by and backup_setting.updated_by"

# IF NOT EXISTS: an index of the same name made by hand ahead of an upgrade is kept.
_STATEMENTS = [
    "CREATE INDEX IF NOT EXISTS backup_job_requested_by_idx ON backup_job (requested_by)",
    "CREATE INDEX IF NOT EXISTS backup_setting_updated_by_idx ON backup_setting (updated_by)",
]


class _Raw(Table, tablename="backup_job"):
    pass


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="backups", description=DESCRIPTION)

    async def run() -> None:
        # One statement a call: a prepared statement cannot hold several.
        for statement in _STATEMENTS:
            await _Raw.raw(statement)

    manager.add_raw(run)
    return manager
