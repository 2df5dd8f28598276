"""A shoot end to end in Chromium: upload, share with a password, the client chooses and
downloads, the photographer withdraws the link and every URL it handed out stops working."""

from __future__ import annotations

import io
import re
import time
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.e2e.conftest import Appliance, Tab
from tests.e2e.test_staff_browser import _owner_signs_in

pytestmark = pytest.mark.e2e

PASSWORD = "harbour-blue-7"
DERIVATIVES_SECONDS = 60.0


def _photos(folder: Path, count: int) -> list[Path]:
    import pyvips

    files = []
    for number in range(1, count + 1):
        width, height = (1200, 800) if number % 2 else (800, 1200)
        image = (
            pyvips.Image.xyz(width, height)[0]
            .cast("uchar")
            .bandjoin(
                [
                    pyvips.Image.xyz(width, height)[1].cast("uchar"),
                    (pyvips.Image.black(width, height) + 50 * number).cast("uchar"),
                ]
            )
        )
        path = folder / f"DSC_{number:04d}.jpg"
        image.write_to_file(str(path))
        files.append(path)
    return files


def _photographer_uploads_and_publishes(appliance: Appliance, tab: Tab, files: list[Path]) -> None:
    page = tab.page
    _owner_signs_in(appliance, tab)
    page.get_by_role("link", name="Clients").click()
    page.get_by_role("link", name="New client").click()
    page.get_by_label("Name", exact=True).fill("Anna Berg")
    page.get_by_role("button", name="Create client").click()
    page.get_by_role("link", name="New gallery").click()
    page.get_by_label("Title").fill("Wedding at the lake")
    page.get_by_role("button", name="Create gallery").click()
    page.get_by_label("Photos (JPEG, PNG, TIFF, WebP, HEIC)").set_input_files(files)
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-batch-text")).to_have_text(f"All {len(files)} uploaded.")
    tab.screenshot("uploaded")
    # The worker makes thumbnails and previews in the background.
    deadline = time.monotonic() + DERIVATIVES_SECONDS
    while page.locator("table.photos td", has_text="ready").count() < len(files):
        if time.monotonic() > deadline:
            pytest.fail(f"derivatives not ready in time:\n{appliance.log_tail()}")
        time.sleep(0.5)
        page.reload()
    page.get_by_role("button", name="Publish").click()
    expect(page.locator("h1")).to_contain_text("published")


def _share_with_password(tab: Tab) -> str:
    page = tab.page
    page.get_by_role("link", name="Share with someone").click()
    page.get_by_label("Recipient's name").fill("Anna")
    page.get_by_label("Password (optional)").fill(PASSWORD)
    page.get_by_label("download the originals").check()
    page.get_by_role("button", name="Create link").click()
    expect(page.locator("h1")).to_have_text("Link for Anna")
    url = page.get_by_label("Link", exact=True).input_value()
    tab.screenshot("link")
    return url


def test_client_opens_the_link_chooses_favourites_downloads_and_loses_access_on_revoke(
    appliance: Appliance, tab: Tab, second_tab: Tab, tmp_path: Path
) -> None:
    files = _photos(tmp_path, 3)
    _photographer_uploads_and_publishes(appliance, tab, files)
    url = _share_with_password(tab)
    assert url.startswith(appliance.base_url + "/s/")

    client = second_tab.page
    client.goto(url)
    expect(client.locator("h1")).to_have_text("Wedding at the lake")
    client.get_by_label("Password").fill("wrong-password")
    client.get_by_role("button", name="Open the gallery").click()
    expect(client.get_by_role("alert")).to_contain_text("password is not right")
    client.get_by_label("Password").fill(PASSWORD)
    client.get_by_role("button", name="Open the gallery").click()
    tiles = client.locator("ul.grid li.tile")
    expect(tiles).to_have_count(3)
    for image in client.locator("ul.grid img").all():
        expect(image).to_have_js_property("complete", True)
        assert image.evaluate("img => img.naturalWidth") > 0
    second_tab.screenshot("gallery")

    # The lightbox: open the first photo, favourite it with F, go right, favourite again.
    # Uploads finish in any order; the grid shows them in the order they arrived.
    first_two = [client.locator("ul.grid img").nth(n).get_attribute("alt") or "" for n in (0, 1)]
    client.locator("ul.grid a.open").first.click()
    lightbox = client.get_by_role("dialog", name="Photo")
    expect(lightbox).to_be_visible()
    expect(lightbox.locator(".lb-count")).to_contain_text("1 / 3")
    client.keyboard.press("f")
    client.keyboard.press("ArrowRight")
    expect(lightbox.locator(".lb-count")).to_contain_text("2 / 3")
    client.keyboard.press("f")
    expect(lightbox.locator(".lb-fav")).to_have_attribute("aria-pressed", "true")
    second_tab.screenshot("lightbox")
    client.keyboard.press("Escape")
    expect(lightbox).to_be_hidden()
    expect(client.locator("li.tile.chosen")).to_have_count(2)
    expect(client.locator("[data-list-count]").first).to_have_text("2")

    # The choice survives a reload (it is on the server), then goes to the studio.
    client.reload()
    expect(client.locator("li.tile.chosen")).to_have_count(2)
    client.get_by_label("Message to the studio (optional)").fill("These two for the wall")
    client.get_by_role("button", name="Send “Favourites” to the studio").click()
    expect(client.get_by_role("status")).to_contain_text("sent to the studio")

    with client.expect_download() as started:
        client.get_by_role("link", name="Download all originals").click()
    archive_path = tmp_path / "gallery.zip"
    started.value.save_as(archive_path)
    archive = zipfile.ZipFile(io.BytesIO(archive_path.read_bytes()))
    assert sorted(archive.namelist()) == [path.name for path in files]
    assert archive.read("DSC_0002.jpg") == files[1].read_bytes()

    # The photographer sees the selection, then withdraws the link.
    staff = tab.page
    staff.get_by_role("link", name="Back to the gallery").click()
    selection = staff.locator(".selection")
    expect(selection).to_contain_text("These two for the wall")
    expect(selection.locator("textarea")).to_have_value(", ".join(sorted(first_two)))
    tab.screenshot("selection-received")
    staff.once("dialog", lambda dialog: dialog.accept())
    staff.get_by_role("button", name="Withdraw the link of Anna").click()
    expect(staff.locator("tr.link-revoked")).to_contain_text("revoked")

    handed_out = sorted({u for u in second_tab.requests if "/media/share/" in u})
    assert len(handed_out) >= 3 + 2  # three thumbnails and the previews the lightbox showed
    for address in handed_out:
        refused = second_tab.context.request.get(address)
        assert refused.status in (403, 404), (address, refused.status)
    client.goto(url)
    expect(client.locator("main")).to_contain_text("withdrawn")
    second_tab.screenshot("withdrawn")

    assert all(
        u.startswith(appliance.base_url) or u.startswith("data:") for u in second_tab.requests
    )
    # The only errors are the two answers the test asked for: the wrong password (400) and
    # the withdrawn link (404); no script error, no refused resource.
    expected = [f"status of 400 (Bad Request) ({url}/unlock)", f"status of 404 (Not Found) ({url})"]
    assert len(second_tab.console_errors) == 2
    assert all(any(e.endswith(x) for x in expected) for e in second_tab.console_errors)
    assert tab.console_errors == []


def test_the_gallery_works_on_a_phone(
    appliance: Appliance, tab: Tab, browser: Browser, tmp_path: Path
) -> None:
    """A phone-sized screen: three photos a row, nothing wider than the screen, swipe pages
    the lightbox, a tap marks a favourite."""
    _photographer_uploads_and_publishes(appliance, tab, _photos(tmp_path, 4))
    tab.page.get_by_role("link", name="Share with someone").click()
    tab.page.get_by_label("Recipient's name").fill("Ben")
    tab.page.get_by_role("button", name="Create link").click()
    url = tab.page.get_by_label("Link", exact=True).input_value()

    phone = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True)
    try:
        page = phone.new_page()
        page.goto(url)
        tiles = page.locator("ul.grid li.tile")
        # Three come with the page (the e2e appliance's page size); the fourth is loaded when
        # the end of the grid comes near.
        assert page.locator("#more").count() == 1 or tiles.count() == 4
        page.mouse.wheel(0, 2000)
        expect(tiles).to_have_count(4)
        expect(page.locator("#more")).to_have_count(0)
        tops = [tile.bounding_box()["y"] for tile in tiles.all()]  # type: ignore[index]
        assert tops[0] == tops[1] == tops[2] < tops[3]
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        tiles.nth(1).locator(".fav").tap()
        expect(tiles.nth(1)).to_have_class(re.compile(r"\bchosen\b"))
        tiles.nth(0).locator("a.open").tap()
        counter = page.locator(".lb-count")
        expect(counter).to_contain_text("1 / 4")
        expect(page.locator("#lightbox img")).to_have_js_property("complete", True)
        box = page.locator("#lightbox").bounding_box()
        assert box is not None
        middle_y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] * 0.8, middle_y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.2, middle_y, steps=5)
        page.mouse.up()
        expect(counter).to_contain_text("2 / 4")
        expect(page.locator(".lb-fav")).to_have_attribute("aria-pressed", "true")
        page.screenshot(path=tab.shots / "phone-lightbox.png")
    finally:
        phone.close()
