"""The browser page of `kenning serve`, driven in headless Chromium (Debian's, through Playwright):
upload a photo, see five answers, enrol a new individual from the page, identify another photo of it.

Chromium is the system's (`/usr/bin/chromium`, or KENNING_CHROMIUM); nothing is downloaded. CI
installs it (.ci/run); elsewhere the test skips and says why. Screenshots go to the test's folder,
or to KENNING_SCREENSHOTS when set.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.serve.conftest import TOKEN, running
from tests.serve.test_api import _another_photo_of

CHROMIUM = os.environ.get("KENNING_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [  # as root in a sandboxed machine with no network: no sandbox, no background connections
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _browser_or_skip():
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package is not installed (pip install -e .[dev])"
    if missing is None and not Path(CHROMIUM).exists():
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set KENNING_CHROMIUM)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {missing}")
        pytest.skip(missing)
    return sync_playwright


def test_identify_enrol_and_identify_again_in_the_browser(index_copy: Path, local_demo: Path, tmp_path: Path) -> None:
    sync_playwright = _browser_or_skip()
    from playwright.sync_api import expect

    shots = Path(os.environ.get("KENNING_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    photo = sorted((local_demo / "enroll").glob("*.jpg"))[0]
    other = tmp_path / "same-individual-another-day.jpg"
    other.write_bytes(_another_photo_of(photo))
    with running(index_copy) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        page.fill("#token", TOKEN)
        page.dispatch_event("#token", "change")

        page.set_input_files("#files", str(photo))
        row = page.locator(".row").first
        row.locator(".answer").nth(4).wait_for(timeout=60_000)
        assert row.locator(".answer").count() == 5
        assert "Ridge_hut" not in row.locator(".answers").inner_text()
        page.screenshot(path=str(shots / "1-identified.png"), full_page=True)

        row.locator(".new-name").fill("Ridge_hut")
        row.locator(".new-btn").click()
        expect(row.locator(".note")).to_contain_text(
            "enrolled as", timeout=60_000
        )  # no eval: the page's CSP forbids it
        assert "enrolled as Ridge_hut" in row.locator(".note").inner_text()
        page.screenshot(path=str(shots / "2-enrolled.png"), full_page=True)

        page.set_input_files("#files", str(other))
        again = page.locator(".row").first  # new rows come first
        again.locator(".answer").nth(4).wait_for(timeout=60_000)
        assert again.locator("figcaption").inner_text() == other.name
        first = again.locator(".answer .label").first.inner_text()
        page.screenshot(path=str(shots / "3-identified-again.png"), full_page=True)
        with page.expect_download() as download:
            page.click("#download")
        csv = Path(download.value.path()).read_text().splitlines()
        again.locator(".more-btn").click()  # a longer ranked list for a person to choose from
        again.locator(".answer").nth(5).wait_for(timeout=60_000)
        more = again.locator(".answer").count()

        page.check("#as-encounter")  # both photos as one encounter: one answer from the two together
        page.set_input_files("#files", [str(photo), str(other)])
        together = page.locator("#encounter-answer")
        expect(together).to_contain_text("the 2 photos together: Ridge_hut", timeout=60_000)
        page.screenshot(path=str(shots / "4-encounter.png"), full_page=True)

        page.click("button[data-view=catalogue]")
        page.locator(".identity").first.wait_for()
        page.fill("#search", "ridge")
        expect(page.locator(".identity")).to_have_count(1)
        listed = page.locator(".identity .name").inner_text()
        page.screenshot(path=str(shots / "5-catalogue.png"), full_page=True)
        browser.close()
    assert first == "Ridge_hut"
    assert csv[0] == "Image,Id" and len(csv) == 3  # the whale format, one row per photo shown
    assert csv[2].startswith(f"{other.name},Ridge_hut ") and len(csv[2].split(",")[1].split()) == 5
    assert listed == "Ridge_hut"
    assert 5 < more <= 20
    assert errors == []
    assert all((shots / f).stat().st_size > 10_000 for f in ("1-identified.png", "3-identified-again.png"))


def test_rename_merge_and_move_photos_in_the_browser(index_copy: Path, tmp_path: Path) -> None:
    """The Catalogue tab: rename an identity, merge two ticked ones, move a photo to a new identity,
    each after its confirmation; the history lists the three; the index holds what the page showed."""
    sync_playwright = _browser_or_skip()
    from playwright.sync_api import expect

    from kenning.index.gallery import GalleryIndex
    from kenning.index.history import read_history

    shots = Path(os.environ.get("KENNING_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    before = GalleryIndex.load(index_copy).table
    a, b, c = sorted(before["label"].unique())[:3]
    answers = iter(["Renamed one", "Merged pair"])  # what a person types into the two prompts
    asked: list[str] = []
    with running(index_copy) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        def answer(dialog) -> None:
            asked.append(dialog.message)
            dialog.accept(next(answers)) if dialog.type == "prompt" else dialog.accept()

        page.on("dialog", answer)
        page.goto(url)
        page.fill("#token", TOKEN)
        page.dispatch_event("#token", "change")
        page.click("button[data-view=catalogue]")
        row = page.locator(".identity", has=page.locator(".name", has_text=a)).first
        row.locator(".rename").click()
        expect(page.locator("#curation-note")).to_contain_text("rename", timeout=30_000)
        expect(page.locator(".identity .name", has_text="Renamed one")).to_have_count(1)

        for label in (b, c):
            page.locator(".identity", has=page.locator(".name", has_text=label)).first.locator(".pick").check()
        page.click("#merge")
        expect(page.locator("#curation-note")).to_contain_text("merge", timeout=30_000)
        merged = page.locator(".identity", has=page.locator(".name", has_text="Merged pair")).first
        merged.locator(".photos-btn").click()
        merged.locator(".photos img").first.wait_for()
        moved_name = merged.locator(".photos img").first.get_attribute("title")
        merged.locator(".photos img").first.click()
        merged.locator(".move-to").fill("Moved away")
        page.screenshot(path=str(shots / "6-move-photos.png"), full_page=True)
        merged.locator(".move").click()
        expect(page.locator("#curation-note")).to_contain_text("split", timeout=30_000)
        page.locator("#history summary").click()
        expect(page.locator("#history li")).to_have_count(3)
        page.screenshot(path=str(shots / "7-curated.png"), full_page=True)
        browser.close()
    after = GalleryIndex.load(index_copy).table.set_index("image_id")["label"]
    expected = before.set_index("image_id")["label"].replace({a: "Renamed one", b: "Merged pair", c: "Merged pair"})
    expected[moved_name] = "Moved away"
    assert after.sort_index().equals(expected.sort_index())
    assert [h["operation"] for h in read_history(index_copy)] == ["rename", "merge", "split"]
    assert len(asked) == 5 and asked[1].startswith(f"Rename {a}") and "into one identity" in asked[3]
    assert errors == []
