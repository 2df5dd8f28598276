"""Piccolo app of the clients domain."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from appliance.clients.tables import Client

APP_CONFIG = AppConfig(
    app_name="clients",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[Client],
    migration_dependencies=[],
    commands=[],
)
