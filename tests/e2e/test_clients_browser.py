"""Clients and galleries in a real browser: a photographer's everyday set-up of a shoot."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import Appliance, Tab
from tests.e2e.test_staff_browser import _owner_signs_in

pytestmark = pytest.mark.e2e


def test_owner_records_a_client_and_prepares_a_published_gallery_with_sets(
    appliance: Appliance, tab: Tab
) -> None:
    """A client is created and found by search; their gallery gets sets in order and goes live."""
    page, base = tab.page, appliance.base_url
    _owner_signs_in(appliance, tab)

    page.get_by_role("link", name="Clients").click()
    page.get_by_role("link", name="New client").click()
    page.get_by_label("Name", exact=True).fill("Anna Berg")
    page.get_by_label("E-mail (optional)").fill("anna@example.org")
    page.get_by_label("Phone (optional)").fill("+49 170 1234567")
    page.get_by_label("Postal address (optional)").fill("Hauptstr. 1\n10115 Berlin")
    page.get_by_label("Notes (only staff see them)").fill("Wedding at the lake.\nFilm look.")
    page.get_by_role("button", name="Create client").click()
    expect(page.locator("h1")).to_have_text("Anna Berg")
    tab.screenshot("client")

    page.get_by_role("link", name="Clients", exact=True).click()
    page.get_by_label("Search by name, e-mail or phone").fill("berg")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("link", name="Anna Berg")).to_be_visible()
    tab.screenshot("client-search")
    page.get_by_role("link", name="Anna Berg").click()

    page.get_by_role("link", name="New gallery").click()
    page.get_by_label("Title").fill("Wedding at the lake")
    page.get_by_label("Date of the shoot (optional)").fill("2027-06-12")
    page.get_by_label("Description (optional, shown to the client)").fill("Our day.")
    page.get_by_role("button", name="Create gallery").click()
    expect(page.locator("h1")).to_contain_text("Wedding at the lake")
    expect(page.locator("h1")).to_contain_text("draft")

    for name in ("Ceremony", "Party"):
        page.get_by_label("New set").fill(name)
        page.get_by_role("button", name="Add set").click()
    page.get_by_role("button", name="Move Party up").click()
    names = [field.input_value() for field in page.locator("ol.sets input[name=set_name]").all()]
    assert names == ["Highlights", "Party", "Ceremony"]
    page.get_by_role("button", name="Publish").click()
    expect(page.locator("h1")).to_contain_text("published")
    tab.screenshot("gallery")

    page.get_by_role("link", name="Anna Berg").click()
    expect(page.get_by_role("link", name="Wedding at the lake")).to_be_visible()
    page.get_by_role("link", name="Galleries", exact=True).click()
    expect(page.get_by_role("link", name="Wedding at the lake")).to_be_visible()
    tab.screenshot("galleries")

    assert all(url.startswith(base) or url.startswith("data:") for url in tab.requests)
    assert tab.console_errors == []


def test_photographer_uploads_photos_and_sees_the_progress(
    appliance: Appliance, tab: Tab, tmp_path: Path
) -> None:
    """Two photos chosen in the browser upload in chunks with progress and appear in the set."""
    import pyvips

    page = tab.page
    _owner_signs_in(appliance, tab)
    page.get_by_role("link", name="Clients").click()
    page.get_by_role("link", name="New client").click()
    page.get_by_label("Name", exact=True).fill("Ben Okafor")
    page.get_by_role("button", name="Create client").click()
    page.get_by_role("link", name="New gallery").click()
    page.get_by_label("Title").fill("Portraits")
    page.get_by_role("button", name="Create gallery").click()

    files = []
    for number, (width, height) in enumerate(((1200, 800), (800, 1200)), start=1):
        path = tmp_path / f"DSC_{number:04d}.jpg"
        image = (
            pyvips.Image.xyz(width, height)[0]
            .cast("uchar")
            .bandjoin(
                [
                    pyvips.Image.xyz(width, height)[1].cast("uchar"),
                    (pyvips.Image.black(width, height) + 40 * number).cast("uchar"),
                ]
            )
        )
        image.write_to_file(str(path))
        files.append(path)
    page.get_by_label("Into set").select_option(label="Highlights")
    page.get_by_label("Photos (JPEG, PNG, TIFF, WebP, HEIC)").set_input_files(files)
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-batch-text")).to_have_text("All 2 uploaded.")
    assert page.locator("#upload-batch").get_attribute("value") == "100"
    tab.screenshot("uploaded")
    page.wait_for_load_state("load")
    expect(page.locator("table.photos")).to_contain_text("DSC_0001.jpg")
    expect(page.locator("table.photos")).to_contain_text("800 \u00d7 1200")
    tab.screenshot("photos")
    assert tab.console_errors == []
