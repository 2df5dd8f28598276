"""Piccolo's configuration module: the engine (configured at start-up) and every app.

The engine carries no connection settings at import time; :func:`appliance.db.engine.configure`
fills them in from the loaded settings before the first query.
"""

from piccolo.conf.apps import AppRegistry
from piccolo.engine.postgres import PostgresEngine


class _ConfiguredLater(PostgresEngine):
    """Piccolo's engine connects at construction to log the server version; ours has no
    connection settings yet at that point, so that check is skipped."""

    async def check_version(self) -> None:
        return None


DB = _ConfiguredLater(config={})

APP_REGISTRY = AppRegistry(
    apps=[
        "appliance.audit.piccolo_app",
        "appliance.accounts.piccolo_app",
        "appliance.setup.piccolo_app",
        "appliance.clients.piccolo_app",
        "appliance.galleries.piccolo_app",
        "appliance.backups.piccolo_app",
        "appliance.notify.piccolo_app",
        "appliance.monitoring.piccolo_app",
        "appliance.privacy.piccolo_app",
        "appliance.privacy_requests.piccolo_app",
        "appliance.exports.piccolo_app",
        "appliance.policies.piccolo_app",
    ]
)
