from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import JSONB, Integer
from piccolo.columns.indexes import IndexMethod

ID = "2026-11-29T20:18:24:767336"
VERSION = "1.38.0"
DESCRIPTION = "Maintenance windows: a revision that re-announces a changed window, and who was told"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="monitoring", description=DESCRIPTION)

    manager.add_column(
        table_class_name="MaintenanceWindow",
        tablename="maintenance_window",
        column_name="revision",
        db_column_name="revision",
        column_class_name="Integer",
        column_class=Integer,
        params={
            "default": 0,
            "null": False,
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

    manager.add_column(
        table_class_name="MaintenanceWindow",
        tablename="maintenance_window",
        column_name="told",
        db_column_name="told",
        column_class_name="JSONB",
        column_class=JSONB,
        params={
            "default": "[]",
            "null": False,
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
