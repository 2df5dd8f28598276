"""The admins' backups page over HTTP: the password shown once, on-demand runs, alert targets and
off-site repositories, with the data and audit entries behind them."""

from __future__ import annotations

import datetime as dt
import json
import re
import zoneinfo
from typing import Any

import httpx
import pytest
from litestar import Litestar

from appliance.audit.service import list_entries
from appliance.backups import alerts, repositories
from appliance.backups.overview import next_runs
from appliance.backups.tables import (
    BackupAlert,
    BackupJob,
    BackupSetting,
    DrillReport,
    RecoveryPointCopy,
    RepositorySample,
)
from appliance.config import BackupSettings, Settings
from appliance.notify.tables import OutboxMessage
from tests.conftest import FakeClock, make_client
from tests.integration.flows import Admin, csrf_of, sign_in, submit
from tests.integration.test_clients import signed_in_owner
from tests.integration.test_sign_in import invite_photographer
from tests.receiver import Receiver

PAGE = "/admin/backups"
HOOK_TOKEN = "hook-token-9f3c1a77e2"
BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
SECRET_KEY = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


async def post(client: httpx.AsyncClient, action: str, data: dict[str, str]) -> httpx.Response:
    return await submit(client, PAGE, data, action=action)


async def setting(key: str) -> Any:
    row = (
        await BackupSetting.select(BackupSetting.value)
        .where(BackupSetting.key == key)
        .output(load_json=True)
        .first()
        .run()
    )
    return row["value"] if row else None


async def actions() -> list[str]:
    return [entry.action for entry in await list_entries()]


async def audit_text() -> str:
    return json.dumps([[e.action, e.target, e.details] for e in await list_entries()])


S3_REPOSITORY = {
    "name": "offsite-eu",
    "url": "s3:https://s3.eu-central-1.example.eu/studio-backups",
    "access_key": "AKIAEXAMPLE",
    "secret_key": SECRET_KEY,
    "region": "eu-central-1",
}


# --- the repository password ---------------------------------------------------------------


async def test_password_is_shown_until_confirmed_and_never_again(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, settings: Settings
) -> None:
    """The page shows the repository password, uncached, until an admin confirms storing it;
    afterwards no page shows it and the confirmation is recorded and audited."""
    await signed_in_owner(client, admin, clock)
    page = await client.get(PAGE)
    password = repositories.read_password(settings)
    assert page.status_code == 200
    assert len(password) >= 20 and password in page.text
    assert page.headers["cache-control"] == "no-store"

    response = await post(client, f"{PAGE}/password-stored", {})
    assert response.status_code == 303
    row = await BackupSetting.select().where(BackupSetting.key == "password_confirmed_at").first()
    assert row is not None and row["updated_by"] is not None
    assert dt.datetime.fromisoformat(json.loads(row["value"])) == clock()
    assert (await actions()).count("backup.password_stored") == 1

    for path in (PAGE, f"{PAGE}?done=password", "/", "/admin/settings", "/admin/audit"):
        shown = await client.get(path)
        assert shown.status_code == 200, path
        assert password not in shown.text, path
    assert "I have stored it" not in (await client.get(PAGE)).text
    assert password not in await audit_text()

    again = await post(client, f"{PAGE}/password-stored", {})
    assert again.status_code == 303
    assert (await actions()).count("backup.password_stored") == 1


# --- who may use the page ---------------------------------------------------------------------


async def test_photographer_and_signed_out_visitor_change_nothing(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock, settings: Settings
) -> None:
    """A photographer gets 403 on the page and every form of it; a signed-out visitor is sent to
    the sign-in page; neither queues a job, changes a setting or sees the password."""
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
        refused = await pia.get(PAGE)
        assert refused.status_code == 403 and "Only an admin" in refused.text
        token = csrf_of((await pia.get("/account")).text)
        for action, data in (
            ("/password-stored", {}),
            ("/run", {}),
            ("/drill", {"repository": "local"}),
            ("/alerts", {"alert_urls": "json://evil.example/x"}),
            ("/ping", {"ping_url": "https://evil.example/p"}),
            ("/repositories", S3_REPOSITORY),
            ("/repositories/local/remove", {}),
        ):
            response = await pia.post(PAGE + action, data={**data, "_csrf": token})
            assert response.status_code == 403, action

    async with make_client(app, "192.0.2.30") as stranger:
        opened = await stranger.get(PAGE)
        assert opened.status_code == 303 and opened.headers["location"] == "/login"
        token = csrf_of((await stranger.get("/login")).text)
        for action in ("/run", "/password-stored"):
            response = await stranger.post(PAGE + action, data={"_csrf": token})
            assert response.status_code in (303, 403), action
            assert repositories.read_password(settings) not in response.text

    assert await BackupJob.count() == 0
    assert await BackupSetting.count() == 0
    assert not [a for a in await actions() if a.startswith("backup.")]


async def test_form_without_csrf_token_is_refused(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """A signed-in admin's POST without the CSRF token (a forged form) queues nothing."""
    await signed_in_owner(client, admin, clock)
    await client.get(PAGE)
    for action in ("/run", "/password-stored", "/alerts"):
        response = await client.post(PAGE + action, data={"alert_urls": "json://a.example/x"})
        assert response.status_code == 403, action
    assert await BackupJob.count() == 0
    assert await BackupSetting.count() == 0


# --- on-demand runs ----------------------------------------------------------------------------


async def test_back_up_now_queues_one_job_for_the_worker(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """ "Back up now" queues a backup into the primary, named after its requester; a second
    click while it waits queues nothing and says so."""
    await signed_in_owner(client, admin, clock)
    response = await post(client, f"{PAGE}/run", {})
    assert response.status_code == 303 and response.headers["location"] == f"{PAGE}?done=backup"
    jobs = await BackupJob.select().run()
    assert len(jobs) == 1
    job = jobs[0]
    assert (job["kind"], job["repository"], job["state"]) == ("backup", "local", "queued")
    assert job["slot"].startswith("backup:now:") and job["requested_by"] is not None
    assert job["not_before"] == clock()

    clock.advance(seconds=5)
    again = await post(client, f"{PAGE}/run", {})
    assert again.headers["location"] == f"{PAGE}?done=backup-busy"
    assert "already queued or running" in (await client.get(again.headers["location"])).text
    assert await BackupJob.count() == 1
    assert (await actions()).count("backup.backup.request") == 1


async def test_drill_now_queues_for_the_chosen_repository_only(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """ "Drill now" queues a drill of a configured repository; an unknown or path-like name is
    refused and queues nothing."""
    await signed_in_owner(client, admin, clock)
    for name in ("../local", "nowhere", "", "local/../x"):
        refused = await post(client, f"{PAGE}/drill", {"repository": name})
        assert refused.status_code == 400, name
    assert await BackupJob.count() == 0
    response = await post(client, f"{PAGE}/drill", {"repository": "local"})
    assert response.headers["location"] == f"{PAGE}?done=drill"
    job = await BackupJob.select().first()
    assert job is not None and (job["kind"], job["repository"]) == ("drill", "local")
    assert job["slot"].startswith("drill:now:")


# --- alert targets -------------------------------------------------------------------------------


async def test_alert_urls_are_stored_and_shown_only_masked(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, settings: Settings
) -> None:
    """Saved alert URLs become the alert targets, but pages and the audit log show only the
    scheme and a plain host name, never a token."""
    await signed_in_owner(client, admin, clock)
    hook = f"json://hooks.example.org/{HOOK_TOKEN}"
    bot = f"tgram://{BOT_TOKEN}/4711"
    response = await post(client, f"{PAGE}/alerts", {"alert_urls": f"{hook}\n\n  {bot}  \n{hook}"})
    assert response.status_code == 303
    assert await setting("alert_urls") == [hook, bot]
    assert await alerts.effective_targets(settings) == ([hook, bot], "")
    page = (await client.get(PAGE)).text
    assert "json://hooks.example.org/…" in page and "tgram://…" in page
    for secret in (HOOK_TOKEN, BOT_TOKEN, "123456789"):
        assert secret not in page
        assert secret not in await audit_text()
    entry = next(e for e in await list_entries() if e.action == "backup.alerts.add")
    assert entry.details == {"added": 2, "total": 2}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hooks.example.org/no-scheme", "service://"),
        ("json://", "service://"),
        ("json://a.example/" + "x" * 1000, "longer than 1000"),
        ("json://a.example/with space", "spaces"),
        ("<script>alert(1)</script>://x", "service://"),
        ("\n".join(f"json://a.example/{n}" for n in range(21)), "At most 20"),
    ],
)
async def test_malformed_or_too_many_alert_urls_are_refused(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, text: str, message: str
) -> None:
    """Alert URLs without a scheme, overlong, with spaces or more than twenty are refused, the
    stored list stays as it was, and what was typed is not echoed."""
    await signed_in_owner(client, admin, clock)
    await post(client, f"{PAGE}/alerts", {"alert_urls": "json://kept.example/k"})
    response = await post(client, f"{PAGE}/alerts", {"alert_urls": text})
    assert response.status_code == 400
    assert message in response.text
    assert "<script>alert(1)" not in response.text
    assert await setting("alert_urls") == ["json://kept.example/k"]


async def test_ping_url_must_be_http_and_can_be_cleared(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, settings: Settings
) -> None:
    """Only an http(s) ping URL is accepted; it is shown masked, and an empty one clears it
    (stored as "" so the settings file's URL does not come back)."""
    await signed_in_owner(client, admin, clock)
    for bad in ("ftp://hc.example/p", "javascript://x", "https://", "x" * 1001):
        refused = await post(client, f"{PAGE}/ping", {"ping_url": bad})
        assert refused.status_code == 400, bad
    assert await setting("ping_url") is None
    url = f"https://hc-ping.example.com/{HOOK_TOKEN}"
    assert (await post(client, f"{PAGE}/ping", {"ping_url": url})).status_code == 303
    assert await setting("ping_url") == url
    page = (await client.get(PAGE)).text
    assert "https://hc-ping.example.com/…" in page and HOOK_TOKEN not in page
    assert HOOK_TOKEN not in await audit_text()
    assert (await post(client, f"{PAGE}/ping", {"ping_url": ""})).status_code == 303
    assert await setting("ping_url") == ""
    assert (await alerts.effective_targets(settings))[1] == ""
    assert (await actions())[:2] == ["backup.ping.clear", "backup.ping.set"]


async def test_alert_url_is_removed_by_its_fingerprint(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """The remove button of one alert URL removes that one and keeps the others."""
    await signed_in_owner(client, admin, clock)
    first, second = "json://one.example/a-token-1", "json://two.example/a-token-2"
    await post(client, f"{PAGE}/alerts", {"alert_urls": f"{first}\n{second}"})
    page = (await client.get(PAGE)).text
    handles = re.findall(r'name="fingerprint" value="([0-9a-f]+)"', page)
    assert len(handles) == 2
    response = await post(client, f"{PAGE}/alerts/remove", {"fingerprint": handles[0]})
    assert response.status_code == 303
    assert await setting("alert_urls") == [second]
    gone = await post(client, f"{PAGE}/alerts/remove", {"fingerprint": handles[0]})
    assert gone.status_code == 404
    assert await setting("alert_urls") == [second]


async def test_test_alert_reaches_every_alert_url(
    client: httpx.AsyncClient,
    admin: Admin,
    clock: FakeClock,
    receiver: Receiver,
    settings: Settings,
) -> None:
    """ "Send a test alert" sends a message to the alert URL at once through the outbox, and
    says so; with no URL set it asks for one first."""
    await signed_in_owner(client, admin, clock)
    none_set = await post(client, f"{PAGE}/alerts/test", {})
    assert none_set.status_code == 409 and "Add an alert URL first" in none_set.text
    await post(client, f"{PAGE}/alerts", {"alert_urls": receiver.alert_url()})
    response = await post(client, f"{PAGE}/alerts/test", {})
    assert response.headers["location"] == f"{PAGE}?done=test-sent"
    assert "sent to every alert channel" in (await client.get(response.headers["location"])).text
    [row] = await OutboxMessage.select().run()
    assert (row["kind"], row["source"], row["state"]) == ("alert", "backups", "sent")
    messages = receiver.messages()
    assert len(messages) == 1 and "Test alert" in messages[0]["title"]
    entry = (await list_entries())[0]
    assert (entry.action, entry.outcome) == ("backup.alerts.test", "success")


# --- repositories --------------------------------------------------------------------------------


async def test_offsite_repository_is_added_and_its_secret_never_shown(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, settings: Settings
) -> None:
    """An added S3 repository is stored as an off-site RepositorySettings entry the worker
    reads; the secret key appears in no page and no audit entry."""
    await signed_in_owner(client, admin, clock)
    response = await post(client, f"{PAGE}/repositories", S3_REPOSITORY)
    assert response.status_code == 303, response.text
    stored = await setting("repositories")
    assert stored == [{**S3_REPOSITORY, "offsite": True, "options": []}]
    added = await repositories.admin_repositories()
    assert [(e.name, e.offsite, e.secret_key) for e in added] == [("offsite-eu", True, SECRET_KEY)]
    found = await repositories.targets(settings)
    assert [(t.name, t.offsite, t.from_admin) for t in found] == [
        ("local", False, False),
        ("offsite-eu", True, True),
    ]
    page = (await client.get(PAGE)).text
    assert "offsite-eu" in page and "s3.eu-central-1.example.eu/studio-backups" in page
    assert SECRET_KEY not in page and SECRET_KEY not in await audit_text()
    entry = (await list_entries())[0]
    assert (entry.action, entry.target) == ("backup.repository.add", "repository:offsite-eu")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "local"}, "name"),  # the settings file's (default) repository
        ({"name": "../etc"}, "name"),
        ({"name": "a/b"}, "name"),
        ({"name": "Offsite"}, "name"),
        ({"name": "x" * 32}, "name"),
        ({"name": "ok\nbad"}, "name"),
        ({"name": "café"}, "name"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": "s3:http://plain.example/bucket"}, "url"),
        ({"url": "s3:https://s3.example.eu/"}, "url"),
        ({"url": "/srv/backups"}, "url"),
        ({"url": "sftp:-oProxyCommand=x"}, "url"),
        ({"secret_key": ""}, "access_key"),
        ({"secret_key": "x" * 257}, "secret_key"),
        ({"region": "eu central"}, "region"),
    ],
)
async def test_bad_repository_is_refused(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, changes: dict[str, str], field: str
) -> None:
    """A clashing or path-like name, a URL that is not s3:/rest: over https or sftp:, missing or
    overlong keys, or a bad region is refused next to its field, and nothing is stored."""
    await signed_in_owner(client, admin, clock)
    response = await post(client, f"{PAGE}/repositories", {**S3_REPOSITORY, **changes})
    assert response.status_code == 400
    assert f'id="f-{field}" ' in response.text and 'aria-invalid="true"' in response.text
    assert SECRET_KEY not in response.text
    assert await setting("repositories") is None
    assert "backup.repository.add" not in await actions()


async def test_duplicate_repository_name_is_refused_and_html_is_escaped(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """A second repository of the same name is refused; a name with markup comes back escaped."""
    await signed_in_owner(client, admin, clock)
    await post(client, f"{PAGE}/repositories", S3_REPOSITORY)
    again = await post(
        client, f"{PAGE}/repositories", {**S3_REPOSITORY, "url": S3_REPOSITORY["url"] + "2"}
    )
    assert again.status_code == 400 and "exists already" in again.text
    marked = await post(client, f"{PAGE}/repositories", {**S3_REPOSITORY, "name": '"><b>x</b>'})
    assert marked.status_code == 400
    assert "<b>x</b>" not in marked.text and "&lt;b&gt;x&lt;/b&gt;" in marked.text
    assert len(await setting("repositories")) == 1


async def test_added_repository_can_be_removed_but_not_the_settings_files(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, settings: Settings
) -> None:
    """Removing an added repository takes it out of use; one from the settings file cannot be
    removed on the page."""
    await signed_in_owner(client, admin, clock)
    await post(client, f"{PAGE}/repositories", S3_REPOSITORY)
    refused = await post(client, f"{PAGE}/repositories/local/remove", {})
    assert refused.status_code == 404
    response = await post(client, f"{PAGE}/repositories/offsite-eu/remove", {})
    assert response.status_code == 303
    assert await setting("repositories") == []
    assert [t.name for t in await repositories.targets(settings)] == ["local"]
    assert (await actions())[0] == "backup.repository.remove"


# --- what the page shows -------------------------------------------------------------------------


async def test_page_shows_points_drill_evidence_jobs_alerts_and_sizes(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Recovery points with age and size, the last drill's checks, failing alerts, recent jobs
    with shortened errors and a server-drawn size chart are on the page, escaped."""
    now = clock()
    await RecoveryPointCopy.insert(
        RecoveryPointCopy(
            point_id="rp-20261128-aaaa",
            repository="local",
            copy_key="rp-20261128-aaaa@local",
            taken_at=now - dt.timedelta(hours=26),
            db_snapshot="d1",
            files_snapshot="f1",
            object_count=1234,
            object_bytes=5_600_000_000,
            seen_at=now,
        )
    ).run()
    report = {
        "checks": [
            {"check": "row counts", "ok": True, "detail": 42},
            {"check": "sampled objects match their SHA-256", "ok": False, "detail": "<i>bad</i>"},
        ],
        "failure": "sampled objects match their SHA-256: <i>bad</i>",
    }
    await DrillReport.insert(
        DrillReport(
            repository="local",
            point_id="rp-20261128-aaaa",
            started_at=now - dt.timedelta(hours=1),
            finished_at=now - dt.timedelta(minutes=50),
            passed=False,
            rto_seconds=600.0,
            rpo_seconds=93600.0,
            report=json.dumps(report),
        )
    ).run()
    await BackupJob.insert(
        BackupJob(
            kind="check",
            repository="local",
            slot="check:local:2026-11-29",
            state="failed",
            attempts=4,
            not_before=now,
            error="repository damaged " + "y" * 1000 + " END-OF-ERROR",
            created_at=now,
            finished_at=now,
        )
    ).run()
    await BackupAlert.insert(
        BackupAlert(key="check:local", failing=True, since=now, message="pack <b>42</b> broken")
    ).run()
    await RepositorySample.insert(
        RepositorySample(
            repository="local", at=now - dt.timedelta(days=2), stored_bytes=10**9, snapshots=2
        ),
        RepositorySample(repository="local", at=now, stored_bytes=2 * 10**9, snapshots=4),
    ).run()

    await signed_in_owner(client, admin, clock)
    page = (await client.get(PAGE)).text
    assert "rp-20261128-aaaa" in page and "1234" in page and "5.6 GB" in page
    assert "26 h 0 min" in page
    assert "row counts" in page and "10 min" in page and "failed" in page
    assert "&lt;i&gt;bad&lt;/i&gt;" in page and "<i>bad</i>" not in page
    assert "Repository check of “local”" in page and "&lt;b&gt;42&lt;/b&gt;" in page
    assert "repository damaged" in page and "END-OF-ERROR" not in page
    polyline = re.search(r'<polyline [^>]*points="([^"]+)"', page)
    assert polyline and len(polyline.group(1).split()) == 2
    assert "2.0 GB now" in page
    for kind in ("backup", "check", "prune", "drill"):
        assert f"<td>{kind}</td>" in page
    assert "<script" not in page.split("</head>", 1)[1]


def test_next_runs_follow_the_schedule_in_its_time_zone() -> None:
    """Next runs are the next daily and weekly times in the schedule's zone; drills take turns
    by ISO week like the scheduler."""
    schedule = BackupSettings(
        timezone="Europe/Berlin",
        daily_at="02:30",
        check_at="05:00",
        prune_weekday="sunday",
        prune_at="04:00",
        drill_weekday="saturday",
        drill_at="06:00",
    )
    # Saturday 2026-11-28 04:00 in Berlin (03:00 UTC).
    now = dt.datetime(2026, 11, 28, 3, 0, tzinfo=dt.UTC)
    runs = {run.kind: run for run in next_runs(now, schedule, ["local", "offsite"])}
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    assert {kind: run.at for kind, run in runs.items()} == {
        "backup": dt.datetime(2026, 11, 29, 2, 30, tzinfo=berlin),
        "check": dt.datetime(2026, 11, 28, 5, 0, tzinfo=berlin),
        "prune": dt.datetime(2026, 11, 29, 4, 0, tzinfo=berlin),
        "drill": dt.datetime(2026, 11, 28, 6, 0, tzinfo=berlin),
    }
    week = dt.date(2026, 11, 28).isocalendar()[1]
    assert runs["drill"].repositories == [["local", "offsite"][week % 2]]
    assert runs["check"].repositories == ["local", "offsite"]
    assert runs["backup"].repositories == ["local"]


async def test_home_page_tells_admins_what_backups_need(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Until the password is stored, and while a check fails, an admin's home page says so and
    links to the backups page; once both are dealt with it says nothing."""
    await signed_in_owner(client, admin, clock)
    home = await client.get("/")
    assert "store the repository password" in home.text
    assert "Backups need attention" not in home.text
    await alerts.report(
        "copy:offsite",
        ok=False,
        message="Off-site copy failed",
        notifier=alerts.Notifier([], ""),
        now=clock(),
    )
    await post(client, f"{PAGE}/password-stored", {})
    home = await client.get("/")
    assert "store the repository password" not in home.text
    assert "Backups need attention" in home.text and "offsite" in home.text
    await alerts.report(
        "copy:offsite", ok=True, message="works", notifier=alerts.Notifier([], ""), now=clock()
    )
    home = await client.get("/")
    assert "Backups need attention" not in home.text


async def test_two_admins_pressing_back_up_now_at_once_queue_one_backup(
    clean_db: None, settings: Settings, clock: FakeClock
) -> None:
    import asyncio

    from appliance.audit.service import Actor
    from appliance.backups.admin import request_run

    async def press(i: int) -> bool:
        # A second apart: slots of their own, so only the lock can keep it to one.
        at = clock() + dt.timedelta(seconds=i)
        actor = Actor(id=None, name=f"admin{i}")
        return await request_run(settings, "backup", actor=actor, address="192.0.2.1", now=at)

    results = await asyncio.gather(*(press(i) for i in range(4)))
    assert sorted(results) == [False, False, False, True]
    assert await BackupJob.count().where(BackupJob.kind == "backup").run() == 1
