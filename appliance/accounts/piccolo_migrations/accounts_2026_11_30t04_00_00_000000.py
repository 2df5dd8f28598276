"""Index the staff tables' foreign keys and e-mail addresses.

Deleting a staff user cascades to their sessions, recovery codes and invitations, and
PostgreSQL does not index a referencing column by itself; exports and erasures compare
addresses in lower case, so those indexes are on ``lower(email)``.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-30T04:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index the staff tables' foreign keys and lower(email)"

# IF NOT EXISTS: an index of the same name made by hand ahead of an upgrade is kept.
_STATEMENTS = [
    'CREATE INDEX IF NOT EXISTS staff_recovery_code_user_idx ON staff_recovery_code ("user")',
    'CREATE INDEX IF NOT EXISTS staff_session_user_idx ON staff_session ("user")',
    'CREATE INDEX IF NOT EXISTS staff_invitation_user_idx ON staff_invitation ("user")',
    "CREATE INDEX IF NOT EXISTS staff_invitation_created_by_idx ON staff_invitation (created_by)",
    "CREATE INDEX IF NOT EXISTS staff_user_email_lower_idx ON staff_user (lower(email))",
    "CREATE INDEX IF NOT EXISTS staff_invitation_email_lower_idx"
    " ON staff_invitation (lower(email))",
]


class _Raw(Table, tablename="staff_recovery_code"):
    pass


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="accounts", description=DESCRIPTION)

    async def run() -> None:
        # One statement a call: a prepared statement cannot hold several.
        for statement in _STATEMENTS:
            await _Raw.raw(statement)

    manager.add_raw(run)
    return manager
