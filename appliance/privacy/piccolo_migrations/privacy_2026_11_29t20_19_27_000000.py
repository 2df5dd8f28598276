"""Unique indexes the register relies on: a person is affected by an incident once, and each
phase of an authority notification exists once per incident."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-29T20:19:27:000000"
VERSION = "1.38.0"
DESCRIPTION = "unique affected person per incident and unique authority-notice phase"

_STATEMENTS = [
    "CREATE UNIQUE INDEX security_affected_person_once"
    " ON security_affected_person (incident, kind, person_id)",
    "CREATE UNIQUE INDEX security_authority_notice_phase"
    " ON security_authority_notice (incident, phase)",
]


class _Raw(Table, tablename="security_incident"):
    pass


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="privacy", description=DESCRIPTION)

    async def run() -> None:
        # One statement a call: a prepared statement cannot hold several.
        for statement in _STATEMENTS:
            await _Raw.raw(statement)

    manager.add_raw(run)
    return manager
