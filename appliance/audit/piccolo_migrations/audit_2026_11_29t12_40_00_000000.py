"""Make the audit log append-only in the database itself, not only by convention."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-29T12:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "refuse UPDATE, DELETE and TRUNCATE on audit_entry"

_STATEMENTS = [
    """
CREATE OR REPLACE FUNCTION audit_entry_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_entry is append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql
    """,
    """
CREATE TRIGGER audit_entry_no_change
    BEFORE UPDATE OR DELETE ON audit_entry
    FOR EACH ROW EXECUTE FUNCTION audit_entry_append_only()
    """,
    """
CREATE TRIGGER audit_entry_no_truncate
    BEFORE TRUNCATE ON audit_entry
    FOR EACH STATEMENT EXECUTE FUNCTION audit_entry_append_only()
    """,
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
