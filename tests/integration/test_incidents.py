"""Service incidents: admins open them and post updates (to the probes' incidents too), with
clear refusals and audit entries; the status page's queries see consistent rows."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import httpx
import pytest
from litestar import Litestar

from appliance.audit.service import list_entries
from appliance.monitoring import incidents
from appliance.monitoring.tables import Incident, IncidentUpdate
from tests.conftest import FakeClock, make_client
from tests.integration.flows import Admin, csrf_of, sign_in, submit
from tests.integration.test_clients import signed_in_owner
from tests.integration.test_sign_in import invite_photographer

PAGE = "/admin/incidents"


async def open_incident(client: httpx.AsyncClient, **form: Any) -> httpx.Response:
    page = await client.get(PAGE + "/")
    assert page.status_code == 200
    return await client.post(PAGE + "/", data={**form, "_csrf": csrf_of(page.text)})


async def post_update(client: httpx.AsyncClient, incident_id: int, **form: str) -> httpx.Response:
    page = await client.get(f"{PAGE}/{incident_id}")
    assert page.status_code == 200
    return await client.post(
        f"{PAGE}/{incident_id}/updates", data={**form, "_csrf": csrf_of(page.text)}
    )


async def incident_row(incident_id: int) -> dict[str, Any]:
    row = (
        await Incident.select()
        .where(Incident.id == incident_id)
        .output(load_json=True)
        .first()
        .run()
    )
    assert row is not None
    return row


async def updates_of(incident_id: int) -> list[dict[str, Any]]:
    return (
        await IncidentUpdate.select()
        .where(IncidentUpdate.incident == incident_id)
        .order_by(IncidentUpdate.id)
        .run()
    )


def incident_id_of(response: httpx.Response) -> int:
    match = re.fullmatch(rf"{PAGE}/(\d+)\?done=opened", response.headers["location"])
    assert match, response.headers.get("location")
    return int(match.group(1))


async def test_admin_opens_an_incident_with_its_first_update_audited(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """An incident opened by an admin is stored with its components, impact and a first
    "investigating" update, shown on its page and in the list, and audit-logged."""
    await signed_in_owner(client, admin, clock)
    response = await open_incident(
        client,
        title="Galleries load slowly",
        impact="minor",
        components=["web", "object-store"],
        message="Thumbnails take 10 s.\nWe are looking into it.",
    )
    assert response.status_code == 303, response.text[-2000:]
    incident_id = incident_id_of(response)
    row = await incident_row(incident_id)
    assert row["title"] == "Galleries load slowly"
    assert row["impact"] == "minor"
    assert row["state"] == "investigating"
    assert row["components"] == ["web", "object-store"]
    assert row["automatic"] is False
    assert row["started_at"] == clock() and row["resolved_at"] is None
    (first,) = await updates_of(incident_id)
    assert first["state"] == "investigating"
    assert first["message"] == "Thumbnails take 10 s.\nWe are looking into it."
    assert first["created_by"] == row["created_by"] is not None

    page = await client.get(f"{PAGE}/{incident_id}?done=opened")
    assert "Incident opened" in page.text
    assert "Website and galleries, Photo storage" in page.text
    assert "We are looking into it." in page.text
    listing = await client.get(PAGE)
    assert 'id="open-incidents"' in listing.text and "Galleries load slowly" in listing.text
    entry = next(e for e in await list_entries() if e.action == "incident.opened")
    assert entry.actor == "owner" and entry.target == f"incident:{incident_id}"
    assert entry.details == {
        "title": "Galleries load slowly",
        "impact": "minor",
        "components": ["web", "object-store"],
    }


async def test_updates_move_the_state_and_resolving_closes_the_incident(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Each update is stored with its state and text, the incident follows its newest state,
    "resolved" sets resolved_at, and a resolved incident takes no further update."""
    await signed_in_owner(client, admin, clock)
    incident_id = incident_id_of(
        await open_incident(client, title="Uploads fail", impact="major", message="Checking.")
    )
    for state, text in (
        ("identified", "A full disk."),
        ("monitoring", "Space freed; watching."),
    ):
        clock.advance(minutes=5)
        response = await post_update(client, incident_id, state=state, message=text)
        assert response.status_code == 303
        assert response.headers["location"] == f"{PAGE}/{incident_id}?done=updated"
        row = await incident_row(incident_id)
        assert row["state"] == state and row["resolved_at"] is None
    clock.advance(minutes=5)
    resolved = await post_update(client, incident_id, state="resolved", message="All good.")
    assert resolved.headers["location"] == f"{PAGE}/{incident_id}?done=resolved"
    row = await incident_row(incident_id)
    assert row["state"] == "resolved" and row["resolved_at"] == clock()
    assert [u["state"] for u in await updates_of(incident_id)] == [
        "investigating",
        "identified",
        "monitoring",
        "resolved",
    ]
    record = await incidents.get_incident(incident_id)
    assert [u.message for u in record.updates] == [
        "All good.",
        "Space freed; watching.",
        "A full disk.",
        "Checking.",
    ]

    listing = await client.get(PAGE)
    resolved_table = listing.text.split('id="resolved-incidents"', 1)[1]
    assert "Uploads fail" in resolved_table
    assert 'id="open-incidents"' not in listing.text

    late = await post_update(client, incident_id, state="monitoring", message="Oh, again?")
    assert late.status_code == 409
    assert "This incident is resolved. Open a new incident" in late.text
    assert len(await updates_of(incident_id)) == 4
    audited = [e for e in await list_entries() if e.action == "incident.updated"]
    # list_entries gives the newest first.
    assert [e.details["state"] for e in audited] == ["resolved", "monitoring", "identified"]


@pytest.mark.parametrize(
    ("form", "status", "message"),
    [
        ({"state": "monitoring", "message": "   "}, 400, "Write what happened"),
        ({"state": "panicking", "message": "Hm."}, 400, "Choose one of: investigating"),
        ({"state": "", "message": "Hm."}, 400, "Choose one of: investigating"),
        ({"state": "identified", "message": "x" * 4001}, 400, "Use at most 4,000 characters."),
        ({"state": "identified", "message": "bad\x00byte"}, 400, "control characters"),
    ],
)
async def test_bad_updates_are_refused_with_a_clear_message(
    client: httpx.AsyncClient,
    admin: Admin,
    clock: FakeClock,
    form: dict[str, str],
    status: int,
    message: str,
) -> None:
    """An update without text, with an unknown state or hostile text gets a 4xx naming the
    problem; the incident and its updates stay as they were."""
    await signed_in_owner(client, admin, clock)
    incident_id = incident_id_of(
        await open_incident(client, title="Slow", impact="minor", message="Looking.")
    )
    response = await post_update(client, incident_id, **form)
    assert response.status_code == status
    assert message in response.text
    assert (await incident_row(incident_id))["state"] == "investigating"
    assert len(await updates_of(incident_id)) == 1


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"title": "", "impact": "major", "message": "x"}, "Give the incident a title."),
        ({"title": "T", "impact": "apocalyptic", "message": "x"}, "Choose one of: minor"),
        ({"title": "T", "impact": "major", "message": ""}, "Write what happened"),
        (
            {"title": "T", "impact": "major", "message": "x", "components": "toaster"},
            "Unknown component: &#39;toaster&#39;",
        ),
        ({"title": "x" * 201, "impact": "major", "message": "x"}, "Use at most 200 characters."),
    ],
)
async def test_bad_incidents_are_refused_with_a_clear_message(
    client: httpx.AsyncClient,
    admin: Admin,
    clock: FakeClock,
    form: dict[str, str],
    message: str,
) -> None:
    """A new incident without a title or text, with an unknown impact or component, gets a
    400 with the reason and nothing is stored."""
    await signed_in_owner(client, admin, clock)
    response = await open_incident(client, **form)
    assert response.status_code == 400
    assert message in response.text
    assert await Incident.count().run() == 0
    assert await IncidentUpdate.count().run() == 0


async def test_unknown_incidents_are_not_found(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """An update to an incident that does not exist is a 404; an id out of range is a 4xx."""
    await signed_in_owner(client, admin, clock)
    assert (await client.get(f"{PAGE}/4242")).status_code == 404
    token = csrf_of((await client.get(PAGE)).text)
    missing = await client.post(
        f"{PAGE}/4242/updates", data={"state": "resolved", "message": "x", "_csrf": token}
    )
    assert missing.status_code == 404 and "no such incident" in missing.text
    huge = await client.post(
        f"{PAGE}/99999999999/updates", data={"state": "resolved", "message": "x", "_csrf": token}
    )
    assert huge.status_code in (400, 404)
    assert await IncidentUpdate.count().run() == 0


async def test_probe_incidents_appear_and_take_admins_updates(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """An incident a probe opened is listed; an admin's update joins the probe's; when the
    admin resolved it first, the probe's recovery adds no second resolution."""
    await signed_in_owner(client, admin, clock)
    incident_id = await incidents.open_automatic(
        "database", "Database down", "connection refused", clock()
    )
    assert incident_id is not None
    listing = await client.get(PAGE)
    assert "Database down" in listing.text and "a probe" in listing.text
    clock.advance(minutes=3)
    response = await post_update(
        client, incident_id, state="identified", message="The disk of the database is full."
    )
    assert response.status_code == 303
    clock.advance(minutes=3)
    await post_update(client, incident_id, state="resolved", message="Space freed.")
    assert await incidents.resolve_automatic("database", "back up", clock()) is None
    states = [u["state"] for u in await updates_of(incident_id)]
    assert states == ["investigating", "identified", "resolved"]
    assert [u["created_by"] is None for u in await updates_of(incident_id)] == [
        True,
        False,
        False,
    ]
    # The probe may open a new one for the next outage.
    assert await incidents.open_automatic("database", "Database down", "again", clock())


async def test_status_queries_show_open_and_recently_resolved_incidents(
    clean_db: None, clock: FakeClock
) -> None:
    """current_incidents: open ones and those resolved within 24 h, newest first, updates
    newest first."""
    start = clock()
    old = await incidents.open_automatic("web", "Web down", "timeout", start)
    assert old is not None
    clock.advance(hours=1)
    await incidents.resolve_automatic("web", "answers again", clock())
    clock.advance(hours=1)
    fresh = await incidents.open_automatic("queue", "Queue stuck", "2000 jobs", clock())
    assert fresh is not None

    current = await incidents.current_incidents(clock())
    assert [i.id for i in current] == [fresh, old]
    assert [u.state for u in current[1].updates] == ["resolved", "investigating"]
    assert current[1].resolved_at is not None and current[1].state == "resolved"
    assert current[0].component_labels == ["Job queue"]

    clock.advance(hours=24)
    assert [i.id for i in await incidents.current_incidents(clock())] == [fresh]


async def test_photographer_and_stranger_change_no_incident(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """A photographer gets 403 on every page and form; a signed-out visitor is sent to sign
    in; no incident, update or window is stored."""
    path = await invite_photographer(client, admin, clock)
    async with make_client(app, "192.0.2.20") as pia:
        joined = await submit(
            pia,
            path,
            {
                "username": "pia",
                "display_name": "Pia Photographer",
                "password": "velvet compass orchard 77 river",
                "confirm": "velvet compass orchard 77 river",
            },
        )
        assert joined.status_code == 200
        await sign_in(pia, "pia", "velvet compass orchard 77 river")
        assert (await pia.get(PAGE)).status_code == 403
        assert (await pia.get(PAGE + "/maintenance")).status_code == 403
        token = csrf_of((await pia.get("/account")).text)
        for action, data in (
            ("/", {"title": "x", "impact": "major", "message": "x"}),
            ("/1/updates", {"state": "resolved", "message": "x"}),
            ("/maintenance", {"title": "x"}),
            ("/maintenance/1/cancel", {}),
        ):
            response = await pia.post(PAGE + action, data={**data, "_csrf": token})
            assert response.status_code == 403, action
    async with make_client(app, "192.0.2.30") as stranger:
        opened = await stranger.get(PAGE)
        assert opened.status_code == 303 and opened.headers["location"] == "/login"
    assert await Incident.count().run() == 0


async def test_resolved_incidents_keep_state_and_time_consistent(
    clean_db: None, clock: FakeClock
) -> None:
    """Whatever path resolved it, state "resolved" and resolved_at go together, and the
    newest update carries the incident's state."""
    from appliance.audit.service import Actor

    owner = Actor(id=None, name="owner")
    record = await incidents.create_incident(
        title="Mail delayed",
        impact="minor",
        components=[],
        message="Relay slow.",
        known=["web"],
        actor=owner,
        address="192.0.2.10",
        now=clock(),
    )
    clock.advance(minutes=10)
    done = await incidents.post_update(
        record.id,
        state="resolved",
        message="Delivered.",
        actor=owner,
        address="192.0.2.10",
        now=clock(),
    )
    assert done.state == done.updates[0].state == "resolved"
    assert done.resolved_at == clock()
    for row in await Incident.select().run():
        assert (row["state"] == "resolved") == (row["resolved_at"] is not None)
    started = dt.timedelta(minutes=10)
    assert done.resolved_at - done.started_at == started


async def test_the_same_open_form_sent_twice_opens_one_incident(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """A double click sends the form twice: both POSTs land on the one incident opened, with
    one first update and one audit entry; the form of a failed attempt keeps its key."""
    await signed_in_owner(client, admin, clock)
    page = await client.get(PAGE + "/")
    key = re.search(r'name="form_key" value="([^"]+)"', page.text)
    assert key is not None
    form = {
        "title": "Uploads fail",
        "impact": "minor",
        "message": "Looking into it.",
        "form_key": key.group(1),
        "_csrf": csrf_of(page.text),
    }
    refused = await client.post(PAGE + "/", data={**form, "title": " "})
    assert refused.status_code == 400 and key.group(1) in refused.text
    first = await client.post(PAGE + "/", data=form)
    second = await client.post(PAGE + "/", data=form)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    rows = await Incident.select(Incident.id, Incident.title).run()
    assert [row["title"] for row in rows] == ["Uploads fail"]
    assert [u["message"] for u in await updates_of(rows[0]["id"])] == ["Looking into it."]
    actions = [e.action for e in await list_entries()]
    assert actions.count("incident.opened") == 1
    fresh = await client.get(PAGE + "/")
    assert key.group(1) not in fresh.text
    forged = await client.post(PAGE + "/", data={**form, "form_key": "x" * 65})
    assert forged.status_code == 400 and "Reload the page" in forged.text
    assert await Incident.count() == 1
