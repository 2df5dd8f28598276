"""Piccolo app of the policies domain."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from appliance.policies.tables import PolicyAcknowledgement, PolicyDraft, PolicyVersion

APP_CONFIG = AppConfig(
    app_name="policies",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[PolicyVersion, PolicyDraft, PolicyAcknowledgement],
    migration_dependencies=["appliance.accounts.piccolo_app", "appliance.privacy.piccolo_app"],
    commands=[],
)
