"""Data exports (GDPR Art. 15 and 20) built against the real database and a real S3 server:
what the archive holds, that it is complete by the schema, bounded in memory, and that asking
twice or failing ends in a clear state."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import secrets
import tracemalloc
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from piccolo.columns import ForeignKey, Integer, Varchar
from piccolo.table import Table

from appliance.accounts.tables import StaffUser
from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.audit.tables import AuditEntry
from appliance.clients import service as clients
from appliance.clients.service import ClientDetails
from appliance.config import RepositorySettings, Settings
from appliance.exports import records, service
from appliance.exports.tables import ExportJob
from appliance.galleries import service as galleries
from appliance.galleries.service import GalleryDetails
from appliance.galleries.tables import GallerySet, Photo
from appliance.storage.base import ObjectStore
from appliance.storage.filesystem import FilesystemStore
from appliance.storage.s3 import S3Store
from tests.conftest import FakeClock, S3Server

pytestmark = pytest.mark.usefixtures("clean_db")

SMTP_HOST = "smtp.relay-provider.example"
OFFSITE_HOST = "s3.eu-central-1.cloud-provider.example"


@pytest.fixture
async def s3_store(s3_server: S3Server) -> ObjectStore:
    store = S3Store(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        bucket=f"exports-{secrets.token_hex(4)}",
        region="",
    )
    await store.ensure_ready()
    return store


@pytest.fixture
def configured(settings: Settings) -> Settings:
    """Settings with an SMTP relay and an off-site repository: two sub-processors."""
    offsite = RepositorySettings(
        name="offsite", url=f"s3:https://{OFFSITE_HOST}/studio-backups", offsite=True
    )
    return msgspec.structs.replace(
        settings,
        notify=msgspec.structs.replace(settings.notify, smtp_host=SMTP_HOST),
        backups=msgspec.structs.replace(settings.backups, repositories=[offsite]),
    )


async def staff_user(name: str, now: dt.datetime) -> Actor:
    rows = await StaffUser.insert(
        StaffUser(
            username=name,
            email=f"{name}@lumen.example",
            display_name=name.title(),
            role="admin",
            password_hash="$argon2id$not-a-real-hash",
            password_changed_at=now,
            created_at=now,
        )
    ).run()
    return Actor(id=rows[0]["id"], name=name)


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 256 * 1024):
        yield data[start : start + 256 * 1024]


async def client_with_photos(
    store: ObjectStore, owner: Actor, name: str, photos: list[bytes], now: dt.datetime
) -> tuple[int, int]:
    """A client with one gallery holding ``photos`` (their originals in ``store``)."""
    client = await clients.create_client(
        ClientDetails(name=name, email=f"{name.split()[0].lower()}@example.org"),
        actor=owner,
        address="",
        now=now,
    )
    gallery = await galleries.create_gallery(
        client.id, GalleryDetails(title=f"{name} wedding"), actor=owner, address="", now=now
    )
    row = await GallerySet.select(GallerySet.id).where(GallerySet.gallery == gallery.id).first()
    assert row is not None
    for index, data in enumerate(photos):
        key = f"originals/{gallery.id}/{secrets.token_hex(8)}.jpg"
        await store.put(key, chunks_of(data), content_type="image/jpeg")
        await Photo.insert(
            Photo(
                gallery=gallery.id,
                gallery_set=row["id"],
                filename=f"IMG_{index:04d}.jpg",
                content_type="image/jpeg",
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                width=10,
                height=10,
                original_key=key,
                status="ready",
                created_by=owner.id,
                created_at=now,
            )
        ).run()
    return client.id, gallery.id


async def built(
    settings: Settings, store: ObjectStore, job: service.ExportJob, clock: FakeClock
) -> service.ExportJob:
    """The queued exports built at the test clock's time (which a build does not move on)."""
    assert await service.run_pending(settings, store, clock(), clock=clock) >= 1
    return await service.get_export(job.id)


async def archive_of(store: ObjectStore, job_id: int) -> zipfile.ZipFile:
    row = await ExportJob.select(ExportJob.object_key).where(ExportJob.id == job_id).first()
    assert row is not None and row["object_key"]
    data = b"".join([chunk async for chunk in store.get(row["object_key"])])
    return zipfile.ZipFile(io.BytesIO(data))


def manifest_of(archive: zipfile.ZipFile) -> dict[str, str]:
    lines = archive.read("manifest-sha256.txt").decode().splitlines()
    return {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in lines}


async def test_client_export_holds_records_photos_access_log_and_summary(
    configured: Settings, s3_store: ObjectStore, clock: FakeClock
) -> None:
    """Anna's archive opens, every file matches the manifest, her photos are byte-identical,
    the summary names the sub-processors and the staff who looked at her data, and nothing
    of Ben's is in it."""
    owner = await staff_user("olivia", clock())
    anna_photos = [secrets.token_bytes(300_000 + n * 1000) for n in range(3)]
    anna, anna_gallery = await client_with_photos(
        s3_store, owner, "Anna Berg", anna_photos, clock()
    )
    ben_photo = secrets.token_bytes(200_000)
    await client_with_photos(s3_store, owner, "Ben Cole", [ben_photo], clock())
    await audit.record("client.view", actor=owner, target=f"client:{anna}", at=clock())

    job = await service.request_export(
        configured, kind="client", subject_id=anna, actor=owner, source="staff", now=clock()
    )
    again = await service.request_export(
        configured, kind="client", subject_id=anna, actor="client", source="client", now=clock()
    )
    assert again.id == job.id and again.state == "queued"
    assert await ExportJob.count() == 1

    clock.advance(minutes=1)
    done = await built(configured, s3_store, job, clock)
    assert done.state == "ready" and done.files == 3
    assert done.expires_at == clock() + dt.timedelta(hours=configured.privacy.export_link_hours)

    archive = await archive_of(s3_store, job.id)
    assert archive.testzip() is None
    manifest = manifest_of(archive)
    names = set(archive.namelist())
    assert names == set(manifest) | {"manifest-sha256.txt"}
    for name, digest in manifest.items():
        assert hashlib.sha256(archive.read(name)).hexdigest() == digest, name
    photos = sorted(n for n in names if n.startswith("photos/"))
    assert [archive.read(n) for n in photos] == anna_photos
    assert all(n.startswith(f"photos/{anna_gallery}/") for n in photos)
    assert all(archive.read(n) != ben_photo for n in names)

    client_rows = json.loads(archive.read("data/client.json"))
    assert [row["name"] for row in client_rows] == ["Anna Berg"]
    assert all(b"Ben Cole" not in archive.read(n) for n in names if n.endswith(".json"))
    accesses = json.loads(archive.read("access_log.json"))
    assert {(a["who"], a["action"]) for a in accesses} >= {
        ("olivia", "client.view"),
        ("olivia", "gallery.create"),
    }
    summary = archive.read("summary.html").decode()
    assert SMTP_HOST in summary and OFFSITE_HOST in summary
    assert "client.view" in summary and "Art. 77" in summary
    assert f"{configured.privacy.export_link_hours} hours" in summary
    assert "http://" not in summary and "https://" not in summary  # opens offline

    entries = [e for e in await audit.list_entries() if e.action.startswith("export.")]
    assert [(e.action, e.target) for e in reversed(entries)] == [
        ("export.request", f"client:{anna}"),
        ("export.request", f"client:{anna}"),
        ("export.create", f"client:{anna}"),
    ]


async def test_staff_export_withholds_credentials(
    configured: Settings, s3_store: ObjectStore, clock: FakeClock
) -> None:
    """A staff member's export holds their account and what they did, but no password hash and
    none of the clients' data in the rows they created."""
    owner = await staff_user("olivia", clock())
    await client_with_photos(s3_store, owner, "Anna Berg", [b"x" * 1000], clock())
    job = await service.request_export(
        configured, kind="staff", subject_id=owner.id or 0, actor=owner, source="staff", now=clock()
    )
    await built(configured, s3_store, job, clock)
    archive = await archive_of(s3_store, job.id)
    (account,) = json.loads(archive.read("data/staff_user.json"))
    assert account["username"] == "olivia"
    assert account["password_hash"] == records.WITHHELD
    assert b"argon2id" not in b"".join(archive.read(n) for n in archive.namelist())
    # Rows that only name her as creator are outlined: id, her column, timestamps; the
    # client's own fields are theirs, not hers (Art. 15(4)).
    (created,) = json.loads(archive.read("data/client.json"))
    assert created["created_by"] == owner.id and created["id"] > 0
    assert set(created) - {"id", "created_by"} <= {"created_at", "updated_at", "deleted_at"}
    everything = b"".join(archive.read(n) for n in archive.namelist())
    assert b"Anna Berg" not in everything and b"anna@example.org" not in everything
    assert not any(n.startswith("photos/") for n in archive.namelist())


# --- completeness, derived from the schema ----------------------------------------------------


def _tables() -> list[type[Table]]:
    from appliance.db.piccolo_conf import APP_REGISTRY

    return [t for app in APP_REGISTRY.app_configs.values() for t in app.table_classes]


def test_the_schema_has_no_foreign_key_cycle_an_export_would_not_follow() -> None:
    """An export follows foreign keys down from the person but not round a cycle (a table
    whose rows point back up the chain): a schema change that makes one must change the
    export's reading too, and this says so."""
    parents = {
        table._meta.tablename: {
            fk._foreign_key_meta.resolved_references._meta.tablename
            for fk in table._meta.foreign_key_columns
        }
        for table in _tables()
    }
    assert len(parents) > 20 and parents["photo"] >= {"gallery", "gallery_set"}  # read

    def cycle_from(name: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        if name in path:
            return (*path, name)
        for parent in parents.get(name, set()):
            if found := cycle_from(parent, (*path, name)):
                return found
        return None

    assert [c for name in parents if (c := cycle_from(name, ()))] == []


def referencing(kind: records.PersonKind) -> dict[str, list[str]]:
    """Table name to its columns that point at a person of ``kind``, found from the schema:
    foreign keys (for clients, down the tree), staff id columns, kind and id pairs."""
    person = records.PERSON_TABLES[kind]
    found: dict[str, list[str]] = {}
    reached = [person]
    for parent in reached:
        for table in _tables():
            for fk in table._meta.foreign_key_columns:
                target = fk._foreign_key_meta.resolved_references._meta.tablename
                if target == parent and table._meta.tablename != person:
                    found.setdefault(table._meta.tablename, []).append(fk._meta.db_column_name)
                    if kind == "client" and table._meta.tablename not in reached:
                        reached.append(table._meta.tablename)
    for table in _tables():
        columns = {c._meta.db_column_name: c for c in table._meta.columns}
        if kind == "staff":
            for name, column in columns.items():
                if (
                    name in records.STAFF_ID_COLUMNS
                    and isinstance(column, Integer)
                    and not isinstance(column, ForeignKey)
                ):
                    found.setdefault(table._meta.tablename, []).append(name)
        if any(isinstance(columns.get(k), Varchar) for k in records.KIND_COLUMNS):
            for name in records.KIND_ID_COLUMNS:
                if name in columns:
                    found.setdefault(table._meta.tablename, []).append(name)
    return found


async def generic_row(table: type[Table], values: dict[str, Any], made: dict[str, int]) -> int:
    """Insert a row of ``table`` with its defaults, ``values``, a fresh value in every unique
    text column and a parent for every required foreign key; returns its id."""
    row = table()
    for column in table._meta.columns:
        name = column._meta.db_column_name
        if isinstance(column, Varchar) and column._meta.unique:
            setattr(row, column._meta.name, secrets.token_hex(min(8, column.length // 2)))
        elif isinstance(column, Integer) and column._meta.unique and name != "id":
            setattr(row, column._meta.name, secrets.randbelow(2**30) + 1)
        if isinstance(column, ForeignKey) and name not in values and not column._meta.null:
            parent = column._foreign_key_meta.resolved_references
            setattr(row, column._meta.name, await generic_row(parent, {}, made))
    for name, value in values.items():
        column = next(c for c in table._meta.columns if c._meta.db_column_name == name)
        setattr(row, column._meta.name, value)
    await row.save().run()
    made[table._meta.tablename] = row.id
    return int(row.id)


@pytest.mark.parametrize("kind", ["client", "staff"])
async def test_every_table_that_references_a_person_contributes(
    kind: records.PersonKind, clock: FakeClock
) -> None:
    """For every table the schema says can reference a person, a row pointing at Anna (or at
    the owner) is in her export and a row pointing at Ben is not."""
    owner = await staff_user("olivia", clock())
    other = await staff_user("bert", clock())
    if kind == "client":
        anna = (
            await clients.create_client(
                ClientDetails(name="Anna"), actor=owner, address="", now=clock()
            )
        ).id
        ben = (
            await clients.create_client(
                ClientDetails(name="Ben"), actor=owner, address="", now=clock()
            )
        ).id
    else:
        anna, ben = owner.id or 0, other.id or 0
    wanted = referencing(kind)
    assert len(wanted) >= (6 if kind == "client" else 10), wanted  # the schema was read
    expected: dict[str, set[int]] = {}
    for table in _tables():
        name = table._meta.tablename
        for column in wanted.get(name, []):
            for person, keep in ((anna, True), (ben, False)):
                values: dict[str, Any] = {column: person}
                kind_column = next(
                    (
                        k
                        for k in records.KIND_COLUMNS
                        if k in {c._meta.db_column_name for c in table._meta.columns}
                    ),
                    None,
                )
                if column in records.KIND_ID_COLUMNS and kind_column:
                    values[kind_column] = kind
                made: dict[str, int] = {}
                if column != "id" and any(
                    isinstance(c, ForeignKey)
                    and c._meta.db_column_name == column
                    and c._foreign_key_meta.resolved_references._meta.tablename
                    != records.PERSON_TABLES[kind]
                    for c in table._meta.columns
                ):
                    # A child of a child: hang it under a parent row that is the person's.
                    parent_table = next(
                        c._foreign_key_meta.resolved_references
                        for c in table._meta.foreign_key_columns
                        if c._meta.db_column_name == column
                    )
                    parent_fk = wanted.get(parent_table._meta.tablename, [])[0]
                    values[column] = await generic_row(parent_table, {parent_fk: person}, made)
                row_id = await generic_row(table, values, made)
                if keep:
                    expected.setdefault(name, set()).add(row_id)
                else:
                    expected.setdefault(f"not:{name}", set()).add(row_id)
    found = {t.table: {r.get("id") for r in t.rows} for t in await records.collect(kind, anna)}
    missing = [
        n
        for n, ids in expected.items()
        if not n.startswith("not:") and not ids <= found.get(n, set())
    ]
    assert missing == []
    leaked = [
        n for n, ids in expected.items() if n.startswith("not:") and ids & found.get(n[4:], set())
    ]
    assert leaked == []


# --- memory, failures ------------------------------------------------------------------------


async def test_archive_is_written_in_bounded_memory(
    settings: Settings, tmp_path: Path, clock: FakeClock
) -> None:
    """24 MB of photos go into the archive while Python never holds more than 6 MB at once."""
    store = FilesystemStore(tmp_path / "objects")
    await store.ensure_ready()
    owner = await staff_user("olivia", clock())
    photos = [secrets.token_bytes(4 * 1024 * 1024) for _ in range(6)]
    anna, _ = await client_with_photos(store, owner, "Anna Berg", photos, clock())
    del photos
    job = await service.request_export(
        settings, kind="client", subject_id=anna, actor=owner, source="staff", now=clock()
    )
    tracemalloc.start()
    try:
        assert await service.run_pending(settings, store, clock()) == 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    done = await service.get_export(job.id)
    assert done.state == "ready" and done.size > 24 * 1024 * 1024
    assert peak < 6 * 1024 * 1024, peak


async def audit_entries(count: int, *, actor: Actor, target: str, at: dt.datetime) -> None:
    """``count`` views of ``target`` by ``actor``, in one statement: what is tested is how an
    export reads them, not how the audit log chains them."""
    await AuditEntry.raw(
        "INSERT INTO audit_entry (seq, at, actor_id, actor, action, outcome, target, address,"
        " details, prev_hash, entry_hash)"
        " SELECT (SELECT coalesce(max(seq), 0) FROM audit_entry) + g, {}, {}, {},"
        " 'client.view', 'ok', {}, '192.0.2.7', 'view ' || g, '', ''"
        " FROM generate_series(1, {}) AS g",
        at,
        actor.id,
        actor.name,
        target,
        count,
    ).run()


async def test_long_histories_are_exported_in_bounded_memory(
    settings: Settings, tmp_path: Path, clock: FakeClock
) -> None:
    """20,000 views of Anna by Olivia: Anna's access log and Olivia's audit records are read
    a batch at a time and written item by item, so Python holds a few MB where the rows alone
    take tens; every row still arrives, in order, and the summary says how many there are."""
    store = FilesystemStore(tmp_path / "objects")
    await store.ensure_ready()
    owner = await staff_user("olivia", clock())
    anna, _ = await client_with_photos(store, owner, "Anna Berg", [b"a" * 1000], clock())
    views = 20_000
    await audit_entries(views, actor=owner, target=f"client:{anna}", at=clock())
    jobs = [
        await service.request_export(
            settings, kind=kind, subject_id=person, actor=owner, source="staff", now=clock()
        )
        for kind, person in (("client", anna), ("staff", owner.id or 0))
    ]
    tracemalloc.start()
    try:
        assert await service.run_pending(settings, store, clock()) == 2
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, peak

    client_archive = await archive_of(store, jobs[0].id)
    trail = json.loads(client_archive.read("access_log.json"))
    others = sorted(a["action"] for a in trail if a["action"] != "client.view")
    assert others == ["client.create", "export.request", "gallery.create"]
    assert len(trail) == views + 3
    stamps = [a["at"] for a in trail]
    assert stamps == sorted(stamps)
    summary = client_archive.read("summary.html").decode()
    assert f"The {service.SUMMARY_ACCESSES} most recent of {views + 3} accesses" in summary
    assert summary.count("<td>client.view</td>") == service.SUMMARY_ACCESSES - 1

    staff_archive = await archive_of(store, jobs[1].id)
    entries = json.loads(staff_archive.read("data/audit_entry.json"))
    assert len(entries) >= views
    assert [e["id"] for e in entries] == sorted({e["id"] for e in entries})
    assert all(set(e) == {"id", "actor_id", "at"} for e in entries)  # outlines only
    assert f"data/audit_entry.json</code>: {len(entries)} records" in (
        staff_archive.read("summary.html").decode()
    )


async def test_reading_in_batches_misses_and_repeats_no_row(clock: FakeClock) -> None:
    """Fetching 3 rows at a time gives exactly the rows one fetch gives, for every table of a
    person's export and for a client's access trail; a table with rows says so."""
    owner = await staff_user("olivia", clock())
    anna = await clients.create_client(
        ClientDetails(name="Anna", email="anna@example.org"), actor=owner, address="", now=clock()
    )
    await audit_entries(10, actor=owner, target=f"client:{anna.id}", at=clock())
    kinds: list[tuple[records.PersonKind, int]] = [("client", anna.id), ("staff", owner.id or 0)]
    for kind, person in kinds:
        async with (
            records.reading(person, batch=10_000) as whole,
            records.reading(person, batch=3) as paged,
        ):
            for query in records.queries(kind, person):
                everything = [row async for row in whole.rows(query)]
                assert [row async for row in paged.rows(query)] == everything, query.table
                assert await whole.has_rows(query) == bool(everything), query.table
            assert (await whole.person(kind))["id"] == person
            if kind == "client":
                trail = [a async for a in service.access_trail(person, whole)]
                assert len(trail) == 11  # the creation and the 10 views
                assert [a async for a in service.access_trail(person, paged)] == trail
    assert [a async for a in service.access_trail(anna.id)] == trail  # a reading of its own


async def test_a_slow_statement_fails_the_export_with_a_clear_message(
    settings: Settings, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement past the export's time limit ends it as failed, with a message staff can
    act on and no archive, instead of holding the worker."""
    store = FilesystemStore(tmp_path / "objects")
    await store.ensure_ready()
    owner = await staff_user("olivia", clock())
    anna, _ = await client_with_photos(store, owner, "Anna Berg", [b"a" * 1000], clock())
    monkeypatch.setattr(records, "STATEMENT_TIMEOUT", dt.timedelta(milliseconds=50))
    slow = records._select

    def sleepy(query: records.TableQuery) -> str:
        sql = slow(query)
        return sql if query.table != "photo" else f"SELECT * FROM ({sql}) AS s, pg_sleep(0.2)"  # noqa: S608

    monkeypatch.setattr(records, "_select", sleepy)
    job = await service.request_export(
        settings, kind="client", subject_id=anna, actor=owner, source="staff", now=clock()
    )
    failed = await built(settings, store, job, clock)
    assert failed.state == "failed" and "took too long" in failed.error
    assert [o.key async for o in store.list("exports/")] == []


async def test_the_job_stays_alive_while_one_statement_runs_long_unless_it_hangs(
    settings: Settings, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a slow read runs and no piece of the archive passes, the heartbeat still beats
    on its own, so the job is not taken for dead; a build that stops moving on for longer
    than a statement may take gets no more beats, so it goes stale and is taken again."""
    store = FilesystemStore(tmp_path / "objects")
    await store.ensure_ready()
    owner = await staff_user("olivia", clock())
    slow = records._select

    def sleepy(query: records.TableQuery) -> str:
        sql = slow(query)
        return sql if query.table != "photo" else f"SELECT * FROM ({sql}) AS s, pg_sleep(0.3)"  # noqa: S608

    monkeypatch.setattr(records, "_select", sleepy)

    async def beats(name: str, every: float, stalled: float) -> int:
        """How often the job's time was read (claims and heartbeats) building one export."""
        monkeypatch.setattr(service, "BEAT_EVERY", dt.timedelta(seconds=every))
        monkeypatch.setattr(service, "STALLED_AFTER", dt.timedelta(seconds=stalled))
        person, _ = await client_with_photos(store, owner, name, [b"a" * 1000], clock())
        job = await service.request_export(
            settings, kind="client", subject_id=person, actor=owner, source="staff", now=clock()
        )
        started = clock()
        read: list[int] = []

        def ticking() -> dt.datetime:
            read.append(1)
            return started + dt.timedelta(seconds=len(read))

        assert await service.run_pending(settings, store, started, clock=ticking) == 1
        assert (await service.get_export(job.id)).state == "ready"
        return len(read)

    quiet = await beats("Anna Berg", every=3600, stalled=3600)  # the archive's own beats only
    alive = await beats("Ben Cole", every=0.02, stalled=3600)
    hung = await beats("Cleo Dorn", every=0.02, stalled=0.06)
    assert alive >= quiet + 20, (quiet, alive)  # about 0.9 s of sleeping statements
    assert hung <= quiet + 6, (quiet, hung)


async def test_a_failing_export_says_why_and_can_be_asked_again(
    settings: Settings, s3_store: ObjectStore, clock: FakeClock
) -> None:
    """A photo missing from the store fails the export with a message and leaves no archive;
    asking again queues a new job, which succeeds once the cause is gone."""
    owner = await staff_user("olivia", clock())
    anna, gallery = await client_with_photos(s3_store, owner, "Anna Berg", [b"a" * 5000], clock())
    photo = await Photo.select(Photo.original_key).where(Photo.gallery == gallery).first()
    assert photo is not None
    await s3_store.delete(photo["original_key"])
    job = await service.request_export(
        settings, kind="client", subject_id=anna, actor=owner, source="staff", now=clock()
    )
    failed = await built(settings, s3_store, job, clock)
    assert failed.state == "failed" and "try again" in failed.error
    assert [o.key async for o in s3_store.list("exports/")] == []

    await s3_store.put(photo["original_key"], chunks_of(b"b" * 5000), content_type="image/jpeg")
    retry = await service.request_export(
        settings, kind="client", subject_id=anna, actor=owner, source="staff", now=clock()
    )
    assert retry.id != job.id and retry.state == "queued"
    assert (await built(settings, s3_store, retry, clock)).state == "ready"


async def test_a_killed_build_is_taken_again_and_expired_exports_are_deleted(
    settings: Settings, s3_store: ObjectStore, clock: FakeClock
) -> None:
    """A job left running by a dead worker is built by the next run once its heartbeat is
    stale; when its time is up the archive leaves the store and its link stops working;
    ``delete_exports_of`` removes what is left."""
    owner = await staff_user("olivia", clock())
    anna, _ = await client_with_photos(s3_store, owner, "Anna Berg", [b"a" * 5000], clock())
    job = await service.request_export(
        settings, kind="client", subject_id=anna, actor=owner, source="staff", now=clock()
    )
    await ExportJob.update(
        {ExportJob.state: "running", ExportJob.heartbeat_at: clock(), ExportJob.attempts: 1}
    ).where(ExportJob.id == job.id)
    assert await service.run_pending(settings, s3_store, clock() + dt.timedelta(minutes=2)) == 0
    clock.advance(minutes=11)
    assert (await built(settings, s3_store, job, clock)).state == "ready"
    token = await service.issue_link(job.id, actor=owner, now=clock())
    assert await service.expire_exports(s3_store, clock()) == 0
    clock.advance(hours=settings.privacy.export_link_hours)
    assert await service.expire_exports(s3_store, clock()) == 1
    assert [o.key async for o in s3_store.list("exports/")] == []
    assert (await service.get_export(job.id)).state == "expired"
    with pytest.raises(service.LinkExpired, match="expired"):
        await service.open_download(token, clock())
    assert await service.delete_exports_of("client", anna, store=s3_store) == 1
    assert await ExportJob.count() == 0


# --- claims: a replaced or failed builder leaves nothing behind ------------------------------


async def test_the_heartbeat_shows_the_time_it_is_written(
    settings: Settings, s3_store: ObjectStore, clock: FakeClock
) -> None:
    """A long build's heartbeat carries the time it is written, not the time the run started,
    so the job does not look dead and get built a second time; and its link's life is
    counted from when the archive exists, so a long build is not born expired."""
    owner = await staff_user("olivia", clock())
    anna, _ = await client_with_photos(s3_store, owner, "Anna Berg", [b"a" * 5000], clock())
    job = await service.request_export(
        settings, kind="client", subject_id=anna, actor=owner, source="staff", now=clock()
    )
    started = clock()
    later = started + dt.timedelta(minutes=25)
    assert await service.run_pending(settings, s3_store, started, clock=lambda: later) == 1
    row = await ExportJob.select().where(ExportJob.id == job.id).first()
    assert row is not None and row["state"] == "ready"
    assert row["heartbeat_at"] == later
    assert row["finished_at"] == later
    assert row["expires_at"] == later + dt.timedelta(hours=settings.privacy.export_link_hours)


async def test_a_replaced_builder_cannot_record_its_archive_and_deletes_it(
    settings: Settings, s3_store: ObjectStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When another worker claims a job while its first builder is finishing, the first one's
    result is refused and its archive deleted; the second claim's archive is the one kept."""
    owner = await staff_user("olivia", clock())
    anna, _ = await client_with_photos(s3_store, owner, "Anna Berg", [b"a" * 5000], clock())
    job = await service.request_export(
        settings, kind="client", subject_id=anna, actor=owner, source="staff", now=clock()
    )
    real_build = service._build

    async def build_then_taken_over(*args: Any) -> Any:
        result = await real_build(*args)
        # Another worker thought this one dead and claimed the job meanwhile.
        await ExportJob.update({ExportJob.attempts: ExportJob.attempts + 1}).where(
            ExportJob.id == job.id
        )
        return result

    monkeypatch.setattr(service, "_build", build_then_taken_over)
    assert await service.run_pending(settings, s3_store, clock()) == 1
    row = await ExportJob.select().where(ExportJob.id == job.id).first()
    assert row is not None and row["state"] == "running" and row["object_key"] == ""
    assert [o.key async for o in s3_store.list("exports/")] == []

    monkeypatch.setattr(service, "_build", real_build)
    clock.advance(minutes=11)
    assert (await built(settings, s3_store, job, clock)).state == "ready"
    keys = [o.key async for o in s3_store.list("exports/")]
    assert keys == [f"exports/client/{anna}/{job.id}-3.zip"]


async def test_a_job_that_fails_for_good_and_orphans_leave_no_archive(
    settings: Settings, s3_store: ObjectStore, clock: FakeClock
) -> None:
    """A job that stopped too often ends failed with the archive its dead builder wrote
    deleted; ``expire_exports`` deletes any other archive no ready export owns, and keeps
    the ready one."""
    owner = await staff_user("olivia", clock())
    anna, _ = await client_with_photos(s3_store, owner, "Anna Berg", [b"a" * 5000], clock())
    ben, _ = await client_with_photos(s3_store, owner, "Ben Holm", [b"b" * 5000], clock())
    dying = await service.request_export(
        settings, kind="client", subject_id=anna, actor=owner, source="staff", now=clock()
    )
    left = f"exports/client/{anna}/{dying.id}-{service.MAX_ATTEMPTS}.zip"
    await s3_store.put(left, chunks_of(b"anna's data"), content_type="application/zip")
    stale = clock() - dt.timedelta(minutes=30)
    await ExportJob.update(
        {
            ExportJob.state: "running",
            ExportJob.heartbeat_at: stale,
            ExportJob.attempts: service.MAX_ATTEMPTS,
        }
    ).where(ExportJob.id == dying.id)
    assert await service.run_pending(settings, s3_store, clock()) == 1
    assert (await service.get_export(dying.id)).state == "failed"
    assert [o.key async for o in s3_store.list("exports/")] == []

    kept = await service.request_export(
        settings, kind="client", subject_id=ben, actor=owner, source="staff", now=clock()
    )
    await built(settings, s3_store, kept, clock)
    orphan = f"exports/client/{anna}/{dying.id}-1.zip"
    await s3_store.put(orphan, chunks_of(b"anna's data"), content_type="application/zip")
    assert await service.expire_exports(s3_store, clock()) == 0
    assert [o.key async for o in s3_store.list("exports/")] == [
        f"exports/client/{ben}/{kept.id}-1.zip"
    ]
