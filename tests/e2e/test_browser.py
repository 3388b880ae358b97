"""The app in a real browser: Debian's chromium driven by Playwright, against `streamlit run`.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``); Playwright never
downloads a browser. Screenshots go to ``$WHALE_ID_SCREENSHOTS`` (default: a
temporary folder) so they can be looked at. Photos come from tests/data/
(``WHALE_ID_TEST_PHOTOS`` overrides); the model from models/ (or WHALE_ID_* variables).
Run: pytest tests/e2e -q
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from app.headless import CHROMIUM, CHROMIUM_ARGS, SETTLED, free_port

ROOT = Path(__file__).resolve().parents[2]
PHOTO_DIR = Path(os.environ.get("WHALE_ID_TEST_PHOTOS", ROOT / "tests" / "data"))
CHECKPOINT = Path(os.environ.get("WHALE_ID_CHECKPOINT", ROOT / "models" / "whale_id.pt"))
TIMEOUT_MS = 180_000  # a 2-core machine shared with training: be patient
# Never a fixed sleep: every wait is for a condition (app.headless.SETTLED: the run ended, all painted).

from playwright import sync_api  # noqa: E402
from playwright.sync_api import expect  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _requirements() -> None:
    """The browser test is part of CI (.ci/run installs Chromium): a missing piece fails, never skips."""
    assert CHROMIUM.exists(), f"{CHROMIUM} not installed: apt-get install -y chromium"
    assert CHECKPOINT.exists(), f"no model at {CHECKPOINT}"


def _photos() -> list[Path]:
    suffixes = {".jpg", ".jpeg", ".png"}
    return sorted(p for p in PHOTO_DIR.glob("*") if p.suffix.lower() in suffixes) if PHOTO_DIR.is_dir() else []


def _with_gps(data: bytes) -> bytes:
    """The same photo with an EXIF date and GPS position (to exercise the map)."""
    from PIL import ExifTags, Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    exif = Image.Exif()
    exif[ExifTags.Base.DateTime] = "2024:07:01 10:20:30"
    exif[ExifTags.IFD.GPSInfo] = {1: "N", 2: (48.0, 30.0, 0.0), 3: "W", 4: (123.0, 10.0, 0.0)}
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, exif=exif)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def shots() -> Path:
    folder = Path(os.environ.get("WHALE_ID_SCREENSHOTS") or tempfile.mkdtemp(prefix="whale_id_shots_"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def _app_server(record_memory: bool = False) -> Iterator[str]:
    """A fresh Streamlit server on a free port with an empty user catalogue; its log must hold no traceback."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WHALE_ID_HOME": tempfile.mkdtemp(prefix="whale_id_catalogue_")}
    log = tempfile.NamedTemporaryFile(prefix="streamlit_", suffix=".log", delete=False)  # noqa: SIM115 - kept open for the server's life
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app/streamlit_app.py",
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
        if process.poll() is not None:
            break
    else:
        process.kill()
        pytest.fail(f"streamlit did not start; log: {log.name}")
    if process.poll() is not None:
        pytest.fail(f"streamlit exited ({process.returncode}); log: {Path(log.name).read_text()[-2000:]}")
    try:
        yield url
        if record_memory:
            _record_server_memory(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
    text = Path(log.name).read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]


@pytest.fixture(scope="module")
def server():
    with _app_server(record_memory=True) as url:
        yield url


def _record_server_memory(pid: int) -> None:
    """Peak and current resident memory of the app server after the tests' photos and ZIPs, in the fields and
    units of benchmarks/bench_server_memory.py (VmRSS_mb, VmHWM_mb; its 30-session series is the figure the
    README quotes), written where screenshots go. Sessions closed less than server.disconnectedSessionTTL
    ago are still held then, as they would be on a real server."""
    import tomllib

    status = Path(f"/proc/{pid}/status").read_text()
    values = {k: v.strip() for k, v in (line.split(":", 1) for line in status.splitlines() if ":" in line)}
    folder = os.environ.get("WHALE_ID_SCREENSHOTS")
    if folder:
        server_config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text()).get("server", {})
        record = {
            "VmRSS_mb": int(values["VmRSS"].split()[0]) // 1024,
            "VmHWM_mb": int(values["VmHWM"].split()[0]) // 1024,
            "server.disconnectedSessionTTL": server_config.get("disconnectedSessionTTL", 120),  # Streamlit's default
        }
        Path(folder, "server_memory.json").write_text(json.dumps(record, indent=2))


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield instance
        instance.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1800}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


def _settled(page) -> None:
    """Wait until the current script run has finished and painted (call it after waiting for the run's content)."""
    page.wait_for_function(SETTLED, timeout=TIMEOUT_MS, polling=100)
    assert page.locator("[data-testid='stException']").count() == 0


def _upload(page, path_or_payload) -> None:
    page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(path_or_payload)


def test_identify_one_photo(page, server, shots):
    photos = _photos()
    if not photos:
        pytest.fail(f"no photos in {PHOTO_DIR}")
    start = time.perf_counter()
    page.goto(server)
    page.get_by_text("Identify a whale or dolphin").first.wait_for()
    page.get_by_text("Upload a photo, take one with the camera").wait_for()  # the empty state, fully drawn
    load_s = time.perf_counter() - start
    _settled(page)
    page.screenshot(path=str(shots / "1_identify_empty.png"), full_page=True)

    _upload(page, str(photos[0]))
    page.get_by_text("Mask opacity").first.wait_for()
    page.locator(".st-key-card_species").first.wait_for()
    page.locator("[data-testid='stVegaLiteChart'], .vega-embed").first.wait_for()
    _settled(page)  # the chart and images painted
    main = page.locator("[data-testid='stMain']")
    species = main.locator(".st-key-card_species").inner_text()
    individual = main.locator(".st-key-card_individual").inner_text()
    assert "probability" in species and "probability" in individual
    assert main.locator("[data-testid='stImage'] img").count() >= 1  # the photo with its mask overlay
    assert (
        main.get_by_text("New individual (not in catalogue)").count() >= 1 or main.locator(".vega-embed").count() >= 1
    )
    page.screenshot(path=str(shots / "2_identify_result.png"), full_page=True)

    with page.expect_download() as download:
        main.get_by_text("Result (JSON)").click()
    result = json.loads(Path(download.value.path()).read_text())
    assert {"answer", "species", "top5", "new_individual_probability"} <= set(result)
    (shots / "timings.json").write_text(json.dumps({"page_load_s": round(load_s, 2)}))

    # save it as a new individual, then find it on the Catalogue page
    form = main.locator("[data-testid='stForm']").first
    form.get_by_text("A new individual").click()
    form.get_by_role("textbox", name="New individual id").fill("E2E-WHALE-1")
    form.get_by_role("textbox", name="Your name (audit log)").fill("browser-test")
    form.get_by_role("button", name="Save to catalogue").click()
    main.get_by_text("Saved as image").wait_for()
    page.locator("[data-testid='stSidebarNav'] a").filter(has_text="Catalogue").click()
    page.locator("h1").filter(has_text="Catalogue").first.wait_for()
    page.get_by_role("tab", name="Audit log").click()
    page.get_by_text("browser-test").first.wait_for(state="attached")  # a cell of the grid
    page.get_by_role("tab", name="Individuals").click()
    expect(page.get_by_role("tab", name="Individuals")).to_have_attribute("aria-selected", "true", timeout=TIMEOUT_MS)
    _settled(page)
    page.screenshot(path=str(shots / "4_catalogue_after_save.png"), full_page=True)


def test_batch_zip(page, server, shots):
    photos = _photos()
    if not photos:
        pytest.fail(f"no photos in {PHOTO_DIR}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for photo in photos[:3]:
            archive.writestr(f"survey/{photo.name}", photo.read_bytes())
        archive.writestr("survey/with_gps.jpg", _with_gps(photos[0].read_bytes()))
        archive.writestr("survey/broken.jpg", b"\xff\xd8\xff\xe0 this is not really a JPEG")
        archive.writestr("survey/notes.txt", "field notes")
    zip_path = shots / "survey.zip"
    zip_path.write_bytes(buffer.getvalue())

    page.goto(server)
    page.get_by_text("Identify a whale or dolphin").first.wait_for()
    page.locator("[data-testid='stSidebarNav'] a").filter(has_text="Batch").click()
    page.get_by_text("Batch identification").first.wait_for()
    _upload(page, str(zip_path))
    photos_in_zip = min(3, len(photos)) + 2  # with_gps.jpg and broken.jpg too; notes.txt is no photo
    page.get_by_role("button", name=f"Identify {photos_in_zip} photos").click()
    page.get_by_text("Download all results (CSV)").wait_for()
    page.locator("[data-testid='stDataFrame']").first.wait_for()
    page.get_by_text("Photos per species").wait_for()
    page.get_by_text("1 photo with GPS").wait_for()  # the map's heading: the one GPS photo is located
    _settled(page)  # the grid, charts and thumbnails painted
    page.screenshot(path=str(shots / "3_batch_result.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 3400})  # Streamlit scrolls inside its main block
    page.wait_for_function("height => window.innerHeight === height", arg=3400, timeout=TIMEOUT_MS)
    world = page.locator(".st-key-batch_map")
    world.locator("canvas, svg").first.wait_for(state="attached")
    _settled(page)
    page.screenshot(path=str(shots / "3b_batch_full.png"))
    land, sea = _map_colours(world.screenshot(path=str(shots / "3c_batch_map.png")))
    assert land > 0.05 and sea > 0.05, f"an offline base map: land {land:.0%}, sea {sea:.0%} of the map"
    assert page.locator("[data-testid='stDeckGlJsonChart']").count() == 0  # no tile map (needs the internet)
    page.get_by_text("broken.jpg").first.wait_for(state="attached")  # the bad file is a row of the grid

    with page.expect_download() as download:
        page.get_by_text("Download all results (CSV)").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    by_file = {row["file"]: row for row in rows}
    assert by_file["survey/broken.jpg"]["status"] == "error" and by_file["survey/broken.jpg"]["error"]
    assert by_file["survey/notes.txt"]["status"] == "skipped"
    assert by_file["survey/with_gps.jpg"]["latitude"].startswith("48.5")
    assert sum(row["status"] == "ok" for row in rows) == min(3, len(photos)) + 1


def _map_colours(png: bytes) -> tuple[float, float]:
    """Shares of a map screenshot painted in the land and the sea colours of app/charts.py."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    pixels = list(image.getdata())

    def share(hex_colour: str) -> float:
        target = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        near = sum(1 for pixel in pixels if sum(abs(a - b) for a, b in zip(pixel, target, strict=True)) <= 12)
        return near / len(pixels)

    return share("#efe9dc"), share("#dcecf3")


HOSTILE_NAME = "![x](http:example.invalid) **bold** <img src=x onerror=alert(1)> :smile:"


def test_user_text_is_shown_as_text_and_fetches_nothing(page, server, shots):
    photos = _photos()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(server)
    page.get_by_text("Upload a photo, take one with the camera").wait_for()
    _upload(page, {"name": f"{HOSTILE_NAME}.jpg", "mimeType": "image/jpeg", "buffer": photos[0].read_bytes()})
    page.locator(".st-key-card_species").first.wait_for()
    _settled(page)
    main = page.locator("[data-testid='stMain']")
    caption = main.locator("[data-testid='stImageCaption']").first
    # every character as typed (an invisible word joiner keeps ":smile:" from becoming an emoji)
    assert caption.inner_text().replace("\u2060", "").strip() == f"{HOSTILE_NAME}.jpg"
    assert caption.locator("img, strong, a").count() == 0
    assert main.locator("img[src*='example.invalid'], a[href*='example.invalid']").count() == 0
    # a refused id quotes the text it refused: as text too
    form = main.locator("[data-testid='stForm']").first
    form.get_by_text("A new individual").click()
    form.get_by_role("textbox", name="New individual id").fill("![x](http://example.invalid/a.png) **b**")
    form.get_by_role("button", name="Save to catalogue").click()
    error = main.locator("[data-testid='stAlertContentError']").filter(has_text="Not saved")
    error.wait_for()
    _settled(page)
    assert "![x](http://example.invalid/a.png) **b**" in error.inner_text().replace("\u2060", "")
    assert error.locator("img, strong:has-text('b'), a").count() == 0, error.inner_html()
    page.screenshot(path=str(shots / "8_hostile_text.png"), full_page=True)
    assert not [url for url in requests if "example.invalid" in url], "a user's text made the browser fetch"


def test_identify_shows_the_date_and_position_whole(page, server, shots):
    photos = _photos()
    page.goto(server)
    page.get_by_text("Upload a photo, take one with the camera").wait_for()
    _upload(page, {"name": "gps.jpg", "mimeType": "image/jpeg", "buffer": _with_gps(photos[0].read_bytes())})
    taken = page.locator(".st-key-card_taken")
    position = page.locator(".st-key-card_position")
    taken.wait_for()
    _settled(page)
    expect(taken).to_contain_text("2024-07-01 10:20:30")
    expect(position).to_contain_text("48.50000° N, 123.16667° W")
    for card in (taken, position):  # nothing cut off: the value's box is as wide as its text
        clipped = card.locator("div[style*='overflow-wrap']").evaluate("el => el.scrollWidth > el.clientWidth")
        assert not clipped
    world = page.locator(".st-key-identify_map")
    world.scroll_into_view_if_needed()
    world.locator("canvas, svg").first.wait_for(state="attached")
    _settled(page)
    land, sea = _map_colours(world.screenshot(path=str(shots / "9_identify_map.png")))
    assert land > 0.05 and sea > 0.05, f"an offline base map: land {land:.0%}, sea {sea:.0%}"


def test_a_running_batch_can_be_stopped_and_keeps_what_it_did(page, server, shots):
    photos = _photos()
    total = 600  # long enough on any machine to press Stop half-way
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(total):
            archive.writestr(
                f"long_trip/{index:04d}_{photos[index % len(photos)].name}", photos[index % len(photos)].read_bytes()
            )
    zip_path = shots / "long_trip.zip"
    zip_path.write_bytes(buffer.getvalue())
    page.goto(f"{server}/batch")
    page.locator("h1").filter(has_text="Batch identification").first.wait_for()
    _upload(page, str(zip_path))
    page.get_by_role("button", name=f"Identify {total} photos").click()
    page.get_by_text(re.compile(r"[1-9]\d* / \d+ files")).first.wait_for()  # under way
    page.get_by_role("button", name="Stop").click()
    warning = page.locator("[data-testid='stAlertContentWarning']").filter(has_text="Stopped after")
    warning.wait_for()
    _settled(page)
    text = warning.inner_text()
    done = int(re.search(r"Stopped after (\d+) of (\d+) photos", text).group(1))
    assert 0 < done < total and "you pressed Stop" in text, text
    page.get_by_text("Download all results (CSV)").wait_for()
    page.screenshot(path=str(shots / "10_batch_stopped.png"), full_page=True)


def test_other_pages(page, server, shots):
    page.goto(server)
    page.get_by_text("Identify a whale or dolphin").first.wait_for()
    for link, title, shot in (
        ("Catalogue", "Catalogue", "5_catalogue.png"),
        ("About the model", "About the model", "6_about.png"),
    ):
        page.locator("[data-testid='stSidebarNav'] a").filter(has_text=link).click()
        page.locator("h1").filter(has_text=title).first.wait_for()
        _settled(page)
        page.screenshot(path=str(shots / shot), full_page=True)


def test_the_share_stated_in_the_sidebar_moves_where_new_begins(page, server, shots):
    """A re-sighted population (90 % catalogued): the same photo is answered again, and the decision note
    gives the lower threshold that share asks for."""
    from conftest import sample_photo

    from whales_identify.config import InferenceConfig
    from whales_identify.matching import rules

    page.goto(server)
    page.get_by_text("Upload a photo, take one with the camera").wait_for()
    _upload(page, str(sample_photo("unseen")))
    main = page.locator("[data-testid='stMain']")
    main.get_by_text("of which 50% show catalogued animals").first.wait_for(state="attached")
    _settled(page)
    sidebar = page.locator("[data-testid='stSidebar']")
    sidebar.locator("[data-testid='stSelectbox']").filter(has_text="Catalogued animals in your photos").click()
    page.get_by_role("option", name="90 % · mostly re-sightings").click()
    note = main.get_by_text("of which 90% show catalogued animals").first
    note.wait_for(state="attached")
    _settled(page)
    shipped = InferenceConfig.load()
    lower = rules.decision_threshold(replace(shipped, catalogued_share=0.9))
    assert lower < shipped.new_individual_threshold
    assert f"scores above {lower:.2f}" in note.text_content()
    main.get_by_text("How the decision is made").first.click()
    main.locator("details[open] [data-testid='stVegaLiteChart'] svg").first.wait_for()  # the scores, drawn
    page.wait_for_function(  # ... and the expander done opening: the chart inside its box, not clipped
        """() => { const c = document.querySelector("details[open] [data-testid='stVegaLiteChart']");
                   const d = c && c.closest("[data-testid='stExpander']");
                   return d && c.getBoundingClientRect().bottom <= d.getBoundingClientRect().bottom; }""",
        timeout=TIMEOUT_MS,
        polling=100,
    )
    _settled(page)
    page.screenshot(path=str(shots / "15_identify_share_stated.png"), full_page=True)


def test_a_photo_without_a_cetacean_is_explained(page, server, shots):
    negatives = sorted(PHOTO_DIR.glob("non_cetacean_*.jpg"))
    assert negatives, "no non_cetacean sample photo"
    page.goto(server)
    page.get_by_text("Upload a photo, take one with the camera").wait_for()
    _upload(page, str(negatives[0]))
    page.get_by_text("No whale or dolphin found").wait_for()
    _settled(page)
    page.screenshot(path=str(shots / "7_rejected.png"), full_page=True)


@pytest.mark.parametrize(
    ("path", "title"),
    [
        ("batch", "Batch identification"),
        ("catalogue", "Catalogue"),
        ("about_model", "About the model"),
    ],
)
def test_each_page_opens_first_from_its_url(page, server, path, title):
    """A fresh browser session whose first page is not the default one (every session key initialised)."""
    page.goto(f"{server}/{path}")
    page.locator("h1").filter(has_text=title).first.wait_for()
    _settled(page)
    assert page.locator("[data-testid='stAlertContentError']").count() == 0


def test_a_bookmarked_page_works_on_a_fresh_server(browser):
    """The first visitor of a just-started server opens /batch from a bookmark: the page must run through
    the app's entry script (session set-up included), not as a stand-alone script (a KeyError once)."""
    with _app_server() as url:
        context = browser.new_context(viewport={"width": 1400, "height": 1800})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        try:
            for path, heading in (("batch", "Batch identification"), ("catalogue", "Catalogue")):
                page.goto(f"{url}/{path}")
                page.locator("h1").filter(has_text=heading).first.wait_for()
                _settled(page)
                assert "Something went wrong" not in page.inner_text("body")
            sidebar = page.locator("[data-testid='stSidebarNav']").inner_text()
            assert "Identify a photo" in sidebar and "streamlit app" not in sidebar.lower(), sidebar
        finally:
            context.close()


def test_compare_with_the_catalogue_at_512_px_and_record_a_verdict(page, server, shots):
    """The comparison panel: the whole photo beside the best candidate's catalogue photo, each at least
    512 px on the page; another photo from the strip; zoom; a verdict recorded and shown."""
    from PIL import Image

    def aspect(path: Path) -> float:
        with Image.open(path) as image:
            return image.width / image.height

    photo = max(_photos(), key=aspect)  # the widest sample (a fluke or a fin at sea; bundle picks the samples)
    assert aspect(photo) > 1.5, photo
    page.goto(server)
    page.get_by_text("Upload a photo, take one with the camera").wait_for()
    _upload(page, str(photo))
    main = page.locator("[data-testid='stMain']")
    main.get_by_text("Compare with the catalogue").wait_for()
    picture = page.locator(".st-key-cmp_picture [data-testid='stImage'] img").first
    picture.wait_for()
    _settled(page)
    picture.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "11_compare.png"), full_page=True)
    # wide photos (a fluke or a dorsal fin at sea) are shown one above the other, each across the picture's width
    layout = main.get_by_role("radiogroup", name="Layout").get_by_role("radio", name="One above the other")
    assert layout.get_attribute("aria-checked") == "true"
    natural, shown = picture.evaluate("img => [img.naturalWidth, img.getBoundingClientRect().width]")
    assert natural >= 512 and shown >= 512, (natural, shown)
    # another photo of the candidate, then zoom on the animal: a new picture each time
    changed = "src => { const img = document.querySelector('.st-key-cmp_picture img'); return img && img.src !== src; }"
    strip = main.get_by_role("radiogroup", name=re.compile("^Catalogue photo of"))
    candidates = main.get_by_role("radiogroup", name="Candidate").get_by_role("radio")
    for index in range(1, candidates.count()):  # another test may have enrolled this photo alone as a new id
        if strip.get_by_role("radio").count() >= 2:
            break
        before = picture.get_attribute("src")
        candidates.nth(index).click()
        page.wait_for_function(changed, arg=before)
        _settled(page)
    assert strip.get_by_role("radio").count() >= 2, "a candidate with several catalogue photos"
    for control, option in ((strip, "2"), (main.get_by_role("radiogroup", name="Zoom on the animal"), "3×")):
        before = picture.get_attribute("src")
        control.get_by_role("radio", name=option, exact=True).click()
        page.wait_for_function(changed, arg=before)
        _settled(page)
    # the verdict, with the reviewer's name
    main.get_by_role("textbox", name="Reviewer (audit log)").fill("browser-reviewer")
    main.get_by_role("button", name="Different").click()
    verdict = page.locator(".st-key-cmp_verdict")
    verdict.get_by_text("Different — recorded by browser-reviewer").wait_for()
    _settled(page)
    verdict.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "12_compare_verdict.png"), full_page=True)


# Glide's grid scrolls inside this element: wider content than its box means a horizontal scroll bar.
GRID_OVERFLOW = """() => {
    const scroller = document.querySelector("[data-testid='stDataFrame'] .dvn-scroller");
    return scroller ? scroller.scrollWidth - scroller.clientWidth : null;
}"""


def test_review_a_batch_with_the_keyboard_and_save(page, server, shots):
    """Issue 14, item 3: a small ZIP reviewed with the keys (1 Same, 3 Cannot tell, 2 Different and a
    correction, ← / → to move) and saved; the table fits a 1400 px screen without scrolling sideways."""
    names = [
        "north_atlantic_right_whale_w_932.jpg",
        "north_atlantic_right_whale_w_1991.jpg",
        "humpback_whale_43f3385b-6d40-4b2c-b7f9-6062c680361a.jpg",
    ]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"review/{names[0]}", _with_gps((PHOTO_DIR / names[0]).read_bytes()))
        for name in names[1:]:
            archive.writestr(f"review/{name}", (PHOTO_DIR / name).read_bytes())
    zip_path = shots / "review.zip"
    zip_path.write_bytes(buffer.getvalue())

    page.goto(f"{server}/batch")
    page.locator("h1").filter(has_text="Batch identification").first.wait_for()
    _upload(page, str(zip_path))
    page.get_by_role("button", name="Identify 3 photos").click()
    page.get_by_text("Download all results (CSV)").wait_for()
    grid = page.locator("[data-testid='stDataFrame']").first
    grid.wait_for()
    _settled(page)
    grid.screenshot(path=str(shots / "11_batch_table_1400.png"))
    assert page.viewport_size["width"] == 1400
    overflow = page.evaluate(GRID_OVERFLOW)
    assert overflow is not None and overflow <= 1, f"the table scrolls sideways by {overflow} px at 1400 px"
    headers = page.locator("[data-testid='stDataFrame'] [role='columnheader']")  # the grid's a11y table
    for column in ("Status", "New", "Date", "GPS"):
        assert headers.filter(has_text=column).count(), f"no {column} column"

    page.get_by_text("Review the answers", exact=True).click()  # the Batch page's view switch
    main = page.locator("[data-testid='stMain']")
    main.get_by_text("Photo 1 of 3").wait_for()
    main.get_by_text("1 Same").first.wait_for()  # the keys are written on the page
    _settled(page)
    page.screenshot(path=str(shots / "12_review_first.png"), full_page=True)

    page.locator("h1").first.click()  # focus on the page, not in a field: the keys then reach the buttons
    page.keyboard.press("1")  # Same: recorded, and on to the next photo
    main.get_by_text("Photo 2 of 3").wait_for()
    page.keyboard.press("3")  # Cannot tell
    main.get_by_text("Photo 3 of 3").wait_for()
    page.keyboard.press("2")  # Different: who is it?
    correction = page.locator(".st-key-review_correction")
    correction.wait_for()
    _settled(page)
    page.screenshot(path=str(shots / "13_review_correction.png"), full_page=True)
    correction.locator("[data-testid='stRadio'] label").first.click()  # the second-best candidate
    page.locator("h1").first.click()
    page.keyboard.press("Enter")  # Record this verdict
    correction.wait_for(state="detached")
    main.get_by_text(re.compile(r"Your verdict: Different")).wait_for()
    progress = main.locator("[data-testid='stProgress']").first
    expect(progress).to_contain_text("3 of 3 photos reviewed", timeout=TIMEOUT_MS)
    page.keyboard.press("ArrowLeft")
    main.get_by_text("Photo 2 of 3").wait_for()
    main.get_by_text("Your verdict: Cannot tell").wait_for()
    page.keyboard.press("ArrowRight")
    main.get_by_text("Photo 3 of 3").wait_for()

    main.get_by_role("textbox", name="Your name (audit log)").fill("keyboard-reviewer")
    main.get_by_role("button", name=re.compile(r"Save 3 verdicts \(2 photos to store\)")).click()
    success = page.locator("[data-testid='stAlertContentSuccess']").filter(has_text="Saved:")
    success.wait_for()
    assert "2 photos stored" in success.inner_text() and "3 reviews recorded" in success.inner_text()
    main.get_by_text(re.compile(r"Saved \(Different.*photo \d+ of")).wait_for()
    expect(main.get_by_role("button", name=re.compile(r"Save 0 verdicts"))).to_be_disabled(timeout=TIMEOUT_MS)
    _settled(page)
    page.screenshot(path=str(shots / "14_review_saved.png"), full_page=True)

    page.locator("[data-testid='stSidebarNav'] a").filter(has_text="Catalogue").click()
    page.locator("h1").filter(has_text="Catalogue").first.wait_for()
    page.get_by_role("tab", name="Audit log").click()
    page.get_by_text("keyboard-reviewer").first.wait_for(state="attached")  # the saved photos' audit rows
