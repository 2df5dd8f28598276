"""Piccolo app of the exports domain."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from appliance.exports.tables import ExportJob

APP_CONFIG = AppConfig(
    app_name="exports",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[ExportJob],
    migration_dependencies=["appliance.privacy.piccolo_app"],
    commands=[],
)
