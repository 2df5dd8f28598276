from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Varchar
from piccolo.columns.indexes import IndexMethod

ID = "2026-11-30T01:25:46:083847"
VERSION = "1.38.0"
DESCRIPTION = "Privacy request submissions keep the share link's recipient and e-mail address"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="privacy_requests", description=DESCRIPTION
    )

    manager.add_column(
        table_class_name="PrivacyRequestSubmission",
        tablename="privacy_request_submission",
        column_name="link_email",
        db_column_name="link_email",
        column_class_name="Varchar",
        column_class=Varchar,
        params={
            "length": 254,
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

    manager.add_column(
        table_class_name="PrivacyRequestSubmission",
        tablename="privacy_request_submission",
        column_name="link_recipient",
        db_column_name="link_recipient",
        column_class_name="Varchar",
        column_class=Varchar,
        params={
            "length": 120,
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
