"""Piccolo app of the backups domain."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from appliance.backups.tables import (
    BackupAlert,
    BackupJob,
    BackupSetting,
    DrillReport,
    RecoveryPointCopy,
    RepositorySample,
)

APP_CONFIG = AppConfig(
    app_name="backups",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[
        BackupJob,
        RecoveryPointCopy,
        DrillReport,
        RepositorySample,
        BackupAlert,
        BackupSetting,
    ],
    migration_dependencies=["appliance.galleries.piccolo_app"],
    commands=[],
)
