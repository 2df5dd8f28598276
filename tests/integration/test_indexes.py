"""Columns rows are looked up by lead an index, so those lookups and cascading deletes do not
scan whole tables (PostgreSQL does not index a referencing column by itself, nor Piccolo)."""

from __future__ import annotations

import asyncpg
from piccolo.columns import Integer, Varchar

from appliance.db.schema import registered_tables
from appliance.exports.records import ADDRESS_COLUMNS, STAFF_ID_COLUMNS

# The first key of every valid index in the schema: a column's name, or an expression's text
# as PostgreSQL prints it (``lower((email)::text)``).
_LEADING_KEYS = """
SELECT t.relname AS table_name,
       CASE WHEN i.indkey[0] = 0 THEN pg_get_indexdef(i.indexrelid, 1, false)
            ELSE a.attname END AS first_key
  FROM pg_index i
  JOIN pg_class t ON t.oid = i.indrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
  LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
 WHERE n.nspname = 'public' AND i.indisvalid
"""


async def _leading_keys(database_url: str) -> set[tuple[str, str]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(_LEADING_KEYS)
    finally:
        await conn.close()
    return {(row["table_name"], row["first_key"]) for row in rows}


def _foreign_key_columns() -> set[tuple[str, str]]:
    return {
        (table._meta.tablename, column._meta.db_column_name)
        for table in registered_tables()
        for column in table._meta.foreign_key_columns
    }


async def test_every_foreign_key_column_leads_an_index(database_url: str) -> None:
    """Each foreign-key column of each registered table is the first column of an index."""
    wanted = _foreign_key_columns()
    assert {("photo", "gallery"), ("gallery", "client"), ("staff_session", "user")} <= wanted
    missing = wanted - await _leading_keys(database_url)
    assert sorted(missing) == []


async def test_every_staff_id_column_leads_an_index(database_url: str) -> None:
    """Integer staff-id columns kept without a foreign key (``created_by``, ``actor_id``...),
    which a staff member's export looks rows up by, each lead an index, as does the audit
    log's ``target`` and its lower-case form, by which an erasure finds the entries about a
    person (an address in any case)."""
    foreign_keys = _foreign_key_columns()
    wanted = {
        (table._meta.tablename, column._meta.db_column_name)
        for table in registered_tables()
        for column in table._meta.columns
        if column._meta.db_column_name in STAFF_ID_COLUMNS
        and isinstance(column, Integer)
        and (table._meta.tablename, column._meta.db_column_name) not in foreign_keys
    } | {("audit_entry", "target"), ("audit_entry", "lower((target)::text)")}
    assert {("audit_entry", "actor_id"), ("client", "created_by")} <= wanted
    missing = wanted - await _leading_keys(database_url)
    assert sorted(missing) == []


async def test_every_address_column_has_a_lowercase_index(database_url: str) -> None:
    """Each e-mail address column (``email``, ``recipient``) has an index on its lower-case
    value, the form exports and erasures compare addresses in."""
    wanted = {
        (table._meta.tablename, f"lower(({column._meta.db_column_name})::text)")
        for table in registered_tables()
        for column in table._meta.columns
        if column._meta.db_column_name in ADDRESS_COLUMNS and isinstance(column, Varchar)
    }
    assert ("outbox_message", "lower((recipient)::text)") in wanted
    missing = wanted - await _leading_keys(database_url)
    assert sorted(missing) == []
