"""The people affected by a security incident, and telling them (GDPR Art. 34).

People are the studio's clients and staff, found and read through the clients and accounts
services; the register keeps only their ids and when each was told. A notice goes through the
outbox once per person: telling someone a second time takes an explicit "send again".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import msgspec

from appliance.accounts import service as accounts
from appliance.accounts.service import StaffMember
from appliance.audit.service import Actor
from appliance.clients import service as clients
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.localtime import format_local
from appliance.notify.messages import queue_email
from appliance.privacy.service import (
    MAX_TEXT,
    Incident,
    lock_incident,
    log_change,
)
from appliance.privacy.tables import AffectedPerson, PersonNotice
from appliance.setup.service import StudioProfile
from appliance.validation import clean_multiline, clean_text, parse_id
from appliance.web.form_keys import clean_form_key

__all__ = [
    "MAX_PEOPLE_AT_ONCE",
    "MAX_PEOPLE_MATCHING",
    "Affected",
    "Candidate",
    "NoticeResult",
    "Search",
    "add_matching",
    "add_people",
    "default_notice",
    "list_affected",
    "notify_people",
    "parse_person",
    "remove_person",
    "search_people",
]

PersonKind = Literal["client", "staff"]
MAX_PEOPLE_AT_ONCE = 200
# "Add all matching" and "all clients": a studio's whole client list, bounded so that one
# request stays short.
MAX_PEOPLE_MATCHING = 5_000
MAX_SUBJECT = 200
_NO_PERSONAL_DATA = (
    "This incident is not marked as involving personal data, so there is nobody to tell "
    "about it. Edit the incident first if it does."
)


class Candidate(msgspec.Struct, frozen=True):
    """A person found by a search, to be chosen as affected."""

    kind: str
    person_id: int
    name: str
    email: str
    detail: str
    affected: bool

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.person_id}"


class Affected(msgspec.Struct, frozen=True, kw_only=True):
    """An affected person with their current name and address (empty when they are gone)."""

    id: int
    kind: str
    person_id: int
    name: str
    email: str
    on_record: bool
    added_at: dt.datetime
    first_told_at: dt.datetime | None
    last_told_at: dt.datetime | None
    times_told: int

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.person_id}"


class NoticeResult(msgspec.Struct, frozen=True):
    told: int
    already_told: int
    without_email: int


def parse_person(key: str) -> tuple[PersonKind, int]:
    """``client:12`` or ``staff:3`` as chosen on the page."""
    kind, _, number = key.strip().partition(":")
    refused = InvalidInput(f"{key[:40]!r} does not name a client or staff member.", field="people")
    if kind not in ("client", "staff"):
        raise refused
    try:
        person_id = parse_id(number, field="people")
    except InvalidInput:
        raise refused from None
    return ("client" if kind == "client" else "staff"), person_id


async def _lookup(keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], tuple[str, str]]:
    """Name and e-mail address of each person, through the owning domain's service; those
    no longer on record are missing. One query per kind, however many people: "add all
    clients" puts thousands on a list."""
    wanted = list(keys)
    on_file = await clients.get_clients(i for kind, i in wanted if kind == "client")
    members = (
        {m.id: m for m in await accounts.list_members()}
        if any(kind != "client" for kind, _ in wanted)
        else {}
    )
    found: dict[tuple[str, int], tuple[str, str]] = {}
    for kind, person_id in wanted:
        if kind == "client" and person_id in on_file:
            found[kind, person_id] = (on_file[person_id].name, on_file[person_id].email)
        elif kind != "client" and person_id in members:
            member = members[person_id]
            found[kind, person_id] = (member.display_name, member.email)
    return found


class Search(msgspec.Struct, frozen=True):
    """What a search found: the first page of each group, and how many match in all."""

    candidates: list[Candidate]
    clients: int  # active clients matching
    archived: int  # archived clients matching
    staff: int

    @property
    def total(self) -> int:
        return self.clients + self.archived + self.staff

    @property
    def shown(self) -> int:
        return len(self.candidates)


def _matches(member: StaffMember, needle: str) -> bool:
    return (
        needle in member.display_name.casefold()
        or needle in member.email.casefold()
        or needle in member.username
    )


async def _taken(incident_id: int) -> set[tuple[str, int]]:
    return {
        (row["kind"], row["person_id"])
        for row in await AffectedPerson.select(AffectedPerson.kind, AffectedPerson.person_id)
        .where(AffectedPerson.incident == incident_id)
        .run()
    }


async def search_people(incident_id: int, query: str) -> Search:
    """Clients (active and archived) and staff whose name or e-mail contains ``query``: the
    first page of clients of each kind, every staff member, and the totals."""
    text = clean_text(query, field="q", max_length=100, required=False)
    if not text:
        return Search([], 0, 0, 0)
    taken = await _taken(incident_id)
    found: list[Candidate] = []
    totals: list[int] = []
    for archived in (False, True):
        page = await clients.search_clients(text, archived=archived)
        totals.append(page.total)
        found.extend(
            Candidate(
                "client",
                c.id,
                c.name,
                c.email,
                "client (archived)" if archived else "client",
                ("client", c.id) in taken,
            )
            for c in page.clients
        )
    needle = text.casefold()
    staff = [m for m in await accounts.list_members() if _matches(m, needle)]
    found.extend(
        Candidate(
            "staff", m.id, m.display_name, m.email, f"staff ({m.role})", ("staff", m.id) in taken
        )
        for m in staff
    )
    return Search(found, totals[0], totals[1], len(staff))


async def _all_clients(query: str) -> list[tuple[PersonKind, int]]:
    """Every client, active and archived, matching ``query`` (every client when empty)."""
    chosen: list[tuple[PersonKind, int]] = []
    for archived in (False, True):
        offset = 0
        while True:
            page = await clients.search_clients(query, archived=archived, offset=offset)
            chosen.extend(("client", c.id) for c in page.clients)
            offset += len(page.clients)
            if not page.clients or offset >= page.total:
                break
    return chosen


async def add_matching(
    incident_id: int,
    query: str,
    *,
    everyone: bool,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> int:
    """Mark everyone a search finds as affected (clients active and archived, and staff), or
    with ``everyone`` every client: a leak of the whole client list. At most
    ``MAX_PEOPLE_MATCHING`` at once. Returns how many were new on the list."""
    text = "" if everyone else clean_text(query, field="q", max_length=100)
    needle = text.casefold()
    staff = [] if everyone else [m for m in await accounts.list_members() if _matches(m, needle)]
    total = len(staff)
    for archived in (False, True):
        total += (await clients.search_clients(text, archived=archived, limit=1)).total
    if total == 0:
        raise InvalidInput("Nobody matches this search.", field="q")
    if total > MAX_PEOPLE_MATCHING:
        raise InvalidInput(
            f"{total:,} people match; at most {MAX_PEOPLE_MATCHING:,} can be added at once. "
            "Narrow the search, and write the full number down in the incident.",
            field="q",
        )
    chosen = await _all_clients(text) + [("staff", m.id) for m in staff]
    return await _insert_people(
        incident_id,
        chosen,
        actor=actor,
        address=address,
        now=now,
        audit_details={"all_clients": everyone, "matching": len(chosen)},
    )


async def list_affected(incident_id: int) -> list[Affected]:
    rows = (
        await AffectedPerson.select()
        .where(AffectedPerson.incident == incident_id)
        .order_by(AffectedPerson.id)
        .run()
    )
    on_record = await _lookup((row["kind"], row["person_id"]) for row in rows)
    people = []
    for row in rows:
        found = on_record.get((row["kind"], row["person_id"]))
        people.append(
            Affected(
                id=row["id"],
                kind=row["kind"],
                person_id=row["person_id"],
                name=found[0] if found else "",
                email=found[1] if found else "",
                on_record=found is not None,
                added_at=row["added_at"],
                first_told_at=row["first_told_at"],
                last_told_at=row["last_told_at"],
                times_told=row["times_told"],
            )
        )
    return people


def _require_personal_data(incident: Incident) -> None:
    if not incident.personal_data:
        raise Conflict(_NO_PERSONAL_DATA)


async def add_people(
    incident_id: int,
    keys: Sequence[str],
    *,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> int:
    """Mark people as affected; every one must exist, or nothing is added. Returns how many
    were new (someone already on the list is not added twice)."""
    if not keys:
        raise InvalidInput("Choose at least one person.", field="people")
    if len(keys) > MAX_PEOPLE_AT_ONCE:
        raise InvalidInput(f"Add at most {MAX_PEOPLE_AT_ONCE} people at once.", field="people")
    chosen = list(dict.fromkeys(parse_person(key) for key in keys))
    on_record = await _lookup(chosen)
    for kind, person_id in chosen:
        if (kind, person_id) not in on_record:
            label = "client" if kind == "client" else "staff member"
            raise InvalidInput(f"There is no {label} #{person_id}.", field="people")
    return await _insert_people(
        incident_id, chosen, actor=actor, address=address, now=now, audit_details={}
    )


async def _insert_people(
    incident_id: int,
    chosen: Sequence[tuple[PersonKind, int]],
    *,
    actor: Actor,
    address: str,
    now: dt.datetime,
    audit_details: dict[str, Any],
) -> int:
    """Put ``chosen`` on the list (those already on it stay as they are), with the history
    naming them and the audit entry naming them when they are few."""
    async with AffectedPerson._meta.db.transaction(allow_nested=True):
        _require_personal_data(await lock_incident(incident_id))
        added: list[dict[str, Any]] = []
        # A thousand rows a statement: well below PostgreSQL's limit of parameters.
        for start in range(0, len(chosen), 1000):
            added += await (
                AffectedPerson.insert(
                    *(
                        AffectedPerson(
                            incident=incident_id,
                            kind=kind,
                            person_id=person_id,
                            added_at=now,
                            added_by=actor.id,
                        )
                        for kind, person_id in chosen[start : start + 1000]
                    )
                )
                .on_conflict(action="DO NOTHING")
                .returning(AffectedPerson.kind, AffectedPerson.person_id)
                .run()
            )
        if added:
            people = [f"{row['kind']}:{row['person_id']}" for row in added]
            details = dict(audit_details, added=len(people))
            if len(people) <= MAX_PEOPLE_AT_ONCE:
                details["people"] = people
            await log_change(
                incident_id,
                "people_added",
                {"people": people},
                audit_details=details,
                actor=actor,
                address=address,
                now=now,
            )
    return len(added)


async def remove_person(
    incident_id: int, row_id: int, *, actor: Actor, address: str, now: dt.datetime
) -> None:
    """Take someone off the list who was added by mistake; someone already told stays."""
    async with AffectedPerson._meta.db.transaction(allow_nested=True):
        await lock_incident(incident_id)
        row = (
            await AffectedPerson.select()
            .where(AffectedPerson.id == row_id, AffectedPerson.incident == incident_id)
            .first()
            .run()
        )
        if row is None:
            raise NotFound("This person is not on the list of this incident.")
        if row["times_told"]:
            raise Conflict("This person was already told; they stay on the record.")
        await AffectedPerson.delete().where(AffectedPerson.id == row_id).run()
        person = f"{row['kind']}:{row['person_id']}"
        await log_change(
            incident_id,
            "person_removed",
            {"person": person},
            audit_details={"person": person},
            actor=actor,
            address=address,
            now=now,
        )


# --- the notice ----------------------------------------------------------------------------

_DEFAULTS: dict[str, tuple[str, str]] = {
    "en": (
        "Security incident at {studio}: what happened and what we are doing",
        """Hello,

we are writing to tell you about a security incident at {studio} that concerns your personal data.

What happened
{nature}

It was detected on {detected}.

Which of your data is concerned
{categories}

What this may mean for you
{consequences}

What we have done and will do
{measures}

Whom to ask
{contact}

We are sorry for this, and we will let you know if we learn anything that matters to you.

{studio}
""",
    ),
    "de": (
        "Sicherheitsvorfall bei {studio}: was passiert ist und was wir tun",
        """Guten Tag,

wir informieren Sie über einen Sicherheitsvorfall bei {studio}, der Ihre personenbezogenen Daten betrifft.

Was passiert ist
{nature}

Der Vorfall wurde am {detected} festgestellt.

Welche Ihrer Daten betroffen sind
{categories}

Was das für Sie bedeuten kann
{consequences}

Was wir getan haben und tun werden
{measures}

An wen Sie sich wenden können
{contact}

Wir bedauern diesen Vorfall und melden uns, sobald wir etwas erfahren, das für Sie wichtig ist.

{studio}
""",  # noqa: E501 - a letter's lines are as long as its sentences
    ),
}
_MISSING = {"en": "(to be added)", "de": "(noch zu ergänzen)"}


def default_notice(
    incident: Incident, studio: StudioProfile | None, language: str
) -> tuple[str, str]:
    """Subject and text prefilled from the register, covering what Art. 34(2) asks: the
    nature of the breach, a contact point, the likely consequences and the measures."""
    language = language if language in _DEFAULTS else "en"
    subject, body = _DEFAULTS[language]
    missing = _MISSING[language]
    name = studio.name if studio and studio.name else "Fotostudio"
    contact = "\n".join(
        part
        for part in (
            name,
            studio.contact_email if studio else "",
            studio.contact_phone if studio else "",
        )
        if part
    )
    values = {
        "studio": name,
        "nature": incident.description or incident.title,
        "detected": format_local(incident.detected_at, incident.timezone),
        "categories": incident.data_categories or missing,
        "consequences": incident.consequences or missing,
        "measures": incident.measures or missing,
        "contact": contact,
    }
    return subject.format(**values), body.format(**values)


async def notify_people(
    incident_id: int,
    row_ids: Sequence[int],
    *,
    subject: str,
    body: str,
    again: bool,
    form_key: str,
    language: str,
    studio: str,
    actor: Actor,
    address: str,
    now: dt.datetime,
) -> NoticeResult:
    """Queue the notice for the chosen affected people (ids of their rows on the list).

    Someone already told is skipped unless ``again``; someone without an e-mail address is
    counted and left for the studio to reach another way. ``form_key`` is the form's one-time
    key: each notice's outbox key names the person and the form, so a form sent twice (a
    double click, a reload) queues one e-mail per person, also with ``again``.
    """
    clean_subject = clean_text(subject, field="subject", max_length=MAX_SUBJECT)
    clean_body = clean_multiline(body, field="body", max_length=MAX_TEXT, required=True)
    wanted = list(dict.fromkeys(row_ids))
    if not wanted:
        raise InvalidInput("Choose at least one person to tell.", field="people")
    notice = _Notice(
        context={"subject": clean_subject, "body": clean_body, "studio": studio},
        language=language,
        again=again,
        sent_by=actor.id,
        now=now,
    )
    outcomes: dict[str, list[str]] = {"told": [], "already": [], "without": []}
    async with AffectedPerson._meta.db.transaction(allow_nested=True):
        _require_personal_data(await lock_incident(incident_id))
        key = clean_form_key(form_key)
        if key is None:
            raise InvalidInput("This form is incomplete; open it again and send it from there.")
        rows: dict[int, dict[str, Any]] = {
            row["id"]: row
            for row in await AffectedPerson.select()
            .where(AffectedPerson.incident == incident_id)
            .run()
        }
        strangers = [row_id for row_id in wanted if row_id not in rows]
        if strangers:
            raise InvalidInput(
                f"Person #{strangers[0]} is not on the list of this incident.", field="people"
            )
        on_record = await _lookup((rows[i]["kind"], rows[i]["person_id"]) for i in wanted)
        for row_id in wanted:
            row = rows[row_id]
            found = on_record.get((row["kind"], row["person_id"]))
            outcome = await _tell_one(
                row,
                found[1] if found else "",
                notice,
                dedupe_key=f"security-notice:{incident_id}:{row_id}:{key}",
            )
            outcomes[outcome].append(f"{row['kind']}:{row['person_id']}")
        told = outcomes["told"]
        if told:
            await log_change(
                incident_id,
                "people_told",
                {"people": told, "subject": clean_subject, "again": again},
                audit_details={"people": told, "again": again},
                actor=actor,
                address=address,
                now=now,
            )
    return NoticeResult(
        told=len(told),
        already_told=len(outcomes["already"]),
        without_email=len(outcomes["without"]),
    )


class _Notice(msgspec.Struct, frozen=True, kw_only=True):
    """One notice as sent from the form, the same for everyone chosen."""

    context: dict[str, str]
    language: str
    again: bool
    sent_by: int | None
    now: dt.datetime


async def _tell_one(
    row: dict[str, Any], email: str, notice: _Notice, *, dedupe_key: str
) -> Literal["told", "already", "without"]:
    """Queue ``notice`` for the affected person ``row`` (inside the caller's transaction) and
    count them as told; "already" when they were told before and ``again`` is not set, or
    when this form queued their notice before (the outbox refuses the same ``dedupe_key``
    twice); "without" when there is no address to send it to."""
    if row["times_told"] and not notice.again:
        return "already"
    if not email:
        return "without"
    outbox_id = await queue_email(
        to=email,
        template="security_notice",
        context=notice.context,
        language=notice.language,
        source="privacy",
        now=notice.now,
        dedupe_key=dedupe_key,
    )
    if outbox_id is None:
        return "already"
    await (
        AffectedPerson.update(
            {
                AffectedPerson.times_told: row["times_told"] + 1,
                AffectedPerson.first_told_at: row["first_told_at"] or notice.now,
                AffectedPerson.last_told_at: notice.now,
            }
        )
        .where(AffectedPerson.id == row["id"])
        .run()
    )
    await PersonNotice.insert(
        PersonNotice(
            person=row["id"], outbox_id=outbox_id, sent_by=notice.sent_by, queued_at=notice.now
        )
    ).run()
    return "told"
