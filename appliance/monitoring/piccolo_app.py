"""Piccolo app of the monitoring domain."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from appliance.monitoring.tables import (
    ComponentSpan,
    ComponentStatus,
    Incident,
    IncidentUpdate,
    MaintenanceWindow,
    MonitorSetting,
    ProbeResult,
    ProcessHeartbeat,
)

APP_CONFIG = AppConfig(
    app_name="monitoring",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[
        ProbeResult,
        ComponentStatus,
        ComponentSpan,
        ProcessHeartbeat,
        Incident,
        IncidentUpdate,
        MaintenanceWindow,
        MonitorSetting,
    ],
    migration_dependencies=["appliance.notify.piccolo_app"],
    commands=[],
)
