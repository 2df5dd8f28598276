"""Helpers of the maintenance-window tests: form values, staff, the outbox's mails."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import httpx

from appliance.accounts.tables import StaffUser
from appliance.audit.service import Actor
from appliance.monitoring import announcements
from appliance.monitoring.tables import MaintenanceWindow
from appliance.notify.tables import OutboxMessage
from tests.conftest import FakeClock
from tests.integration.flows import submit

PAGE = "/admin/incidents/maintenance"
OWNER_EMAIL = "owner@lumen.example"
SYSTEM = Actor(id=None, name="system")


def local(moment: dt.datetime) -> str:
    """A ``datetime-local`` form value in UTC (the test settings' studio time zone)."""
    return f"{moment.astimezone(dt.UTC):%Y-%m-%dT%H:%M}"


def minute(moment: dt.datetime) -> dt.datetime:
    """``moment`` cut to its minute, as a form can type it."""
    return moment.replace(second=0, microsecond=0)


async def add_staff(username: str, email: str, *, active: bool = True) -> None:
    """A staff account as the accounts domain stores it (its password is never used here)."""
    await StaffUser.insert(
        StaffUser(
            username=username,
            email=email,
            display_name=username.title(),
            role="photographer",
            password_hash="unused",
            is_active=active,
            password_changed_at=dt.datetime.now(dt.UTC),
            created_at=dt.datetime.now(dt.UTC),
        )
    ).run()


async def schedule(client: httpx.AsyncClient, **form: str) -> httpx.Response:
    """Send the schedule form with ``form``'s fields."""
    return await submit(client, PAGE, form, action=PAGE)


async def mails(template: str | None = None) -> list[dict[str, Any]]:
    """The outbox's e-mails in the order queued, only those of ``template`` when given."""
    query = OutboxMessage.select().where(OutboxMessage.kind == "email").order_by(OutboxMessage.id)
    rows = await query.run()
    return [row for row in rows if template is None or row["template"] == template]


async def run_task(clock: FakeClock, *, language: str = "en") -> announcements.NoticeReport:
    """What the periodic task does, at the test clock's time."""
    return await announcements.send_due_notices(
        notice_days=7, language=language, studio="Studio Lumen", zone="UTC", now=clock()
    )


async def only_window() -> dict[str, Any]:
    """The one maintenance window stored."""
    rows = await MaintenanceWindow.select().output(load_json=True).run()
    assert len(rows) == 1, rows
    return rows[0]


def form_key_of(html: str) -> str:
    """The one-time key of the form on ``html``."""
    found = re.search(r'name="form_key" value="([^"]+)"', html)
    assert found, "the form carries no one-time key"
    return found.group(1)
