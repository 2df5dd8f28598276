"""Object storage for photos and documents: one protocol, a filesystem and an S3 backend."""

from __future__ import annotations

from pathlib import Path

from appliance.config import Settings
from appliance.storage.base import ObjectInfo, ObjectNotFound, ObjectStore, StorageError

__all__ = ["ObjectInfo", "ObjectNotFound", "ObjectStore", "StorageError", "open_store"]


def open_store(settings: Settings) -> ObjectStore:
    """The store the settings name; call ``ensure_ready()`` on it before use."""
    storage = settings.storage
    if storage.backend == "s3":
        from appliance.storage.s3 import S3Store

        return S3Store(
            endpoint=storage.endpoint,
            access_key=storage.access_key,
            secret_key=storage.secret_key,
            bucket=storage.bucket,
            region=storage.region,
        )
    from appliance.storage.filesystem import FilesystemStore

    return FilesystemStore(Path(storage.path) if storage.path else settings.data_dir / "objects")
