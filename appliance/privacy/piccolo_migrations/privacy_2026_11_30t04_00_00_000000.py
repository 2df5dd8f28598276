"""Index the privacy tables by the staff member who wrote to them.

A staff member's export looks rows up by these ids.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-30T04:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index the privacy tables' staff id columns"

# IF NOT EXISTS: an index of the same name made by hand ahead of an upgrade is kept.
_STATEMENTS = [
    "CREATE INDEX IF NOT EXISTS security_incident_created_by_idx ON security_incident (created_by)",
    "CREATE INDEX IF NOT EXISTS security_incident_change_actor_id_idx"
    " ON security_incident_change (actor_id)",
    "CREATE INDEX IF NOT EXISTS security_authority_notice_created_by_idx"
    " ON security_authority_notice (created_by)",
    "CREATE INDEX IF NOT EXISTS security_affected_person_added_by_idx"
    " ON security_affected_person (added_by)",
    "CREATE INDEX IF NOT EXISTS security_person_notice_sent_by_idx"
    " ON security_person_notice (sent_by)",
    "CREATE INDEX IF NOT EXISTS erasure_request_requested_by_idx ON erasure_request (requested_by)",
]


class _Raw(Table, tablename="security_incident"):
    pass


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="privacy", description=DESCRIPTION)

    async def run() -> None:
        # One statement a call: a prepared statement cannot hold several.
        for statement in _STATEMENTS:
            await _Raw.raw(statement)

    manager.add_raw(run)
    return manager
