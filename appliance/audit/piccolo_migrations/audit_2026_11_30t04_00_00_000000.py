"""Index the audit log by who acted and what it was about.

An erasure looks entries up by ``target`` and ``actor_id``, a staff member's export by
``actor_id``; without an index each of them reads the whole log, which only ever grows.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-30T04:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index audit_entry.actor_id and audit_entry.target"

# IF NOT EXISTS: an index of the same name made by hand ahead of an upgrade is kept.
_STATEMENTS = [
    "CREATE INDEX IF NOT EXISTS audit_entry_actor_id_idx ON audit_entry (actor_id)",
    "CREATE INDEX IF NOT EXISTS audit_entry_target_idx ON audit_entry (target)",
]


class _Raw(Table, tablename="audit_entry"):
    pass


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="audit", description=DESCRIPTION)

    async def run() -> None:
        # One statement a call: a prepared statement cannot hold several.
        for statement in _STATEMENTS:
            await _Raw.raw(statement)

    manager.add_raw(run)
    return manager
