"""The probes: each looks at one component and says up, degraded or down, and why.

A probe returns an :class:`Outcome` (a state and a short detail for people, never a secret);
:func:`run_probes` runs them all at once, each with a time-out, and turns a probe that crashed
or hung into its component being down with the reason, so one probe never costs the round.

What the backups domain knows (last backup, drill, off-site copies) is read from its tables,
never from a repository: a probe runs every minute and restic takes seconds to minutes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import msgspec

from appliance.backups import repositories
from appliance.backups.tables import BackupJob, DrillReport
from appliance.config import Settings
from appliance.db.engine import engine
from appliance.galleries.tables import PhotoJob
from appliance.localtime import format_duration, format_utc
from appliance.monitoring.components import State
from appliance.monitoring.states import Observation
from appliance.monitoring.tables import ComponentStatus
from appliance.storage import ObjectStore, StorageError

__all__ = [
    "InFlight",
    "Outcome",
    "ProbeContext",
    "cert_state",
    "disk_outcome",
    "not_after",
    "plan_probes",
    "probe_tls",
    "run_probes",
]

PROBE_KEY = "monitoring/probe"
SLOW_DATABASE_MS = 1000
SLOW_STORE_MS = 3000
WEB_TIMEOUT = 5.0
TLS_TIMEOUT = 8.0
PLAN_TIMEOUT = 10.0  # reading the repositories from the database
# OpenSSL's codes for a certificate issued for another name or address
_NAME_MISMATCH = {62, 64}
_DETAIL_LENGTH = 300

Probe = Callable[[], Awaitable["Outcome"]]


class Outcome(msgspec.Struct, frozen=True):
    state: State
    detail: str


@dataclass
class InFlight:
    """A probe call that outlived its round, and when it started (``time.monotonic``)."""

    task: asyncio.Future[Outcome]
    started: float


@dataclass
class ProbeContext:
    """What the probes of one loop share: settings, the object store, injectable system
    calls (tests give a fake ``statvfs``), and a cached huey queue for its length."""

    settings: Settings
    store: ObjectStore
    statvfs: Callable[[str], os.statvfs_result] = os.statvfs
    pid: int = field(default_factory=os.getpid)
    hostname: str = field(default_factory=socket.gethostname)
    inflight: dict[str, InFlight] = field(default_factory=dict)
    _huey: Any = None

    def abandon(self) -> None:
        """Cancel the calls still in flight (the loop is ending)."""
        for running in self.inflight.values():
            running.task.cancel()
        self.inflight.clear()

    def pending_tasks(self) -> int | None:
        """Tasks waiting in huey's queue; None when it cannot be read (no queue yet)."""
        settings = self.settings
        if self._huey is None:
            from huey import RedisHuey, SqliteHuey

            if settings.queue.url:
                self._huey = RedisHuey("appliance", url=settings.queue.url)
            else:
                path = settings.data_dir / "queue.db"
                if not path.exists():
                    return None
                self._huey = SqliteHuey("appliance", filename=str(path))
        return int(self._huey.pending_count())


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _DETAIL_LENGTH else text[: _DETAIL_LENGTH - 1] + "…"


def _age(span: dt.timedelta) -> str:
    return format_duration(span.total_seconds())


# --- web, database, object store, worker, queue ---------------------------------------------


def _web_address(settings: Settings) -> str:
    if settings.monitoring.web_url:
        return settings.monitoring.web_url.rstrip("/") + "/healthz"
    host = settings.server.host
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104 - mapping, not binding
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.server.port}/healthz"


async def probe_web(settings: Settings) -> Outcome:
    """The web process answers its own ``/healthz``."""
    # A Host the web server accepts (server.allowed_hosts): a name of its own, else any name
    # under an allowed "*.domain"; with "*" alone, the address itself.
    exact = [h for h in settings.server.allowed_hosts if "*" not in h]
    under = [h[1:] for h in settings.server.allowed_hosts if h.startswith("*.")]
    host = exact[0] if exact else f"monitor{under[0]}" if under else ""
    headers = {"Host": host} if host else {}
    try:
        async with httpx.AsyncClient(timeout=WEB_TIMEOUT) as client:
            response = await client.get(_web_address(settings), headers=headers)
    except httpx.HTTPError as exc:
        return Outcome("down", f"no answer from the web server: {type(exc).__name__}")
    if response.status_code != 200:
        return Outcome("down", f"the web server answered HTTP {response.status_code}")
    return Outcome("up", "the web server answers")


async def probe_database() -> Outcome:
    """``SELECT 1`` on a connection of its own."""
    started = time.monotonic()
    await engine().run_ddl("SELECT 1")
    elapsed = int((time.monotonic() - started) * 1000)
    if elapsed > SLOW_DATABASE_MS:
        return Outcome("degraded", f"the database answered slowly ({elapsed} ms)")
    return Outcome("up", f"the database answers ({elapsed} ms)")


async def probe_store(context: ProbeContext) -> Outcome:
    """A round trip: write a small object, then read its size back."""
    root = getattr(context.store, "root", None)
    if isinstance(root, Path) and not await anyio.Path(root).is_dir():
        # A filesystem store whose folder is gone (an unmounted share): writing would make
        # an empty folder in its place.
        return Outcome("down", "the storage folder is missing; is the disk mounted?")
    payload = dt.datetime.now(dt.UTC).isoformat().encode()
    started = time.monotonic()

    async def chunks() -> Any:
        yield payload

    try:
        await context.store.put(PROBE_KEY, chunks(), content_type="text/plain")
        info = await context.store.stat(PROBE_KEY)
    except StorageError as exc:
        return Outcome("down", _short(f"photo storage failed: {exc}"))
    elapsed = int((time.monotonic() - started) * 1000)
    if info.size != len(payload):
        return Outcome("down", f"photo storage kept {info.size} of {len(payload)} bytes")
    if elapsed > SLOW_STORE_MS:
        return Outcome("degraded", f"photo storage is slow ({elapsed} ms for a round trip)")
    return Outcome("up", f"a write and a read took {elapsed} ms")


async def probe_worker(context: ProbeContext) -> Outcome:
    """The worker is up when it runs this probe; the web process watches for its silence."""
    return Outcome("up", f"worker pid {context.pid} on {context.hostname} is probing")


async def probe_queue(context: ProbeContext, now: dt.datetime) -> Outcome:
    """Waiting photo jobs, backup jobs and huey tasks against ``queue_warn``/``queue_down``."""
    photos = await PhotoJob.count().where(
        (PhotoJob.state == "queued") & (PhotoJob.not_before <= now)
    )
    backups = await BackupJob.count().where(
        (BackupJob.state == "queued") & (BackupJob.not_before <= now)
    )
    try:
        tasks = await anyio.to_thread.run_sync(context.pending_tasks)
    except Exception as exc:  # noqa: BLE001 - the queue's length is a detail, not the probe
        tasks = None
        unread = f"; huey's queue unreadable ({type(exc).__name__})"
    else:
        unread = ""
    total = photos + backups + (tasks or 0)
    detail = f"{photos} photo jobs, {backups} backup jobs"
    detail += f", {tasks} tasks waiting" if tasks is not None else " waiting"
    detail += unread
    monitoring = context.settings.monitoring
    if total > monitoring.queue_down:
        return Outcome("down", f"{detail} (limit {monitoring.queue_down})")
    if total > monitoring.queue_warn:
        return Outcome("degraded", f"{detail} (warning at {monitoring.queue_warn})")
    return Outcome("up", detail)


# --- disks ---------------------------------------------------------------------------------


def disk_outcome(
    path: str, statvfs: Callable[[str], os.statvfs_result], warn_percent: int, down_percent: int
) -> Outcome:
    """Free space of the file system holding ``path`` (or its nearest existing parent)."""
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    stats = statvfs(str(where))
    total = stats.f_blocks * stats.f_frsize
    free = stats.f_bavail * stats.f_frsize
    if total <= 0:
        return Outcome("down", f"{where}: the file system reports no size")
    percent = 100.0 * free / total
    detail = f"{free / 1e9:.1f} GB free of {total / 1e9:.1f} GB ({percent:.1f} %)"
    if percent < down_percent:
        return Outcome("down", f"{detail}, below {down_percent} %")
    if percent < warn_percent:
        return Outcome("degraded", f"{detail}, below {warn_percent} %")
    return Outcome("up", detail)


async def probe_disk(context: ProbeContext, path: str) -> Outcome:
    monitoring = context.settings.monitoring
    return await anyio.to_thread.run_sync(
        disk_outcome,
        path,
        context.statvfs,
        monitoring.disk_warn_percent,
        monitoring.disk_down_percent,
    )


# --- TLS -----------------------------------------------------------------------------------


def _der_item(data: bytes, offset: int) -> tuple[int, int, int]:
    """``(tag, start of content, end of content)`` of the DER item at ``offset``."""
    tag = data[offset]
    length = data[offset + 1]
    offset += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[offset : offset + count], "big")
        offset += count
    if offset + length > len(data):
        raise ValueError("truncated DER")
    return tag, offset, offset + length


def not_after(der: bytes) -> dt.datetime:
    """The ``notAfter`` of an X.509 certificate in DER, without a certificate library.

    Certificate → tbsCertificate → [version] serial, signature, issuer, validity(notBefore,
    notAfter): the walk is fixed by RFC 5280, so five steps reach it.
    """
    _, start, _ = _der_item(der, 0)  # Certificate
    _, start, _ = _der_item(der, start)  # tbsCertificate
    tag, _, end = _der_item(der, start)
    if tag == 0xA0:  # explicit version
        start = end
    for _ in range(3):  # serialNumber, signature, issuer
        _, _, end = _der_item(der, start)
        start = end
    _, start, _ = _der_item(der, start)  # validity
    _, _, end = _der_item(der, start)  # notBefore
    tag, content, end = _der_item(der, end)  # notAfter
    text = der[content:end].decode("ascii")
    if tag == 0x17:  # UTCTime, YYMMDDHHMMSSZ; years 50 to 99 are 19xx (RFC 5280)
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime, YYYYMMDDHHMMSSZ
        raise ValueError("unexpected time type in the certificate")
    return dt.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=dt.UTC)


def cert_state(
    expires: dt.datetime, now: dt.datetime, warn_days: int, trust_problem: str = ""
) -> Outcome:
    """Expired is down, expiring within ``warn_days`` degraded. A certificate for another
    name is degraded; one from an authority this machine does not know (the internal CA of
    a LAN install) is judged by its dates alone."""
    left = expires - now
    if left <= dt.timedelta(0):
        return Outcome("down", f"the certificate expired on {format_utc(expires)}")
    days = left.days
    detail = f"valid until {format_utc(expires)} ({days} days left)"
    if left < dt.timedelta(days=warn_days):
        return Outcome(
            "degraded", f"the certificate expires in {days} days ({format_utc(expires)})"
        )
    if trust_problem == "hostname":
        return Outcome("degraded", f"the certificate is for another host name; {detail}")
    if trust_problem:
        return Outcome("up", f"{detail}; issued by an authority this machine does not trust")
    return Outcome("up", detail)


async def _peer_certificate(host: str, port: int, *, verify: bool) -> bytes:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    async with asyncio.timeout(TLS_TIMEOUT):
        _, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    finally:
        writer.close()
        try:
            async with asyncio.timeout(1):
                await writer.wait_closed()
        except (OSError, TimeoutError, ssl.SSLError):
            pass
    if not der:
        raise ssl.SSLError("the server sent no certificate")
    return bytes(der)


async def probe_tls(url: str, now: dt.datetime, warn_days: int) -> Outcome:
    """Connect to ``url`` and judge its certificate's expiry (and trust, see cert_state)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or 443
    trust_problem = ""
    try:
        try:
            der = await _peer_certificate(host, port, verify=True)
        except ssl.SSLCertVerificationError as exc:
            trust_problem = "hostname" if exc.verify_code in _NAME_MISMATCH else "authority"
            der = await _peer_certificate(host, port, verify=False)
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        return Outcome("down", _short(f"cannot reach {host}:{port} over TLS: {reason}"))
    try:
        expires = not_after(der)
    except (ValueError, IndexError):
        return Outcome("down", f"{host}:{port} sent a certificate that cannot be read")
    return cert_state(expires, now, warn_days, trust_problem)


def tls_url(settings: Settings) -> str:
    """``monitoring.tls_url``, else ``server.public_url`` when it is https; "" for neither."""
    url = settings.monitoring.tls_url or settings.server.public_url
    return url if url.startswith("https://") else ""


# --- backups -------------------------------------------------------------------------------


async def _latest(query: Any) -> Any:
    return await query.first().run()


async def probe_backup(settings: Settings, now: dt.datetime) -> Outcome:
    """Age of the last backup that finished without fault: degraded past
    ``backup_max_age_hours``, down past twice that; a later failed one is degraded too."""
    limit = dt.timedelta(hours=settings.monitoring.backup_max_age_hours)
    done = await _latest(
        BackupJob.select(BackupJob.finished_at)
        .where((BackupJob.kind == "backup") & (BackupJob.state == "done"))
        .order_by(BackupJob.finished_at, ascending=False)
    )
    failed = await _latest(
        BackupJob.select(BackupJob.finished_at)
        .where((BackupJob.kind == "backup") & (BackupJob.state == "failed"))
        .order_by(BackupJob.finished_at, ascending=False)
    )
    if done is None:
        watched = now - await _first_checked("backup", now)
        if watched > 2 * limit:
            return Outcome("down", f"no backup has finished in the {_age(watched)} watched")
        if watched > limit:
            return Outcome("degraded", f"no backup has finished in the {_age(watched)} watched")
        return Outcome("up", "no backup has finished yet; the first is due at the next run")
    finished = done["finished_at"]
    age = now - finished
    if age > 2 * limit or age > limit:
        state: State = "down" if age > 2 * limit else "degraded"
        return Outcome(state, f"the last backup finished {_age(age)} ago ({format_utc(finished)})")
    if failed is not None and failed["finished_at"] > finished:
        return Outcome("degraded", f"the last backup failed at {format_utc(failed['finished_at'])}")
    return Outcome("up", f"the last backup finished {_age(age)} ago")


async def probe_drill(settings: Settings, now: dt.datetime) -> Outcome:
    """The last passed restore drill against ``backups.drill_overdue_days``."""
    limit = dt.timedelta(days=settings.backups.drill_overdue_days)
    passed = await _latest(
        DrillReport.select(DrillReport.finished_at)
        .where(DrillReport.passed.eq(True))
        .order_by(DrillReport.finished_at, ascending=False)
    )
    last = await _latest(
        DrillReport.select(DrillReport.finished_at, DrillReport.passed).order_by(
            DrillReport.finished_at, ascending=False
        )
    )
    if last is not None and not last["passed"]:
        failed_at = format_utc(last["finished_at"])
        return Outcome("degraded", f"the last restore drill failed ({failed_at})")
    if passed is None:
        since = await _first_checked("drill", now)
        if now - since > limit:
            return Outcome("degraded", "no restore drill has passed yet")
        return Outcome("up", "no restore drill has run yet")
    age = now - passed["finished_at"]
    if age > limit:
        return Outcome("degraded", f"the last passed restore drill is {_age(age)} old")
    return Outcome("up", f"the last restore drill passed {_age(age)} ago")


async def probe_offsite(settings: Settings, name: str, now: dt.datetime) -> Outcome:
    """Whether the last copy to (or check of) an off-site repository worked, as recorded."""
    kinds = ["copy", "check"]
    done = await _latest(
        BackupJob.select(BackupJob.finished_at)
        .where(
            (BackupJob.repository == name)
            & BackupJob.kind.is_in(kinds)
            & (BackupJob.state == "done")
        )
        .order_by(BackupJob.finished_at, ascending=False)
    )
    failed = await _latest(
        BackupJob.select(BackupJob.finished_at, BackupJob.kind)
        .where(
            (BackupJob.repository == name)
            & BackupJob.kind.is_in(kinds)
            & (BackupJob.state == "failed")
        )
        .order_by(BackupJob.finished_at, ascending=False)
    )
    if failed is not None and (done is None or failed["finished_at"] > done["finished_at"]):
        return Outcome(
            "down",
            f"the last {failed['kind']} failed at {format_utc(failed['finished_at'])}; "
            "see Admin → Backups",
        )
    if done is None:
        return Outcome("up", "no copy or check has run yet")
    age = now - done["finished_at"]
    if age > dt.timedelta(hours=2 * settings.monitoring.backup_max_age_hours):
        reached = format_utc(done["finished_at"])
        return Outcome("degraded", f"last reached {_age(age)} ago ({reached})")
    return Outcome("up", f"last reached {_age(age)} ago")


async def _first_checked(component: str, now: dt.datetime) -> dt.datetime:
    """Since when ``component`` has been watched: its own first probe. Without a row it was
    just switched on (backups enabled today after months of running): from now."""
    row = await _latest(
        ComponentStatus.select(ComponentStatus.first_checked_at, ComponentStatus.since).where(
            ComponentStatus.component == component
        )
    )
    if row is None:
        return now
    return row["first_checked_at"] or row["since"] or now


# --- planning and running ------------------------------------------------------------------


async def plan_probes(context: ProbeContext, now: dt.datetime) -> tuple[dict[str, Probe], bool]:
    """The probes of this round by component, and whether the plan is complete (the list of
    repositories could be read; without it, repository probes are left out this round)."""
    settings = context.settings
    monitoring = settings.monitoring
    probes: dict[str, Probe] = {
        "web": lambda: probe_web(settings),
        "database": probe_database,
        "object-store": lambda: probe_store(context),
        "worker": lambda: probe_worker(context),
        "queue": lambda: probe_queue(context, now),
        "disk:data": lambda: probe_disk(context, str(settings.data_dir)),
    }
    url = tls_url(settings)
    if url:
        probes["tls"] = lambda: probe_tls(url, now, monitoring.cert_warn_days)
    if not settings.backups.enabled:
        return probes, True
    probes["backup"] = lambda: probe_backup(settings, now)
    probes["drill"] = lambda: probe_drill(settings, now)
    try:
        async with asyncio.timeout(PLAN_TIMEOUT):
            found = await repositories.targets(settings)
    except Exception:  # noqa: BLE001 - the database probe says why; the rest still run
        return probes, False
    first = next((t for t in found if not t.offsite), None)
    if first is not None and first.repository.url.startswith("/"):
        folder = first.repository.url
        probes["disk:backup"] = lambda: probe_disk(context, folder)
    for target in found:
        if target.offsite:
            name = target.name
            probes[f"offsite:{name}"] = lambda name=name: probe_offsite(settings, name, now)  # type: ignore[misc]
    return probes, True


def _waiting(running: InFlight | None) -> bool:
    """Whether the previous call is still running (on a loop that still runs)."""
    return (
        running is not None and not running.task.done() and not running.task.get_loop().is_closed()
    )


def _forget(running: InFlight) -> None:
    """Drop a call that finished after its round gave up on it; its outcome is stale."""
    task = running.task
    if task.done() and not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved


async def _timed(
    component: str,
    probe: Probe,
    limit: float,
    now: dt.datetime,
    inflight: dict[str, InFlight] | None,
) -> Observation:
    started = time.monotonic()
    running = inflight.get(component) if inflight is not None else None
    latency: int | None
    if inflight is not None and running is not None and _waiting(running):
        # A hung mount: another call would only add another thread stuck beside it.
        waited = started - running.started
        outcome = Outcome("down", f"still waiting for the last check, started {waited:.0f} s ago")
        latency = None
    else:
        if inflight is not None and running is not None:
            _forget(inflight.pop(component))
        task: asyncio.Future[Outcome] = asyncio.ensure_future(probe())
        done, _ = await asyncio.wait({task}, timeout=limit)
        if task not in done:
            if inflight is not None:
                # Left running, not cancelled: a cancelled call in a thread keeps its thread
                # busy unseen, and the next round would start another one.
                inflight[component] = InFlight(task=task, started=started)
            else:
                task.cancel()
            outcome = Outcome("down", f"no answer within {limit:.0f} s")
        else:
            try:
                outcome = task.result()
            except Exception as exc:  # noqa: BLE001 - a crashed probe is its component down
                outcome = Outcome("down", f"the probe failed: {type(exc).__name__}: {exc}")
        latency = int((time.monotonic() - started) * 1000)
    return Observation(
        component=component,
        state=outcome.state,
        detail=_short(outcome.detail),
        latency_ms=latency,
        checked_at=now,
    )


async def run_probes(
    probes: dict[str, Probe],
    *,
    limit: float,
    now: dt.datetime,
    inflight: dict[str, InFlight] | None = None,
) -> list[Observation]:
    """Run every probe at once, each within ``limit`` seconds; results in the given order.

    With ``inflight`` (kept from round to round, :attr:`ProbeContext.inflight`), a probe that
    did not answer in time is left running there, and until it ends its component is reported
    down without a second call: at most one call per component is ever in flight.
    """
    return list(
        await asyncio.gather(
            *(_timed(component, probe, limit, now, inflight) for component, probe in probes.items())
        )
    )
