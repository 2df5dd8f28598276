"""Staff access to a client's data is audited (who, what, when, from where) once per page or
download, never per thumbnail, and the client's own data export lists every such access; the
export buttons appear for the people allowed to use them and queue a job."""

from __future__ import annotations

import io
import json
import re
import zipfile
from typing import Any

import httpx
from litestar import Litestar

from appliance.accounts.tables import StaffUser
from appliance.audit.service import AuditRecord, list_entries, verify_chain
from appliance.exports import service as exports
from appliance.exports.tables import ExportJob
from appliance.galleries import media
from appliance.galleries import service as galleries
from tests.conftest import CLIENT_ADDRESS, FakeClock, make_client
from tests.integration.flows import Admin, csrf_of, sign_in, submit
from tests.integration.sharing_flows import file_urls, published_gallery, share, visitor
from tests.integration.test_clients import ANNA, BEN, create, signed_in_owner
from tests.integration.test_sign_in import invite_photographer

ACCESS_ACTIONS = ("client.view", "gallery.view", "photo.download", "gallery.download")
PIA_PASSWORD = "velvet compass orchard 77 river"


async def accesses(after: int = 0) -> list[AuditRecord]:
    """The audit entries of staff access after entry ``after``, oldest first."""
    entries = await list_entries(limit=500)
    return [e for e in reversed(entries) if e.action in ACCESS_ACTIONS and e.seq > after]


async def last_seq() -> int:
    entries = await list_entries(limit=1)
    return entries[0].seq if entries else 0


async def export_archive(app: Litestar, export_id: int) -> zipfile.ZipFile:
    """The built archive of an export, read straight from the object store."""
    row = await ExportJob.select(ExportJob.object_key).where(ExportJob.id == export_id).first()
    assert row is not None and row["object_key"], "the export was not built"
    data = b"".join([chunk async for chunk in app.state.store.get(row["object_key"])])
    return zipfile.ZipFile(io.BytesIO(data))


async def ask_export(browser: httpx.AsyncClient, page: str, action: str) -> httpx.Response:
    """Press the export button on ``page``: the form must be there, with its CSRF field."""
    opened = await browser.get(page)
    assert opened.status_code == 200, opened.text[-2000:]
    form = re.search(
        rf'<form method="post" action="{re.escape(action)}"[^>]*>(.*?)</form>', opened.text, re.S
    )
    assert form, f"no form posting to {action} on {page}"
    return await browser.post(action, data={"_csrf": csrf_of(form.group(1))})


async def test_views_and_downloads_are_audited_once_each_and_listed_in_the_clients_export(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """Opening Anna's page and her gallery of three photos (thumbnails loaded) writes one entry
    each; an original, and a ZIP and an original through her link, fetched by staff one each;
    Anna's own downloads none. Her export's access log lists them all with who and when, and
    Ben's lists none of them."""
    await signed_in_owner(client, admin, clock)
    gallery, photos = await published_gallery(client, app, clock, ANNA, ["a.jpg", "b.jpg", "c.jpg"])
    anna = (await galleries.get_gallery(gallery)).client_id
    ben = await create(client, BEN)
    link = await share(client, gallery, download_original="on")
    start = await last_seq()  # setting up opened the pages too: count from here

    assert (await client.get(f"/clients/{anna}")).status_code == 200
    page = await client.get(f"/galleries/{gallery}")
    thumbs = re.findall(r'<img src="(/media/staff/\d+/thumb\?[^"]+)"', page.text)
    assert len(thumbs) == len(photos)
    for thumb in thumbs:
        assert (await client.get(thumb.replace("&amp;", "&"))).status_code == 200
    original = media.media_url(
        app.state.secret_key, scope="staff", photo_id=photos[1], variant="original", now=clock()
    )
    got = await client.get(original)
    assert got.status_code == 200 and got.headers["content-disposition"].startswith("attachment")
    assert (await client.get(link)).status_code == 200  # staff checking the client's link
    assert (await client.get(f"{link}/download?size=original")).status_code == 200
    through_link = (await file_urls(client, link, "original"))[photos[2]]
    assert (await client.get(through_link)).status_code == 200
    async with visitor(app) as anna_browser:  # Anna's own downloads are not staff access
        assert (await anna_browser.get(link)).status_code == 200
        assert (await anna_browser.get(f"{link}/download?size=web")).status_code == 200
        own = (await file_urls(anna_browser, link, "original"))[photos[2]]
        assert (await anna_browser.get(own)).status_code == 200

    logged = await accesses(start)
    assert [(e.action, e.target) for e in logged] == [
        ("client.view", f"client:{anna}"),
        ("gallery.view", f"gallery:{gallery}"),
        ("photo.download", f"gallery:{gallery}"),
        ("gallery.download", f"gallery:{gallery}"),
        ("photo.download", f"gallery:{gallery}"),
    ]
    assert all(e.actor == admin.username and e.address == CLIENT_ADDRESS for e in logged)
    assert logged[2].details["photo"] == photos[1]
    assert logged[3].details["photos"] == len(photos) and logged[3].details["size"] == "original"
    assert logged[4].details["photo"] == photos[2] and logged[4].details["link"] > 0
    assert (await verify_chain()).intact

    asked = await ask_export(client, f"/clients/{anna}", f"/exports/client/{anna}")
    assert asked.status_code == 303
    assert await exports.run_pending(app.state.settings, app.state.store, clock()) == 1
    export_id = int(asked.headers["location"].rsplit("/", 1)[1])
    archive = await export_archive(app, export_id)
    listed = json.loads(archive.read("access_log.json"))
    seen = [(a["who"], a["action"], a["target"]) for a in listed]
    for entry in logged:
        assert (admin.username, entry.action, entry.target) in seen
    assert ("owner", "export.request", f"client:{anna}") in seen
    summary = archive.read("summary.html").decode()
    assert "photo.download" in summary and "gallery.download" in summary

    await client.get(f"/clients/{ben}")
    asked = await ask_export(client, f"/clients/{ben}", f"/exports/client/{ben}")
    await exports.run_pending(app.state.settings, app.state.store, clock())
    bens = json.loads(
        (await export_archive(app, int(asked.headers["location"].rsplit("/", 1)[1]))).read(
            "access_log.json"
        )
    )
    assert {a["target"] for a in bens} == {f"client:{ben}"}


async def test_a_missing_client_gallery_or_photo_logs_no_access(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """A 404 is not an access: nothing is written for pages or files that do not exist."""
    await signed_in_owner(client, admin, clock)
    assert (await client.get("/clients/999")).status_code == 404
    assert (await client.get("/clients/999/edit")).status_code == 404
    assert (await client.get("/galleries/999")).status_code == 404
    missing = media.media_url(
        app.state.secret_key, scope="staff", photo_id=999, variant="original", now=clock()
    )
    assert (await client.get(missing)).status_code == 404
    assert await accesses() == []


async def member_id(username: str) -> int:
    row = await StaffUser.select(StaffUser.id).where(StaffUser.username == username).first()
    assert row is not None
    return int(row["id"])


async def queued(kind: str, subject_id: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await ExportJob.select(
        ExportJob.state, ExportJob.requested_by_name
    ).where((ExportJob.kind == kind) & (ExportJob.subject_id == subject_id))
    return rows


async def test_export_buttons_show_for_the_right_people_and_queue_a_job(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """The client page offers every staff member the client's export; the account page each
    member their own; the staff list admins anyone's. A photographer's own and a client's
    export queue; another member's is refused."""
    invitation = await invite_photographer(client, admin, clock)  # the owner stays signed in
    anna = await create(client, ANNA)
    async with make_client(app, "192.0.2.20") as pia:
        joined = await submit(
            pia,
            invitation,
            {
                "username": "pia",
                "display_name": "Pia Photographer",
                "password": PIA_PASSWORD,
                "confirm": PIA_PASSWORD,
            },
        )
        assert joined.status_code == 200
        owner_id, pia_id = await member_id("owner"), await member_id("pia")

        staff_list = (await client.get("/admin/users")).text
        for someone in (owner_id, pia_id):
            assert f'action="/exports/staff/{someone}"' in staff_list
        asked = await ask_export(client, "/admin/users", f"/exports/staff/{pia_id}")
        assert asked.status_code == 303 and re.fullmatch(r"/exports/\d+", asked.headers["location"])
        assert await queued("staff", pia_id) == [{"state": "queued", "requested_by_name": "owner"}]
        own = await ask_export(client, "/account", f"/exports/staff/{owner_id}")
        assert own.status_code == 303

        assert (await sign_in(pia, "pia", PIA_PASSWORD)).headers["location"] == "/"
        account = (await pia.get("/account")).text
        assert f'action="/exports/staff/{pia_id}"' in account
        assert f'action="/exports/staff/{owner_id}"' not in account
        assert (await pia.get("/admin/users")).status_code == 403
        token = csrf_of(account)
        refused = await pia.post(f"/exports/staff/{owner_id}", data={"_csrf": token})
        assert refused.status_code == 403 and "Only an admin" in refused.text
        assert await queued("staff", owner_id) == [
            {"state": "queued", "requested_by_name": "owner"}
        ]
        for page, action in (
            ("/account", f"/exports/staff/{pia_id}"),
            (f"/clients/{anna}", f"/exports/client/{anna}"),
        ):
            answered = await ask_export(pia, page, action)
            assert answered.status_code == 303, answered.text[-2000:]
            job = await pia.get(answered.headers["location"])
            assert job.status_code == 200 and 'id="export-state">queued<' in job.text
        assert await queued("client", anna) == [{"state": "queued", "requested_by_name": "pia"}]

    assert await exports.run_pending(app.state.settings, app.state.store, clock()) == 3
    states = await ExportJob.select(ExportJob.kind, ExportJob.subject_id, ExportJob.state)
    assert {(r["kind"], r["subject_id"], r["state"]) for r in states} == {
        ("staff", pia_id, "ready"),
        ("staff", owner_id, "ready"),
        ("client", anna, "ready"),
    }
    names = (await export_archive(app, await latest_export("staff", pia_id))).namelist()
    assert "data/staff_user.json" in names and "summary.html" in names


async def latest_export(kind: str, subject_id: int) -> int:
    row = (
        await ExportJob.select(ExportJob.id)
        .where((ExportJob.kind == kind) & (ExportJob.subject_id == subject_id))
        .order_by(ExportJob.id, ascending=False)
        .first()
    )
    assert row is not None
    return int(row["id"])
