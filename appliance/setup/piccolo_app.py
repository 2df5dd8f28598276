"""Piccolo app of the setup domain."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from appliance.setup.tables import SetupToken, Studio

APP_CONFIG = AppConfig(
    app_name="setup",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[Studio, SetupToken],
    migration_dependencies=[],
    commands=[],
)
