from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Varchar
from piccolo.columns.indexes import IndexMethod

ID = "2026-11-29T20:52:37:118360"
VERSION = "1.38.0"
DESCRIPTION = "The outbox: a claim token, so only the holder of a claim settles its row"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="notify", description=DESCRIPTION)

    manager.add_column(
        table_class_name="OutboxMessage",
        tablename="outbox_message",
        column_name="claim_token",
        db_column_name="claim_token",
        column_class_name="Varchar",
        column_class=Varchar,
        params={
            "length": 32,
            "default": "",
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
