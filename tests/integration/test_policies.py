"""The studio's privacy policy: a seeded default, drafts admins preview and publish as numbered
versions, staff told by e-mail and asked to confirm, and hostile input refused or escaped."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator

import httpx
import msgspec
import pytest
from litestar import Litestar

from appliance.accounts.tables import StaffUser
from appliance.audit.service import list_entries
from appliance.policies import service
from appliance.policies.default_text import (
    DEFAULT_POLICY,
    DEFAULT_POLICY_DE,
    DEFAULT_SUMMARY,
    DEFAULT_SUMMARY_DE,
)
from appliance.policies.tables import PolicyAcknowledgement, PolicyDraft, PolicyVersion
from tests.conftest import FakeClock, make_client
from tests.integration.flows import Admin, csrf_of, sign_in, submit, totp_code
from tests.integration.maintenance_flows import mails
from tests.integration.test_sign_in import invite_photographer

ADMIN = "/admin/privacy-policy"
PIA_PASSWORD = "velvet compass orchard 77 river"
NEW_TEXT = "# Who we are\n\nStudio Lumen, Berlin.\n\n# What we collect\n\n- Names\n- Photos\n"


@contextlib.asynccontextmanager
async def photographer(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    """Pia, an invited photographer, signed in in a browser of her own; the admin stays
    signed in in ``client``."""
    path = await invite_photographer(client, admin, clock)
    async with make_client(app, "192.0.2.20") as pia:
        form = {"username": "pia", "display_name": "Pia", "password": PIA_PASSWORD}
        joined = await submit(pia, path, {**form, "confirm": PIA_PASSWORD})
        assert joined.status_code == 200, joined.text
        await StaffUser.update({StaffUser.language: "de"}).where(StaffUser.username == "pia")
        await sign_in(pia, "pia", PIA_PASSWORD)
        yield pia


@contextlib.contextmanager
def studio_language(app: Litestar, language: str) -> Iterator[None]:
    """The app's settings with ``language`` as the studio's default language, for one test."""
    before = app.state.settings
    notify = msgspec.structs.replace(before.notify, language=language)
    app.state.settings = msgspec.structs.replace(before, notify=notify)
    try:
        yield
    finally:
        app.state.settings = before


async def save_draft(
    client: httpx.AsyncClient, body: str, summary: str, then: str = ""
) -> httpx.Response:
    page = await client.get(ADMIN)
    assert page.status_code == 200, page.text
    revision = re.search(r'name="revision" value="(\d+)"', page.text)
    assert revision
    form = {"body": body, "summary": summary, "revision": revision.group(1), "then": then}
    return await client.post(f"{ADMIN}/draft", data={**form, "_csrf": csrf_of(page.text)})


async def publish(client: httpx.AsyncClient) -> httpx.Response:
    preview = await client.get(f"{ADMIN}/preview")
    assert preview.status_code == 200, preview.text
    revision = re.search(r'name="revision" value="(\d+)"', preview.text)
    assert revision
    return await client.post(
        f"{ADMIN}/publish", data={"revision": revision.group(1), "_csrf": csrf_of(preview.text)}
    )


async def owner_signed_in(client: httpx.AsyncClient, admin: Admin, clock: FakeClock) -> None:
    await sign_in(client, admin.username, admin.password, code=totp_code(admin.secret, clock()))


async def test_default_policy_is_seeded_once_and_public(
    client: httpx.AsyncClient, app: Litestar, admin: Admin
) -> None:
    """Anyone reads version 1, the default text with the studio's contact, seeded once even
    when the first visitors come at the same moment; nobody is asked to confirm it."""
    async with make_client(app, "198.51.100.7") as stranger:
        pages = await asyncio.gather(*[stranger.get("/privacy") for _ in range(5)])
    assert {page.status_code for page in pages} == {200}
    page = pages[0].text
    assert "Privacy policy of Studio Lumen" in page and "Version 1, published" in page
    assert "<h2>Your rights</h2>" in page and "hello@lumen.example" in page
    assert 'action="/privacy/acknowledge"' not in page
    rows = await PolicyVersion.select().run()
    assert [(r["number"], r["body"], r["published_by"]) for r in rows] == [
        (1, DEFAULT_POLICY, None)
    ]
    assert (await client.get("/privacy/versions/2")).status_code == 404


@pytest.mark.parametrize(
    ("language", "body", "summary", "heading", "other"),
    [
        ("en", DEFAULT_POLICY, DEFAULT_SUMMARY, "<h2>Your rights</h2>", "<h2>Ihre Rechte</h2>"),
        (
            "de",
            DEFAULT_POLICY_DE,
            DEFAULT_SUMMARY_DE,
            "<h2>Ihre Rechte</h2>",
            "<h2>Your rights</h2>",
        ),
    ],
    ids=["en", "de"],
)
async def test_the_default_text_is_seeded_in_the_studios_language(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    language: str,
    body: str,
    summary: str,
    heading: str,
    other: str,
) -> None:
    """A staff member's home page (or a confirmation) before anyone opened the policy seeds
    nothing; the first visit of /privacy then makes version 1 the default text in the studio's
    language."""
    with studio_language(app, language):
        await owner_signed_in(client, admin, clock)
        home = await client.get("/")
        assert home.status_code == 200 and "privacy policy" not in home.text
        early = await client.post(
            "/privacy/acknowledge", data={"number": "1", "_csrf": csrf_of(home.text)}
        )
        assert early.status_code == 404 and "no version of the privacy policy" in early.text
        assert await PolicyVersion.count() == 0
        async with make_client(app, "198.51.100.7") as stranger:
            page = (await stranger.get("/privacy")).text
        assert heading in page and other not in page and "hello@lumen.example" in page
        # The page around it is English; the text says which language it is in.
        assert '<html lang="en">' in page
        assert f'<div class="policy-text" lang="{language}">' in page
        rows = await PolicyVersion.select().run()
        assert [(r["number"], r["body"], r["summary"], r["published_by"]) for r in rows] == [
            (1, body, summary, None)
        ]
        # The admins' editor starts from that text.
        assert body.splitlines()[0] in (await client.get(ADMIN)).text


def test_the_german_default_text_has_the_english_ones_shape() -> None:
    """Both default texts have the same headings, paragraphs and list items in the same
    order, so the German one leaves no section or item out; the German one is German."""
    english, german = service.blocks(DEFAULT_POLICY), service.blocks(DEFAULT_POLICY_DE)
    assert [(b.kind, len(b.items)) for b in german] == [(b.kind, len(b.items)) for b in english]
    headings = [b.text for b in german if b.kind == "heading"]
    assert headings[0] == "Wer wir sind" and "Ihre Rechte" in headings
    assert "72 Stunden" in DEFAULT_POLICY_DE and "30 Tagen" in DEFAULT_POLICY_DE
    assert "innerhalb eines Monats" in DEFAULT_POLICY_DE


async def test_publishing_keeps_every_version_and_tells_staff(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """A previewed draft becomes version 2 with who and what changed; version 1 stays
    readable; each active staff member gets one e-mail in their language."""
    async with photographer(client, app, admin, clock):
        saved = await save_draft(client, NEW_TEXT, "Names the studio's address.", then="preview")
        assert saved.status_code == 303 and saved.headers["location"] == f"{ADMIN}/preview"
        preview = (await client.get(f"{ADMIN}/preview")).text
        assert "Preview: version 2" in preview and "<li>Photos</li>" in preview
        assert "Studio Lumen, Berlin." not in (await client.get("/privacy")).text  # not yet
        done = await publish(client)
        assert done.status_code == 303 and done.headers["location"] == f"{ADMIN}?done=published"
        again = await client.post(
            f"{ADMIN}/publish", data={"revision": "1", "_csrf": csrf_of(preview)}
        )
        assert again.status_code == 409 and "no draft to publish" in again.text
    public = (await client.get("/privacy")).text
    assert "Version 2, published" in public and "<p>Studio Lumen, Berlin.</p>" in public
    assert 'href="/privacy/versions/1"' in public and "Names the studio&#39;s address." in public
    older = (await client.get("/privacy/versions/1")).text
    assert "This is an earlier version." in older and "<h2>Your rights</h2>" in older
    versions = await service.list_versions()
    owner = await StaffUser.select(StaffUser.id).where(StaffUser.username == "owner").first()
    assert [(v.number, v.published_by, v.publisher) for v in versions] == [
        (2, owner["id"], "Olivia Owner"),
        (1, None, service.SEEDED_BY),
    ]
    assert versions[0].summary == "Names the studio's address."
    sent = {m["recipient"]: m for m in await mails("policy_published")}
    assert sorted(sent) == ["owner@lumen.example", "pia@lumen.example"]
    assert sent["pia@lumen.example"]["language"] == "de"
    assert "Version 2" in sent["pia@lumen.example"]["subject"]
    assert "Names the studio's address." in sent["owner@lumen.example"]["body_text"]
    assert await PolicyDraft.count() == 0
    actions = [e.action for e in await list_entries()]
    assert actions.count("policy.publish") == 1 and "policy.draft.save" in actions


async def test_staff_confirm_the_new_version_once(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """Pia's home page asks her to confirm version 2 until she does; the confirmation is
    recorded and audited once, and admins see who confirmed and who has not."""
    async with photographer(client, app, admin, clock) as pia:
        assert "privacy policy" not in (await pia.get("/")).text  # the default: not asked
        await save_draft(client, NEW_TEXT, "Shorter.")
        assert (await publish(client)).status_code == 303
        home = (await pia.get("/")).text
        assert "Version 2 of the studio&#39;s privacy policy was published" in home
        page = (await pia.get("/privacy")).text
        assert "I have read version 2" in page and "What changed: Shorter." in page
        for _ in range(2):
            confirmed = await pia.post(
                "/privacy/acknowledge", data={"number": "2", "_csrf": csrf_of(page)}
            )
            assert confirmed.status_code == 303
        assert "privacy policy was published" not in (await pia.get("/")).text
        assert "I have read version" not in (await pia.get("/privacy")).text
        stale = await pia.post("/privacy/acknowledge", data={"number": "1", "_csrf": csrf_of(page)})
        assert stale.status_code == 409 and "Version 2 replaced" in stale.text
        who = (await client.get(f"{ADMIN}/versions/2")).text
        confirmed_part, waiting_part = who.split("Not yet confirmed")
        assert "<td>Pia</td>" in confirmed_part and "Olivia Owner" in waiting_part
        assert "1 of 2 staff confirmed version 2" in (await client.get(ADMIN)).text
    assert await PolicyAcknowledgement.count() == 1
    entries = [e for e in await list_entries() if e.action == "policy.acknowledge"]
    assert [(e.actor, e.target) for e in entries] == [("pia", "privacy-policy:2")]
    # Erasing her account (its rows go through foreign keys) takes her confirmation with it.
    await StaffUser.delete().where(StaffUser.username == "pia")
    assert await PolicyAcknowledgement.count() == 0
    assert "Pia" not in (await client.get(f"{ADMIN}/versions/2")).text


async def test_a_stale_or_unsummarised_draft_is_not_published(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Publishing needs the revision that was previewed and a summary of what changed."""
    await owner_signed_in(client, admin, clock)
    await save_draft(client, NEW_TEXT, "")
    refused = await publish(client)
    assert refused.status_code == 400 and "Say in a sentence what changed" in refused.text
    preview = (await client.get(f"{ADMIN}/preview")).text
    await save_draft(client, NEW_TEXT + "\nMore.", "Adds a line.")  # revision 2
    stale = await client.post(f"{ADMIN}/publish", data={"revision": "1", "_csrf": csrf_of(preview)})
    assert stale.status_code == 409 and "changed after you opened it" in stale.text
    assert [v.number for v in await service.list_versions()] == [1]
    overwritten = await client.post(
        f"{ADMIN}/draft",
        data={"body": "Mine", "summary": "x", "revision": "1", "_csrf": csrf_of(preview)},
    )
    assert overwritten.status_code == 409 and "Another admin saved the draft" in overwritten.text
    draft = await service.get_draft()
    assert draft is not None and draft.body.endswith("More.") and draft.revision == 2


async def test_hostile_text_is_escaped_or_refused(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """A script tag is shown as text on the public page; a text past the limit or with
    control characters is refused with a message and nothing is stored."""
    await owner_signed_in(client, admin, clock)
    huge = await save_draft(client, "x" * (service.MAX_BODY + 1), "Too long")
    assert huge.status_code == 400 and "Use at most 100,000 characters." in huge.text
    control = await save_draft(client, "Hello\x07there", "Bell")
    assert control.status_code == 400 and "control characters" in control.text
    assert await PolicyDraft.count() == 0
    hostile = "# <script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n- <b>bold</b>"
    await save_draft(client, hostile, '"><script>alert(3)</script>')
    assert (await publish(client)).status_code == 303
    for page in ((await client.get("/privacy")).text, (await client.get(ADMIN)).text):
        assert "<script>alert" not in page and "<img src=x" not in page and "<b>bold" not in page
    public = (await client.get("/privacy")).text
    assert "<h2>&lt;script&gt;alert(1)&lt;/script&gt;</h2>" in public
    assert "&lt;img src=x onerror=alert(2)&gt;" in public


async def test_only_admins_edit_and_forms_need_their_token(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """A photographer gets 403 on every editor page and action; a form without its CSRF
    token is refused, and a confirmation needs a signed-in staff member."""
    async with photographer(client, app, admin, clock) as pia:
        token = csrf_of((await pia.get("/account")).text)
        for path in (ADMIN, f"{ADMIN}/preview", f"{ADMIN}/versions/1"):
            assert (await pia.get(path)).status_code == 403, path
        for path, form in (
            (f"{ADMIN}/draft", {"body": "Mine now", "summary": "x", "revision": "0"}),
            (f"{ADMIN}/publish", {"revision": "1"}),
            (f"{ADMIN}/discard", {}),
        ):
            refused = await pia.post(path, data={**form, "_csrf": token})
            assert refused.status_code == 403 and "Only an admin" in refused.text, path
        no_token = await client.post(
            f"{ADMIN}/draft", data={"body": "Sneaky", "summary": "x", "revision": "0"}
        )
        assert no_token.status_code == 403 and "form has expired" in no_token.text
    assert await PolicyDraft.count() == 0
    async with make_client(app, "198.51.100.7") as stranger:
        page = (await stranger.get("/login")).text
        anonymous = await stranger.post(
            "/privacy/acknowledge", data={"number": "1", "_csrf": csrf_of(page)}
        )
        assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login"
    assert await PolicyAcknowledgement.count() == 0
