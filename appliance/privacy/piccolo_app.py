"""Piccolo app of the privacy domain."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from appliance.privacy.tables import (
    AffectedPerson,
    AuthorityNotice,
    ErasureRequest,
    LegalHold,
    PersonNotice,
    SecurityIncident,
    SecurityIncidentChange,
)

APP_CONFIG = AppConfig(
    app_name="privacy",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[
        SecurityIncident,
        SecurityIncidentChange,
        AuthorityNotice,
        AffectedPerson,
        PersonNotice,
        ErasureRequest,
        LegalHold,
    ],
    migration_dependencies=["appliance.monitoring.piccolo_app"],
    commands=[],
)
