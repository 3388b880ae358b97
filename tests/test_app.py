"""The Streamlit app, page by page, with streamlit.testing.v1.AppTest (no browser).

Uses the real bundled model (models/) and the sample photos in tests/data/;
``WHALE_ID_CHECKPOINT`` / ``WHALE_ID_CATALOGUE`` / ``WHALE_ID_TEST_PHOTOS``
override them. The user catalogue goes to a temporary ``WHALE_ID_HOME``.
"""

from __future__ import annotations

import io
import os
import tomllib
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.config import AppConfig
from whales_identify.config import ImageLimits

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


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error]
    parts += [i.value for i in at.info] + [w.value for w in at.warning] + [s.value for s in at.success]
    return "\n".join(str(p) for p in parts)


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
    at.switch_page("pages/about_model.py").run()
    assert not at.exception
    assert "The model could not be loaded" in at.error[0].value and "missing.pt" in at.error[0].value


# --- every page -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("page", "title"),
    [
        ("pages/identify.py", "Identify a whale or dolphin"),
        ("pages/batch.py", "Batch identification"),
        ("pages/catalogue.py", "Catalogue"),
        ("pages/about_model.py", "About the model"),
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
PAGES = ["pages/identify.py", "pages/batch.py", "pages/catalogue.py", "pages/about_model.py"]


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
    at.switch_page("pages/catalogue.py").run()
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


# --- page 1: identify ---------------------------------------------------------------------------------
def test_identify_upload_shows_species_top5_mask_and_downloads() -> None:
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
    assert result.result is not None and result.mask is not None and result.result.box == result.mask.box


def test_moving_the_slider_never_recomputes(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.state as state

    calls = []
    original = state.analyse_photo

    def counting(*args, **kwargs):
        calls.append(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(state, "analyse_photo", counting)
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
    assert "broken.jpg could not be identified" in at.error[0].value


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
    assert photo.name in _texts(at) or any(photo.name in str(i.proto) for i in at.get("image"))


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
    assert "TEST-WHALE-1" in at.success[0].value

    at.session_state["photo_results"] = OrderedDict()  # identify again, against the updated catalogue
    at.run()
    _no_failure(at)
    again = next(iter(at.session_state["photo_results"].values())).result
    assert "TEST-WHALE-1" in [c.individual_id for c in again.top5]

    at.switch_page("pages/catalogue.py").run()
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
    at.switch_page("pages/batch.py").run()
    at.file_uploader[0].set_value(("trip.zip", buffer.getvalue(), "application/zip")).run()
    [start] = [b for b in at.button if b.label == "Identify 1 file"]
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
    at.switch_page("pages/batch.py").run()
    at.file_uploader[0].set_value(("bad.zip", b"PK\x03\x04 not really", "application/zip")).run()
    [start] = [b for b in at.button if b.label == "Identify 1 file"]
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
    at.switch_page("pages/batch.py").run()
    at.file_uploader[0].set_value(("trip.zip", buffer.getvalue(), "application/zip")).run()
    [start] = [b for b in at.button if b.label == "Identify 1 file"]
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
    at.switch_page("pages/catalogue.py").run()
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
    assert f"{len(photos)} added" in at.success[0].value

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
    at.switch_page("pages/catalogue.py").run()
    [uploader] = [u for u in at.file_uploader if u.label == "ZIP of photos"]
    uploader.set_value(("bad.zip", buffer.getvalue(), "application/zip"))
    [species] = [s for s in at.selectbox if s.label.startswith("Species of new individuals")]
    species.set_value("humpback_whale")
    [add] = [b for b in at.button if b.label == "Add to catalogue"]
    add.click().run()
    assert not at.exception
    assert "Nothing was added" in at.error[0].value and "broken.jpg" in at.error[0].value


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
        assert "No whale or dolphin found" in at.warning[0].value


def test_upload_size_limit_is_enforced_in_code_too() -> None:
    limit = AppConfig().max_photo_mb * 1024 * 1024
    at = _app()
    at.file_uploader[0].set_value(("huge.jpg", b"\xff\xd8" + bytes(limit), "image/jpeg")).run()
    assert not at.exception
    assert "the limit is" in at.error[0].value
    assert "photo_results" not in at.session_state or not at.session_state["photo_results"]
