"""Reviewing a batch (issue 14, item 3): stepping through its photos, Same / Different / Cannot tell,
saving the verdicts and the confirmed photos in one transaction; filters that reach the charts and
the map; rejected photos counted apart.

The package's ``save_reviewed`` is tested with the fake embedder of tests/test_catalog.py and with the
real bundled model; the page with ``AppTest`` on the sample photos of tests/data/ (user catalogue in a
temporary ``WHALE_ID_HOME``).
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import sample_photo
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_app import _plain, _with_gps
from test_catalog import FakeEmbedder, photo

from whales_identify.catalog.enrol import enrol_photo
from whales_identify.catalog.review import ReviewDecision, ReviewSaveError, SaveReport, save_reviewed
from whales_identify.catalog.store import Catalog, default_path
from whales_identify.config import NEW_INDIVIDUAL

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app" / "streamlit_app.py")
DATA = ROOT / "tests" / "data"
TIMEOUT = 180


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _counts(catalog: Catalog) -> tuple[int, int, int, int]:
    """(individuals, photos, audit rows, review rows) of the user's catalogue."""
    row = catalog.query(
        "SELECT (SELECT count(*) FROM individuals), (SELECT count(*) FROM images),"
        " (SELECT count(*) FROM audit_log), (SELECT count(*) FROM reviews)"
    )[0]
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


# --- the package: save_reviewed -------------------------------------------------------------------------
@pytest.fixture
def reviewed(tmp_path: Path):
    """A catalogue with one individual (A-1), and five photos of a batch with their bytes."""
    embedder = FakeEmbedder()
    catalog = Catalog(tmp_path / "review.sqlite3", model_version="fake-1", actor="setup")
    enrol_photo(catalog, embedder, photo(1), "A-1", "humpback_whale", new=True)
    photos = {f"trip/{n}.jpg": photo(10 + n) for n in range(5)}
    yield catalog, embedder, photos
    catalog.close()


def _decisions(photos: dict[str, bytes]) -> list[ReviewDecision]:
    files = list(photos)
    sha = {f: _sha(photos[f]) for f in files}
    return [
        ReviewDecision(files[0], sha[files[0]], "same", "A-1", "A-1", probability=0.91),
        ReviewDecision(files[1], sha[files[1]], "different", "A-1", "NEW-1", new=True, species="humpback_whale"),
        # answered "new individual", but the reviewer knows it: A-1
        ReviewDecision(files[2], sha[files[2]], "different", NEW_INDIVIDUAL, "A-1"),
        ReviewDecision(files[3], sha[files[3]], "cannot_tell", "A-1"),
        ReviewDecision(files[4], sha[files[4]], "different", "A-1"),  # not A-1, who it is not known
    ]


def test_save_reviewed_stores_the_confirmed_photos_and_one_review_per_verdict(reviewed) -> None:
    catalog, embedder, photos = reviewed
    before = _counts(catalog)
    report = save_reviewed(catalog, embedder, _decisions(photos), photos.items(), actor="reviewer")
    assert isinstance(report, SaveReport) and report.reviews == 5
    assert [(p.file, p.individual_id, p.new) for p in report.stored] == [
        ("trip/1.jpg", "NEW-1", True),  # new individuals first, so later photos can confirm them
        ("trip/0.jpg", "A-1", False),
        ("trip/2.jpg", "A-1", False),
    ]
    assert report.summary() == "3 photos stored, 1 new individual, 5 reviews recorded"
    individuals, images, audit, reviews = _counts(catalog)
    assert (individuals, images, reviews) == (before[0] + 1, before[1] + 3, before[3] + 5)
    assert audit == before[2] + 3  # an audit row per stored photo
    assert catalog.find_image(_sha(photos["trip/0.jpg"]))[1] == "A-1"
    assert catalog.find_image(_sha(photos["trip/1.jpg"]))[1] == "NEW-1"
    assert catalog.find_image(_sha(photos["trip/3.jpg"])) is None, "Cannot tell stores no photo"
    assert catalog.find_image(_sha(photos["trip/4.jpg"])) is None, "Different without a who stores no photo"
    log = catalog.reviews()
    by_file = {row["photo_name"]: row for row in log.to_dict("records")}
    assert by_file["trip/0.jpg"]["decision"] == "same" and by_file["trip/0.jpg"]["individual_id"] == "A-1"
    assert by_file["trip/0.jpg"]["details"]["probability"] == 0.91
    assert by_file["trip/1.jpg"]["decision"] == "different" and by_file["trip/1.jpg"]["individual_id"] == "A-1"
    assert by_file["trip/1.jpg"]["details"] == {
        "answer": "A-1",
        "model_version": "fake-1",
        "stored_as": "NEW-1",
        "new_individual": True,
    }
    assert by_file["trip/2.jpg"]["individual_id"] == "A-1"  # a new-individual answer: about who it is
    assert by_file["trip/3.jpg"]["decision"] == "cannot_tell" and "stored_as" not in by_file["trip/3.jpg"]["details"]
    assert set(log["actor"]) == {"reviewer"}
    trail = catalog.audit_log()
    assert trail["action"].tolist()[-3:] == ["enrolled", "confirmed", "confirmed"]
    assert set(trail["actor"].tolist()[-3:]) == {"reviewer"}
    assert catalog.species_of("NEW-1") == "humpback_whale"


def test_a_second_photo_of_a_new_individual_confirms_it_in_the_same_save(reviewed) -> None:
    catalog, embedder, photos = reviewed
    a, b = list(photos)[:2]
    decisions = [
        ReviewDecision(b, _sha(photos[b]), "different", "A-1", "NEW-2"),  # typed: the new one named below
        ReviewDecision(a, _sha(photos[a]), "same", NEW_INDIVIDUAL, "NEW-2", new=True, species="humpback_whale"),
    ]
    report = save_reviewed(catalog, embedder, decisions, photos.items())
    assert sorted(p.individual_id for p in report.stored) == ["NEW-2", "NEW-2"]
    assert catalog.images("NEW-2")["source_name"].tolist() == [a, b]
    assert {r["individual_id"] for r in catalog.reviews().to_dict("records")} == {"NEW-2", "A-1"}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda d: [*d[:1], ReviewDecision("trip/9.jpg", "ab" * 32, "same", "A-1", "A-1")], "not among the files"),
        (lambda d: [ReviewDecision(d[0].file, "00" * 32, "same", "A-1", "A-1"), *d[1:]], "not the photo"),
        (lambda d: [ReviewDecision(d[0].file, d[0].sha256, "same", "A-1", "B-9"), *d[1:]], "Same confirms A-1"),
        (lambda d: [ReviewDecision(d[3].file, d[3].sha256, "cannot_tell", "A-1", "A-1"), *d[:3]], "stores no photo"),
        (
            lambda d: [
                ReviewDecision(d[1].file, d[1].sha256, "different", "A-1", "A-1", new=True, species="humpback_whale")
            ],
            "already in the catalogue",
        ),
        (
            lambda d: [
                *d,
                ReviewDecision(
                    "trip/x.jpg", "cd" * 32, "different", "A-1", "NEW-1", new=True, species="humpback_whale"
                ),
            ],
            "named as new twice",
        ),
        (
            lambda d: [
                ReviewDecision(
                    d[1].file, d[1].sha256, "different", "A-1", "bad id!", new=True, species="humpback_whale"
                )
            ],
            "",
        ),
        (lambda d: [ReviewDecision(d[2].file, d[2].sha256, "different", "A-1", "NOBODY")], "no individual 'NOBODY'"),
        (lambda d: [ReviewDecision(d[0].file, d[0].sha256, "maybe", "A-1")], "a verdict is one of"),
        (lambda d: [*d, d[0]], "reviewed twice"),
    ],
)
def test_a_save_that_cannot_be_done_stores_nothing_and_says_why(reviewed, change, why: str) -> None:
    catalog, embedder, photos = reviewed
    before = _counts(catalog)
    with pytest.raises(ReviewSaveError) as caught:
        save_reviewed(catalog, embedder, change(_decisions(photos)), photos.items())
    assert why in str(caught.value) and caught.value.problems
    assert str(caught.value).startswith("nothing was saved")
    assert _counts(catalog) == before


def test_a_failure_inside_the_transaction_leaves_the_catalogue_unchanged(reviewed, monkeypatch) -> None:
    catalog, embedder, photos = reviewed
    before = _counts(catalog)
    original, calls = Catalog.insert_image, []

    def failing(conn, img, *args, **kwargs):
        calls.append(img.sha256)
        if len(calls) == 2:  # the second photo: the first is already written in this transaction
            raise sqlite3.OperationalError("disk I/O error")
        return original(conn, img, *args, **kwargs)

    monkeypatch.setattr(Catalog, "insert_image", staticmethod(failing))
    with pytest.raises(Exception, match=r"disk I/O error|database"):
        save_reviewed(catalog, embedder, _decisions(photos), photos.items())
    assert len(calls) == 2
    assert _counts(catalog) == before, "photos, individuals, audit and reviews all rolled back"


def test_saving_the_same_photo_again_is_reported_not_stored_twice(reviewed) -> None:
    catalog, embedder, photos = reviewed
    first = _decisions(photos)[:1]
    save_reviewed(catalog, embedder, first, photos.items())
    again = save_reviewed(catalog, embedder, first, photos.items())
    assert not again.stored and [p.file for p in again.already_there] == ["trip/0.jpg"]
    assert len(catalog.images("A-1")) == 2  # the enrolled one and the reviewed one, once


def test_save_reviewed_with_the_real_model_makes_the_photo_findable(identifier, samples, tmp_path) -> None:
    """The stored photo's embedding is the real model's: the photo is then answered as the id given."""
    row = samples[samples["species"] == "humpback_whale"].iloc[0]
    data = Path(row["path"]).read_bytes()
    result = identifier.identify(data)
    species = result.species
    with Catalog(tmp_path / "real.sqlite3", identifier.gallery, model_version=identifier.model_version) as catalog:
        decision = ReviewDecision(
            row["image"], _sha(data), "different", result.answer, "MY-HW-1", new=True, species=species
        )
        if result.answer == NEW_INDIVIDUAL:
            decision = ReviewDecision(row["image"], _sha(data), "same", NEW_INDIVIDUAL, "MY-HW-1", True, species)
        report = save_reviewed(catalog, identifier, [decision], [(row["image"], data)], actor="biologist")
        assert [p.individual_id for p in report.stored] == ["MY-HW-1"]
        stored = catalog.images("MY-HW-1")
        assert stored["source_name"].tolist() == [row["image"]]
        bundled = identifier.gallery
        identifier.set_gallery(catalog.gallery())
        try:
            assert identifier.identify(data).answer == "MY-HW-1"
        finally:
            identifier.set_gallery(bundled)
        [review] = catalog.reviews().to_dict("records")
        assert review["actor"] == "biologist" and review["details"]["model_version"] == identifier.model_version


# --- pure helpers of app/review.py ----------------------------------------------------------------------
def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row": [0, 1, 2, 3, 4],
            "file": ["a", "b", "c", "d", "e"],
            "outcome": ["ok", "ok", "error", "ok", "ok"],
            "rejected": [False, False, False, True, False],
            "probability": [0.9, 0.4, None, 0.99, 0.6],
        }
    )


def test_the_queue_skips_what_has_no_answer_and_orders_the_least_sure_first() -> None:
    from app.review import LOW_FIRST, review_queue, step

    frame = _frame()
    assert review_queue(frame, set(), False, "Batch order") == ["a", "b", "e"]  # no error, no rejected photo
    assert review_queue(frame, set(), False, LOW_FIRST) == ["b", "e", "a"]
    assert review_queue(frame, {"b"}, True, LOW_FIRST) == ["e", "a"]
    queue = ["a", "b", "e"]
    assert step(queue, "a", 1) == "b" and step(queue, "e", 1) == "e" and step(queue, "a", -1) == "a"
    assert step(queue, "gone", 0) == "a" and step([], "a", 1) is None


# --- the page ---------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHALE_ID_HOME", str(tmp_path / "catalogue_home"))


def _sample_zip(names: list[str] | None = None) -> bytes:
    frame = pd.read_csv(DATA / "samples.csv", dtype=str, keep_default_na=False)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for image in names or frame["image"].tolist():
            if image.endswith(".jpg"):
                archive.writestr(f"trip/{image}", (DATA / image).read_bytes())
    return buffer.getvalue()


def _batch(data: bytes | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("views/batch.py").run()
    at.file_uploader[0].set_value(("trip.zip", data or _sample_zip(), "application/zip")).run()
    at.button(key="batch_start").click().run()
    assert not at.exception, at.exception
    return at


def _review(at: AppTest) -> AppTest:
    at.segmented_control(key="batch_view").set_value("Review the answers").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def _user_catalog() -> Catalog:
    return Catalog(default_path(), model_version="")


def test_stepping_through_a_batch_with_buttons_that_carry_their_keys() -> None:
    at = _review(_batch())
    batch = at.session_state["batch"]
    queue = [r.file for r in batch.rows if r.status == "ok" and not r.rejected]
    assert batch.review_at == queue[0] and len(queue) >= 4
    keys = {b.key: b.proto.shortcut for b in at.button if b.key and b.key.startswith("review_")}
    assert keys["review_previous"] == "left" and keys["review_next"] == "right"
    assert (keys["review_same"], keys["review_different"], keys["review_cannot_tell"]) == ("1", "2", "3")
    text = "\n".join(_plain(c.value).replace("*", "") for c in at.caption)
    assert "1 Same" in text and "2 Different" in text and "3 Cannot tell" in text, "the keys are shown"
    assert at.button(key="review_previous").disabled
    at.button(key="review_next").click().run()
    assert batch.review_at == queue[1]
    at.button(key="review_next").click().run()
    at.button(key="review_previous").click().run()
    assert batch.review_at == queue[1]
    assert f"Photo 2 of {len(queue)}" in _plain(at.markdown[0].value) or any(
        f"Photo 2 of {len(queue)}" in _plain(m.value) for m in at.markdown
    )
    progress = at.get("progress")[0].proto.text
    assert f"0 of {len(queue)} photos reviewed" in _plain(progress)


def _go_to_known(at: AppTest) -> str:
    """Move to the first photo whose answer is a catalogue individual; its file."""
    batch = at.session_state["batch"]
    for _ in range(len(batch.rows)):
        row = next(r for r in batch.rows if r.file == batch.review_at)
        if row.individual_id != NEW_INDIVIDUAL:
            return row.file
        at.button(key="review_next").click().run()
    raise AssertionError("no photo with a catalogue answer")


def test_confirm_correct_and_save_in_one_transaction() -> None:
    at = _review(_batch())
    batch = at.session_state["batch"]
    rows = {r.file: r for r in batch.rows}

    known = _go_to_known(at)
    at.button(key="review_same").click().run()  # Same: complete, and on to the next photo
    assert batch.decisions[known].decision == "same"
    assert batch.decisions[known].individual_id == rows[known].individual_id
    assert batch.review_at != known

    corrected = batch.review_at
    at.button(key="review_different").click().run()
    assert batch.fixing == "different" and corrected not in batch.decisions
    index = [r.file for r in batch.rows].index(corrected)
    at.radio(key=f"review_who_{index}").set_value("new" if rows[corrected].individual_id != NEW_INDIVIDUAL else "typed")
    at.run()
    if rows[corrected].individual_id != NEW_INDIVIDUAL:
        at.text_input(key=f"review_new_{index}").input("bad id!").run()
        assert at.button(key="review_record").disabled, "an invalid new id cannot be recorded"
        at.text_input(key=f"review_new_{index}").input("REVIEW-NEW-1").run()
        expected = ("REVIEW-NEW-1", True)
    else:
        at.text_input(key=f"review_typed_{index}").input(rows[known].individual_id).run()
        expected = (rows[known].individual_id, False)
    at.button(key="review_record").click().run()
    assert not at.exception, at.exception
    decision = batch.decisions[corrected]
    assert decision.decision == "different" and (decision.individual_id, decision.new) == expected

    unsure = batch.review_at
    at.button(key="review_cannot_tell").click().run()
    assert batch.decisions[unsure].decision == "cannot_tell"
    progress = _plain(at.get("progress")[0].proto.text)
    assert "3 of" in progress and "reviewed" in progress

    at.text_input(key="review_actor").input("biologist").run()
    save = at.button(key="review_save")
    assert save.label == "Save 3 verdicts (2 photos to store)"
    save.click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert "2 photos stored" in _plain(at.success[-1].value) and "3 reviews recorded" in _plain(at.success[-1].value)
    assert set(batch.saved) == {known, corrected, unsure}

    with _user_catalog() as catalog:
        reviews = catalog.reviews()
        assert sorted(reviews["photo_name"]) == sorted([known, corrected, unsure]), "one review row per verdict"
        assert set(reviews["actor"]) == {"biologist"}
        assert catalog.find_image(batch.sha256[known])[1] == rows[known].individual_id
        assert catalog.find_image(batch.sha256[corrected])[1] == expected[0]
        assert catalog.find_image(batch.sha256[unsure]) is None
        audit = catalog.audit_log()
        assert len(audit) == 2 and set(audit["actor"]) == {"biologist"}

    # saved: shown as saved, locked, and nothing left to save
    at.button(key="review_previous").click().run()
    while batch.review_at != known:
        at.button(key="review_previous").click().run()
    assert any("Saved" in _plain(s.value) for s in at.success)
    assert at.button(key="review_same").disabled and at.button(key="review_save").disabled
    table_at = at.segmented_control(key="batch_view").set_value("Table, charts and map").run()
    frame = table_at.dataframe[0].value
    assert "Same ✓" in frame["review"].tolist()


def test_a_failed_save_stores_nothing_says_why_and_can_be_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from whales_identify.catalog.store import CatalogError

    at = _review(_batch())
    batch = at.session_state["batch"]
    known = _go_to_known(at)
    at.button(key="review_same").click().run()
    original = Catalog.add_images

    def failing(self, *args, **kwargs):
        raise CatalogError("the catalogue is locked by another program")

    monkeypatch.setattr(Catalog, "add_images", failing)
    at.button(key="review_save").click().run()
    assert not at.exception
    assert "Nothing was saved" in _plain(at.error[0].value) and "locked" in _plain(at.error[0].value)
    assert not batch.saved and known in batch.decisions
    with _user_catalog() as catalog:
        assert catalog.reviews().empty and catalog.images().empty

    monkeypatch.setattr(Catalog, "add_images", original)
    at.button(key="review_save").click().run()
    assert not at.error and set(batch.saved) == {known}


def test_saving_needs_the_uploaded_photos_and_keeps_the_verdicts_without_them() -> None:
    at = _review(_batch())
    batch = at.session_state["batch"]
    known = _go_to_known(at)
    at.button(key="review_same").click().run()
    at.switch_page("views/catalogue.py").run()  # leaving the page clears the upload
    at.switch_page("views/batch.py").run()
    at.segmented_control(key="batch_view").set_value("Review the answers").run()
    if at.file_uploader[0].value:
        pytest.skip("this Streamlit keeps the upload across pages")
    at.button(key="review_save").click().run()
    assert "upload the same zip" in _plain(at.error[0].value).lower()
    assert known in at.session_state["batch"].decisions and not batch.saved

    at.file_uploader[0].set_value(("trip.zip", _sample_zip(), "application/zip")).run()  # the same photos again
    at.segmented_control(key="batch_view").set_value("Review the answers").run()
    at.button(key="review_save").click().run()
    assert not at.error, [e.value for e in at.error]
    assert set(at.session_state["batch"].saved) == {known}


# --- filters reach the charts and the map; rejected photos apart --------------------------------------------
def _chart_data(at: AppTest) -> list[pd.DataFrame]:
    """Every chart's rows (Altair sends them as named datasets)."""
    frames = []
    for chart in at.get("arrow_vega_lite_chart") + at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        for values in spec.get("datasets", {}).values():
            frames.append(pd.DataFrame(values))
        for dataset in getattr(chart.proto, "datasets", []):
            from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

            frames.append(convert_arrow_bytes_to_pandas_df(dataset.data.data))
    return frames


def test_filters_apply_to_the_charts_and_the_map_and_rejected_photos_are_counted_apart() -> None:
    right = (DATA / "north_atlantic_right_whale_w_932.jpg").read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("trip/right_gps.jpg", _with_gps(right, 41.5, -69.9))
        archive.writestr(
            "trip/humpback.jpg", (DATA / "humpback_whale_43f3385b-6d40-4b2c-b7f9-6062c680361a.jpg").read_bytes()
        )
        archive.writestr("trip/unseen.jpg", sample_photo("unseen").read_bytes())
        archive.writestr("trip/sea.jpg", sample_photo("negative").read_bytes())
    at = _batch(buffer.getvalue())
    rows = {r.file: r for r in at.session_state["batch"].rows}
    # the bundled samples are chosen so that the sea is rejected and the right whale is not (tests/test_identify.py)
    assert rows["trip/sea.jpg"].rejected and not rows["trip/right_gps.jpg"].rejected
    metrics = {m.label: m.value for m in at.metric}
    known = sum(1 for r in rows.values() if not r.rejected and not r.new_individual)
    assert metrics["Rejected"] == "1" and metrics["Known individuals"] == str(known)
    data = _chart_data(at)
    confidence = next(f for f in data if "answer_kind" in f.columns)
    assert not any("thumbnail" in f.columns for f in data), "no thumbnails sent with the charts"
    sea = confidence[confidence["file"] == "trip/sea.jpg"]
    assert sea["answer_kind"].tolist() == ["Not a whale or dolphin"], "a rejected photo is never plotted as known"
    assert (confidence["answer_kind"] == "Known individual").sum() == known
    [world] = [f for f in data if "place" in f.columns]
    assert world["file"].tolist() == ["trip/right_gps.jpg"], "the map, with the one GPS photo"

    label = rows["trip/humpback.jpg"].species
    from app.view_model import species_label

    at.multiselect(key="batch_species").set_value([species_label(label)]).run()
    assert not at.exception
    data = _chart_data(at)
    counts = next(f for f in data if "photos" in f.columns)
    assert set(counts["species_label"]) == {species_label(label)}
    of_species = {name for name, row in rows.items() if row.species == label and not row.rejected}
    assert "trip/humpback.jpg" in of_species and "trip/right_gps.jpg" not in of_species
    assert all(set(f["file"]) <= of_species for f in data if "file" in f.columns)
    assert not any("place" in f.columns for f in data), "the map follows the filter (no GPS photo left)"
    n = len(of_species)
    shown = f"Charts and map show the {n} row{'s' if n > 1 else ''} the filters let through."
    assert shown in "\n".join(_plain(c.value) for c in at.caption)


def test_the_table_shows_status_new_date_and_gps_in_short_columns() -> None:
    photo_bytes = (DATA / "north_atlantic_right_whale_w_932.jpg").read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("trip/gps.jpg", _with_gps(photo_bytes, 48.5, -123.1666667))
        archive.writestr("trip/broken.jpg", b"\xff\xd8\xff not a photo")
    at = _batch(buffer.getvalue())
    [table] = at.dataframe
    frame = table.value
    gps = frame.set_index("file").loc["trip/gps.jpg"]
    assert gps["gps"] == "48.500, -123.167" and gps["taken_at"] == "2024-07-01 10:20:30"
    assert frame.set_index("file").loc["trip/broken.jpg", "status"].startswith("ERROR: ")
    shown = list(table.proto.column_order)
    assert {"status", "new_individual", "taken_at", "gps"} <= set(shown) and "lat" not in shown


def test_same_on_a_new_individual_names_it_and_skip_takes_a_verdict_back() -> None:
    at = _review(_batch())
    batch = at.session_state["batch"]
    at.segmented_control(key="review_order").set_value("Lowest probability first").run()
    probabilities = [r.probability for r in batch.rows if r.status == "ok" and not r.rejected]
    first = next(r for r in batch.rows if r.file == batch.review_at)
    assert first.probability == min(probabilities), "the least sure answer comes first"
    for _ in range(len(batch.rows)):
        row = next(r for r in batch.rows if r.file == batch.review_at)
        if row.individual_id == NEW_INDIVIDUAL:
            break
        at.button(key="review_next").click().run()
    else:
        raise AssertionError("the bundled samples include a new individual (tests/test_identify.py)")
    index = batch.rows.index(row)
    at.button(key="review_same").click().run()  # "yes, new": it needs an id and a species
    assert batch.fixing == "same" and row.file not in batch.decisions
    assert at.button(key="review_record").disabled
    at.text_input(key=f"review_new_{index}").input("DOLPHIN-NEW-1").run()
    species = at.selectbox(key=f"review_sp_{index}").value
    assert species == row.species  # the predicted species is proposed
    at.button(key="review_record").click().run()
    decision = batch.decisions[row.file]
    assert (decision.decision, decision.individual_id, decision.new, decision.species) == (
        "same",
        "DOLPHIN-NEW-1",
        True,
        row.species,
    )
    at.toggle(key="review_unreviewed").set_value(True).run()
    assert batch.review_at != row.file, "the reviewed photo left the 'without a verdict' list"
    at.toggle(key="review_unreviewed").set_value(False).run()  # the whole list again, from its top
    while batch.review_at != row.file:
        at.button(key="review_next").click().run()
    at.button(key="review_skip").click().run()
    assert row.file not in batch.decisions, "Skip takes the verdict back"


def test_the_corrections_offered_show_catalogue_ids_as_text(identifier, samples) -> None:
    """Radio labels are Markdown: an id from a colleague's older catalogue (made before ids were checked)
    must be offered literally, never drawn as a link or an image the browser would fetch."""
    hostile, emphasis = "![x](http://example.invalid/a.png)", "_A_"
    first = next(name for name in samples["image"] if name.endswith(".jpg"))
    data = (DATA / first).read_bytes()
    with Catalog(default_path(), identifier.gallery, model_version=identifier.model_version) as catalog:
        enrol_photo(catalog, identifier, data, "TMP-1", "humpback_whale", new=True)
        enrol_photo(catalog, identifier, _reencoded(data, 60), emphasis, "humpback_whale", new=True)
        enrol_photo(catalog, identifier, _reencoded(data, 40), "TMP-3", "humpback_whale", new=True)
    with sqlite3.connect(default_path()) as connection:  # as an unchecked older file would hold it
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("UPDATE individuals SET id = ? WHERE id = 'TMP-3'", (hostile,))
    at = _review(_batch(_sample_zip([first])))
    batch = at.session_state["batch"]
    row = batch.rows[0]
    offered = {c.individual_id for c in row.result.top5} - {row.individual_id}
    assert offered & {hostile, emphasis}, "the enrolled copies are among the candidates"
    at.button(key="review_different").click().run()
    labels = at.radio(key="review_who_0").options
    for raw in offered & {hostile, emphasis}:
        assert not any(label.startswith(raw) for label in labels), f"{raw!r} reaches Markdown in {labels}"
        assert any(_plain(label).startswith(raw) for label in labels), f"{raw!r} is not offered literally"


def _reencoded(data: bytes, quality: int) -> bytes:
    """The same photo as another file (a duplicate would be refused)."""
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
