from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Varchar
from piccolo.columns.indexes import IndexMethod

ID = "2026-11-29T21:21:29:208115"
VERSION = "1.38.0"
DESCRIPTION = "a one-time form key on security incidents, so a form sent twice records one"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="privacy", description=DESCRIPTION)

    manager.add_column(
        table_class_name="SecurityIncident",
        tablename="security_incident",
        column_name="form_key",
        db_column_name="form_key",
        column_class_name="Varchar",
        column_class=Varchar,
        params={
            "length": 64,
            "default": None,
            "null": True,
            "primary_key": False,
            "unique": True,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    return manager
