"""E-mail in the recipient's language: staff members and clients choose theirs on a form, and
the selection e-mail and maintenance notices are written in it (else in the studio's default)."""

from __future__ import annotations

import datetime as dt
import re

import httpx
from litestar import Litestar

from appliance.accounts.tables import StaffUser
from appliance.audit.service import list_entries
from appliance.clients.tables import Client
from appliance.errors import InvalidInput
from appliance.galleries.tables import ShareLink
from appliance.monitoring import announcements
from appliance.notify.languages import choices, clean_language, language_for
from appliance.notify.tables import OutboxMessage
from tests.conftest import FakeClock
from tests.integration.flows import Admin, csrf_of, submit
from tests.integration.sharing_flows import published_gallery, share, visitor
from tests.integration.test_clients import ANNA, BEN, create, signed_in_owner
from tests.integration.test_maintenance import (
    OWNER_EMAIL,
    PAGE,
    add_staff,
    local,
    mails,
    minute,
    schedule,
)

REFUSED = "Choose the studio default or one of: English, Deutsch."
HOSTILE = ("fr", "../x", "de-AT", "EN", "x" * 300)


def test_a_persons_own_language_wins_when_the_templates_have_it() -> None:
    """Their own language when known; else the studio's; else English."""
    assert language_for("de", "en") == "de"
    assert language_for("", "de") == "de"
    assert language_for("fr", "de") == "de"
    assert language_for("", "xx") == "en"
    assert choices("de")[0] == ("", "Studio default (Deutsch)")
    assert [value for value, _ in choices()] == ["", "en", "de"]
    assert clean_language(" de ") == "de" and clean_language("") == ""
    for value in HOSTILE:
        try:
            clean_language(value, field="language")
        except InvalidInput as exc:
            assert exc.field == "language" and exc.message == REFUSED
        else:
            raise AssertionError(f"{value!r} was accepted")


async def test_client_language_is_chosen_on_the_form_shown_and_audited(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """The form offers the studio default and each language; the choice is stored, shown, and
    a change is audit-logged by field name."""
    await signed_in_owner(client, admin, clock)
    form = (await client.get("/clients/new")).text
    options = re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', form)
    assert options == [("", "Studio default (English)"), ("en", "English"), ("de", "Deutsch")]
    anna = await create(client, {**ANNA, "language": "de"})
    row = await Client.select(Client.language).where(Client.id == anna).first().run()
    assert row == {"language": "de"}
    assert "<dt>E-mail language</dt><dd>Deutsch</dd>" in (await client.get(f"/clients/{anna}")).text
    edit = (await client.get(f"/clients/{anna}/edit")).text
    assert '<option value="de" selected>Deutsch</option>' in edit
    saved = await submit(client, f"/clients/{anna}/edit", {**ANNA, "language": ""})
    assert saved.status_code == 303
    row = await Client.select(Client.language).where(Client.id == anna).first().run()
    assert row == {"language": ""}
    entry = (await list_entries())[0]
    assert (entry.action, entry.details) == ("client.update", {"fields": ["language"]})
    ben = await create(client, BEN)  # no language sent: the studio's default
    row = await Client.select(Client.language).where(Client.id == ben).first().run()
    assert row == {"language": ""}


async def test_client_form_refuses_languages_it_does_not_offer(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """An unknown or hostile language is a 400 naming the field, on create and on edit, and
    nothing is stored."""
    await signed_in_owner(client, admin, clock)
    anna = await create(client, {**ANNA, "language": "de"})
    for value in HOSTILE:
        created = await submit(client, "/clients/new", {**BEN, "language": value})
        assert created.status_code == 400, value
        assert REFUSED in created.text and 'id="f-language-error"' in created.text
        edited = await submit(client, f"/clients/{anna}/edit", {**ANNA, "language": value})
        assert edited.status_code == 400, value
        assert REFUSED in edited.text and 'id="f-language-error"' in edited.text
    assert await Client.count().run() == 1
    row = await Client.select(Client.language).where(Client.id == anna).first().run()
    assert row == {"language": "de"}


async def test_staff_member_chooses_their_own_language_audited(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """On the account page a staff member picks a language; it is stored and audit-logged, and
    anything not offered is refused with a 400 naming the field."""
    await signed_in_owner(client, admin, clock)
    page = (await client.get("/account")).text
    assert '<option value="" selected>Studio default (English)</option>' in page
    for value in HOSTILE:
        refused = await submit(client, "/account", {"language": value}, action="/account/language")
        assert refused.status_code == 400, value
        assert REFUSED in refused.text and 'id="f-language-error"' in refused.text
    saved = await submit(client, "/account", {"language": "de"}, action="/account/language")
    assert saved.status_code == 303 and saved.headers["location"] == "/account?done=language"
    page = (await client.get(saved.headers["location"])).text
    assert "Your e-mail language was saved." in page
    assert '<option value="de" selected>Deutsch</option>' in page
    row = await StaffUser.select(StaffUser.language).where(StaffUser.username == "owner").run()
    assert row == [{"language": "de"}]
    entries = [e for e in await list_entries() if e.action == "user.language"]
    assert len(entries) == 1
    assert (entries[0].actor, entries[0].target) == ("owner", "user:owner")
    assert entries[0].details == {"from": "default", "to": "de"}
    again = await submit(client, "/account", {"language": "de"}, action="/account/language")
    assert again.status_code == 303
    assert len([e for e in await list_entries() if e.action == "user.language"]) == 1


async def send_favourites(app: Litestar, path: str, photo: int) -> None:
    """The visitor of ``path`` marks ``photo`` and sends the first list."""
    async with visitor(app) as browser:
        page = (await browser.get(path)).text
        token = csrf_of(page)
        list_id = int(re.search(r"/lists/(\d+)/send", page).group(1))  # type: ignore[union-attr]
        marked = await browser.post(
            f"{path}/lists/{list_id}/photos/{photo}",
            data={"chosen": "1"},
            headers={"X-CSRF-Token": token, "Accept": "application/json"},
        )
        assert marked.status_code == 200
        sent = await browser.post(f"{path}/lists/{list_id}/send", data={"_csrf": token})
        assert sent.status_code == 303


async def test_selection_mail_is_written_in_the_photographers_language(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """The photographer gets the selection in the studio's default until they choose German;
    then in German."""
    await signed_in_owner(client, admin, clock)
    gallery, photos = await published_gallery(client, app, clock, ANNA, ["DSC_0001.jpg"])
    path = await share(client, gallery)
    await send_favourites(app, path, photos[0])
    chosen = await submit(client, "/account", {"language": "de"}, action="/account/language")
    assert chosen.status_code == 303
    clock.advance(minutes=5)
    await send_favourites(app, path, photos[0])
    rows = (
        await OutboxMessage.select()
        .where(OutboxMessage.template == "selection_received")
        .order_by(OutboxMessage.id)
        .run()
    )
    assert [(m["recipient"], m["language"]) for m in rows] == [
        (OWNER_EMAIL, "en"),
        (OWNER_EMAIL, "de"),
    ]
    assert rows[0]["subject"] == 'Anna sent "Favourites" (1 photos) for Wedding'
    assert rows[1]["subject"] == 'Anna hat „Favourites" geschickt (1 Fotos) für Wedding'


async def test_maintenance_mail_reaches_each_person_in_their_language(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """Staff in their own language, clients in the language of their link's client (also when
    the link has its own address), everyone else in the studio's default; a cancellation
    follows each in the language of their notice."""
    await signed_in_owner(client, admin, clock)
    await add_staff("pia", "pia@lumen.example")
    await StaffUser.update({StaffUser.language: "de"}).where(StaffUser.username == "pia").run()
    gallery, _ = await published_gallery(client, app, clock, {**ANNA, "language": "de"}, ["a.jpg"])
    await share(client, gallery, recipient="Anna", email="anna.links@example.org")
    other, _ = await published_gallery(client, app, clock, BEN, ["b.jpg"], title="Portraits")
    await share(client, other, recipient="Ben", email=BEN["email"])
    assert await ShareLink.count().run() == 2

    starts = minute(clock() + dt.timedelta(hours=6))
    await schedule(
        client,
        title="Umzug",
        starts=local(starts),
        ends=local(starts + dt.timedelta(hours=1)),
        notify_clients="on",
    )
    await announcements.send_due_notices(
        notice_days=7, language="en", studio="Studio Lumen", zone="UTC", now=clock()
    )
    notices = {m["recipient"]: m for m in await mails("maintenance_notice")}
    assert {address: m["language"] for address, m in notices.items()} == {
        OWNER_EMAIL: "en",
        "pia@lumen.example": "de",
        "anna.links@example.org": "de",
        BEN["email"]: "en",
    }
    german = f"Geplante Wartung {starts:%Y-%m-%d %H:%M} UTC: Umzug"
    english = f"Planned maintenance {starts:%Y-%m-%d %H:%M} UTC: Umzug"
    assert notices["pia@lumen.example"]["subject"] == german
    assert notices["anna.links@example.org"]["subject"] == german
    assert 'lang="de"' in notices["anna.links@example.org"]["body_html"]
    assert notices[OWNER_EMAIL]["subject"] == english
    assert notices[BEN["email"]]["subject"] == english

    window = (await client.get(PAGE)).text
    found = re.search(rf'action="{PAGE}/(\d+)/cancel"', window)
    assert found
    cancelled = await client.post(
        f"{PAGE}/{found.group(1)}/cancel", data={"_csrf": csrf_of(window)}
    )
    assert cancelled.status_code == 303
    cancellations = {m["recipient"]: m for m in await mails("maintenance_cancelled")}
    assert {address: m["language"] for address, m in cancellations.items()} == {
        address: m["language"] for address, m in notices.items()
    }
    assert cancellations["anna.links@example.org"]["subject"].startswith("Abgesagt: Wartung")
    assert cancellations[BEN["email"]]["subject"].startswith("Cancelled: maintenance")
