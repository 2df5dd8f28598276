"""Admin alerts of the backups domain: a message when a check starts failing, a daily reminder
while it stays broken, one when it works again, a healthchecks-style ping, the overdue-drill watch.

Successes send nothing: an admin who gets a message every night stops reading them, and then
misses the one that matters. An outside service that expects the ping notices when nothing ran.
"""

from __future__ import annotations

import datetime as dt
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, Literal

import anyio
import msgspec

from appliance.backups.tables import BackupAlert, BackupSetting, DrillReport
from appliance.clock import utcnow
from appliance.config import Settings
from appliance.localtime import format_duration, format_utc
from appliance.notify import channels
from appliance.notify.delivery import deliver_due
from appliance.notify.messages import queue_alert_rows

__all__ = [
    "FailingCheck",
    "Notifier",
    "check_drill_overdue",
    "describe",
    "effective_targets",
    "failing",
    "load_notifier",
    "report",
]

log = logging.getLogger(__name__)

DRILL_OVERDUE_KEY = "drill-overdue"
# Daily jobs finish a few minutes earlier or later each day; with a strict 24 hours, a run that
# finishes earlier than yesterday's would skip its reminder and the admin hear nothing for two.
REMINDER_EVERY = dt.timedelta(hours=23)
PING_BODY_BYTES = 10_000
_MESSAGE_KEPT = 4000  # characters of an error kept in the table and in a message
_ADMIN_HINT = "Open Admin → Backups on the appliance to see the job, its log and its error."

PingState = Literal["start", "success", "fail"]
NotifyKind = Literal["info", "success", "warning", "failure"]


class Notifier:
    """Queues admin alerts in the outbox and pings a healthchecks-style URL.

    Alerts go to the alert URLs of the backups (of its section of the settings file or its
    admin page), to the notification channels of Admin → Notifications, and, with
    ``settings``, to ``[notify] alert_urls``; the outbox retries a channel that is down, and
    tells the other channels when one fails for good. With ``settings``, the queued alerts are
    also delivered at once (what fails stays in the outbox for the worker). The ping goes out
    directly: its point is to arrive, or not, at the moment of the backup.

    Neither method raises: an alert that cannot be sent must never fail the backup that
    reported it. Failures are logged without the URLs.
    """

    def __init__(
        self,
        alert_urls: Sequence[str],
        ping_url: str = "",
        *,
        settings: Settings | None = None,
        ping_timeout: float = 10.0,
    ) -> None:
        self.alert_urls = [url for url in alert_urls if url.strip()]
        self.ping_url = ping_url.strip()
        self.settings = settings
        self.ping_timeout = ping_timeout
        channels.remember([*self.alert_urls, self.ping_url])

    async def send(
        self, title: str, body: str, *, kind: NotifyKind = "info", now: dt.datetime | None = None
    ) -> bool:
        """Queue one alert for every channel; True when at least one channel will get it."""
        moment = now or utcnow()
        urls = [*self.alert_urls, *(self.settings.notify.alert_urls if self.settings else [])]
        try:
            ids = await queue_alert_rows(
                title, body, severity=kind, source="backups", now=moment, config_urls=urls
            )
        except Exception:  # the database is away: the backup must still end recorded
            log.exception("backup alert %r could not be queued", title)
            return False
        if not ids:
            log.debug("backup alert not queued: no alert channel is set")
            return False
        if self.settings is not None:
            try:
                await deliver_due(self.settings, moment, limit=len(ids), only=ids)
            except Exception:  # the worker's outbox loop delivers it later
                log.exception("backup alert %r queued but not delivered yet", title)
        return True

    async def ping(self, state: PingState, body: str = "") -> bool:
        """POST ``body`` (its last 10 kB) to the ping URL: ``<url>/start``, ``<url>`` for
        success, ``<url>/fail``. True when the URL answered 2xx; False too when none is set."""
        if not self.ping_url:
            return False
        parts = urllib.parse.urlsplit(self.ping_url)
        if parts.scheme not in ("http", "https"):
            log.warning("backup ping not sent: the ping URL must start with http:// or https://")
            return False
        suffix = {"start": "/start", "success": "", "fail": "/fail"}[state]
        url = urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + suffix))
        data = _tail_bytes(body, PING_BODY_BYTES)
        with anyio.move_on_after(self.ping_timeout + 1):
            try:
                return await anyio.to_thread.run_sync(
                    _post, url, data, self.ping_timeout, abandon_on_cancel=True
                )
            except urllib.error.HTTPError as error:
                log.warning("backup ping %r refused: HTTP %d", state, error.code)
                return False
            except Exception as error:  # noqa: BLE001 - network errors of every kind
                log.warning("backup ping %r not sent: %s", state, channels.redact(repr(error)))
                return False
        log.warning("backup ping %r not sent: no answer within %.0f s", state, self.ping_timeout)
        return False


def _post(url: str, data: bytes, timeout: float) -> bool:
    request = urllib.request.Request(  # noqa: S310 - the scheme was checked to be http(s)
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "text/plain; charset=utf-8", "User-Agent": "fotostudio"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return 200 <= int(response.status) < 300


def _tail_bytes(text: str, limit: int) -> bytes:
    """The last ``limit`` bytes of ``text`` in UTF-8 (an error's cause is usually at the end),
    cut on a character boundary."""
    data = text.encode()
    if len(data) <= limit:
        return data
    return data[-limit:].decode(errors="ignore").encode()


async def effective_targets(settings: Settings) -> tuple[list[str], str]:
    """The alert URLs and the ping URL: what admins set on the backups page (even when they
    cleared it), else what the settings file says."""
    alert_urls = list(settings.backups.alert_urls)
    ping_url = settings.backups.ping_url
    rows = (
        await BackupSetting.select(BackupSetting.key, BackupSetting.value)
        .where(BackupSetting.key.is_in(["alert_urls", "ping_url"]))
        .output(load_json=True)
        .run()
    )
    for row in rows:
        value = row["value"]
        if value is None:
            continue
        if row["key"] == "alert_urls" and isinstance(value, list):
            alert_urls = [str(url) for url in value if isinstance(url, str)]
        elif row["key"] == "ping_url" and isinstance(value, str):
            ping_url = value
        else:
            log.warning("backup setting %r has a value of the wrong type; ignored", row["key"])
    return alert_urls, ping_url


async def load_notifier(settings: Settings) -> Notifier:
    """A Notifier for the URLs in effect now (see :func:`effective_targets`) that delivers
    what it queues at once."""
    alert_urls, ping_url = await effective_targets(settings)
    return Notifier(alert_urls, ping_url, settings=settings)


class _Message(msgspec.Struct, frozen=True):
    kind: Literal["problem", "reminder", "recovered"]
    title: str
    body: str
    previous_notified_at: dt.datetime | None


async def report(key: str, *, ok: bool, message: str, notifier: Notifier, now: dt.datetime) -> None:
    """Record whether the check ``key`` ("backup", "copy:offsite", "drill", ...) works, and
    tell the admins when that changed, or once a day while it stays broken.

    ``message`` is the error (ignored when ``ok``). Steps:
    1. in one transaction, lock the key's row and decide (this is the claim: of two workers
       reporting the same key at once, the second sees the first one's decision);
    2. queue the message in the outbox after the commit (the outbox retries a channel that is
       down), and deliver it at once when the notifier has the settings;
    3. if a problem or reminder could not be queued (no alert channel, the database away),
       give the claim back, so the next report tries again instead of waiting a day.
    """
    decided = await _decide(key, ok=ok, message=message.strip()[-_MESSAGE_KEPT:], now=now)
    if decided is None:
        return
    kind: NotifyKind = "success" if decided.kind == "recovered" else "failure"
    delivered = await notifier.send(decided.title, decided.body, kind=kind, now=now)
    if delivered or decided.kind == "recovered":
        return
    await BackupAlert.raw(
        "UPDATE backup_alert SET notified_at = {} WHERE key = {} AND failing AND notified_at = {}",
        decided.previous_notified_at,
        key,
        now,
    )


async def _decide(key: str, *, ok: bool, message: str, now: dt.datetime) -> _Message | None:
    select = (
        "SELECT failing, since, message, notified_at FROM backup_alert WHERE key = {} FOR UPDATE"
    )
    async with BackupAlert._meta.db.transaction():
        rows = await BackupAlert.raw(select, key)
        if not rows:
            if ok:
                return None  # never failed: nothing to remember
            # Two first failures at once: the second INSERT waits for the first to commit,
            # does nothing, and its SELECT then sees the first one's claim.
            await BackupAlert.raw(
                "INSERT INTO backup_alert (key, failing, since, message) VALUES ({}, false, {}, '')"
                " ON CONFLICT (key) DO NOTHING",
                key,
                now,
            )
            rows = await BackupAlert.raw(select, key)
        row = rows[0]
        previous = row["notified_at"]
        if ok:
            if not row["failing"]:
                return None
            await BackupAlert.raw(
                "UPDATE backup_alert SET failing = false, since = {}, notified_at = {}"
                " WHERE key = {}",
                now,
                now,
                key,
            )
            return _recovered(key, since=row["since"], error=row["message"], now=now)
        if not row["failing"]:
            await BackupAlert.raw(
                "UPDATE backup_alert SET failing = true, since = {}, message = {},"
                " notified_at = {} WHERE key = {}",
                now,
                message,
                now,
                key,
            )
            return _problem(key, error=message, now=now, previous=previous)
        remind = previous is None or now - previous >= REMINDER_EVERY
        await BackupAlert.raw(
            "UPDATE backup_alert SET message = {}, notified_at = {} WHERE key = {}",
            message,
            now if remind else previous,
            key,
        )
        if not remind:
            return None
        return _reminder(key, since=row["since"], error=message, now=now, previous=previous)


# --- what the messages say -------------------------------------------------------------------

_ADVICE = {
    "backup": "Until this is fixed, new photos and changes are in no backup. Common causes: a "
    "full disk, a NAS or cloud storage that cannot be reached, changed credentials.",
    "copy": "The primary backup is not affected; only the off-site copy is missing. It is "
    "retried automatically; check that the off-site storage can be reached and has room.",
    "check": "The repository may be damaged. Do not delete or prune anything by hand; look at "
    "the check's output, and take a new backup to another repository if the damage is real.",
    "prune": "Old backups are not being removed, so the repository keeps growing. A lock left "
    "by a crashed run is the usual cause.",
    "drill": "The latest test restore did not prove that the backups can be restored. The "
    "drill's report names the step that failed.",
    DRILL_OVERDUE_KEY: "Nobody knows whether the backups can still be restored. Look at the "
    "last drill's report and start one with “Drill now”.",
}


def describe(key: str) -> str:
    """The check a key stands for, in words ("copy:offsite" → "Off-site copy to “offsite”")."""
    kind, _, repository = key.partition(":")
    names = {
        "backup": "Backup",
        "copy": "Off-site copy",
        "check": "Repository check",
        "prune": "Clean-up of old backups",
        "drill": "Restore drill",
        DRILL_OVERDUE_KEY: "Restore drills",
    }
    name = names.get(kind, key if not repository else kind.capitalize())
    if not repository:
        return name
    preposition = {"backup": "to", "copy": "to", "drill": "from"}.get(kind, "of")
    return f"{name} {preposition} “{repository}”"


def _body(key: str, first: str, error: str) -> str:
    kind, _, repository = key.partition(":")
    lines = [first, ""]
    if repository:
        lines.append(f"Repository: {repository}")
    lines += [f"Error: {error or '(no details were recorded)'}", ""]
    if kind in _ADVICE:
        lines += [_ADVICE[kind], ""]
    lines.append(f"What to do: {_ADMIN_HINT}")
    return "\n".join(lines)


def _problem(key: str, *, error: str, now: dt.datetime, previous: dt.datetime | None) -> _Message:
    what = describe(key)
    first = f"{what} failed at {format_utc(now)}."
    body = _body(key, first, error) + (
        "\n\nYou will be reminded once a day while it stays broken, and told when it works again."
    )
    return _Message("problem", f"Backup problem: {what}", body, previous)


def _reminder(
    key: str, *, since: dt.datetime, error: str, now: dt.datetime, previous: dt.datetime | None
) -> _Message:
    what = describe(key)
    first = f"{what} has been failing since {format_utc(since)} ({_duration(now - since)})."
    return _Message("reminder", f"Still failing: {what}", _body(key, first, error), previous)


def _recovered(key: str, *, since: dt.datetime, error: str, now: dt.datetime) -> _Message:
    what = describe(key)
    body = (
        f"{what} works again as of {format_utc(now)}.\n\n"
        f"It had been failing since {format_utc(since)} ({_duration(now - since)}).\n"
        f"The last error was: {error or '(no details were recorded)'}\n\n"
        "Nothing needs to be done."
    )
    return _Message("recovered", f"Recovered: {what}", body, None)


def _duration(span: dt.timedelta) -> str:
    return format_duration(span.total_seconds())


# --- the overdue drill and the admin page ----------------------------------------------------


async def check_drill_overdue(now: dt.datetime, *, overdue_days: int, notifier: Notifier) -> bool:
    """Report "drill-overdue" failing when no drill has passed within ``overdue_days``; True
    when overdue.

    The days count from the newest passed drill or, when none ever passed, from the oldest
    backup job, so a fresh install is not alarmed before its first drill was due. With no job
    at all, backups never started and there is nothing to judge.
    """
    rows: list[dict[str, Any]] = await DrillReport.raw(
        "SELECT (SELECT max(finished_at) FROM backup_drill WHERE passed) AS passed_at,"
        " (SELECT min(created_at) FROM backup_job) AS first_job_at"
    )
    passed_at: dt.datetime | None = rows[0]["passed_at"]
    first_job_at: dt.datetime | None = rows[0]["first_job_at"]
    reference = passed_at or first_job_at
    if reference is None:
        return False
    overdue = now - reference > dt.timedelta(days=overdue_days)
    if passed_at is None:
        message = f"No restore drill has passed since backups began on {format_utc(reference)}."
    else:
        message = (
            f"No restore drill has passed for {_duration(now - reference)}; the last one "
            f"that passed finished at {format_utc(reference)}. Drills should pass at least every "
            f"{overdue_days} days."
        )
    await report(DRILL_OVERDUE_KEY, ok=not overdue, message=message, notifier=notifier, now=now)
    return overdue


class FailingCheck(msgspec.Struct, frozen=True, kw_only=True):
    """A check that is failing now, for the admin page."""

    key: str
    title: str
    since: dt.datetime
    message: str
    notified_at: dt.datetime | None


async def failing() -> list[FailingCheck]:
    """The checks failing now, the longest-failing first."""
    rows = (
        await BackupAlert.select(
            BackupAlert.key, BackupAlert.since, BackupAlert.message, BackupAlert.notified_at
        )
        .where(BackupAlert.failing.eq(True))
        .order_by(BackupAlert.since)
        .run()
    )
    return [
        FailingCheck(
            key=row["key"],
            title=describe(row["key"]),
            since=row["since"],
            message=row["message"],
            notified_at=row["notified_at"],
        )
        for row in rows
    ]
