"""Disaster recovery end to end: galleries with real photos, a recovery point taken with
`appliance backup`, the database and the object store lost, `appliance restore`, and the
restored appliance serving the same galleries with byte-identical originals."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from litestar import Litestar

from appliance.config import Settings
from appliance.db.engine import _with_database
from appliance.galleries.tables import Photo
from tests.benchmarks.harness import cookie_browser
from tests.conftest import FakeClock
from tests.integration.flows import Admin, sign_in
from tests.integration.sharing_flows import file_urls, published_gallery, share
from tests.integration.test_clients import ANNA, BEN, signed_in_owner
from tests.processes import AppProcess, free_port


@pytest.fixture
async def lost_database(postgres_server: str) -> AsyncIterator[str]:
    """An empty database of the test's own, where the appliance is brought back: the live one
    as it is after a disk failure, with nothing in it. Dropped afterwards."""
    name = f"appliance_dr_{secrets.token_hex(4)}_test"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(postgres_server)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    await run(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(postgres_server, name)
    finally:
        await run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _env(settings: Settings, database_url: str, data_dir: Path, backups: Path) -> dict[str, str]:
    """The appliance's settings as a studio's deployment gives them, in environment variables;
    the repository and its password are kept outside the data folder that is lost."""
    return {
        "APPLIANCE_DATABASE__URL": database_url,
        "APPLIANCE_PATHS__DATA_DIR": str(data_dir),
        "APPLIANCE_SECURITY__SECRET_KEY": settings.security.secret_key,
        "APPLIANCE_LOGGING__LEVEL": "WARNING",
        "APPLIANCE_BACKUPS__PASSWORD_FILE": str(backups / "password"),
        "APPLIANCE_BACKUPS__REPOSITORIES": json.dumps(
            [{"name": "primary", "url": str(backups / "repository")}]
        ),
    }


async def _appliance(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run ``python -m appliance ARGS``; its output, after checking it succeeded."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "appliance", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_restore_brings_back_the_same_galleries_with_byte_identical_originals(
    client: httpx.AsyncClient,
    app: Litestar,
    admin: Admin,
    clock: FakeClock,
    settings: Settings,
    lost_database: str,
    tmp_path: Path,
) -> None:
    """After `appliance backup`, losing the database and the photos, and `appliance restore
    --yes` onto an empty database and data folder, a new web process serves both clients'
    galleries through their links with every original byte for byte, and the owner signs in
    and finds both galleries."""
    await signed_in_owner(client, admin, clock)
    anna_gallery, anna_photos = await published_gallery(
        client, app, clock, ANNA, ["a.jpg", "b.jpg"], title="Anna's wedding"
    )
    ben_gallery, ben_photos = await published_gallery(
        client, app, clock, BEN, ["c.jpg"], title="Ben's portraits"
    )
    links = {
        await share(client, anna_gallery, download_original="on"): anna_photos,
        await share(client, ben_gallery, recipient="Ben", download_original="on"): ben_photos,
    }
    store = app.state.store
    originals = {
        row["id"]: b"".join([chunk async for chunk in store.get(row["original_key"])])
        for row in await Photo.select(Photo.id, Photo.original_key).run()
    }
    assert len(originals) == 3

    backups = tmp_path / "backups"
    made = await _appliance(
        ["backup"], _env(settings, settings.database.url, settings.data_dir, backups), tmp_path
    )
    assert made.startswith("recovery point made")

    # The disaster: a new, empty database and an empty data folder (no photos).
    restored_dir = tmp_path / "restored-data"
    env = _env(settings, lost_database, restored_dir, backups)
    restored = await _appliance(["restore", "--yes"], env, tmp_path)
    assert ", 9 objects " in restored  # three originals, their thumbnails and previews

    web = AppProcess(
        ["web", "--no-migrate", "--no-setup-token"], workdir=tmp_path, port=free_port(), env=env
    )
    try:
        await asyncio.to_thread(web.wait_ready)
        async with cookie_browser(web.url) as visitor:
            for path, photos in links.items():
                page = await visitor.get(path)
                assert page.status_code == 200, page.text[-2000:]
                urls = await file_urls(visitor, path, "original")
                assert sorted(urls) == sorted(photos)
                for photo, url in urls.items():
                    got = await visitor.get(url)
                    assert got.status_code == 200, url
                    assert got.content == originals[photo]
        async with cookie_browser(web.url) as owner:
            signed = await sign_in(
                owner, admin.username, admin.password, code=admin.recovery_codes[0]
            )
            assert signed.headers.get("location") == "/", signed.text[-2000:]
            listing = (await owner.get("/galleries")).text
            assert "Anna&#39;s wedding" in listing or "Anna's wedding" in listing
            assert "Ben&#39;s portraits" in listing or "Ben's portraits" in listing
    finally:
        if web.process.poll() is None:
            web.stop()
