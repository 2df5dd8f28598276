"""Which rows are about a person, derived from the schema, and reading them.

The tables come from Piccolo's app registry, so a table another domain adds later is part of
every export without a change here. A row is about a person when it is reached by one of:

1. the person's own row (``client`` or ``staff_user``);
2. a foreign key to it;
3. for a client, a foreign key to a row already found (a gallery of the client, that
   gallery's photos, their share links and visits...): everything hanging off the client is
   theirs. Not for staff: a gallery a photographer created belongs to its client;
4. an integer column without a foreign key that holds a staff user's id by the schema's
   naming (``created_by``, ``actor_id``...): kept history that outlives the account. Such a
   row is usually someone else's data (a client the photographer created), so unless another
   reference makes it the person's, only its id, the referencing column and its timestamps
   are exported: the right of access must not hand over others' data (GDPR Art. 15(4));
5. a ``kind`` column naming the person's kind beside a ``subject_id``/``person_id`` column;
6. an e-mail address column (``recipient``, ``email``) holding the person's address.

Secret columns (password and PIN hashes, token hashes, TOTP secrets) are withheld: they are
not information about the person but keys to their account or links.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any, Literal

import msgspec
from piccolo.columns import Column, ForeignKey, Integer, Varchar
from piccolo.table import Table

__all__ = [
    "ADDRESS_COLUMNS",
    "KIND_COLUMNS",
    "KIND_ID_COLUMNS",
    "PERSON_TABLES",
    "STAFF_ID_COLUMNS",
    "WITHHELD",
    "PersonKind",
    "Reference",
    "TableRecords",
    "collect",
    "references",
    "registry_tables",
    "withheld",
]

PersonKind = Literal["client", "staff"]
PERSON_TABLES: dict[PersonKind, str] = {"client": "client", "staff": "staff_user"}
# Integer columns the schema uses for a staff user's id where no foreign key is kept (history
# that must outlive the account). An integer column with one of these names is a staff id.
STAFF_ID_COLUMNS = frozenset(
    {"created_by", "updated_by", "requested_by", "added_by", "sent_by", "actor_id", "user_id"}
)
KIND_COLUMNS = ("kind", "subject_kind", "person_kind")
KIND_ID_COLUMNS = ("subject_id", "person_id")
ADDRESS_COLUMNS = frozenset({"recipient", "email"})
WITHHELD = "(withheld: a security credential)"
_SECRET = re.compile(r"(?:^|_)(?:token|secret)(?:_hash)?$|^(?:password|pin|code)_hash$|^visit_key$")


class Reference(msgspec.Struct, frozen=True):
    """One way rows of ``table`` are about a person (see the module's list)."""

    table: str
    column: str
    how: Literal["self", "foreign_key", "parent", "id_column", "kind_and_id", "address"]
    parent: str = ""  # for "parent": the table whose found rows the foreign key points at
    kind_column: str = ""  # for "kind_and_id"


class TableRecords(msgspec.Struct, frozen=True):
    table: str
    rows: list[dict[str, Any]]


def registry_tables() -> list[type[Table]]:
    """Every table of every app in the registry, in registry order."""
    from appliance.db.engine import engine

    engine()  # sets PICCOLO_CONF for the registry import
    from appliance.db.piccolo_conf import APP_REGISTRY

    return [table for app in APP_REGISTRY.app_configs.values() for table in app.table_classes]


def _name(column: Column) -> str:
    return str(column._meta.db_column_name)


def _target(column: ForeignKey[Any]) -> str:
    return str(column._foreign_key_meta.resolved_references._meta.tablename)


def references(kind: PersonKind, tables: Iterable[type[Table]] | None = None) -> list[Reference]:
    """Every way a row of some table is about a person of ``kind``, parents before children."""
    tables = list(tables if tables is not None else registry_tables())
    person = PERSON_TABLES[kind]
    found: list[Reference] = [Reference(table=person, column="id", how="self")]
    reached = {person}
    # Foreign keys: to the person's table, and for a client, breadth first down the tree.
    frontier = [person]
    while frontier:
        parent = frontier.pop(0)
        for table in tables:
            name = table._meta.tablename
            for column in table._meta.foreign_key_columns:
                if _target(column) != parent or name == person:
                    continue
                how: Literal["foreign_key", "parent"] = (
                    "foreign_key" if parent == person else "parent"
                )
                found.append(Reference(table=name, column=_name(column), how=how, parent=parent))
                if kind == "client" and name not in reached:
                    reached.add(name)
                    frontier.append(name)
    for table in tables:
        name = table._meta.tablename
        columns = {_name(column): column for column in table._meta.columns}
        fk_names = {_name(column) for column in table._meta.foreign_key_columns}
        if kind == "staff":
            found += [
                Reference(table=name, column=column_name, how="id_column")
                for column_name, column in columns.items()
                if column_name in STAFF_ID_COLUMNS
                and column_name not in fk_names
                and isinstance(column, Integer)
            ]
        kind_column = next((c for c in KIND_COLUMNS if isinstance(columns.get(c), Varchar)), "")
        if kind_column:
            found += [
                Reference(table=name, column=c, how="kind_and_id", kind_column=kind_column)
                for c in KIND_ID_COLUMNS
                if isinstance(columns.get(c), Integer)
            ]
        if name != person:
            found += [
                Reference(table=name, column=column_name, how="address")
                for column_name, column in columns.items()
                if column_name in ADDRESS_COLUMNS and isinstance(column, Varchar)
            ]
    return found


def withheld(column: str) -> bool:
    """Whether a column holds a credential, which an export never contains."""
    return bool(_SECRET.search(column))


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def collect(
    kind: PersonKind, subject_id: int, tables: Iterable[type[Table]] | None = None
) -> list[TableRecords]:
    """The rows about one person, table by table (each row once, secrets withheld), in
    the order of :func:`references`; tables with no row about the person are left out."""
    by_table: dict[str, dict[Any, dict[str, Any]]] = {}
    order: list[str] = []
    outlines: set[Any] = set()  # keys of rows reduced to an outline (see the module's 4.)
    email = ""
    for ref in references(kind, tables):
        table = _quoted(ref.table)
        column = _quoted(ref.column)
        if ref.how == "self":
            rows = await _fetch(table, "id = {}", subject_id)
            email = str(rows[0].get("email") or "") if rows else ""
        elif ref.how in ("foreign_key", "id_column"):
            rows = await _fetch(table, f"{column} = {{}}", subject_id)
        elif ref.how == "parent":
            parent_ids = list(by_table.get(ref.parent, {}))
            if not parent_ids:
                continue
            rows = await _fetch(table, f"{column} = ANY({{}}::bigint[])", parent_ids)
        elif ref.how == "kind_and_id":
            condition = f"{_quoted(ref.kind_column)} = {{}} AND {column} = {{}}"
            rows = await _fetch(table, condition, kind, subject_id)
        else:  # address
            if not email:
                continue
            rows = await _fetch(table, f"lower({column}) = lower({{}})", email)
        if not rows:
            continue
        if ref.table not in by_table:
            by_table[ref.table] = {}
            order.append(ref.table)
        found = by_table[ref.table]
        for row in rows:
            key = row.get("id", tuple(sorted(row.items())))
            if ref.how == "id_column":
                if key not in found or key in outlines:
                    found[key] = {**found.get(key, {}), **_outline(row, ref.column)}
                    outlines.add(key)
                continue
            outlines.discard(key)  # the row is the person's: all of it, replacing an outline
            found[key] = {
                name: WITHHELD if withheld(name) and value is not None else value
                for name, value in row.items()
            }
    return [
        TableRecords(table=name, rows=sorted(by_table[name].values(), key=_row_order))
        for name in order
    ]


def _outline(row: dict[str, Any], column: str) -> dict[str, Any]:
    """What a row that only names a member of staff as its creator or actor says about them:
    that it exists, that they are in it, and when; not its other fields (another person's)."""
    return {
        name: value
        for name, value in row.items()
        if name in ("id", column) or isinstance(value, dt.date)
    }


async def _fetch(table: str, condition: str, *args: Any) -> list[dict[str, Any]]:
    # Any table's raw() runs any SQL on the configured engine. Identifiers are quoted names
    # from the schema, never input; values are parameters ({} placeholders).
    from appliance.exports.tables import ExportJob

    sql = f"SELECT * FROM {table} WHERE {condition}"  # noqa: S608 - schema names, see above
    rows: list[dict[str, Any]] = await ExportJob.raw(sql, *args).run()
    return rows


def _row_order(row: dict[str, Any]) -> tuple[int, str]:
    ident = row.get("id")
    return (ident, "") if isinstance(ident, int) else (0, repr(row))
