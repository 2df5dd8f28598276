"""Exports of one person's data: requested, built by the worker, downloaded, expired.

Steps of an export:
1. ``request_export`` queues a job (or returns the one already queued or running for that
   person, so asking twice never builds two) and writes the request to the audit log;
2. the worker claims it with a conditional UPDATE (``run_pending``), collects the records and
   files and streams the archive into the object store under ``exports/``. Each claim counts
   ``attempts``, and that count is the claim's token: the archive's key carries it, the
   heartbeat and the final update only touch the row while it is still the same claim, so a
   builder that was thought dead and replaced can neither finish nor overwrite the new one;
3. staff make a download link (``issue_link``): a 256-bit token, stored as its SHA-256, good
   for ``MAX_DOWNLOADS`` downloads until the export expires; each download is audit-logged;
4. ``expire_exports`` deletes archives whose time is up (``privacy.export_link_hours``) and any
   archive no ready export or live claim owns (left by a failed or replaced builder).

A person whose erasure is pending gets no new export, link or download: their data is gone for
everyone at once, though the purge deletes it later (and their exports with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import asyncpg
import msgspec

from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.clock import Clock
from appliance.config import Settings
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.exports import archive, records
from appliance.exports.records import PersonKind
from appliance.exports.summary import Access, gather_facts, render_summary
from appliance.exports.tables import ExportJob as ExportRow
from appliance.privacy.erasure import is_erased
from appliance.storage.base import ObjectInfo, ObjectStore, StorageError
from appliance.tokens import new_token, token_digest

__all__ = [
    "MAX_DOWNLOADS",
    "ExportJob",
    "LinkExpired",
    "access_trail",
    "count_download",
    "delete_exports_of",
    "expire_exports",
    "get_export",
    "issue_link",
    "list_exports",
    "open_download",
    "request_export",
    "run_export",
    "run_pending",
]

log = logging.getLogger(__name__)

MAX_DOWNLOADS = 3  # a broken download can be tried again, a forwarded link not used forever
ACCESS_LOG = "access_log.json"
SUMMARY_ACCESSES = 200  # the most recent accesses the summary lists; the log has them all
STALE_AFTER = dt.timedelta(minutes=10)  # a running job without a heartbeat for this long died
BEAT_EVERY = dt.timedelta(seconds=30)  # while a build runs, however long one statement takes
# A build that has not moved on for this long is hung: its heartbeat stops, so the job goes
# stale and is taken again (one statement may take records.STATEMENT_TIMEOUT).
STALLED_AFTER = records.STATEMENT_TIMEOUT + dt.timedelta(minutes=1)
MAX_ATTEMPTS = 3  # claims of one job before it is marked failed (a job that kills its worker)
ACTIVE = ("queued", "running")
_LOCK_BASE = 0x6578706F7274  # "export": the advisory lock per person is this plus a CRC
SYSTEM = Actor(id=None, name="system")
_KEY = re.compile(r"exports/(client|staff)/(\d+)/(\d+)-(\d+)\.zip")


class LinkExpired(Conflict):
    """The download link was real, but its export expired or it was used up."""


class ExportJob(msgspec.Struct, frozen=True):
    id: int
    kind: PersonKind
    subject_id: int
    state: Literal["queued", "running", "ready", "failed", "expired"]
    source: str
    requested_by_name: str
    requested_at: dt.datetime
    finished_at: dt.datetime | None
    expires_at: dt.datetime | None
    error: str
    size: int
    files: int
    downloads: int
    has_link: bool

    @property
    def target(self) -> str:
        return f"{self.kind}:{self.subject_id}"


def _job(row: dict[str, Any]) -> ExportJob:
    return ExportJob(
        id=row["id"],
        kind=row["kind"],
        subject_id=row["subject_id"],
        state=row["state"],
        source=row["source"],
        requested_by_name=row["requested_by_name"],
        requested_at=row["requested_at"],
        finished_at=row["finished_at"],
        expires_at=row["expires_at"],
        error=row["error"],
        size=row["size"],
        files=row["files"],
        downloads=row["downloads"],
        has_link=row["token_hash"] is not None,
    )


async def _subject_exists(kind: PersonKind, subject_id: int) -> bool:
    if kind == "client":
        from appliance.clients import service as clients

        try:
            await clients.get_client(subject_id)
        except NotFound:
            return False
        return True
    from appliance.accounts import service as accounts

    return await accounts.get_member(subject_id) is not None


async def _refuse_if_erased(kind: PersonKind, subject_id: int) -> None:
    if await is_erased(kind, subject_id):
        who = "client" if kind == "client" else "staff account"
        raise Conflict(
            f"This {who} is being deleted, so its data is no longer exported. "
            "An admin can cancel the deletion on Admin → Erasure within the grace period."
        )


async def request_export(
    settings: Settings,
    *,
    kind: Literal["client", "staff"],
    subject_id: int,
    actor: Actor | str,
    source: Literal["staff", "client"],
    now: dt.datetime,
    address: str = "",
) -> ExportJob:
    """Queue an export of one person's data, or return the one queued or running for them."""
    if kind not in records.PERSON_TABLES:
        raise InvalidInput("An export is of a client or of a member of staff.", field="kind")
    if source not in ("staff", "client"):
        raise InvalidInput("An export is asked for by staff or by the client.", field="source")
    if not 0 < subject_id < 2**31 or not await _subject_exists(kind, subject_id):
        raise NotFound("No such person.")
    await _refuse_if_erased(kind, subject_id)
    who = actor if isinstance(actor, Actor) else Actor(id=None, name=actor)
    async with ExportRow._meta.db.transaction():
        # Serialises requests for one person, so two at once cannot both queue a job.
        lock = _LOCK_BASE + zlib.crc32(f"{kind}:{subject_id}".encode())
        await ExportRow.raw("SELECT pg_advisory_xact_lock({})", lock)
        row = (
            await ExportRow.select()
            .where(
                (ExportRow.kind == kind)
                & (ExportRow.subject_id == subject_id)
                & ExportRow.state.is_in(list(ACTIVE))
            )
            .first()
            .run()
        )
        joined = row is not None
        if row is None:
            inserted = await ExportRow.insert(
                ExportRow(
                    kind=kind,
                    subject_id=subject_id,
                    state="queued",
                    source=source,
                    requested_by=who.id,
                    requested_by_name=who.name[:100],
                    requested_at=now,
                )
            ).run()
            row = await ExportRow.select().where(ExportRow.id == inserted[0]["id"]).first().run()
            assert row is not None
        await audit.record(
            "export.request",
            actor=who,
            target=f"{kind}:{subject_id}",
            address=address,
            details={"export": row["id"], "source": source, "joined": joined},
            at=now,
        )
    return _job(row)


async def get_export(export_id: int, *, hide_erased: bool = True) -> ExportJob:
    """The export; one of a person being erased is NotFound unless ``hide_erased`` is off."""
    row = await ExportRow.select().where(ExportRow.id == export_id).first().run()
    if row is None or (hide_erased and await is_erased(row["kind"], row["subject_id"])):
        raise NotFound("No such export.")
    return _job(row)


async def list_exports(kind: PersonKind, subject_id: int, *, limit: int = 10) -> list[ExportJob]:
    rows = (
        await ExportRow.select()
        .where((ExportRow.kind == kind) & (ExportRow.subject_id == subject_id))
        .order_by(ExportRow.id, ascending=False)
        .limit(limit)
        .run()
    )
    return [_job(row) for row in rows]


async def _claim(now: dt.datetime) -> dict[str, Any] | None:
    """Take the oldest queued job, or a running one whose worker died; None when there is none.
    ``SKIP LOCKED`` and the conditional state make sure two workers never take the same."""
    rows: list[dict[str, Any]] = await ExportRow.raw(
        "UPDATE export_job SET state = 'running', heartbeat_at = {}, attempts = attempts + 1,"
        " error = '' WHERE id = (SELECT id FROM export_job WHERE state = 'queued'"
        " OR (state = 'running' AND heartbeat_at < {}) ORDER BY id LIMIT 1"
        " FOR UPDATE SKIP LOCKED) RETURNING *",
        now,
        now - STALE_AFTER,
    ).run()
    return rows[0] if rows else None


def _running_clock(now: dt.datetime) -> Clock:
    """``now`` moved on by the real time elapsed since: a long build's heartbeat must show the
    time it is written, not the time the run started, or the job looks dead and is rebuilt."""
    start = time.monotonic()
    return lambda: now + dt.timedelta(seconds=time.monotonic() - start)


async def run_pending(
    settings: Settings, store: ObjectStore, now: dt.datetime, *, clock: Clock | None = None
) -> int:
    """Build every export waiting for the worker; returns how many were taken. ``clock`` gives
    the time of each later claim and heartbeat (by default ``now`` plus the time elapsed)."""
    clock = clock or _running_clock(now)
    taken = 0
    claim_at = now
    while (row := await _claim(claim_at)) is not None:
        taken += 1
        if row["attempts"] > MAX_ATTEMPTS:
            message = "The export stopped several times part-way; ask again."
            await _fail(store, row, row["attempts"], message, clock())
        else:
            await run_export(settings, store, row["id"], now, claim=row["attempts"], clock=clock)
        claim_at = clock()
    return taken


def _this_claim(export_id: int, claim: int) -> Any:
    """The row while it is still running under this claim: a replaced builder matches nothing."""
    return (
        (ExportRow.id == export_id) & (ExportRow.state == "running") & (ExportRow.attempts == claim)
    )


async def _fail(
    store: ObjectStore, row: dict[str, Any], claim: int, message: str, now: dt.datetime
) -> None:
    """Mark the job failed (only if this claim still holds it) and delete every archive any of
    its claims may have left, so a failed job never leaves a copy of someone's data behind."""
    failed = (
        await ExportRow.update(
            {ExportRow.state: "failed", ExportRow.error: message, ExportRow.finished_at: now}
        )
        .where(_this_claim(row["id"], claim))
        .returning(ExportRow.id)
        .run()
    )
    if failed:
        await _delete_quietly(store, prefix=_key(row["kind"], row["subject_id"], row["id"], None))


async def _delete_quietly(store: ObjectStore, *, key: str = "", prefix: str = "") -> None:
    """Delete an archive while handling another failure: ``expire_exports`` retries what is
    left, so the original error is the one reported."""
    try:
        if prefix:
            await store.delete_prefix(prefix)
        else:
            await store.delete(key)
    except StorageError as exc:
        log.warning("could not delete export archive %s: %s", key or prefix, exc)


def _key(kind: str, subject_id: int, export_id: int, claim: int | None) -> str:
    """The archive of one claim; with ``claim`` None the prefix of every claim's archive."""
    base = f"exports/{kind}/{subject_id}/{export_id}-"
    return base if claim is None else f"{base}{claim}.zip"


async def access_trail(
    client_id: int, reader: records.Reader | None = None
) -> AsyncIterator[Access]:
    """Every audit entry of a staff member about this client or their galleries, oldest
    first, fetched a batch at a time (through ``reader``, else a reading of its own). Read
    here, not through the audit service, because only the export asks by target."""
    if reader is None:
        async with records.reading(client_id) as own:
            async for access in access_trail(client_id, own):
                yield access
        return
    client = int(client_id)
    columns = "SELECT seq, at, actor, action, target FROM audit_entry WHERE actor_id IS NOT NULL"
    sql = f"{columns} AND target = $1"
    galleries = next((q for q in records.queries("client", client) if q.table == "gallery"), None)
    if galleries is not None:  # a second branch, not OR: each half is an index lookup
        nested = f"SELECT 'gallery:' || id FROM gallery WHERE {galleries.whole}"  # noqa: S608 - schema names and an int
        sql += f" UNION ALL {columns} AND target IN ({nested})"
    async for row in reader.fetch(f"{sql} ORDER BY seq", f"client:{client}"):
        yield Access(at=row["at"], who=row["actor"], action=row["action"], target=row["target"])


async def _build(
    settings: Settings,
    store: ObjectStore,
    kind: PersonKind,
    subject_id: int,
    key: str,
    now: dt.datetime,
    heartbeat: Callable[[], Awaitable[None]],
) -> tuple[ObjectInfo, int]:
    """Find, summarise and write one archive; returns the object and its file count. Nothing
    about the person is held whole in memory: each table is fetched a batch at a time, all
    of them from one snapshot, so the records and the files agree."""
    if await is_erased(kind, subject_id):  # asked for before the erasure: not built now
        raise NotFound("The person is being deleted: cancel that first")
    async with records.reading(subject_id) as reader:
        person = await reader.person(kind)
        if not person:
            raise NotFound("The person no longer exists")
        found = [q for q in records.queries(kind, subject_id) if await reader.has_rows(q)]
        documents = archive.table_documents(reader, found)
        # The summary lists the most recent accesses; access_log.json has every one.
        recent: deque[Access] = deque(maxlen=SUMMARY_ACCESSES)
        if kind == "client":

            async def accesses() -> AsyncIterator[Access]:
                async for access in access_trail(subject_id, reader):
                    recent.append(access)
                    yield access

            documents.append(
                archive.JsonDocument(
                    folder=None, filename=ACCESS_LOG, items=accesses, label=ACCESS_LOG
                )
            )
        facts = await gather_facts(
            settings, kind=kind, subject_id=subject_id, person=person, now=now
        )

        def summary(contents: archive.Contents) -> bytes:
            written = dict(contents.items)
            accessed = written.pop(ACCESS_LOG, 0)
            final = msgspec.structs.replace(
                facts,
                tables=list(written.items()),
                files=contents.files,
                files_gone=contents.gone,
                accesses=list(recent),
                accesses_total=accessed,
            )
            return render_summary(final, archive.MANIFEST)

        with contextlib.closing(archive.FileList()) as listed:
            # A client's files are their photos; the photos a member of staff uploaded are
            # the clients' data, so a staff export lists them as records only.
            if kind == "client":
                files = _listed_then_ended(reader, archive.files_of(reader, found), listed)
            else:
                files = _listed_then_ended(reader, _no_files(), listed)
            stored, contents = await archive.write_archive(
                store,
                key,
                documents=documents,
                files=files,
                summary=summary,
                now=now,
                heartbeat=heartbeat,
            )
    return stored, contents.files


async def _listed_then_ended(
    reader: records.Reader,
    files: AsyncIterator[archive.PersonFile],
    listed: archive.FileList,
) -> AsyncIterator[archive.PersonFile]:
    """``files``, listed from the snapshot once the records are written; the snapshot then
    ends, and the files are written from the list."""
    await listed.fill(files)
    await reader.end()
    async for item in listed:
        yield item


async def _no_files() -> AsyncIterator[archive.PersonFile]:
    return
    yield  # an async generator that yields nothing


class _ClaimLost(Exception):
    """The job was claimed again by another worker while this one was still building it."""


async def run_export(
    settings: Settings,
    store: ObjectStore,
    export_id: int,
    now: dt.datetime,
    *,
    claim: int,
    clock: Clock | None = None,
) -> ExportJob:
    """Build one claimed (running) export into the store; a failure leaves it failed, with a
    message staff can act on, and no object behind. ``claim`` is the job's ``attempts`` when
    it was claimed: once another worker claims it again, this build stops and deletes its
    archive, and its result is never recorded."""
    clock = clock or _running_clock(now)
    now = clock()  # a job claimed late in a run starts now, not when the run did
    row = await ExportRow.select().where(_this_claim(export_id, claim)).first().run()
    if row is None:
        raise Conflict("This export is not being built.")
    kind: PersonKind = row["kind"]
    subject_id: int = row["subject_id"]
    key = _key(kind, subject_id, export_id, claim)

    lost = asyncio.Event()  # the background beat found the job claimed by another worker
    progress = [time.monotonic()]  # when the archive last moved on

    async def heartbeat() -> None:
        if lost.is_set():
            raise _ClaimLost
        progress[0] = time.monotonic()
        await _beat()

    async def _beat() -> None:
        alive = (
            await ExportRow.update({ExportRow.heartbeat_at: clock()})
            .where(_this_claim(export_id, claim))
            .returning(ExportRow.id)
            .run()
        )
        if not alive:
            lost.set()
            raise _ClaimLost

    async def beat_meanwhile() -> None:
        # The archive beats as its pieces pass; this keeps the job alive while one long
        # statement runs and nothing passes, so no other worker takes it for dead. A build
        # that stops moving on for longer than a statement may run is hung: left to go stale,
        # so another worker takes the job again.
        while not lost.is_set():
            await asyncio.sleep(BEAT_EVERY.total_seconds())
            if time.monotonic() - progress[0] > STALLED_AFTER.total_seconds():
                log.warning("export %d has not moved on for %s", export_id, STALLED_AFTER)
                return
            try:
                await _beat()
            except _ClaimLost:
                return
            except Exception as exc:  # noqa: BLE001 - a missed beat is tried again
                log.warning("export %d: heartbeat failed: %s", export_id, exc)

    beating = asyncio.ensure_future(beat_meanwhile())
    try:
        stored, count = await _build(settings, store, kind, subject_id, key, now, heartbeat)
    except asyncpg.QueryCanceledError:
        log.warning("export %d: a statement ran past %s", export_id, records.STATEMENT_TIMEOUT)
        message = "Reading the records took too long; try again, or tell the administrator."
        await _fail(store, row, claim, message, clock())
        return await get_export(export_id, hide_erased=False)
    except _ClaimLost:
        log.warning("export %d was taken over by another worker; dropping this build", export_id)
        await _delete_quietly(store, key=key)
        return await get_export(export_id, hide_erased=False)
    except (StorageError, NotFound) as exc:
        log.warning("export %d failed: %s", export_id, exc)
        message = exc.message if isinstance(exc, NotFound) else "The file store failed"
        await _fail(store, row, claim, f"{message}; try again.", clock())
        return await get_export(export_id, hide_erased=False)
    except Exception:
        log.exception("export %d failed", export_id)
        await _fail(store, row, claim, "The export failed unexpectedly; try again.", clock())
        return await get_export(export_id, hide_erased=False)
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
    hours = settings.privacy.export_link_hours
    finished = clock()  # the link's life is counted from when the archive exists
    async with ExportRow._meta.db.transaction():
        done = (
            await ExportRow.update(
                {
                    ExportRow.state: "ready",
                    ExportRow.object_key: key,
                    ExportRow.size: stored.size,
                    ExportRow.files: count,
                    ExportRow.finished_at: finished,
                    ExportRow.expires_at: finished + dt.timedelta(hours=hours),
                }
            )
            .where(_this_claim(export_id, claim))
            .returning(ExportRow.id)
            .run()
        )
        if done:
            await audit.record(
                "export.create",
                actor=SYSTEM,
                target=f"{kind}:{subject_id}",
                details={"export": export_id, "bytes": stored.size, "files": count},
                at=finished,
            )
    if not done:  # replaced while finishing: the other claim's archive is the one that counts
        log.warning("export %d was taken over by another worker; dropping this build", export_id)
        await _delete_quietly(store, key=key)
    return await get_export(export_id, hide_erased=False)


async def issue_link(export_id: int, *, actor: Actor, now: dt.datetime, address: str = "") -> str:
    """A new download token for a ready export (the previous link stops working); only its
    SHA-256 is kept, so it is shown once."""
    await get_export(export_id)  # NotFound for a person being erased
    token = new_token()
    async with ExportRow._meta.db.transaction():
        changed = (
            await ExportRow.update(
                {ExportRow.token_hash: token_digest(token), ExportRow.downloads: 0}
            )
            .where(
                (ExportRow.id == export_id)
                & (ExportRow.state == "ready")
                & (ExportRow.expires_at > now)
            )
            .returning(ExportRow.kind, ExportRow.subject_id)
            .run()
        )
        if not changed:
            raise Conflict("This export is not ready, or it has expired: ask for a new one.")
        await audit.record(
            "export.link",
            actor=actor,
            target=f"{changed[0]['kind']}:{changed[0]['subject_id']}",
            address=address,
            details={"export": export_id},
            at=now,
        )
    return token


async def open_download(token: str, now: dt.datetime) -> dict[str, Any]:
    """The export a download token opens. NotFound for a token that never existed (looked up by
    its SHA-256, so the time taken says nothing about how close a guess came); LinkExpired for
    one whose export expired or whose downloads are used up."""
    if not 20 <= len(token) <= 100:
        raise NotFound("This download link does not exist.")
    row = await ExportRow.select().where(ExportRow.token_hash == token_digest(token)).first().run()
    if row is None:
        raise NotFound("This download link does not exist.")
    if row["state"] != "ready" or row["expires_at"] <= now:
        raise LinkExpired("This download link has expired. Ask the studio for a new export.")
    if row["downloads"] >= MAX_DOWNLOADS:
        raise LinkExpired("This download link has been used up. Ask the studio for a new one.")
    if await is_erased(row["kind"], row["subject_id"]):
        raise LinkExpired("This download link no longer works.")
    return dict(row)


async def count_download(
    row: dict[str, Any], *, actor: Actor, now: dt.datetime, address: str
) -> None:
    """Count one download (refused past the limit, even for two at once) and audit it."""
    async with ExportRow._meta.db.transaction():
        counted = (
            await ExportRow.update({ExportRow.downloads: ExportRow.downloads + 1})
            .where(
                (ExportRow.id == row["id"])
                & (ExportRow.token_hash == row["token_hash"])
                & (ExportRow.downloads < MAX_DOWNLOADS)
            )
            .returning(ExportRow.downloads)
            .run()
        )
        if not counted:
            raise LinkExpired("This download link has been used up. Ask the studio for a new one.")
        await audit.record(
            "export.download",
            actor=actor,
            target=f"{row['kind']}:{row['subject_id']}",
            address=address,
            details={"export": row["id"], "download": counted[0]["downloads"]},
            at=now,
        )


async def expire_exports(store: ObjectStore, now: dt.datetime) -> int:
    """Delete the archives of exports whose time is up; returns how many. The row stays (state
    "expired", no key) as the record that an export was made, and keeps its link's hash, so
    the link says it has expired rather than that it never existed. Then delete every
    archive that no ready export and no live claim owns: left by a builder that failed, died
    after writing it, or was replaced."""
    rows = (
        await ExportRow.select(ExportRow.id, ExportRow.object_key)
        .where((ExportRow.state == "ready") & (ExportRow.expires_at <= now))
        .run()
    )
    for row in rows:
        # The object first: a crash between the two leaves a row that is deleted again next run.
        await store.delete(row["object_key"])
        await ExportRow.update({ExportRow.state: "expired", ExportRow.object_key: ""}).where(
            ExportRow.id == row["id"]
        )
    await _delete_orphans(store)
    return len(rows)


async def _delete_orphans(store: ObjectStore) -> int:
    """Delete archives under ``exports/`` that no ready row points at and that are not the
    current claim of a running job (which may be about to record it)."""
    # Listed before the rows are read, and running jobs before ready ones: an archive whose
    # builder finishes meanwhile is then still seen as running or as ready, never as neither.
    keys = [info.key async for info in store.list("exports/")]
    building = {
        (row["id"], row["attempts"])
        for row in await ExportRow.select(ExportRow.id, ExportRow.attempts)
        .where(ExportRow.state == "running")
        .run()
    }
    owned = {
        row["object_key"]
        for row in await ExportRow.select(ExportRow.object_key)
        .where(ExportRow.state == "ready")
        .run()
    }
    orphans = []
    for key in keys:
        match = _KEY.fullmatch(key)
        live = match is not None and (int(match[3]), int(match[4])) in building
        if key not in owned and not live:
            orphans.append(key)
    for key in orphans:
        log.info("deleting orphaned export archive %s", key)
        await store.delete(key)
    return len(orphans)


async def delete_exports_of(
    kind: Literal["client", "staff"], subject_id: int, *, store: ObjectStore
) -> int:
    """Erase every export of one person, archives and rows; returns how many rows went.
    Called by the erasure purge."""
    await store.delete_prefix(f"exports/{kind}/{subject_id}/")
    deleted = (
        await ExportRow.delete()
        .where((ExportRow.kind == kind) & (ExportRow.subject_id == subject_id))
        .returning(ExportRow.id)
        .run()
    )
    return len(deleted)
