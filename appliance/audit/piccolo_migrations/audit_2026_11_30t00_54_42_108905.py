from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Integer, Timestamptz, Varchar
from piccolo.columns.indexes import IndexMethod
from piccolo.table import Table

# The append-only trigger lets one UPDATE through: the erasure of a version 2 entry, which
# blanks actor, target, address and details and sets erased_at, every other field unchanged.
# ("{}" is written chr(123) || chr(125): Piccolo's raw() reads braces as placeholders.)
_ALLOW_ERASURE = """
CREATE OR REPLACE FUNCTION audit_entry_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE'
        AND OLD.hash_version = 2 AND OLD.erased_at IS NULL AND NEW.erased_at IS NOT NULL
        AND NEW.actor = 'erased' AND NEW.target = 'erased' AND NEW.address = ''
        AND NEW.details = chr(123) || chr(125)
        AND (NEW.id, NEW.seq, NEW.at, NEW.actor_id, NEW.action, NEW.outcome, NEW.prev_hash,
             NEW.entry_hash, NEW.hash_version, NEW.actor_digest, NEW.target_digest,
             NEW.address_digest, NEW.details_digest)
            IS NOT DISTINCT FROM
            (OLD.id, OLD.seq, OLD.at, OLD.actor_id, OLD.action, OLD.outcome, OLD.prev_hash,
             OLD.entry_hash, OLD.hash_version, OLD.actor_digest, OLD.target_digest,
             OLD.address_digest, OLD.details_digest)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_entry is append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql
"""


class _Raw(Table, tablename="audit_entry"):
    pass


ID = "2026-11-30T00:54:42:108905"
VERSION = "1.38.0"
DESCRIPTION = "audit entries hash digests of actor, target, address and details, which an erasure may blank once"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="audit", description=DESCRIPTION)

    manager.add_column(
        table_class_name="AuditEntry",
        tablename="audit_entry",
        column_name="actor_digest",
        db_column_name="actor_digest",
        column_class_name="Varchar",
        column_class=Varchar,
        params={
            "length": 64,
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
        table_class_name="AuditEntry",
        tablename="audit_entry",
        column_name="address_digest",
        db_column_name="address_digest",
        column_class_name="Varchar",
        column_class=Varchar,
        params={
            "length": 64,
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
        table_class_name="AuditEntry",
        tablename="audit_entry",
        column_name="details_digest",
        db_column_name="details_digest",
        column_class_name="Varchar",
        column_class=Varchar,
        params={
            "length": 64,
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
        table_class_name="AuditEntry",
        tablename="audit_entry",
        column_name="erased_at",
        db_column_name="erased_at",
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

    manager.add_column(
        table_class_name="AuditEntry",
        tablename="audit_entry",
        column_name="hash_version",
        db_column_name="hash_version",
        column_class_name="Integer",
        column_class=Integer,
        params={
            "default": 1,
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
        table_class_name="AuditEntry",
        tablename="audit_entry",
        column_name="target_digest",
        db_column_name="target_digest",
        column_class_name="Varchar",
        column_class=Varchar,
        params={
            "length": 64,
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

    async def allow_erasure() -> None:
        await _Raw.raw(_ALLOW_ERASURE)

    manager.add_raw(allow_erasure)
    return manager
