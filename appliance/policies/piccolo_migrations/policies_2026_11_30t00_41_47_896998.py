from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.base import OnDelete, OnUpdate
from piccolo.columns.column_types import ForeignKey, Serial
from piccolo.columns.indexes import IndexMethod
from piccolo.table import Table


class StaffUser(Table, tablename="staff_user", schema=None):
    id = Serial(
        null=False,
        primary_key=True,
        unique=False,
        index=False,
        index_method=IndexMethod.btree,
        choices=None,
        db_column_name="id",
        secret=False,
    )


ID = "2026-11-30T00:41:47:896998"
VERSION = "1.38.0"
DESCRIPTION = "policy acknowledgements point at the staff account, so erasing it removes them"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="policies", description=DESCRIPTION)

    async def forget_unlinked() -> None:
        # Runs before the column changes: a confirmation stored with the plain id cannot be
        # linked safely, so any there is dropped and the staff member is asked again.
        await StaffUser.raw("DELETE FROM policy_acknowledgement")

    manager.add_raw(forget_unlinked)

    manager.drop_column(
        table_class_name="PolicyAcknowledgement",
        tablename="policy_acknowledgement",
        column_name="staff_id",
        db_column_name="staff_id",
        schema=None,
    )

    manager.add_column(
        table_class_name="PolicyAcknowledgement",
        tablename="policy_acknowledgement",
        column_name="staff",
        db_column_name="staff",
        column_class_name="ForeignKey",
        column_class=ForeignKey,
        params={
            "references": StaffUser,
            "on_delete": OnDelete.cascade,
            "on_update": OnUpdate.cascade,
            "target_column": None,
            "null": True,
            "primary_key": False,
            "unique": False,
            "index": True,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    return manager
