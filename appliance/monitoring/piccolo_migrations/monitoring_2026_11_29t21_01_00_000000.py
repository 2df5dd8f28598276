"""An index for the latest result of each component: every /metrics scrape asks for it."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-29T21:01:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Index probe results by component, latest first"


class _Raw(Table, tablename="probe_result"):
    pass


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="monitoring", description=DESCRIPTION)

    async def run() -> None:
        await _Raw.raw(
            "CREATE INDEX IF NOT EXISTS probe_result_component_latest"
            " ON probe_result (component, checked_at DESC)"
        )

    async def undo() -> None:
        await _Raw.raw("DROP INDEX IF EXISTS probe_result_component_latest")

    manager.add_raw(run)
    manager.add_raw_backwards(undo)
    return manager
