from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Varchar
from piccolo.columns.indexes import IndexMethod
from piccolo.table import Table

# Version 3 entries key their digests with a random salt of their own, nulled at erasure. The
# append-only trigger lets an erasure through on a version 2 or 3 entry: actor and address
# blanked, salt nulled, target and details each kept or blanked, erased_at set once; a later
# erasure may blank what the first kept, never put a value back. Nothing else may change.
# ("{}" is written chr(123) || chr(125): Piccolo's raw() reads braces as placeholders.)
_ALLOW_ERASURE = """
CREATE OR REPLACE FUNCTION audit_entry_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE'
        AND OLD.hash_version >= 2 AND NEW.erased_at IS NOT NULL
        AND NEW.erased_at = coalesce(OLD.erased_at, NEW.erased_at)
        AND NEW.actor = 'erased' AND NEW.address = '' AND NEW.salt IS NULL
        AND (NEW.target = OLD.target OR NEW.target = 'erased')
        AND (NEW.details = OLD.details OR NEW.details = chr(123) || chr(125))
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


ID = "2026-11-30T01:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "audit digests keyed by a per-entry salt; an erasure may keep an entry's target"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="audit", description=DESCRIPTION)

    manager.add_column(
        table_class_name="AuditEntry",
        tablename="audit_entry",
        column_name="salt",
        db_column_name="salt",
        column_class_name="Varchar",
        column_class=Varchar,
        params={
            "length": 64,
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

    async def allow_erasure() -> None:
        await _Raw.raw(_ALLOW_ERASURE)

    manager.add_raw(allow_erasure)
    return manager
