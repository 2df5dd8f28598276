"""Piccolo app of the notify domain."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from appliance.notify.tables import AlertChannel, NotifySetting, OutboxMessage

APP_CONFIG = AppConfig(
    app_name="notify",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[OutboxMessage, AlertChannel, NotifySetting],
    migration_dependencies=["appliance.backups.piccolo_app"],
    commands=[],
)
