"""Piccolo app of the accounts domain."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from appliance.accounts.tables import (
    LoginThrottle,
    RecoveryCode,
    StaffInvitation,
    StaffSession,
    StaffUser,
)

APP_CONFIG = AppConfig(
    app_name="accounts",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[StaffUser, RecoveryCode, StaffSession, StaffInvitation, LoginThrottle],
    migration_dependencies=[],
    commands=[],
)
