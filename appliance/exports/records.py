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
6. an e-mail address column (``recipient``, ``email``) holding the person's address; for a
   client only while no other client and no member of staff has it (:func:`_own_address`).

Secret columns (password and PIN hashes, token hashes, TOTP secrets) are withheld: they are
not information about the person but keys to their account or links.

Each table's references become one SQL condition (:func:`queries`); the foreign-key chain
nests the parent's keys as a subquery, so no list of ids is carried between tables. Each
table is then one statement whose rows are fetched a batch at a time through a cursor, all in
one read-only snapshot (:func:`reading`): an export's memory does not grow with a long history.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal

import asyncpg
import msgspec
from piccolo.columns import Column, ForeignKey, Integer, Varchar
from piccolo.table import Table

from appliance.db.schema import quoted, registered_tables

__all__ = [
    "ADDRESS_COLUMNS",
    "BATCH",
    "KIND_COLUMNS",
    "KIND_ID_COLUMNS",
    "PERSON_TABLES",
    "STAFF_ID_COLUMNS",
    "STATEMENT_TIMEOUT",
    "WITHHELD",
    "PersonKind",
    "Reader",
    "Reference",
    "TableQuery",
    "TableRecords",
    "collect",
    "queries",
    "reading",
    "references",
    "still_recorded",
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
# The times an outlined row keeps: when the record was made or changed, not the dates it is
# about (a client's wedding day in a gallery a photographer made).
OUTLINE_TIMES = frozenset({"at", "created_at", "updated_at"})
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


def _name(column: Column) -> str:
    return str(column._meta.db_column_name)


def _target(column: ForeignKey[Any]) -> str:
    return str(column._foreign_key_meta.resolved_references._meta.tablename)


def references(kind: PersonKind, tables: Iterable[type[Table]] | None = None) -> list[Reference]:
    """Every way a row of some table is about a person of ``kind``, parents before children."""
    tables = list(tables if tables is not None else registered_tables())
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
        if name not in PERSON_TABLES.values():  # people are found by id, never by address
            found += [
                Reference(table=name, column=column_name, how="address")
                for column_name, column in columns.items()
                if column_name in ADDRESS_COLUMNS and isinstance(column, Varchar)
            ]
    return found


def withheld(column: str) -> bool:
    """Whether a column holds a credential, which an export never contains."""
    return bool(_SECRET.search(column))


class TableQuery(msgspec.Struct, frozen=True):
    """The rows of one table about a person, as SQL conditions on that table's columns.

    The conditions carry no parameters: the person's id is an int and their kind one of
    :data:`PERSON_TABLES`' keys, both written in; anything else (an e-mail address) is read
    by a subquery, so a condition can be nested in another table's without renumbering.
    """

    table: str
    key: str  # the primary key: rows are read in its order
    columns: frozenset[str]
    whole: str  # the row is the person's: all of it is exported ("FALSE": none is)
    outline: str  # the row only names them as its creator or actor (the module's 4.)
    outline_columns: tuple[str, ...]
    subject_id: int


def _keys(table: str, key: str, clauses: list[str]) -> str:
    """The keys of ``table``'s rows matching any clause. A UNION, not ``OR``: PostgreSQL turns
    each ``IN (SELECT ...)`` of a UNION branch into a join, while under ``OR`` it can only
    test row by row, which on a large studio means re-reading the subquery for every row."""
    return " UNION ".join(
        f"SELECT {quoted(key)} FROM {quoted(table)} WHERE {clause}"  # noqa: S608 - schema names
        for clause in clauses
    )


def _tree(
    table: str,
    by_table: dict[str, list[Reference]],
    keys: dict[str, str],
    subject: int,
    seen: frozenset[str],
) -> list[str]:
    """Conditions for rows of ``table`` reached from the person through foreign keys (the
    module's 1. to 3.); a parent's own keys are a nested query, so no ids are held in memory.
    A chain that leads back to a table already on it is not followed (the schema has none)."""
    clauses = []
    for ref in by_table.get(table, []):
        column = quoted(ref.column)
        if ref.how in ("self", "foreign_key"):
            clauses.append(f"{column} = {subject}")
        elif ref.how == "parent" and ref.parent not in seen:
            inner = _tree(ref.parent, by_table, keys, subject, seen | {table})
            if inner:
                clauses.append(f"{column} IN ({_keys(ref.parent, keys[ref.parent], inner)})")
    return clauses


def _own_address(kind: PersonKind, subject: int) -> str:
    """The person's address, lower-cased, read where the condition runs; NULL (which matches
    nothing) when they have none or someone else may have it too. Staff type clients'
    addresses, so a client's names no one for certain: a client given an admin's address, or
    a second client's, must not receive the mail sent to it. A staff member's address is set
    through an invitation and is theirs, whichever client is given it."""
    own = quoted(PERSON_TABLES[kind])
    rivals: list[PersonKind] = ["staff"] if kind == "staff" else ["client", "staff"]
    others = " ".join(
        f"AND NOT EXISTS (SELECT 1 FROM {quoted(PERSON_TABLES[rival])} AS other"  # noqa: S608 - schema names
        f" WHERE lower(other.email) = lower(person.email)"
        + (f" AND other.id <> {subject})" if rival == kind else ")")
        for rival in rivals
    )
    return (
        f"SELECT lower(person.email) FROM {own} AS person"  # noqa: S608 - schema names
        f" WHERE person.id = {subject} AND person.email <> '' {others}"
    )


def queries(
    kind: PersonKind, subject_id: int, tables: Iterable[type[Table]] | None = None
) -> list[TableQuery]:
    """What to read of each table for one person, in the order of :func:`references`."""
    if kind not in PERSON_TABLES:  # written into SQL below: only the two known words
        raise ValueError(f"not a kind of person: {kind!r}")
    subject = int(subject_id)
    tables = list(tables if tables is not None else registered_tables())
    keys = {t._meta.tablename: _name(t._meta.primary_key) for t in tables}
    columns = {t._meta.tablename: frozenset(_name(c) for c in t._meta.columns) for t in tables}
    refs = references(kind, tables)
    by_table: dict[str, list[Reference]] = {}
    for ref in refs:
        by_table.setdefault(ref.table, []).append(ref)
    found = []
    for name, table_refs in by_table.items():
        whole = _tree(name, by_table, keys, subject, frozenset())
        outline_columns = []
        for ref in table_refs:
            column = quoted(ref.column)
            if ref.how == "kind_and_id":
                whole.append(f"{quoted(ref.kind_column)} = '{kind}' AND {column} = {subject}")
            elif ref.how == "address":
                whole.append(f"lower({column}) = ({_own_address(kind, subject)})")
            elif ref.how == "id_column":
                outline_columns.append(ref.column)
        key = keys[name]
        if len(whole) > 1:
            condition = f"{quoted(key)} IN ({_keys(name, key, whole)})"
        else:
            condition = whole[0] if whole else "FALSE"
        found.append(
            TableQuery(
                table=name,
                key=key,
                columns=columns[name],
                whole=condition,
                outline=" OR ".join(f"{quoted(c)} = {subject}" for c in outline_columns) or "FALSE",
                outline_columns=tuple(outline_columns),
                subject_id=subject,
            )
        )
    return found


BATCH = 500  # rows fetched at a time: what an export holds of one table at once
# A statement of an export that runs longer than this fails the export (a clear error, tried
# again by staff) rather than hold a worker: well below the time after which a job with no
# heartbeat is taken for dead.
STATEMENT_TIMEOUT = dt.timedelta(minutes=5)
_WHOLE = "export_row_is_whole"


def _select(query: TableQuery) -> str:
    """The one statement that reads a table's rows about the person, in key order, each once,
    with whether the row is the person's whole."""
    table, key = quoted(query.table), quoted(query.key)
    if query.outline == "FALSE":
        where, whole = query.whole, "TRUE"
    elif query.whole == "FALSE":
        where, whole = query.outline, "FALSE"
    else:  # both: the whole rows' keys once, joined
        return (
            f"WITH whole AS MATERIALIZED (SELECT {key} AS k FROM {table} WHERE {query.whole})"  # noqa: S608 - schema names
            f" SELECT {table}.*, whole.k IS NOT NULL AS {_WHOLE} FROM {table}"
            f" LEFT JOIN whole ON whole.k = {table}.{key}"
            f" WHERE whole.k IS NOT NULL OR ({query.outline}) ORDER BY {table}.{key}"
        )
    return f"SELECT *, {whole} AS {_WHOLE} FROM {table} WHERE {where} ORDER BY {key}"  # noqa: S608 - schema names


class Reader:
    """Reads for one export: one connection, one read-only snapshot, so the records and the
    files listed from them agree; each table is one statement whose rows are fetched
    ``batch`` at a time through a cursor."""

    def __init__(
        self, connection: asyncpg.Connection, subject_id: int, *, batch: int = BATCH
    ) -> None:
        self._connection = connection
        self.subject_id = int(subject_id)
        self._batch = max(1, batch)

    async def end(self) -> None:
        """End the snapshot and free its connection before the export is done (the photos
        come from the store, and a snapshot held while they are written holds back vacuum
        on every table). Reading afterwards is an error; ending twice is not."""
        await self._connection.close()

    async def rows(self, query: TableQuery) -> AsyncIterator[dict[str, Any]]:
        """The table's rows about the person in key order: a row that is the person's whole
        with secrets withheld, one that only names them as an outline."""
        cursor = self._connection.cursor(_select(query), prefetch=self._batch)
        async for record in cursor:
            yield _shown(dict(record), query)

    async def has_rows(self, query: TableQuery) -> bool:
        select = _select(query)
        return bool(await self._connection.fetchval(f"SELECT EXISTS ({select})"))

    async def person(self, kind: PersonKind) -> dict[str, Any]:
        """The person's own row (secrets withheld), or ``{}`` when they no longer exist."""
        table = quoted(PERSON_TABLES[kind])
        found = await self._connection.fetchrow(
            f"SELECT * FROM {table} WHERE id = $1",  # noqa: S608 - schema names
            self.subject_id,
        )
        return _masked(dict(found)) if found is not None else {}

    async def fetch(self, sql: str, *args: Any) -> AsyncIterator[asyncpg.Record]:
        """Any other read of the export (the access trail), through a cursor likewise."""
        async for record in self._connection.cursor(sql, *args, prefetch=self._batch):
            yield record


@contextlib.asynccontextmanager
async def reading(subject_id: int, *, batch: int = BATCH) -> AsyncIterator[Reader]:
    """A :class:`Reader` for one person's export, on a connection of its own (not the pool's:
    a snapshot held for the whole export must not pin a pooled connection, and the job's
    heartbeat must commit at once, outside it)."""
    from appliance.db.engine import engine

    connection: asyncpg.Connection = await engine().get_new_connection()
    reader = Reader(connection, subject_id, batch=batch)
    try:
        # Read-only, so never committed: closing the connection ends it.
        await connection.transaction(isolation="repeatable_read", readonly=True).start()
        timeout = int(STATEMENT_TIMEOUT.total_seconds() * 1000)
        await connection.execute(f"SET LOCAL statement_timeout = {timeout}")
        yield reader
    finally:
        await reader.end()


async def still_recorded(table: str, column: str, key: str) -> bool:
    """Whether a row of ``table`` names the object ``key`` in ``column`` now: read through the
    pool, not an export's snapshot, to tell a file deleted with its record since the snapshot
    from one the store lost."""
    found = {t._meta.tablename: t for t in registered_tables()}[table]
    rows = await found.raw(
        f"SELECT EXISTS (SELECT 1 FROM {quoted(table)} WHERE {quoted(column)} = {{}}) AS found",  # noqa: S608 - schema names
        key,
    )
    return bool(rows[0]["found"])


def _masked(row: dict[str, Any]) -> dict[str, Any]:
    """The whole row with its credentials withheld."""
    return {
        name: WITHHELD if withheld(name) and value is not None else value
        for name, value in row.items()
    }


def _shown(row: dict[str, Any], query: TableQuery) -> dict[str, Any]:
    if row.pop(_WHOLE):
        return _masked(row)
    # Only names the person as creator or actor: that it exists, that they are in it, and
    # when; not its other fields (another person's).
    return {
        name: value
        for name, value in row.items()
        if name == query.key
        or (name in query.outline_columns and value == query.subject_id)
        or name in OUTLINE_TIMES
    }


async def collect(
    kind: PersonKind, subject_id: int, tables: Iterable[type[Table]] | None = None
) -> list[TableRecords]:
    """Every row about one person held at once, table by table; tables with no row about
    the person are left out. For checks and small readers: an export streams them."""
    found = []
    async with reading(subject_id) as reader:
        for query in queries(kind, subject_id, tables):
            table_rows = [row async for row in reader.rows(query)]
            if table_rows:
                found.append(TableRecords(table=query.table, rows=table_rows))
    return found
