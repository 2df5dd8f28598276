"""The schema as the code that walks it sees it: every registered table, and how a table or
column name is written into SQL.

Erasure, export and the legal hold build SQL from the table classes of Piccolo's app registry
(so a table another domain adds later is covered without a change there); they share these
two pieces.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from piccolo.table import Table

__all__ = ["quoted", "registered_tables"]

_PLAIN = re.compile(r"[a-z_][a-z0-9_]*")


def registered_tables() -> list[type[Table]]:
    """Every table of every app in the registry, once each, in registry order."""
    from appliance.db.engine import engine

    engine()  # sets PICCOLO_CONF for the registry import
    from appliance.db.piccolo_conf import APP_REGISTRY

    found: list[type[Table]] = []
    for config in APP_REGISTRY.app_configs.values():
        found += [t for t in config.table_classes if t not in found]
    return found


def quoted(name: str) -> str:
    """A table or column name of the schema, quoted for SQL ("user" is a keyword). Only plain
    names are taken: one with a brace would be read as a Piccolo placeholder, one with a quote
    would end the identifier; the schema has neither."""
    if not _PLAIN.fullmatch(name):
        raise ValueError(f"not a plain table or column name: {name!r}")
    return f'"{name}"'
