"""The admins' home page names what needs a person, each with a link; photographers see none."""

from __future__ import annotations

import datetime as dt

import httpx
from litestar import Litestar

from appliance.monitoring.tables import ComponentStatus, ProcessHeartbeat
from appliance.notify.tables import OutboxMessage
from appliance.privacy.tables import SecurityIncident
from tests.conftest import FakeClock, make_client
from tests.integration.flows import Admin, sign_in, submit
from tests.integration.test_sign_in import invite_photographer


async def test_home_lists_what_needs_an_admin(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    path = await invite_photographer(client, admin, clock)  # signs the admin in
    calm = (await client.get("/")).text
    assert "could not be delivered" not in calm and "Security incident" not in calm
    now = clock()
    await ProcessHeartbeat(name="worker", beat_at=now, started_at=now).save().run()
    await ComponentStatus.insert(
        ComponentStatus(
            component="object-store", state="down", since=now, checked_at=now, first_checked_at=now
        ),
        ComponentStatus(component="web", state="up", since=now, checked_at=now),
    ).run()
    await OutboxMessage.insert(
        *[
            OutboxMessage(
                kind="email",
                recipient=f"p{n}@example.com",
                subject="Hello",
                state="failed",
                next_attempt_at=now,
                created_at=now,
            )
            for n in range(2)
        ]
    ).run()
    detected = now - dt.timedelta(hours=30)
    incident = SecurityIncident(
        kind="leak", title="Laptop stolen", detected_at=detected, personal_data=True, risk="high"
    )
    await incident.save().run()
    home = (await client.get("/")).text
    assert "Photo storage is down since" in home and 'href="/admin/monitoring"' in home
    assert "Website and galleries is" not in home  # up: nothing to say
    assert "2 messages could not be delivered." in home
    assert f"Security incident #{incident.id}" in home and "42 h 0 min left" in home
    assert home.index("Security incident") < home.index("could not be delivered")
    async with make_client(app, "192.0.2.20") as pia:
        password = "velvet compass orchard 77 river"
        await submit(
            pia,
            path,
            {"username": "pia", "display_name": "Pia", "password": password, "confirm": password},
        )
        await sign_in(pia, "pia", password)
        theirs = await pia.get("/")
        assert theirs.status_code == 200 and "Signed in as <strong>Pia</strong>" in theirs.text
        assert (
            "Security incident" not in theirs.text and "could not be delivered" not in theirs.text
        )
