"""The worker's probe rounds."""

from __future__ import annotations

import threading

from appliance.config import Settings

__all__ = ["MonitorLoop"]


class MonitorLoop(threading.Thread):
    def __init__(self, settings: Settings) -> None:
        super().__init__(name="monitor", daemon=True)
        self.settings = settings

    def run(self) -> None:
        return None

    def stop(self, timeout: float = 5.0) -> None:
        if self.is_alive():
            self.join(timeout)
