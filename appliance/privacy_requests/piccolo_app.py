"""Piccolo app of clients' privacy requests."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from appliance.privacy_requests.tables import PrivacyRequest, PrivacyRequestSubmission

APP_CONFIG = AppConfig(
    app_name="privacy_requests",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[PrivacyRequest, PrivacyRequestSubmission],
    migration_dependencies=["appliance.clients.piccolo_app"],
    commands=[],
)
