"""The studio's privacy policy: a draft admins edit, versions they publish, staff who confirm.

Published versions are never changed: the public page shows the newest, older ones stay
reachable by number. Publishing tells every active staff member by e-mail (through the outbox)
and asks each to confirm they read it; until they do, their home page says so.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, Literal

import msgspec

from appliance.accounts import service as accounts
from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.config import Settings
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.localtime import format_local
from appliance.notify.languages import language_for
from appliance.notify.messages import queue_email
from appliance.policies.default_text import default_policy
from appliance.policies.tables import PolicyAcknowledgement, PolicyDraft, PolicyVersion
from appliance.validation import clean_multiline

__all__ = [
    "MAX_BODY",
    "MAX_SUMMARY",
    "Acknowledgements",
    "Block",
    "Draft",
    "Version",
    "acknowledge",
    "acknowledgements",
    "blocks",
    "current_version",
    "discard_draft",
    "get_draft",
    "get_version",
    "list_versions",
    "pending_acknowledgement",
    "publish_draft",
    "save_draft",
]

MAX_BODY = 100_000  # a long policy is a few thousand words; this is ten times that
MAX_SUMMARY = 1_000
# Serialises publishing, so two admins publishing at once get numbers n and n+1, never one
# number twice, and each version's e-mails are queued once.
_PUBLISH_LOCK_ID = 0x706F6C696379
SEEDED_BY = "the appliance (default text)"
FORMER_STAFF = "a former staff member"


class Version(msgspec.Struct, frozen=True):
    number: int
    body: str
    summary: str
    published_at: dt.datetime
    published_by: int | None
    publisher: str  # the admin's name, or who else published it, for the pages

    @property
    def needs_acknowledgement(self) -> bool:
        """Only versions an admin published are put to staff; the seeded default is not."""
        return self.published_by is not None


class Draft(msgspec.Struct, frozen=True):
    body: str
    summary: str
    revision: int
    updated_at: dt.datetime
    updated_by: int | None


class Block(msgspec.Struct, frozen=True):
    """A heading, a paragraph or a list of the policy, as plain text (the page escapes it)."""

    kind: Literal["heading", "paragraph", "list"]
    text: str = ""
    items: list[str] = msgspec.field(default_factory=list)


class Person(msgspec.Struct, frozen=True):
    staff_id: int
    name: str
    at: dt.datetime | None = None


class Acknowledgements(msgspec.Struct, frozen=True):
    version: Version
    confirmed: list[Person]  # in the order they confirmed
    waiting: list[Person]  # active staff who have not confirmed yet


def blocks(body: str) -> list[Block]:
    """The policy text as blocks: ``# `` starts a heading, ``- `` a list item, a blank line
    ends a paragraph. Deliberately not Markdown or HTML: nothing typed can become markup."""
    found: list[Block] = []
    lines: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if lines:
            found.append(Block("paragraph", text=" ".join(lines)))
            lines.clear()
        if items:
            found.append(Block("list", items=list(items)))
            items.clear()

    for raw in body.splitlines():
        line = raw.strip()
        if not line:
            flush()
        elif line.startswith("# "):
            flush()
            found.append(Block("heading", text=line[2:].strip()))
        elif line.startswith(("- ", "* ")):
            if lines:
                flush()
            items.append(line[2:].strip())
        elif items:
            items[-1] += " " + line  # a list item continued on the next line
        else:
            lines.append(line)
    flush()
    return found


async def _names(ids: set[int]) -> dict[int, str]:
    names = {}
    for staff_id in ids:
        member = await accounts.get_member(staff_id)
        names[staff_id] = member.display_name if member else FORMER_STAFF
    return names


def _version(row: dict[str, Any], names: dict[int, str]) -> Version:
    by = row["published_by"]
    return Version(
        number=row["number"],
        body=row["body"],
        summary=row["summary"],
        published_at=row["published_at"],
        published_by=by,
        publisher=SEEDED_BY if by is None else names.get(by, FORMER_STAFF),
    )


async def _versions(rows: list[dict[str, Any]]) -> list[Version]:
    ids = {row["published_by"] for row in rows if row["published_by"] is not None}
    names = await _names(ids)
    return [_version(row, names) for row in rows]


async def _seed(now: dt.datetime, language: str) -> None:
    """Version 1 from the default text in ``language``, unless a version exists: one statement
    that cannot fail on the number, so two first visitors at once seed it once."""
    body, summary = default_policy(language)
    await PolicyVersion.raw(
        "INSERT INTO policy_version (number, body, summary, published_at, published_by)"
        " SELECT 1, {}, {}, {}, NULL WHERE NOT EXISTS (SELECT 1 FROM policy_version)"
        " ON CONFLICT (number) DO NOTHING",
        body,
        summary,
        now,
    )


async def _newest() -> dict[str, Any] | None:
    return await PolicyVersion.select().order_by(PolicyVersion.number, ascending=False).first()


async def current_version(now: dt.datetime, *, language: str) -> Version:
    """The newest published version; on first use the default text in ``language`` (the
    studio's default language) becomes version 1."""
    row = await _newest()
    if row is None:
        await _seed(now, language)
        row = await _newest()
    assert row is not None  # seeded just now
    (version,) = await _versions([row])
    return version


async def _latest() -> Version | None:
    """The newest published version, or None before the default text was seeded. For callers
    that only read: they have no studio language to seed the text in, and must not seed it in
    the wrong one before the first visit of the policy page."""
    row = await _newest()
    if row is None:
        return None
    (version,) = await _versions([row])
    return version


async def get_version(number: int) -> Version:
    row = await PolicyVersion.select().where(PolicyVersion.number == number).first().run()
    if row is None:
        raise NotFound("There is no version of the privacy policy with this number.")
    (version,) = await _versions([row])
    return version


async def list_versions() -> list[Version]:
    """Every published version, the newest first."""
    rows = await PolicyVersion.select().order_by(PolicyVersion.number, ascending=False).run()
    return await _versions(rows)


async def get_draft(*, lock: bool = False) -> Draft | None:
    """The draft; with ``lock``, locked until the caller's transaction ends, so a save, a
    publish or a discard waits for the one before it and then sees what it left."""
    query = PolicyDraft.select().where(PolicyDraft.slot == "draft")
    if lock:
        query = query.lock_rows("UPDATE")
    rows = await query.run()
    if not rows:
        return None
    row = rows[0]
    return Draft(
        body=row["body"],
        summary=row["summary"],
        revision=row["revision"],
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )


def _changed() -> Conflict:
    return Conflict(
        "Another admin saved the draft after you opened it. Reload the page to see their "
        "text; your changes were not saved."
    )


def _not_previewed() -> Conflict:
    return Conflict(
        "The draft changed after you opened it. Look at the preview again, then publish."
    )


def _clean(body: str, summary: str) -> tuple[str, str]:
    body = clean_multiline(body, field="body", max_length=MAX_BODY, required=True)
    summary = clean_multiline(summary, field="summary", max_length=MAX_SUMMARY)
    return body, summary


async def save_draft(
    body: str, summary: str, *, revision: int, actor: Actor, address: str, now: dt.datetime
) -> Draft:
    """Store the draft. ``revision`` is the one the editor opened (0: no draft then); a draft
    saved by someone else since is not overwritten."""
    body, summary = _clean(body, summary)
    async with PolicyDraft._meta.db.transaction(allow_nested=True):
        # Locked: a save or a publish at the same moment finishes first, and this one then
        # sees the revision it left (or that the draft is gone) instead of writing over it.
        current = await get_draft(lock=True)
        if (current.revision if current else 0) != revision:
            raise _changed()
        if current is None:
            inserted = (
                await PolicyDraft.insert(
                    PolicyDraft(body=body, summary=summary, updated_at=now, updated_by=actor.id)
                )
                .on_conflict(target=PolicyDraft.slot, action="DO NOTHING")
                .returning(PolicyDraft.id)
                .run()
            )
            if not inserted:
                raise Conflict("Another admin started a draft at the same moment. Reload the page.")
        else:
            updated = await (
                PolicyDraft.update(
                    {
                        PolicyDraft.body: body,
                        PolicyDraft.summary: summary,
                        PolicyDraft.revision: PolicyDraft.revision + 1,
                        PolicyDraft.updated_at: now,
                        PolicyDraft.updated_by: actor.id,
                    }
                )
                .where(PolicyDraft.slot == "draft")
                .where(PolicyDraft.revision == revision)
                .returning(PolicyDraft.id)
                .run()
            )
            if not updated:  # not under the lock; but a save that changed nothing is no save
                raise _changed()
        await audit.record(
            "policy.draft.save",
            actor=actor,
            target="privacy-policy",
            address=address,
            details={"characters": len(body)},
            at=now,
        )
        saved = await get_draft()  # this save's draft, before another can follow it
    assert saved is not None
    return saved


async def discard_draft(*, revision: int, actor: Actor, address: str, now: dt.datetime) -> bool:
    """Throw the draft away, if it is still the ``revision`` the admin saw (a draft another
    admin saved since is theirs to keep); False when there was none."""
    async with PolicyDraft._meta.db.transaction(allow_nested=True):
        current = await get_draft(lock=True)  # a save or a publish under way finishes first
        if current is not None and current.revision != revision:
            raise Conflict(
                "Another admin saved the draft after you opened it, so it was not thrown away. "
                "Reload the page to see their text."
            )
        gone = (
            await PolicyDraft.delete()
            .where(PolicyDraft.slot == "draft")
            .returning(PolicyDraft.id)
            .run()
        )
        if gone:
            await audit.record(
                "policy.draft.discard",
                actor=actor,
                target="privacy-policy",
                address=address,
                at=now,
            )
    return bool(gone)


async def publish_draft(
    settings: Settings, *, revision: int, actor: Actor, address: str, now: dt.datetime
) -> Version:
    """Publish the draft as the next version, then tell every active staff member.

    Steps, in one transaction under the publishing lock: check the draft is the revision the
    admin previewed and needs a summary; insert the version with the next number; delete the
    draft; audit; queue one e-mail per active staff member with an address (keyed by version
    and address, so a retried publish queues nothing twice).
    """
    async with PolicyVersion._meta.db.transaction(allow_nested=True):
        await PolicyVersion.raw("SELECT pg_advisory_xact_lock({})", _PUBLISH_LOCK_ID)
        # The draft stays locked until the version is committed: a save meanwhile waits,
        # then finds the draft gone and is refused rather than reported saved and deleted.
        draft = await get_draft(lock=True)
        if draft is None:
            raise Conflict("There is no draft to publish. Write one first.")
        if draft.revision != revision:
            raise _not_previewed()
        if not draft.summary:
            raise InvalidInput(
                "Say in a sentence what changed: staff read this summary first.",
                field="summary",
            )
        latest = await current_version(now, language=settings.notify.language)
        number = latest.number + 1
        await PolicyVersion.insert(
            PolicyVersion(
                number=number,
                body=draft.body,
                summary=draft.summary,
                published_at=now,
                published_by=actor.id,
            )
        ).run()
        deleted = (
            await PolicyDraft.delete()
            .where(PolicyDraft.slot == "draft", PolicyDraft.revision == revision)
            .returning(PolicyDraft.id)
            .run()
        )
        if not deleted:  # not under the lock; but only the text just published may go
            raise _not_previewed()
        queued = await _tell_staff(settings, number, draft.summary, now)
        await audit.record(
            "policy.publish",
            actor=actor,
            target=f"privacy-policy:{number}",
            address=address,
            details={"version": number, "characters": len(draft.body), "emails": queued},
            at=now,
        )
    return await get_version(number)


async def _tell_staff(settings: Settings, number: int, summary: str, now: dt.datetime) -> int:
    from appliance.setup import service as setup

    studio = await setup.get_studio()
    base = settings.server.public_url.rstrip("/")
    queued = 0
    for member in await accounts.list_members():
        email = member.email.strip()
        if not (member.is_active and email):
            continue
        digest = hashlib.sha256(email.lower().encode()).hexdigest()[:16]
        sent = await queue_email(
            to=email,
            template="policy_published",
            context={
                "studio": studio.name if studio else "",
                "number": number,
                "summary": summary,
                "published": format_local(now, settings.studio_zone),
                "link": f"{base}/privacy",
            },
            language=language_for(member.language, settings.notify.language),
            source="policies",
            now=now,
            dedupe_key=f"policy:{number}:{digest}",
        )
        queued += sent is not None
    return queued


async def acknowledge(
    number: int, *, staff_id: int, actor: Actor, address: str, now: dt.datetime
) -> bool:
    """Record that ``staff_id`` read version ``number``; False when they had already.

    Only the current version can be confirmed: a page left open while a newer one was
    published must not count as reading the newer one.
    """
    current = await _latest()
    if current is None:
        raise NotFound("There is no version of the privacy policy with this number.")
    if number != current.number:
        raise Conflict(
            f"Version {current.number} replaced the one you read. Read the current version, "
            "then confirm it."
        )
    row = (
        await PolicyVersion.select(PolicyVersion.id)
        .where(PolicyVersion.number == number)
        .first()
        .run()
    )
    assert row is not None
    async with PolicyAcknowledgement._meta.db.transaction(allow_nested=True):
        inserted = (
            await PolicyAcknowledgement.insert(
                PolicyAcknowledgement(
                    version=row["id"],
                    staff=staff_id,
                    slot=f"{number}:{staff_id}",
                    acknowledged_at=now,
                )
            )
            .on_conflict(target=PolicyAcknowledgement.slot, action="DO NOTHING")
            .returning(PolicyAcknowledgement.id)
            .run()
        )
        if inserted:
            await audit.record(
                "policy.acknowledge",
                actor=actor,
                target=f"privacy-policy:{number}",
                address=address,
                details={"version": number},
                at=now,
            )
    return bool(inserted)


async def pending_acknowledgement(staff_id: int) -> Version | None:
    """The current version when it waits for this staff member's confirmation, else None
    (also before any version exists: the default text is never put to staff)."""
    current = await _latest()
    if current is None or not current.needs_acknowledgement:
        return None
    done = await PolicyAcknowledgement.exists().where(
        PolicyAcknowledgement.slot == f"{current.number}:{staff_id}"
    )
    return None if done else current


async def acknowledgements(number: int) -> Acknowledgements:
    """Who confirmed version ``number`` and when, and which active staff have not."""
    version = await get_version(number)
    rows = (
        await PolicyAcknowledgement.select(
            PolicyAcknowledgement.staff.as_alias("staff_id"), PolicyAcknowledgement.acknowledged_at
        )
        .where(PolicyAcknowledgement.version.number == number)
        .order_by(PolicyAcknowledgement.acknowledged_at)
        .run()
    )
    members = {m.id: m for m in await accounts.list_members()}
    confirmed = [
        Person(
            staff_id=row["staff_id"],
            name=members[row["staff_id"]].display_name
            if row["staff_id"] in members
            else FORMER_STAFF,
            at=row["acknowledged_at"],
        )
        for row in rows
    ]
    seen = {person.staff_id for person in confirmed}
    waiting = [
        Person(staff_id=m.id, name=m.display_name)
        for m in members.values()
        if m.is_active and m.id not in seen
    ]
    return Acknowledgements(version=version, confirmed=confirmed, waiting=waiting)
