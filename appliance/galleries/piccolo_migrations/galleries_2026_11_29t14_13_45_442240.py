from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Timestamptz
from piccolo.columns.indexes import IndexMethod

ID = "2026-11-29T14:13:45:442240"
VERSION = "1.38.0"
DESCRIPTION = "claim of an upload being completed"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="galleries", description=DESCRIPTION)

    manager.add_column(
        table_class_name="PhotoUpload",
        tablename="photo_upload",
        column_name="completing_at",
        db_column_name="completing_at",
        column_class_name="Timestamptz",
        column_class=Timestamptz,
        params={
            "default": None,
            "null": True,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    return manager
