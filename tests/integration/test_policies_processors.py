"""The sub-processors page lists what is configured (the SMTP relay, off-site backup
repositories, an external object store, payment providers: none) by purpose and host, and
never shows a credential, a user name, a bucket or a path."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from litestar import Litestar

from appliance.audit.service import Actor
from appliance.backups import admin as backups
from appliance.config import RepositorySettings, Settings
from appliance.notify.tables import NotifySetting
from appliance.policies.processors import host_of
from tests.integration.flows import Admin

SECRETS = (
    "relay-login",
    "relay-secret-pw",
    "AKIAEXAMPLEKEY",
    "s3cr3t-backup-key",
    "lumen-private-bucket",
    "hunter2pass",
    "backupuser",
    "/srv/restic",
    "/studio",
    "objects-key",
    "objects-secret",
    "photo-bucket",
    "saved-secret",
    "lumen-b2-bucket",
    "lumen-gcs-bucket",
    "s3:",
    "rest:",
    "sftp:",
)


def configured(settings: Settings, tmp_path: Path) -> Settings:
    """A relay with a login in the settings file, a local primary, an off-site S3 and REST
    repository, a NAS on the LAN, and an object store at a cloud provider."""
    notify = msgspec.structs.replace(
        settings.notify,
        smtp_host="smtp.relay-eu.example",
        smtp_username="relay-login",
        smtp_password="relay-secret-pw",
        mail_from="studio@lumen.example",
    )
    repositories = [
        RepositorySettings(name="local", url=str(tmp_path / "repository")),
        RepositorySettings(
            name="cloud",
            url="s3:https://s3.eu-central-1.backupcloud.example/lumen-private-bucket",
            offsite=True,
            access_key="AKIAEXAMPLEKEY",
            secret_key="s3cr3t-backup-key",
            region="eu-central-1",
        ),
        RepositorySettings(
            name="partner",
            url="rest:https://backupuser:hunter2pass@rest.offsite-partner.example:8000/studio",
            offsite=True,
        ),
        RepositorySettings(name="nas", url="sftp:backupuser@nas.local:/srv/restic", offsite=True),
        RepositorySettings(name="b2", url="b2:lumen-b2-bucket:/studio", offsite=True),
        RepositorySettings(name="gcs", url="gs:lumen-gcs-bucket:/", offsite=True),
    ]
    storage = msgspec.structs.replace(
        settings.storage,
        backend="s3",
        endpoint="https://objects.cloud-eu.example",
        bucket="photo-bucket",
        access_key="objects-key",
        secret_key="objects-secret",
        region="eu-west-3",
    )
    return msgspec.structs.replace(
        settings,
        notify=notify,
        storage=storage,
        backups=msgspec.structs.replace(settings.backups, repositories=repositories),
    )


@contextlib.contextmanager
def serving(app: Litestar, settings: Settings) -> Iterator[None]:
    """The app answers with ``settings`` for the duration (the pages read them per request)."""
    before = app.state.settings
    app.state.settings = settings
    try:
        yield
    finally:
        app.state.settings = before


async def test_processors_follow_the_configuration_without_secrets(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, tmp_path: Path
) -> None:
    """Relay, off-site repositories (file and page) and the object store appear by host; the
    NAS on the LAN and the local primary do not; no key, login, bucket or path is shown."""
    settings = configured(app.state.settings, tmp_path)
    await backups.add_repository(
        settings,
        name="far",
        url="sftp:restic@sftp.far-away.example:/backups/studio",
        access_key="",
        secret_key="",
        region="",
        actor=Actor(id=None, name="owner"),
        address="192.0.2.10",
        now=dt.datetime.now(dt.UTC),
    )
    with serving(app, settings):
        page = (await client.get("/privacy/processors")).text
    rows = page.split("<h2>E-mail delivery</h2>")[1]
    email, rest = rows.split("<h2>Off-site backups</h2>")
    offsite, rest = rest.split("<h2>File storage</h2>")
    storage, payments = rest.split("<h2>Payments</h2>")
    assert "<code>smtp.relay-eu.example</code>" in email
    assert "<code>s3.eu-central-1.backupcloud.example</code> (region eu-central-1)" in offsite
    assert "<code>rest.offsite-partner.example</code>" in offsite
    assert "<code>sftp.far-away.example</code>" in offsite
    # Named by bucket in the repository: the provider is shown, never the bucket.
    assert "<code>Backblaze B2</code>" in offsite
    assert "<code>Google Cloud Storage</code>" in offsite
    assert "nas.local" not in page and str(tmp_path) not in page
    assert "<code>objects.cloud-eu.example</code> (region eu-west-3)" in storage
    assert "No payment provider is configured." in payments
    for secret in SECRETS:
        assert secret not in page, secret


async def test_the_relay_saved_by_admins_replaces_the_files_one(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, tmp_path: Path
) -> None:
    """With a relay saved on Admin → Notifications, that relay is the one listed; with only
    local services, each section says nothing leaves the studio."""
    await NotifySetting.insert(
        NotifySetting(
            key="smtp",
            value=msgspec.json.encode(
                {
                    "host": "mail.saved-relay.example",
                    "port": 465,
                    "security": "tls",
                    "username": "saved-login",
                    "password": "saved-secret",
                    "mail_from": "studio@lumen.example",
                    "mail_from_name": "Lumen",
                }
            ).decode(),
            updated_at=dt.datetime.now(dt.UTC),
        )
    ).run()
    with serving(app, configured(app.state.settings, tmp_path)):
        page = (await client.get("/privacy/processors")).text
    assert "<code>mail.saved-relay.example</code>" in page
    assert "smtp.relay-eu.example" not in page and "saved-login" not in page
    assert "saved-secret" not in page
    await NotifySetting.delete(force=True)
    calm = (await client.get("/privacy/processors")).text  # the test settings: all local
    assert "No outside mail relay is configured" in calm
    assert "No off-site backup repository is configured" in calm
    assert "stored on the studio&#39;s own server" in calm
    assert "<code>" not in calm


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("s3:https://s3.example.eu/bucket/path", "s3.example.eu"),
        ("s3:s3.amazonaws.com/bucket", "s3.amazonaws.com"),
        ("rest:https://user:pass@REST.example.org:8000/repo", "rest.example.org"),
        ("sftp:user@host.example:/srv/restic", "host.example"),
        ("sftp://user@host.example:2222//srv/restic", "host.example"),
        ("sftp:user@[2001:db8::1]:/srv", "2001:db8::1"),
        ("https://objects.example.eu", "objects.example.eu"),
        ("b2:studio-bucket:/restic", "Backblaze B2"),
        ("azure:container:/restic", "Microsoft Azure"),
        ("gs:studio-bucket:/", "Google Cloud Storage"),
        ("swift:container:/restic", "OpenStack Swift"),
        ("rclone:myremote:restic", "rclone remote"),
        ("/var/backups/restic", ""),
        ("relative/folder", ""),
    ],
)
def test_host_of_keeps_the_host_only(url: str, host: str) -> None:
    """Only the host of a repository or endpoint URL is kept: no user, password, port or path;
    for a repository named by bucket, the provider and never the bucket."""
    assert host_of(url) == host
