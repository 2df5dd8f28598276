"""Triggers that raise the version counters the client's page cache is keyed on.

Any change to a gallery, its sets or its photos raises ``gallery.version``; any change to a
link's selection lists or their photos raises ``share_link.selection_version``. Kept in the
database, so no code path (an upload finishing, the worker marking a photo ready, an admin
fixing a row by hand) can change what a client sees without the cached page being dropped.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-29T15:31:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "triggers raising gallery.version and share_link.selection_version"

_STATEMENTS = [
    """
CREATE OR REPLACE FUNCTION gallery_content_changed() RETURNS trigger AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        UPDATE gallery SET version = version + 1 WHERE id = OLD.gallery;
    END IF;
    IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.gallery <> OLD.gallery) THEN
        UPDATE gallery SET version = version + 1 WHERE id = NEW.gallery;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
    """,
    """
CREATE TRIGGER photo_changes_gallery
    AFTER INSERT OR UPDATE OR DELETE ON photo
    FOR EACH ROW EXECUTE FUNCTION gallery_content_changed()
    """,
    """
CREATE TRIGGER gallery_set_changes_gallery
    AFTER INSERT OR UPDATE OR DELETE ON gallery_set
    FOR EACH ROW EXECUTE FUNCTION gallery_content_changed()
    """,
    """
CREATE OR REPLACE FUNCTION gallery_changed() RETURNS trigger AS $$
BEGIN
    IF NEW.version = OLD.version THEN
        NEW.version := OLD.version + 1;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql
    """,
    """
CREATE TRIGGER gallery_changes
    BEFORE UPDATE ON gallery
    FOR EACH ROW EXECUTE FUNCTION gallery_changed()
    """,
    """
CREATE OR REPLACE FUNCTION selection_list_changed() RETURNS trigger AS $$
DECLARE
    changed_link integer;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed_link := OLD.link;
    ELSE
        changed_link := NEW.link;
    END IF;
    UPDATE share_link SET selection_version = selection_version + 1 WHERE id = changed_link;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
    """,
    """
CREATE TRIGGER selection_list_changes_link
    AFTER INSERT OR UPDATE OR DELETE ON selection_list
    FOR EACH ROW EXECUTE FUNCTION selection_list_changed()
    """,
    """
CREATE OR REPLACE FUNCTION selection_item_changed() RETURNS trigger AS $$
DECLARE
    changed_list integer;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed_list := OLD.selection;
    ELSE
        changed_list := NEW.selection;
    END IF;
    UPDATE share_link SET selection_version = selection_version + 1
        WHERE id = (SELECT link FROM selection_list WHERE id = changed_list);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
    """,
    """
CREATE TRIGGER selection_item_changes_link
    AFTER INSERT OR UPDATE OR DELETE ON selection_item
    FOR EACH ROW EXECUTE FUNCTION selection_item_changed()
    """,
]


class _Raw(Table, tablename="gallery"):
    pass


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="galleries", description=DESCRIPTION)

    async def run() -> None:
        # One statement a call: a prepared statement cannot hold several.
        for statement in _STATEMENTS:
            await _Raw.raw(statement)

    manager.add_raw(run)
    return manager
