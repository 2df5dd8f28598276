"""Fixtures shared by several integration test modules."""

from __future__ import annotations

import msgspec
import pytest

from appliance.config import Settings

# A channel nobody listens on: alerts to it stay in the outbox, where the tests read them.
ALERT_URL = "json://127.0.0.1:9/security-hook"


@pytest.fixture
def alerting(settings: Settings) -> Settings:
    """The settings with one alert URL, so every alert becomes one outbox row."""
    return msgspec.structs.replace(
        settings, notify=msgspec.structs.replace(settings.notify, alert_urls=[ALERT_URL])
    )
