"""Records the law obliges the studio to keep after a person is erased: the legal hold.

An erasure must not destroy what tax or commercial law obliges the studio to keep: invoices
and contracts, for years (in Germany under §147 AO and §257 HGB). A domain declares such a
table with :func:`keep`; when the purge deletes a person's rows, each row of a declared table
is first copied into ``legal_hold`` with its reason and expiry, in the same transaction as
the deletion. The row itself goes with the rest of the person's data, so nothing in the
studio's daily work shows it any more (restricted processing, GDPR Art. 17(3)(b) and 18); the
copy is deleted by the daily purge once ``expires_at`` passes.

No domain declares a table yet: billing will declare its invoices. The mechanism is tested
with a declared stand-in table.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import msgspec

from appliance.privacy.tables import LegalHold

if TYPE_CHECKING:
    from piccolo.table import Table

__all__ = ["HoldRule", "declared", "hold_rows", "keep", "release_expired"]


class HoldRule(msgspec.Struct, frozen=True):
    """Rows of ``table`` are kept for ``years`` after the date in ``since`` (the invoice's
    date), counted from the end of the year it falls in as §147(4) AO counts unless
    ``from_year_end`` is off; from the purge when the row has no such date."""

    table: str
    reason: str  # kept with each held copy: "Invoices, §147 AO"
    years: int
    since: str = ""  # a date or timestamp column of the row
    from_year_end: bool = True


_RULES: dict[str, HoldRule] = {}


def keep(rule: HoldRule) -> None:
    """Declare that rows of ``rule.table`` survive an erasure on legal hold."""
    if not 1 <= rule.years <= 30 or not rule.reason.strip():
        raise ValueError(f"a legal hold needs a reason and 1 to 30 years: {rule!r}")
    _RULES[rule.table] = rule


def declared() -> dict[str, HoldRule]:
    return dict(_RULES)


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


async def hold_rows(
    table: type[Table], where: str, *, kind: str, subject_id: int, now: dt.datetime
) -> int:
    """Copy the rows of ``table`` matching ``where`` onto legal hold when the table is
    declared; how many were newly held. Run inside the purge's deletion transaction; a row
    already held (a re-run after a kill) is held once."""
    rule = _RULES.get(table._meta.tablename)
    if rule is None:
        return 0
    start = f"(t.{_quoted(rule.since)})::timestamptz" if rule.since else "{}::timestamptz"
    if rule.from_year_end:  # kept from the end of the calendar year the record falls in
        start = f"date_trunc('year', {start}, 'UTC') + interval '1 year'"
    # Names come from the table classes and the declared rule, never from input; the
    # person's kind, id, the reason and the times are parameters.
    sql = (
        "INSERT INTO legal_hold (kind, subject_id, table_name, record_id, reason, record,"  # noqa: S608 - see above
        " created_at, expires_at)"
        " SELECT {}, {}, {}, t.id, {}, to_jsonb(t.*), {},"
        f" coalesce({start}, {{}}) + make_interval(years => {int(rule.years)})"
        f" FROM {_quoted(rule.table)} AS t WHERE {where}"
        " ON CONFLICT (table_name, record_id) DO NOTHING RETURNING id"
    )
    args: list[object] = [kind, subject_id, rule.table, rule.reason[:200], now]
    if not rule.since:
        args.append(now)  # the start's own placeholder
    args.append(now)
    rows = await LegalHold.raw(sql, *args).run()
    return len(rows)


async def release_expired(now: dt.datetime) -> int:
    """Delete the held copies whose time is up: the daily purge's last step."""
    rows = await LegalHold.delete().where(LegalHold.expires_at <= now).returning(LegalHold.id)
    return len(rows)
