"""Records the law obliges the studio to keep after a person is erased: the legal hold.

An erasure must not destroy what tax or commercial law obliges the studio to keep: invoices
and contracts, for years (in Germany under §147 AO and §257 HGB). A domain declares such a
table with :func:`keep`; when the purge deletes a person's rows, each row of a declared table
is deleted and copied into ``legal_hold`` by one statement, with its reason and expiry. The
row itself is gone with the rest of the person's data, so nothing in the studio's daily work
shows it any more (restricted processing, GDPR Art. 17(3)(b) and 18); the objects it names
(``*_key`` columns: an invoice's PDF) stay in the store. The daily purge deletes the copy and
its objects once ``expires_at`` passes.

No domain declares a table yet: billing will declare its invoices. The mechanism is tested
with a declared stand-in table.
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from typing import TYPE_CHECKING, Any

import msgspec
from piccolo.columns import Date, Timestamp, Timestamptz

from appliance.db.schema import quoted
from appliance.privacy.tables import LegalHold

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from piccolo.table import Table

__all__ = ["HoldRule", "declared", "delete_and_hold", "keep", "key_columns", "release_expired"]


class HoldRule(msgspec.Struct, frozen=True):
    """Rows of ``table`` are kept for ``years`` after the date in ``since`` (an invoice's
    date), counted in the studio's time zone from the end of the year it falls in, as
    §147(4) AO counts, unless ``from_year_end`` is off; from the purge when there is none."""

    table: str
    reason: str  # kept with each held copy: "Invoices, §147 AO"
    years: int
    since: str = ""  # a date or timestamp column of the row
    since_is_local: bool = False  # a date or a timestamp without zone: already local
    from_year_end: bool = True


_RULES: dict[str, HoldRule] = {}


def keep(
    table: type[Table], *, reason: str, years: int, since: str = "", from_year_end: bool = True
) -> HoldRule:
    """Declare that rows of ``table`` survive an erasure on legal hold. Refused at once (when
    the domain is imported), not at the purge, when the rule cannot work."""
    if not 1 <= years <= 30 or not reason.strip():
        raise ValueError(f"a legal hold needs a reason and 1 to 30 years ({table.__name__})")
    if table._meta.primary_key._meta.db_column_name != "id":
        raise ValueError(f"a held table needs an integer id ({table.__name__})")
    local = False
    if since:
        column = next((c for c in table._meta.columns if c._meta.db_column_name == since), None)
        if not isinstance(column, Date | Timestamp | Timestamptz):
            raise ValueError(f"{table.__name__}.{since} is not a date or timestamp column")
        local = not isinstance(column, Timestamptz)
    rule = HoldRule(
        table=table._meta.tablename,
        reason=reason.strip()[:200],
        years=years,
        since=since,
        since_is_local=local,
        from_year_end=from_year_end,
    )
    _RULES[rule.table] = rule
    return rule


def declared() -> dict[str, HoldRule]:
    return dict(_RULES)


def key_columns(table: type[Table]) -> list[str]:
    """The object-key columns of a declared table, whose objects the hold keeps."""
    if table._meta.tablename not in _RULES:
        return []
    names = [c._meta.db_column_name for c in table._meta.columns]
    return [name for name in names if name.endswith("_key")]


async def delete_and_hold(
    table: type[Table],
    where: str,
    *,
    kind: str,
    subject_id: int,
    zone: str,
    now: dt.datetime,
) -> tuple[int, int] | None:
    """For a declared table, delete the rows matching ``where`` and copy each onto legal hold,
    in one statement (no row is deleted without its copy, none copied twice); ``(deleted,
    held)``. None when the table is not declared: the purge deletes its rows as any other."""
    rule = _RULES.get(table._meta.tablename)
    if rule is None:
        return None
    local_now = now.astimezone(zoneinfo.ZoneInfo(zone)).replace(tzinfo=None)
    args: list[Any] = [kind, subject_id, rule.table, rule.reason, now]
    # The record's date as a local time of the studio: the year it falls in is the studio's.
    if not rule.since:
        start = "{}::timestamp"
        args.append(local_now)
    elif rule.since_is_local:
        start = f"coalesce((gone.{quoted(rule.since)})::timestamp, {{}}::timestamp)"
        args.append(local_now)
    else:
        start = f"coalesce(gone.{quoted(rule.since)} AT TIME ZONE {{}}, {{}}::timestamp)"
        args += [zone, local_now]
    if rule.from_year_end:
        start = f"date_trunc('year', {start}) + interval '1 year'"
    expires = f"({start} + make_interval(years => {int(rule.years)})) AT TIME ZONE {{}}"
    args.append(zone)
    # Names come from the table classes and the declared rule, never from input; the
    # person's kind and id, the reason, the zone and the times are parameters.
    sql = (
        f"WITH gone AS (DELETE FROM {quoted(rule.table)} WHERE {where} RETURNING *),"  # noqa: S608 - see above
        " held AS (INSERT INTO legal_hold (kind, subject_id, table_name, record_id, reason,"
        " record, created_at, expires_at)"
        f" SELECT {{}}, {{}}, {{}}, gone.id, {{}}, to_jsonb(gone.*), {{}}, {expires}"
        " FROM gone RETURNING id)"
        " SELECT (SELECT count(*) FROM gone) AS deleted, (SELECT count(*) FROM held) AS held"
    )
    (row,) = await LegalHold.raw(sql, *args).run()
    return int(row["deleted"]), int(row["held"])


async def release_expired(
    delete_objects: Callable[[list[str]], Awaitable[int]], now: dt.datetime
) -> int:
    """Delete the held copies whose time is up, and (through ``delete_objects``, the purge's
    own, mirror copies included) the objects they kept: the daily purge's last step. The
    objects go before their copy, so a run killed half-way tries them again."""
    expired = (
        await LegalHold.select(LegalHold.id, LegalHold.record)
        .where(LegalHold.expires_at <= now)
        .run()
    )
    for row in expired:
        raw = row["record"]
        record = json.loads(raw) if isinstance(raw, str) else raw or {}
        keys = [
            value
            for name, value in record.items()
            if name.endswith("_key") and isinstance(value, str) and value
        ]
        await delete_objects(keys)
        await LegalHold.delete().where(LegalHold.id == row["id"]).run()
    return len(expired)
