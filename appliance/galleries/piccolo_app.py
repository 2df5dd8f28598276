"""Piccolo app of the galleries domain."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from appliance.galleries.tables import (
    Gallery,
    GallerySet,
    Photo,
    PhotoJob,
    PhotoUpload,
    PhotoUploadChunk,
    SelectionItem,
    SelectionList,
    ShareEvent,
    ShareLink,
    ShareVisit,
)

APP_CONFIG = AppConfig(
    app_name="galleries",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[
        Gallery,
        GallerySet,
        Photo,
        PhotoJob,
        PhotoUpload,
        PhotoUploadChunk,
        ShareLink,
        ShareVisit,
        ShareEvent,
        SelectionList,
        SelectionItem,
    ],
    migration_dependencies=["appliance.clients.piccolo_app"],
    commands=[],
)
