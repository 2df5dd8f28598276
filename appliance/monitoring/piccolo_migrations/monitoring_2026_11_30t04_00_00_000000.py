"""Index the monitoring tables by the staff member who wrote to them.

A staff member's export looks rows up by these ids.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-30T04:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index the monitoring tables' created_by and updated_by"

# IF NOT EXISTS: an index of the same name made by hand ahead of an upgrade is kept.
_STATEMENTS = [
    "CREATE INDEX IF NOT EXISTS service_incident_created_by_idx ON service_incident (created_by)",
    "CREATE INDEX IF NOT EXISTS service_incident_update_created_by_idx"
    " ON service_incident_update (created_by)",
    "CREATE INDEX IF NOT EXISTS maintenance_window_created_by_idx"
    " ON maintenance_window (created_by)",
    "CREATE INDEX IF NOT EXISTS monitor_setting_updated_by_idx ON monitor_setting (updated_by)",
]


class _Raw(Table, tablename="service_incident"):
    pass


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="monitoring", description=DESCRIPTION)

    async def run() -> None:
        # One statement a call: a prepared statement cannot hold several.
        for statement in _STATEMENTS:
            await _Raw.raw(statement)

    manager.add_raw(run)
    return manager
