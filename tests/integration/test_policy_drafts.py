"""The privacy policy's draft when two admins act at once, and numbers in its forms that are
not numbers: a save or a publish that overlaps another never loses a text while saying it
kept it, and a hostile number gets a message, not a server error."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from litestar import Litestar

from appliance.audit.service import Actor, list_entries
from appliance.errors import Conflict
from appliance.policies import service
from appliance.policies.tables import PolicyAcknowledgement, PolicyDraft, PolicyVersion
from tests.conftest import FakeClock
from tests.integration.flows import Admin, csrf_of
from tests.integration.test_policies import (
    ADMIN,
    NEW_TEXT,
    owner_signed_in,
    photographer,
    publish,
    save_draft,
)

OWNER = Actor(id=None, name="owner")
T = TypeVar("T")


async def _saves() -> int:
    return len([e for e in await list_entries() if e.action == "policy.draft.save"])


async def _behind_another_save(
    database_url: str, body: str, step: Coroutine[Any, Any, T]
) -> asyncio.Task[T]:
    """Run ``step`` while another connection's save of ``body`` is not committed yet; check
    that it waits for that save, then let the save commit. The step's task, to await."""
    other = await asyncpg.connect(database_url)
    try:
        held = other.transaction()
        await held.start()
        await other.execute("UPDATE policy_draft SET body = $1, revision = revision + 1", body)
        task = asyncio.create_task(step)
        await asyncio.sleep(0.3)
        waited = not task.done()
        await held.commit()
    finally:
        await other.close()
    assert waited
    return task


async def test_a_save_that_overlaps_another_is_refused_not_reported_saved(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, database_url: str
) -> None:
    """Admin B saves while admin A's save of the same revision is not committed yet: B waits,
    is refused, and neither the draft nor the audit log claims B's text was kept."""
    await owner_signed_in(client, admin, clock)
    assert (await save_draft(client, "First text", "s")).status_code == 303
    draft = await service.get_draft()
    assert draft is not None
    saving = await _behind_another_save(
        database_url,
        "Admin A text",
        service.save_draft(
            "Admin B text", "s", revision=draft.revision, actor=OWNER, address="x", now=clock()
        ),
    )
    with pytest.raises(Conflict, match="Another admin saved the draft"):
        await asyncio.wait_for(saving, 10)
    kept = await service.get_draft()
    assert kept is not None and (kept.body, kept.revision) == ("Admin A text", draft.revision + 1)
    assert await _saves() == 1  # only the first save through the page


async def test_a_save_while_publishing_is_refused_and_the_published_text_is_the_previewed_one(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, monkeypatch: Any
) -> None:
    """A save of the previewed revision while it is being published waits for the publish,
    then is refused: its text is not reported saved and then deleted with the draft."""
    await owner_signed_in(client, admin, clock)
    assert (await save_draft(client, NEW_TEXT, "Names the studio.")).status_code == 303
    draft = await service.get_draft()
    assert draft is not None
    reached, go_on = asyncio.Event(), asyncio.Event()
    current_version = service.current_version

    async def slow_current_version(now: Any, *, language: str) -> service.Version:
        reached.set()
        await go_on.wait()
        return await current_version(now, language=language)

    monkeypatch.setattr(service, "current_version", slow_current_version)
    publishing = asyncio.create_task(
        service.publish_draft(
            app.state.settings, revision=draft.revision, actor=OWNER, address="x", now=clock()
        )
    )
    try:
        await asyncio.wait_for(reached.wait(), 10)
        saving = asyncio.create_task(
            service.save_draft(
                "B's rewrite",
                "Other.",
                revision=draft.revision,
                actor=OWNER,
                address="x",
                now=clock(),
            )
        )
        await asyncio.sleep(0.3)
        waited = not saving.done()
    finally:
        go_on.set()
    published = await asyncio.wait_for(publishing, 10)
    with pytest.raises(Conflict, match="Another admin saved the draft"):
        await asyncio.wait_for(saving, 10)
    assert waited  # for the publish
    assert published.number == 2 and published.body == draft.body
    assert await PolicyDraft.count() == 0
    assert await _saves() == 1


async def test_a_publish_after_an_overlapping_save_is_refused(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, database_url: str
) -> None:
    """A publish of revision r while a save to r+1 is not committed yet waits, then is refused:
    the text published is never one nobody previewed, and the newer draft stays."""
    await owner_signed_in(client, admin, clock)
    assert (await save_draft(client, NEW_TEXT, "Names the studio.")).status_code == 303
    draft = await service.get_draft()
    assert draft is not None
    publishing = await _behind_another_save(
        database_url,
        "Newer",
        service.publish_draft(
            app.state.settings, revision=draft.revision, actor=OWNER, address="x", now=clock()
        ),
    )
    with pytest.raises(Conflict, match="changed after you opened it"):
        await asyncio.wait_for(publishing, 10)
    assert [v.number for v in await service.list_versions()] == [1]
    kept = await service.get_draft()
    assert kept is not None and kept.body == "Newer"


@pytest.mark.parametrize("number", ["\u00b2", "\u0663", "-1", "1.0", "99999999999", ""])
async def test_a_number_that_is_not_one_gets_a_message_not_a_server_error(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, number: str
) -> None:
    """Superscript and Arabic-Indic digits pass str.isdigit() but are no number: the
    confirmation, the save and the publish each answer 400 with a message and change nothing."""
    async with photographer(client, app, admin, clock) as pia:
        page = await pia.get("/privacy")
        confirmed = await pia.post(
            "/privacy/acknowledge", data={"number": number, "_csrf": csrf_of(page.text)}
        )
        assert confirmed.status_code == 400 and "is not a valid id" in confirmed.text
    editor = await client.get(ADMIN)
    saved = await client.post(
        f"{ADMIN}/draft",
        data={"body": "Mine", "summary": "x", "revision": number, "_csrf": csrf_of(editor.text)},
    )
    assert saved.status_code == 400 and "Reload the page and try again" in saved.text
    assert await PolicyDraft.count() == 0  # not read as "no draft yet" and stored
    assert (await save_draft(client, NEW_TEXT, "Names the studio.")).status_code == 303
    preview = await client.get(f"{ADMIN}/preview")
    published = await client.post(
        f"{ADMIN}/publish", data={"revision": number, "_csrf": csrf_of(preview.text)}
    )
    assert published.status_code == 400 and "Reload the page and try again" in published.text
    assert [v.number for v in await service.list_versions()] == [1]
    assert await PolicyAcknowledgement.count() == 0
    assert (await publish(client)).status_code == 303  # the real revision still works
    assert await PolicyVersion.count() == 2


async def test_throwing_away_a_draft_another_admin_saved_since_is_refused(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """The discard button throws away the revision its page showed: a draft saved by someone
    else after that page was opened is kept, until thrown away from a page that showed it."""
    await owner_signed_in(client, admin, clock)
    assert (await save_draft(client, "First text", "s")).status_code == 303
    opened = (await client.get(ADMIN)).text
    shown = re.findall(
        r'action="/admin/privacy-policy/discard".*?name="revision" value="(\d+)"', opened, re.S
    )
    assert shown == ["1"]
    await service.save_draft("B's text", "s", revision=1, actor=OWNER, address="x", now=clock())
    stale = await client.post(
        f"{ADMIN}/discard", data={"revision": shown[0], "_csrf": csrf_of(opened)}
    )
    assert stale.status_code == 409 and "it was not thrown away" in stale.text
    kept = await service.get_draft()
    assert kept is not None and (kept.body, kept.revision) == ("B's text", 2)
    fresh = (await client.get(ADMIN)).text
    gone = await client.post(f"{ADMIN}/discard", data={"revision": "2", "_csrf": csrf_of(fresh)})
    assert gone.status_code == 303 and await PolicyDraft.count() == 0
    actions = [e.action for e in await list_entries()]
    assert actions.count("policy.draft.discard") == 1
