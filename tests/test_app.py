"""The Streamlit app, page by page, with streamlit.testing.v1.AppTest (no browser).

Uses the real bundled model (models/) and the sample photos in tests/data/;
``WHALE_ID_CHECKPOINT`` / ``WHALE_ID_CATALOGUE`` / ``WHALE_ID_TEST_PHOTOS``
override them. The user catalogue goes to a temporary ``WHALE_ID_HOME``.
"""

from __future__ import annotations

import io
import os
import re
import tomllib
import zipfile
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import sample_photo
from streamlit.testing.v1 import AppTest

from app import state
from app.config import AppConfig
from whales_identify.config import ImageLimits
from whales_identify.matching import rules

ROOT = Path(__file__).resolve().parents[1]

APP = str(ROOT / "app" / "streamlit_app.py")
PHOTO_DIR = Path(os.environ.get("WHALE_ID_TEST_PHOTOS", ROOT / "tests" / "data"))
CHECKPOINT = Path(os.environ.get("WHALE_ID_CHECKPOINT", ROOT / "models" / "whale_id.pt"))
TIMEOUT = 180  # seconds per run: a 2-core machine, the first run loads the model


def _photos() -> list[Path]:
    if not PHOTO_DIR.is_dir():
        return []
    return sorted(p for p in PHOTO_DIR.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def _photo() -> Path:
    photos = _photos()
    assert photos, f"no sample photos in {PHOTO_DIR}"
    return photos[0]


@pytest.fixture(autouse=True)
def _isolated_catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHALE_ID_HOME", str(tmp_path / "catalogue_home"))


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _plain(markdown: str) -> str:
    """Markdown source as the words it shows: user text on the pages is backslash-escaped (view_model.md_escape)."""
    return re.sub(r"\\(.)", r"\1", str(markdown)).replace("\u2060", "")


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error]
    parts += [i.value for i in at.info] + [w.value for w in at.warning] + [s.value for s in at.success]
    return "\n".join(_plain(p) for p in parts)


def _has_button(at: AppTest, key: str) -> bool:
    return any(b.key == key for b in at.button)


def _no_failure(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not [e.value for e in at.error], [e.value for e in at.error]


# --- configuration --------------------------------------------------------------------------------
def test_config_toml_matches_enforced_limits() -> None:
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    app = AppConfig()
    assert config["server"]["maxUploadSize"] == app.max_batch_upload_mb
    assert app.max_photo_mb * 1024 * 1024 == ImageLimits().max_file_bytes
    assert config["browser"]["gatherUsageStats"] is False
    assert config["theme"]["primaryColor"].startswith("#")


def test_guard_turns_any_exception_into_a_friendly_message() -> None:
    def page() -> None:
        from app.guard import run_guarded

        def boom() -> None:
            raise RuntimeError("internal detail that must not leak")

        run_guarded(boom)

    at = AppTest.from_function(page, default_timeout=60)
    at.run()
    assert not at.exception
    message = at.error[0].value
    assert "Something went wrong" in message and "internal detail" not in message


def test_missing_model_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WHALE_ID_CHECKPOINT", str(tmp_path / "missing.pt"))
    at = _app()
    assert "Identify a whale or dolphin" in at.title[0].value
    at.switch_page("views/about_model.py").run()
    assert not at.exception
    assert "The model could not be loaded" in _plain(at.error[0].value) and "missing.pt" in _plain(at.error[0].value)


# --- every page -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("page", "title"),
    [
        ("views/identify.py", "Identify a whale or dolphin"),
        ("views/batch.py", "Batch identification"),
        ("views/catalogue.py", "Catalogue"),
        ("views/about_model.py", "About the model"),
    ],
)
def test_every_page_renders_with_a_helpful_empty_state(page: str, title: str) -> None:
    at = _app()
    at.switch_page(page).run()
    _no_failure(at)
    assert at.title[0].value == title
    if page.endswith(("identify.py", "batch.py")):
        assert at.info, "an empty page explains what to do"


# --- session state -----------------------------------------------------------------------------------
PAGES = ["views/identify.py", "views/batch.py", "views/catalogue.py", "views/about_model.py"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_in_a_fresh_session_with_every_key_initialised(page: str) -> None:
    from app.state import SESSION_DEFAULTS

    # A fresh session: its first run is the main script (which initialises the keys) on the default
    # page; AppTest cannot open another page first (before a run it would execute the page file alone,
    # which a browser never does: tests/e2e opens each page's URL first in a fresh browser instead).
    at = _app()
    at.switch_page(page).run()
    _no_failure(at)
    for key, make in SESSION_DEFAULTS.items():
        assert key in at.session_state, key
        assert at.session_state[key] == make(), key  # nothing on an empty page changes a default


def test_session_defaults_never_overwrite_a_value() -> None:
    at = _app()
    at.session_state["actor"] = "keeps-this"
    at.session_state["cat_export"] = (b"zip", {"individuals": 0, "images": 0})
    at.switch_page("views/catalogue.py").run()
    _no_failure(at)
    assert at.session_state["actor"] == "keeps-this"
    assert at.session_state["cat_export"][0] == b"zip"


def test_accepted_types_and_labels_come_from_the_package() -> None:
    from app import view_model as vm
    from whales_identify.config import IMAGE_SUFFIXES, NON_CETACEAN

    assert [f".{t}" for t in vm.photo_types()] == list(IMAGE_SUFFIXES)
    assert vm.batch_types() == ["zip", *vm.photo_types()]
    assert vm.species_label(NON_CETACEAN) == "Not a whale or dolphin"
    assert vm.species_label("humpback_whale") == "Humpback whale" and vm.species_label("") == "—"
    assert NON_CETACEAN not in vm.cetacean_species([NON_CETACEAN, "humpback_whale"])


def test_the_batch_tables_gps_cell_says_when_a_position_was_dropped() -> None:
    from app import view_model as vm

    assert vm.gps_cell(48.5, -123.1666667) == "48.500, -123.167"
    assert vm.gps_cell(None, None) == "" and vm.gps_cell(float("nan"), float("nan")) == ""
    assert vm.gps_cell(None, None, "GPS position ignored: latitude 95° is beyond ±90°") == "dropped (invalid)"


@pytest.fixture
def analyse_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the photos analysed (identified and masked) from now on: a rerun that
    recomputes shows up here."""
    import app.state as state

    calls: list[str] = []
    original = state.analyse_photo

    def counting(*args, **kwargs):
        calls.append(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(state, "analyse_photo", counting)
    return calls


# --- page 1: identify ---------------------------------------------------------------------------------
def test_identify_upload_shows_species_top5_mask_and_downloads(identifier) -> None:
    photo = _photo()
    at = _app()
    at.file_uploader[0].set_value((photo.name, photo.read_bytes(), "image/jpeg")).run()
    _no_failure(at)
    text = _texts(at)
    assert "Species" in text and "probability" in text
    assert "Individual" in text
    assert at.get("vega_lite_chart"), "the top-5 chart is shown"
    assert at.get("image"), "the photo with its mask is shown"
    assert at.slider[0].label == "Mask opacity"
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Result (JSON)" in labels and "Mask (PNG)" in labels
    result = at.session_state["photo_results"][next(iter(at.session_state["photo_results"]))]
    assert result.result is not None and result.mask is not None
    # the animal's box is the localiser's (what the network looked at), drawn on the display-size photo
    assert result.result.box == identifier.identify(photo).box and result.result.box is not None
    x1, y1, x2, y2 = result.result.box_for(result.image.size)
    assert 0 <= x1 < x2 <= result.image.width and 0 <= y1 < y2 <= result.image.height


def test_moving_the_slider_never_recomputes(analyse_calls: list[str]) -> None:
    calls = analyse_calls
    photo = _photo()
    at = _app()
    at.file_uploader[0].set_value((photo.name, photo.read_bytes(), "image/jpeg")).run()
    at.slider[0].set_value(0.9).run()
    [show_box] = [t for t in at.toggle if t.label == "Show box"]
    show_box.set_value(False).run()
    _no_failure(at)
    assert calls == [photo.name]


def test_identify_bad_file_is_a_friendly_error() -> None:
    at = _app()
    at.file_uploader[0].set_value(("broken.jpg", b"\xff\xd8\xff not a photo", "image/jpeg")).run()
    assert not at.exception
    assert "broken.jpg could not be identified" in _plain(at.error[0].value)


def test_try_an_example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    photo = _photo()
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / photo.name).write_bytes(photo.read_bytes())
    (examples / "samples.csv").write_text(f"image,individual_id,species\n{photo.name},,humpback_whale\n")
    monkeypatch.setenv("WHALE_ID_EXAMPLES_DIR", str(examples))
    at = _app()
    [button] = [b for b in at.button if b.label == "Try an example"]
    button.click().run()
    _no_failure(at)
    assert at.get("vega_lite_chart")
    captions = [_plain(img.caption) for i in at.get("image") for img in i.proto.imgs]
    assert photo.name in _texts(at) or any(photo.name in caption for caption in captions)


def test_save_new_individual_then_it_is_recognised_and_listed() -> None:
    photo = _photo()
    at = _app()
    at.file_uploader[0].set_value((photo.name, photo.read_bytes(), "image/jpeg")).run()
    at.radio[0].set_value("A new individual")
    [new_id] = [t for t in at.text_input if t.label == "New individual id"]
    new_id.input("TEST-WHALE-1")
    [actor] = [t for t in at.text_input if t.label.startswith("Your name")]
    actor.input("tester")
    [save] = [b for b in at.button if b.label == "Save to catalogue"]
    save.click().run()
    _no_failure(at)
    assert "TEST-WHALE-1" in _plain(at.success[0].value)

    at.session_state["photo_results"] = OrderedDict()  # identify again, against the updated catalogue
    at.run()
    _no_failure(at)
    again = next(iter(at.session_state["photo_results"].values())).result
    assert "TEST-WHALE-1" in [c.individual_id for c in again.top5]

    at.switch_page("views/catalogue.py").run()
    _no_failure(at)
    frames = [d.value for d in at.dataframe]
    assert any("TEST-WHALE-1" in frame.get("id", []).tolist() for frame in frames if hasattr(frame, "get"))
    audit = [f for f in frames if "action" in getattr(f, "columns", [])]
    assert audit and "enrolled" in audit[0]["action"].tolist() and "tester" in audit[0]["actor"].tolist()


# --- page 2: batch ------------------------------------------------------------------------------------
def test_batch_zip_gives_a_row_per_file_with_errors_and_csv() -> None:
    photos = _photos()[:2] or [_photo()]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for photo in photos:
            archive.writestr(f"trip/{photo.name}", photo.read_bytes())
        archive.writestr("trip/broken.jpg", b"\xff\xd8\xff not a photo")
        archive.writestr("trip/readme.txt", "notes")
    at = _app()
    at.switch_page("views/batch.py").run()
    at.file_uploader[0].set_value(("trip.zip", buffer.getvalue(), "application/zip")).run()
    start = at.button(key="batch_start")
    assert start.label == f"Identify {len(photos) + 1} photos"  # the photos in the ZIP, not "1 file"
    start.click().run()
    _no_failure(at)
    rows = {row.file: row for row in at.session_state["batch"].rows}
    assert rows["trip/broken.jpg"].status == "error" and rows["trip/broken.jpg"].error
    assert rows["trip/readme.txt"].status == "skipped"
    assert sum(r.status == "ok" for r in rows.values()) == len(photos)
    assert at.dataframe, "the results table"
    assert len(at.get("vega_lite_chart")) >= 3  # detail top-5, species counts, confidence histogram
    assert "Download all results (CSV)" in [b.proto.label for b in at.get("download_button")]

    at.toggle(key="batch_new_only").set_value(True).run()
    _no_failure(at)
    at.slider(key="batch_min_p").set_value(1.0).run()
    assert not at.exception


def test_batch_refuses_a_damaged_zip_as_a_row() -> None:
    at = _app()
    at.switch_page("views/batch.py").run()
    at.file_uploader[0].set_value(("bad.zip", b"PK\x03\x04 not really", "application/zip")).run()
    [start] = [b for b in at.button if b.label == "Identify 1 file"]  # no photo can be counted in it
    start.click().run()
    assert not at.exception
    [row] = at.session_state["batch"].rows
    assert row.status == "error" and "ZIP" in row.error


def test_batch_state_survives_reruns_and_ignored_members_get_no_row(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.state as state
    import whales_identify.batch.local as local

    runs, masks = [], []
    original_entries, original_masker = local.identify_entries, state.get_masker

    def counting_entries(*args, **kwargs):
        runs.append(1)
        return original_entries(*args, **kwargs)

    class CountingMasker:
        def mask(self, image):
            masks.append(1)
            return original_masker().mask(image)

    monkeypatch.setattr(local, "identify_entries", counting_entries)
    monkeypatch.setattr(state, "get_masker", CountingMasker)
    photo = _photo()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"trip/{photo.name}", photo.read_bytes())
        archive.writestr(f"__MACOSX/trip/._{photo.name}", b"resource fork")
        archive.writestr("trip/.hidden.jpg", b"hidden")
    at = _app()
    at.switch_page("views/batch.py").run()
    at.file_uploader[0].set_value(("trip.zip", buffer.getvalue(), "application/zip")).run()
    [start] = [b for b in at.button if b.label == "Identify 1 photo"]  # __MACOSX/ and hidden files not counted
    start.click().run()
    _no_failure(at)
    batch = at.session_state["batch"]
    assert isinstance(batch, state.BatchState)
    assert [row.file for row in batch.rows] == [f"trip/{photo.name}"]  # __MACOSX/ and hidden files: no row
    assert set(batch.masks) == {f"trip/{photo.name}"} and batch.previews and batch.thumbnails

    at.slider(key="batch_detail_opacity").set_value(0.8).run()
    at.toggle(key="batch_new_only").set_value(True).run()
    at.toggle(key="batch_new_only").set_value(False).run()
    at.run()
    _no_failure(at)
    assert at.session_state["batch"] is batch
    assert runs == [1] and masks == [1], "a rerun never identifies or masks again"
    assert at.selectbox(key="batch_pick").value == f"trip/{photo.name}"


# --- page 3: catalogue ---------------------------------------------------------------------------------
def test_catalogue_add_zip_then_browse_audit_and_export() -> None:
    photos = _photos()[:2] or [_photo()]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for photo in photos:
            archive.writestr(f"ZIP-WHALE-7/{photo.name}", photo.read_bytes())
    at = _app()
    at.switch_page("views/catalogue.py").run()
    _no_failure(at)
    [uploader] = [u for u in at.file_uploader if u.label == "ZIP of photos"]
    uploader.set_value(("new_whales.zip", buffer.getvalue(), "application/zip"))
    [species] = [s for s in at.selectbox if s.label.startswith("Species of new individuals")]
    species.set_value("humpback_whale")
    [actor] = [t for t in at.text_input if t.label.startswith("Your name")]
    actor.input("zip-tester")
    [add] = [b for b in at.button if b.label == "Add to catalogue"]
    add.click().run()
    _no_failure(at)
    assert f"{len(photos)} added" in _plain(at.success[0].value)

    at.run()
    frames = [d.value for d in at.dataframe]
    individuals = [f for f in frames if "n_photos" in f.columns]
    row = individuals[0].set_index("id").loc["ZIP-WHALE-7"]
    assert row["species"] == "humpback_whale" and row["n_photos"] == len(photos) and row["origin"] == "user"
    assert any("zip-tester" in f.get("actor", []).tolist() for f in frames if "actor" in f.columns)

    [export] = [b for b in at.button if b.label == "Prepare export"]
    export.click().run()
    _no_failure(at)
    data, counts = at.session_state["cat_export"]
    assert counts["individuals"] == 1 and counts["images"] == len(photos) and counts["audit_log"] >= 1
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert "individuals.csv" in archive.namelist()


def test_catalogue_refuses_a_bad_zip_with_the_reasons() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("W1/broken.jpg", b"\xff\xd8\xff not a photo")
    at = _app()
    at.switch_page("views/catalogue.py").run()
    [uploader] = [u for u in at.file_uploader if u.label == "ZIP of photos"]
    uploader.set_value(("bad.zip", buffer.getvalue(), "application/zip"))
    [species] = [s for s in at.selectbox if s.label.startswith("Species of new individuals")]
    species.set_value("humpback_whale")
    [add] = [b for b in at.button if b.label == "Add to catalogue"]
    add.click().run()
    assert not at.exception
    assert "Nothing was added" in _plain(at.error[0].value) and "broken.jpg" in _plain(at.error[0].value)


# --- the real sample photos, with their expected answers -------------------------------------------------
def _sample(kind: str):
    import pandas as pd

    table = PHOTO_DIR / "samples.csv"
    assert table.is_file(), f"no {table}"
    frame = pd.read_csv(table, dtype=str, keep_default_na=False)
    if kind == "negative":
        rows = frame[frame["species"] == "non_cetacean"]
    else:
        rows = frame[(frame["species"] != "non_cetacean") & (frame["individual_id"] != "")]
    assert not rows.empty, f"no {kind} sample in samples.csv"
    return rows.iloc[0]


def test_a_known_sample_is_named_on_the_page() -> None:
    row = _sample("known")
    at = _app()
    at.file_uploader[0].set_value((row["image"], (PHOTO_DIR / row["image"]).read_bytes(), "image/jpeg")).run()
    _no_failure(at)
    result = next(iter(at.session_state["photo_results"].values())).result
    shown = _texts(at)
    assert result.answer in shown or "New individual" in shown
    if result.answer == row["individual_id"]:
        assert "Known individual" in shown


def test_a_photo_without_a_cetacean_is_explained() -> None:
    row = _sample("negative")
    at = _app()
    at.file_uploader[0].set_value((row["image"], (PHOTO_DIR / row["image"]).read_bytes(), "image/jpeg")).run()
    assert not at.exception
    result = next(iter(at.session_state["photo_results"].values())).result
    if result.rejected:
        assert "No whale or dolphin found" in _plain(at.warning[0].value)


def test_upload_size_limit_is_enforced_in_code_too() -> None:
    limit = AppConfig().max_photo_mb * 1024 * 1024
    at = _app()
    at.file_uploader[0].set_value(("huge.jpg", b"\xff\xd8" + bytes(limit), "image/jpeg")).run()
    assert not at.exception
    assert "the limit is" in _plain(at.error[0].value)
    assert "photo_results" not in at.session_state or not at.session_state["photo_results"]


# --- hostile text: CSV downloads and Markdown ------------------------------------------------------------
HOSTILE_TEXT = "![x](http://example.invalid/a.png) **bold** <b>x</b> :smile: $x$"
HOSTILE_NAME = "![x](http:example.invalid) **bold** <img src=x onerror=alert(1)> :smile:"  # no "/": a ZIP member name


def _downloads(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Every file a page offers for download in this test: file name -> bytes (recorded as Streamlit stores it)."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    seen: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def recording(self, path_or_data, mimetype, kind, filename=None):
        if isinstance(path_or_data, str | bytes) and filename:
            seen[filename] = path_or_data.encode() if isinstance(path_or_data, str) else path_or_data
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", recording)
    return seen


def _csv_rows(data: bytes) -> list[dict[str, str]]:
    import csv

    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def _formula_cells(rows: list[dict[str, str]]) -> list[str]:
    """Cells a spreadsheet would run: starting with = + - @ tab or CR and not a number."""
    number = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
    return [
        cell for row in rows for cell in row.values() if cell and cell[0] in "=+-@\t\r" and not number.fullmatch(cell)
    ]


def test_every_csv_download_neutralises_formulas(monkeypatch: pytest.MonkeyPatch) -> None:
    downloads = _downloads(monkeypatch)
    photo = _photo()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("=HYPERLINK(1).jpg", photo.read_bytes())
        archive.writestr("@SUM(1).jpg", b"\xff\xd8\xff not a photo")
        archive.writestr("-2+3.txt", "notes")
    at = _app()
    at.switch_page("views/batch.py").run()
    at.file_uploader[0].set_value(("trip.zip", buffer.getvalue(), "application/zip")).run()
    at.button(key="batch_start").click().run()
    _no_failure(at)
    rows = _csv_rows(downloads["whale_id_results.csv"])
    assert {row["file"] for row in rows} == {"'=HYPERLINK(1).jpg", "'@SUM(1).jpg", "'-2+3.txt"}
    assert not _formula_cells(rows)

    enrol = io.BytesIO()
    with zipfile.ZipFile(enrol, "w") as archive:
        archive.writestr(f"CSV-WHALE-1/{photo.name}", photo.read_bytes())
    at.switch_page("views/catalogue.py").run()
    [uploader] = [u for u in at.file_uploader if u.label == "ZIP of photos"]
    uploader.set_value(("new.zip", enrol.getvalue(), "application/zip"))
    [species] = [s for s in at.selectbox if s.label.startswith("Species of new individuals")]
    species.set_value("humpback_whale")
    [actor] = [t for t in at.text_input if t.label.startswith("Your name")]
    actor.input('=HYPERLINK("http://example.invalid","click")')
    [add] = [b for b in at.button if b.label == "Add to catalogue"]
    add.click().run()
    _no_failure(at)
    at.run()  # the tabs drawn before the form's result: once more, as a user's next click would
    audit = _csv_rows(downloads["audit_log.csv"])
    assert audit and audit[-1]["actor"] == "'" + '=HYPERLINK("http://example.invalid","click")'
    assert not _formula_cells(audit)
    individuals = _csv_rows(downloads["whale_catalogue_individuals.csv"])
    assert "CSV-WHALE-1" in {row["id"] for row in individuals} and not _formula_cells(individuals)


def test_built_in_table_export_is_off_since_it_would_not_neutralise_formulas() -> None:
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["disableDataExport"] is True


def test_md_escape_shows_any_text_literally() -> None:
    from app import view_model as vm

    escaped = vm.md_escape(HOSTILE_TEXT + "\n# heading")
    assert "](" not in escaped and "**" not in escaped and "<b>" not in escaped and "\n" not in escaped

    def unescaped(text: str) -> str:  # what Streamlit's shortcode and autolink passes see
        return re.sub(r"\\(.)", r"\1", vm.md_escape(text))

    for pattern in (":smile:", "http://", "www.", "a@b"):  # broken by an invisible word joiner
        assert pattern not in unescaped(f"x {pattern}.org y") and pattern not in unescaped(HOSTILE_TEXT)
    assert _plain(escaped) == HOSTILE_TEXT + " # heading"
    assert vm.md_escape("_A_ 1. x") == r"\_A\_ 1\. x"


def _markdown_sources(at: AppTest) -> list[str]:
    """Every string on the page that Streamlit renders as Markdown."""
    sources = [m.value for m in at.markdown] + [c.value for c in at.caption]
    for kind in ("error", "warning", "info", "success", "subheader", "header", "title"):
        sources += [e.value for e in getattr(at, kind)]
    sources += [t.label for t in at.tabs] + [m.label for m in at.metric]
    sources += [img.caption for i in at.get("image") for img in i.proto.imgs]
    sources += [option for radio in at.radio for option in radio.options]  # radio labels are Markdown too
    return [str(s) for s in sources]


def _assert_literal(sources: list[str], *texts: str) -> None:
    for source in sources:
        for raw in ("](http", "**bold**", "_A_", ":smile:"):
            assert raw not in source, f"{raw!r} reaches Markdown in {source!r}"
        assert not re.search(r"(?<!\\)<(b|img)\b", source), f"HTML reaches Markdown in {source!r}"
    shown = "\n".join(_plain(s) for s in sources)
    for text in texts:
        assert text in shown, f"{text!r} is not shown literally"


def test_user_text_is_shown_literally_never_as_markdown() -> None:
    photo = _photo()
    name = HOSTILE_TEXT + ".jpg"
    at = _app()
    at.file_uploader[0].set_value((name, photo.read_bytes(), "image/jpeg")).run()
    _no_failure(at)
    _assert_literal(_markdown_sources(at), name)
    # an id the package refuses: its message quotes the id, as text
    at.radio[0].set_value("A new individual")
    [new_id] = [t for t in at.text_input if t.label == "New individual id"]
    new_id.input("![x](http://example.invalid/a.png)")
    [save] = [b for b in at.button if b.label == "Save to catalogue"]
    save.click().run()
    assert not at.exception and at.error
    _assert_literal(_markdown_sources(at), "Not saved:", "![x](http://example.invalid/a.png)")

    # a valid id that Markdown would turn into emphasis, enrolled with a hostile file name, then browsed
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"_A_/{HOSTILE_NAME}.jpg", photo.read_bytes())
    at.switch_page("views/catalogue.py").run()
    [uploader] = [u for u in at.file_uploader if u.label == "ZIP of photos"]
    uploader.set_value((f"{HOSTILE_TEXT}.zip", buffer.getvalue(), "application/zip"))
    [species] = [s for s in at.selectbox if s.label.startswith("Species of new individuals")]
    species.set_value("humpback_whale")
    [add] = [b for b in at.button if b.label == "Add to catalogue"]
    add.click().run()
    _no_failure(at)
    _assert_literal(_markdown_sources(at), f"{HOSTILE_TEXT}.zip")
    at.run()  # the Individuals tab was drawn before the form's result
    at.selectbox(key="cat_pick").set_value("_A_").run()
    _no_failure(at)
    _assert_literal(_markdown_sources(at), "_A_", f"{HOSTILE_NAME}.jpg")


def test_an_unexpected_error_message_quoting_user_text_is_shown_literally() -> None:
    def page() -> None:
        from app.guard import run_guarded
        from whales_identify.errors import WhaleIdError

        def boom() -> None:
            raise WhaleIdError("cannot read ![x](http://example.invalid/a.png) **bold**")

        run_guarded(boom)

    at = AppTest.from_function(page, default_timeout=60)
    at.run()
    assert "](http" not in at.error[0].value and "**bold**" not in at.error[0].value
    assert "![x](http://example.invalid/a.png) **bold**" in _plain(at.error[0].value)


# --- the biologist's review: wording, numbers that agree, names ------------------------------------------
def test_species_labels_spell_place_names_possessives_and_hyphens() -> None:
    from app import view_model as vm

    assert vm.species_label("north_atlantic_right_whale") == "North Atlantic right whale"
    assert vm.species_label("long_finned_pilot_whale") == "Long-finned pilot whale"
    assert vm.species_label("melon_headed_whale") == "Melon-headed whale"
    assert vm.species_label("cuviers_beaked_whale") == "Cuvier's beaked whale"
    assert vm.species_label("brydes_whale") == "Bryde's whale"
    assert vm.species_label("commersons_dolphin") == "Commerson's dolphin"
    assert vm.species_label("southern_right_whale") == "Southern right whale"
    assert vm.species_label("pacific_white_sided_dolphin") == "Pacific white-sided dolphin"
    from app.state import examples

    labels = [label for label, _ in examples()]  # the "Try an example" list, from tests/data/samples.csv
    assert any(label.startswith("North Atlantic right whale · ") for label in labels)
    assert not any("North atlantic" in label for label in labels)


def test_counts_are_singular_or_plural() -> None:
    from app import view_model as vm

    assert vm.plural(1, "new individual") == "1 new individual" and vm.plural(1, "photo") == "1 photo"
    assert vm.plural(0, "photo") == "0 photos" and vm.plural(1041, "photo") == "1,041 photos"


def test_import_of_one_individual_says_so_in_the_singular(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    photo = _photo()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"ONE-WHALE/{photo.name}", photo.read_bytes())
    at = _app()
    at.switch_page("views/catalogue.py").run()
    [uploader] = [u for u in at.file_uploader if u.label == "ZIP of photos"]
    uploader.set_value(("one.zip", buffer.getvalue(), "application/zip"))
    [species] = [s for s in at.selectbox if s.label.startswith("Species of new individuals")]
    species.set_value("humpback_whale")
    [add] = [b for b in at.button if b.label == "Add to catalogue"]
    add.click().run()
    [export] = [b for b in at.button if b.label == "Prepare export"]
    export.click().run()
    _no_failure(at)
    data, _ = at.session_state["cat_export"]

    monkeypatch.setenv("WHALE_ID_HOME", str(tmp_path / "another_catalogue"))
    other = _app()
    other.switch_page("views/catalogue.py").run()
    [uploader] = [u for u in other.file_uploader if u.label == "Catalogue export (ZIP)"]
    uploader.set_value(("export.zip", data, "application/zip"))
    [start] = [b for b in other.button if b.label == "Import"]
    start.click().run()
    _no_failure(other)
    assert "Imported: 1 new individual, 1 photo (0 already present)" in _plain(other.success[0].value)


def test_a_rejected_photo_shows_one_probability_in_the_table_and_the_detail() -> None:
    from app import view_model as vm

    row = _sample("negative")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(row["image"], (PHOTO_DIR / row["image"]).read_bytes())
    at = _app()
    at.switch_page("views/batch.py").run()
    at.file_uploader[0].set_value(("negative.zip", buffer.getvalue(), "application/zip")).run()
    at.button(key="batch_start").click().run()
    _no_failure(at)
    [batch_row] = at.session_state["batch"].rows
    result = batch_row.result
    assert result.rejected, "the bundled negative sample is chosen to be rejected (tests/test_identify.py)"
    p_not = result.species_probability  # P(no whale or dolphin): what the rejection is about
    frame = vm.batch_frame([batch_row], {})
    assert frame["probability"].iloc[0] == pytest.approx(p_not)
    assert vm.percent(p_not) in frame["status"].iloc[0]
    assert vm.percent(p_not) in _plain(at.warning[-1].value) and "P = " not in _plain(at.warning[-1].value)
    assert vm.batch_counts(frame)["known"] == 0 and vm.batch_counts(frame)["rejected"] == 1


def test_a_blank_name_is_recorded_as_anonymous_not_the_server_user() -> None:
    import getpass

    photo = _photo()
    at = _app()
    at.file_uploader[0].set_value((photo.name, photo.read_bytes(), "image/jpeg")).run()
    at.radio[0].set_value("A new individual")
    [new_id] = [t for t in at.text_input if t.label == "New individual id"]
    new_id.input("ANON-WHALE-1")
    [save] = [b for b in at.button if b.label == "Save to catalogue"]
    save.click().run()
    _no_failure(at)
    at.switch_page("views/catalogue.py").run()
    [audit] = [d.value for d in at.dataframe if "action" in d.value.columns and "individual_id" in d.value.columns]
    assert audit["actor"].tolist() == ["anonymous (app)"]
    assert getpass.getuser() not in audit["actor"].tolist()


def test_a_zip_of_new_individuals_without_species_says_what_to_add() -> None:
    photo = _photo()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"NO-SPECIES-1/{photo.name}", photo.read_bytes())
    at = _app()
    at.switch_page("views/catalogue.py").run()
    [uploader] = [u for u in at.file_uploader if u.label == "ZIP of photos"]
    uploader.set_value(("new.zip", buffer.getvalue(), "application/zip"))
    [add] = [b for b in at.button if b.label == "Add to catalogue"]
    add.click().run()
    assert not at.exception
    assert "Nothing was added" in _plain(at.error[0].value)
    [hint] = [_plain(i.value) for i in at.info if "To add new individuals" in _plain(i.value)]
    assert "Species of new individuals" in hint and "species" in hint and "image,individual_id,species" in hint


def test_long_ids_are_shortened_on_the_chart_with_the_full_id_in_the_tooltip() -> None:
    from app import charts
    from app import view_model as vm
    from whales_identify.matching.results import Candidate, Identification

    uuid = "16d659a0-ec7d-4dd0-adb2-1b2722fbf5b6"
    result = Identification(
        species="humpback_whale",
        species_probability=0.9,
        top5=[Candidate(uuid, "humpback_whale", 0.5, 0.7), Candidate("1056", "bottlenose_dolphin", 0.1, 0.4)],
        new_individual=False,
        new_individual_probability=0.3,
    )
    frame = vm.top5_frame(result)
    assert frame["label"].tolist()[:2] == [f"#1 {vm.short_id(uuid)}", "#2 1056"]
    assert len(vm.short_id(uuid)) == vm.ID_LABEL_CHARS and uuid in frame["individual"].tolist()
    spec = charts.top5_chart(result).to_dict()
    tooltips = [t["field"] for layer in spec["layer"] for t in layer.get("encoding", {}).get("tooltip", [])]
    assert "individual" in tooltips


def test_the_score_chart_never_cuts_off_a_score_fused_with_keypoint_evidence() -> None:
    """A cosine of 0.9 plus 0.4 of keypoint evidence is 1.3: the axis reaches it (it used to stop at 1)."""
    from app import charts
    from whales_identify.matching.results import Candidate, Identification

    result = Identification(
        species="north_atlantic_right_whale",
        species_probability=0.99,
        top5=[Candidate("whale_1", "north_atlantic_right_whale", 0.9, 1.3), Candidate("whale_2", "", 0.05, -0.2)],
        new_individual=False,
        new_individual_probability=0.05,
    )
    spec = charts.score_chart(result, 0.62).to_dict()
    [domain] = [
        layer["encoding"]["x"]["scale"]["domain"] for layer in spec["layer"] if "scale" in layer["encoding"]["x"]
    ]
    assert domain == [-0.2, 1.3]
    plain = charts.score_chart(Identification("beluga", 0.9, [Candidate("b", "beluga", 0.6, 0.5)], False, 0.4), 0.44)
    assert [
        layer["encoding"]["x"]["scale"]["domain"]
        for layer in plain.to_dict()["layer"]
        if "scale" in layer["encoding"]["x"]
    ] == [[0.0, 1.0]]


def test_about_opens_with_a_plain_language_summary_before_the_model_card() -> None:
    at = _app()
    at.switch_page("views/about_model.py").run()
    _no_failure(at)
    assert at.subheader[0].value == "In short, for biologists"
    texts = [m.value for m in at.markdown]
    summary = next(i for i, t in enumerate(texts) if "shortlist to check by eye" in t)
    card = next((i for i, t in enumerate(texts) if t.lstrip().startswith("#")), len(texts))
    assert summary < card


# --- where and when: whole values, an offline map ---------------------------------------------------------
def _with_gps(data: bytes, north: float = 48.5, east: float = -123.1666667, when: str = "2024:07:01 10:20:30") -> bytes:
    """The same photo with an EXIF date and GPS position."""
    from PIL import ExifTags, Image

    def dms(value: float) -> tuple[float, float, float]:
        value = abs(value)
        degrees, minutes = int(value), (abs(value) - int(value)) * 60
        return (float(degrees), float(int(minutes)), round((minutes - int(minutes)) * 60, 4))

    image = Image.open(io.BytesIO(data)).convert("RGB")
    exif = Image.Exif()
    exif[ExifTags.Base.DateTime] = when
    exif[ExifTags.IFD.GPSInfo] = {
        1: "N" if north >= 0 else "S",
        2: dms(north),
        3: "E" if east >= 0 else "W",
        4: dms(east),
    }
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, exif=exif)
    return buffer.getvalue()


def _vega_specs(at: AppTest) -> list[dict]:
    import json

    return [json.loads(chart.proto.spec) for chart in at.get("arrow_vega_lite_chart") + at.get("vega_lite_chart")]


def _maps(at: AppTest) -> list[dict]:
    def marks(spec: dict) -> list[str]:
        found = [spec["mark"]["type"] if isinstance(spec.get("mark"), dict) else spec.get("mark")]
        return found + [m for layer in spec.get("layer", []) for m in marks(layer)]

    return [spec for spec in _vega_specs(at) if "geoshape" in marks(spec)]


def _land_features(spec: object) -> int:
    """The most GeoJSON features any dataset or inline data of the spec holds."""
    if isinstance(spec, dict):
        own = len(spec["features"]) if isinstance(spec.get("features"), list) else 0
        return max([own, *(_land_features(v) for v in spec.values())])
    if isinstance(spec, list):
        return max([0, *(_land_features(v) for v in spec)])
    return 0


def test_identify_shows_the_date_and_position_whole_on_an_offline_map() -> None:
    photo = _photo()
    at = _app()
    at.file_uploader[0].set_value(("gps.jpg", _with_gps(photo.read_bytes()), "image/jpeg")).run()
    _no_failure(at)
    shown = _texts(at)
    assert "2024-07-01 10:20:30" in shown and "48.50000° N, 123.16667° W" in shown
    assert not at.metric, "st.metric cuts long values off"
    assert not at.get("deck_gl_json_chart"), "st.map needs map tiles from the internet"
    [world] = _maps(at)
    assert _land_features(world) > 100  # the coastlines travel with the chart


def test_identify_says_why_an_impossible_gps_position_is_not_shown() -> None:
    at = _app()
    at.file_uploader[0].set_value(("bad_gps.jpg", _with_gps(_photo().read_bytes(), 95.0, 10.0), "image/jpeg")).run()
    _no_failure(at)
    shown = _texts(at)
    assert "GPS position ignored" in shown and "latitude 95° is beyond ±90°" in shown
    assert "2024-07-01 10:20:30" in shown  # the date is still shown
    assert not _maps(at), "no map of an impossible point"


def test_batch_map_draws_coastlines_framed_to_far_apart_points_with_labels() -> None:
    photo = _photo().read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("survey/salish_sea.jpg", _with_gps(photo, 48.5, -123.17))
        archive.writestr("survey/sydney.jpg", _with_gps(photo, -33.86, 151.21))
        archive.writestr("survey/no_gps.jpg", photo)
    at = _app()
    at.switch_page("views/batch.py").run()
    at.file_uploader[0].set_value(("survey.zip", buffer.getvalue(), "application/zip")).run()
    at.button(key="batch_start").click().run()
    _no_failure(at)
    assert not at.get("deck_gl_json_chart")
    [world] = _maps(at)
    assert _land_features(world) > 100
    corners = world["projection"]["fit"]["geometry"]["coordinates"]
    lons, lats = [c[0] for c in corners], [c[1] for c in corners]
    assert min(lons) < -123.17 and max(lons) > 151.21 and min(lats) < -33.86 and max(lats) > 48.5
    texts = [layer for layer in world["layer"] if layer["mark"]["type"] == "text"]
    assert texts and texts[0]["encoding"]["text"]["field"] == "place"
    assert "with GPS" in _texts(at) and "2 photos with GPS" in _texts(at)


def test_view_box_frames_one_point_as_a_region_and_stays_on_the_globe() -> None:
    from app.world import land, view_box

    west, south, east, north = view_box([20.8], [-156.3])
    assert west < -156.3 < east and south < 20.8 < north and east - west >= 12 and north - south >= 12
    assert view_box([-80.0, 80.0], [-179.0, 179.0]) == (-180.0, -85.0, 180.0, 85.0)
    assert len(land()["features"]) > 100
    with pytest.raises(ValueError):
        view_box([], [])


# --- results kept across pages; a batch that is stopped ---------------------------------------------------
def test_an_identified_photo_is_still_shown_after_visiting_another_page(analyse_calls: list[str]) -> None:
    calls = analyse_calls
    photo = _photo()
    at = _app()
    at.file_uploader[0].set_value((photo.name, photo.read_bytes(), "image/jpeg")).run()
    _no_failure(at)
    assert at.get("vega_lite_chart") or at.get("arrow_vega_lite_chart")
    at.switch_page("views/catalogue.py").run()
    _no_failure(at)
    at.switch_page("views/identify.py").run()
    _no_failure(at)
    assert at.get("vega_lite_chart") or at.get("arrow_vega_lite_chart"), "the result is shown again"
    assert f"Showing {photo.name}, uploaded earlier in this session" in _texts(at)
    assert calls == [photo.name], "and not computed again"


def _stopping_after(monkeypatch: pytest.MonkeyPatch, rows_before_stop: int) -> None:
    """Make a batch end as Streamlit ends it when the user leaves the page: StopException mid-stream."""
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    import whales_identify.batch.local as local

    original = local.identify_entries

    def stopping(*args, **kwargs):
        stream = original(*args, **kwargs)
        try:
            for done, row in enumerate(stream, start=1):  # the page already holds the row (on_row)
                if done == rows_before_stop:
                    raise StopException()
                yield row
        finally:
            stream.close()

    monkeypatch.setattr(local, "identify_entries", stopping)


def _four_photo_zip() -> bytes:
    photos = (_photos() * 4)[:4]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, photo in enumerate(photos):
            archive.writestr(f"trip/{index}_{photo.name}", photo.read_bytes())
    return buffer.getvalue()


def test_a_batch_left_half_way_keeps_its_rows_and_says_how_far_it_got(monkeypatch: pytest.MonkeyPatch) -> None:
    _stopping_after(monkeypatch, 2)
    at = _app()
    at.switch_page("views/batch.py").run()
    at.file_uploader[0].set_value(("trip.zip", _four_photo_zip(), "application/zip")).run()
    at.button(key="batch_start").click().run()
    assert not at.exception
    at.switch_page("views/catalogue.py").run()
    at.switch_page("views/batch.py").run()
    _no_failure(at)
    batch = at.session_state["batch"]
    assert len(batch.rows) == 2 and not batch.finished
    message = _plain(at.warning[0].value)
    assert "Stopped after 2 of 4 photos" in message and "the page was left" in message
    assert at.dataframe and len(at.dataframe[0].value) == 2, "the rows done are kept"
    assert "Download all results (CSV)" in [b.proto.label for b in at.get("download_button")]


def test_the_stop_button_ends_a_batch_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    _stopping_after(monkeypatch, 1)  # what Streamlit does to the running batch when Stop is pressed
    at = _app()
    at.switch_page("views/batch.py").run()
    at.file_uploader[0].set_value(("trip.zip", _four_photo_zip(), "application/zip")).run()
    at.button(key="batch_start").click().run()
    at.button(key="batch_stop").click().run()
    _no_failure(at)
    assert "Stopped after 1 of 4 photos** (you pressed Stop)" in _plain(at.warning[0].value)
    start = at.button(key="batch_start")
    assert start.label == "Identify 4 photos", "the whole batch can be run again"


def test_the_model_card_figures_are_shown_as_images_not_broken_links() -> None:
    from app import view_model as vm

    card = ROOT / "models" / "MODEL_CARD.md"
    parts = vm.document_parts(card.read_text(encoding="utf-8"), card.parent)
    images = [(caption, path) for kind, caption, path in parts if kind == "image"]
    assert images and all(path is not None and path.is_file() for _, path in images)
    assert not any("![" in text for kind, text, _ in parts if kind == "markdown")
    at = _app()
    at.switch_page("views/about_model.py").run()
    _no_failure(at)
    assert len(at.get("image")) >= len(images)


def _rerun_with(widgets: list[tuple[str, bool]], page_script_hash: str = "") -> BaseException:
    """The RerunException Streamlit raises into a running script, carrying the browser's widget states."""
    from streamlit.proto.WidgetStates_pb2 import WidgetStates
    from streamlit.runtime.scriptrunner_utils.exceptions import RerunException
    from streamlit.runtime.scriptrunner_utils.script_requests import RerunData

    states = WidgetStates()
    for widget_id, pressed in widgets:
        state = states.widgets.add()
        state.id, state.trigger_value = widget_id, pressed
    return RerunException(RerunData(widget_states=states, page_script_hash=page_script_hash))


def test_why_a_batch_ended_is_read_from_the_request_that_ended_it() -> None:
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    stop = f"$$ID-0123abcd-{state.STOP_KEY}"
    assert state.why_batch_ended(_rerun_with([("$$ID-99-batch_min_p", False), (stop, True)])) == "you pressed Stop"
    assert state.why_batch_ended(_rerun_with([(stop, False), ("$$ID-1-batch_upload", True)])).startswith(
        "another control"
    ), "a Stop button present but not clicked is not a Stop"
    assert state.why_batch_ended(_rerun_with([("$$ID-2-not_batch_stop_really", True)])).startswith("another")
    assert state.why_batch_ended(StopException()) == "the page was left or reloaded before the end"
    assert state.why_batch_ended(RuntimeError("bug")).startswith("an error ended it")


@pytest.mark.parametrize("verify", [False, True])
def test_the_batch_verifies_right_whales_only_when_asked(verify: bool) -> None:
    photos = sorted(PHOTO_DIR.glob("north_atlantic_right_whale_*.jpg"))
    assert photos, "the right-whale samples are in tests/data"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for photo in photos:
            archive.writestr(photo.name, photo.read_bytes())
    at = _app()
    at.switch_page("views/batch.py").run()
    at.file_uploader[0].set_value(("heads.zip", buffer.getvalue(), "application/zip")).run()
    if verify:
        at.checkbox(key="batch_verify").check().run()
    at.button(key="batch_start").click().run()
    _no_failure(at)
    rows = [r for r in at.session_state["batch"].rows if r.status == "ok"]
    assert len(rows) == len(photos)
    checked = [r.inliers is not None for r in rows]
    assert all(checked) if verify else not any(checked), [(r.file, r.inliers) for r in rows]


# --- the share of catalogued photos the user states (sidebar) ------------------------------------------------
def test_the_share_stated_in_the_sidebar_decides_each_photo_once_per_share(identifier, analyse_calls) -> None:
    """Each share is its own answer, computed once: back to a share already seen comes from memory. The
    answer's threshold is the one the package moved for that share, and the page says which it is."""
    photo = sample_photo("unseen")
    at = _app()
    control = at.selectbox(key="catalogued_share")
    assert control.value == identifier.config.catalogued_share  # the settings file's, until the user picks
    at.file_uploader[0].set_value((photo.name, photo.read_bytes(), "image/jpeg")).run()
    at.selectbox(key="catalogued_share").set_value(0.9).run()
    at.selectbox(key="catalogued_share").set_value(0.5).run()
    _no_failure(at)
    assert analyse_calls == [photo.name, photo.name]
    kept = at.session_state["photo_results"]
    assert sorted(key.rsplit(":", 1)[1] for key in kept) == ["0.5", "0.9"]
    for key, result in kept.items():
        share = float(key.rsplit(":", 1)[1])
        rules_now = replace(identifier.config, catalogued_share=share)
        verified = bool(result.result.evidence)
        assert result.result.new_individual_threshold == pytest.approx(rules.decision_threshold(rules_now, verified))
    assert "of which **50%** show catalogued animals" in _texts(at)


def test_a_batch_is_answered_under_the_share_stated_and_offers_to_run_again_when_it_changes(identifier) -> None:
    photo = sample_photo("unseen")
    at = _app()
    at.selectbox(key="catalogued_share").set_value(0.9).run()
    at.switch_page("views/batch.py").run()
    at.file_uploader[0].set_value((photo.name, photo.read_bytes(), "image/jpeg")).run()
    at.button(key="batch_start").click().run()
    _no_failure(at)
    batch = at.session_state["batch"]
    [row] = [r for r in batch.rows if r.status == "ok"]
    expected = identifier.identify(photo, verify=False, config=replace(identifier.config, catalogued_share=0.9))
    assert batch.catalogued_share == 0.9 and batch.finished
    assert row.individual_id == expected.answer
    assert row.probability == pytest.approx(expected.answer_probability, abs=1e-4)
    shipped = identifier.identify(photo, verify=False)  # what a batch that ignored the sidebar would give
    assert abs(shipped.answer_probability - expected.answer_probability) > 0.1
    assert "90% show catalogued animals" in _texts(at)
    at.run()  # the next rerun (the run that identified still drew the button it was started by)
    assert not _has_button(at, "batch_start"), "done, with the share stated: nothing to run again"
    at.selectbox(key="catalogued_share").set_value(0.1).run()
    assert _has_button(at, "batch_start"), "another share: the batch can be run again"
    assert "The sidebar now says otherwise" in _texts(at)


def test_the_share_control_keeps_the_settings_files_own_share_and_changes_nothing_it_already_assumes(
    tmp_path: Path,
) -> None:
    from app import prior
    from whales_identify.config import InferenceConfig

    settings = tmp_path / "inference.yaml"
    settings.write_text("catalogued_share: 0.8\n")
    assert prior.default_share(str(settings)) == 0.8
    assert prior.label(0.8) == "80% · the settings file's" and prior.label(0.9) == prior.PRESETS[0.9]
    settings_broken = tmp_path / "broken.yaml"
    settings_broken.write_text("catalogued_share: 1.5\n")
    assert prior.default_share(str(settings_broken)) == 0.5  # refused by the package: the shipped assumption
    shipped = InferenceConfig()
    assert prior.rules_under(shipped, shipped.catalogued_share) is None
    assert prior.rules_under(shipped, 0.9) == replace(shipped, catalogued_share=0.9)


def test_a_photo_whose_nearest_animal_is_of_another_species_is_explained_as_new(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The unseen humpback's nearest catalogue animal is a right whale. With a settings file that states
    nearly every photo is catalogued (its own share: the sidebar's default), the threshold alone would name
    that right whale: the page answers a new individual and says why."""
    settings = tmp_path / "inference.yaml"
    settings.write_text((ROOT / "models" / "inference.yaml").read_text() + "\ncatalogued_share: 0.999\n")
    monkeypatch.setenv("WHALE_ID_INFERENCE_CONFIG", str(settings))
    photo = sample_photo("unseen")
    at = _app()
    assert at.selectbox(key="catalogued_share").value == 0.999
    at.file_uploader[0].set_value((photo.name, photo.read_bytes(), "image/jpeg")).run()
    _no_failure(at)
    result = next(iter(at.session_state["photo_results"].values())).result
    assert result.new_individual and result.top5[0].species != result.species
    assert result.top5[0].score > result.new_individual_threshold
    assert "an answer never names an animal of another species" in _texts(at)
