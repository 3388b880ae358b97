"""Comparing a photo with the catalogue: the comparison-photo asset (builder and the committed one),
the photo store (bundled + user photos, ordered by similarity), the pure drawing helpers (zoom,
layout, keypoint lines from a hand-built Evidence) and the Identify page's panel (AppTest: candidate,
strip, verdicts recorded with the reviewer's name, "Same" then add to the catalogue)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_app import _plain, _texts

from app import comparison_model as cm
from whales_identify.catalog.enrol import enrol_photo
from whales_identify.catalog.photos import USER, ComparisonPhoto, ComparisonPhotoError, ComparisonPhotos
from whales_identify.catalog.store import Catalog
from whales_identify.config import DEFAULT_CATALOGUE, ComparisonConfig
from whales_identify.inputs.imaging import decode_image
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.results import Candidate, Evidence, Identification
from whales_identify.matching.selection import select_per_individual
from whales_identify.training.comparison import (
    ComparisonBuildError,
    build_comparison_photos,
    choose_photos,
)

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app" / "streamlit_app.py")
RIGHT_WHALE = ROOT / "tests" / "data" / "north_atlantic_right_whale_w_932.jpg"
DIM = 8


# --- hand-built data -----------------------------------------------------------------------------------
def _jpeg(seed: int, size: tuple[int, int], kind: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (max(1, size[1] // 16), max(1, size[0] // 16), 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format=kind, **({"quality": 90} if kind == "JPEG" else {}))
    return buffer.getvalue()


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def catalogue() -> dict:
    """Three individuals of two species (one with 7 photos), a negative and an unidentified photo."""
    rng = np.random.default_rng(3)
    names = [f"img/a{i}.jpg" for i in range(7)] + ["img/b0.png", "img/b1.jpg", "img/c0.jpg", "neg.jpg", "unk.jpg"]
    ids = ["A"] * 7 + ["B", "B", "C", "", ""]
    species = ["right"] * 7 + ["fin", "fin", "fin", "non_cetacean", "fin"]
    sizes = [(1600, 800), (224, 224), (300, 200), (900, 1200), (224, 224), (224, 224), (224, 224)]
    sizes += [(512, 512), (1280, 427), (150, 150), (640, 480), (640, 480)]
    files = {
        name: _jpeg(i, size, "PNG" if name.endswith(".png") else "JPEG")
        for i, (name, size) in enumerate(zip(names, sizes, strict=True))
    }
    return {
        "names": names,
        "ids": ids,
        "species": species,
        "embeddings": _unit(rng, len(names)),
        "files": files,
        "sizes": dict(zip(names, sizes, strict=True)),
    }


CONFIG = ComparisonConfig(long_side=640, quality=80, per_individual=6, species_per_individual=(("right", 4),))


def _build(catalogue: dict, out: Path, config: ComparisonConfig = CONFIG, **kwargs):
    read = kwargs.pop("read", catalogue["files"].__getitem__)
    return build_comparison_photos(
        catalogue["names"], catalogue["ids"], catalogue["species"], catalogue["embeddings"], read, out, config, **kwargs
    )


# --- the asset builder ------------------------------------------------------------------------------------
def test_the_builder_keeps_k_photos_per_individual_by_species_whole_and_reduced(catalogue: dict, tmp_path: Path):
    out = tmp_path / "photos.zip"
    boxes = {"img/b1.jpg": (128.0, 42.0, 640.0, 212.0), "img/b0.png": (10.0, 10.0, 10.0, 50.0)}
    report = _build(catalogue, out, boxes=boxes)
    index = json.loads(zipfile.ZipFile(out).read("index.json"))
    photos = {p["image"]: p for p in index["photos"]}
    a = [p for p in photos.values() if p["individual_id"] == "A"]
    assert len(a) == 4 and {p["species"] for p in a} == {"right"}  # K = 4 for "right", 6 otherwise
    assert {p["individual_id"] for p in photos.values()} == {"A", "B", "C"}  # no negative, no unidentified
    assert len(photos) == 7 == report.photos and report.individuals == 3
    # exactly select_per_individual's choice, for each species with its K
    emb, ids = catalogue["embeddings"], np.array(catalogue["ids"])
    rows_a = np.arange(7)
    expected_a = {catalogue["names"][i] for i in rows_a[select_per_individual(emb[rows_a], ids[rows_a], 4)]}
    assert {p["image"] for p in a} == expected_a
    with zipfile.ZipFile(out) as archive:
        for name, entry in photos.items():
            stored = Image.open(io.BytesIO(archive.read(name)))
            assert stored.format == "JPEG" and stored.size == (entry["width"], entry["height"])
            source = catalogue["sizes"][name]
            # whole photos: the source's aspect, reduced to 640 at most, never enlarged
            assert max(stored.size) == min(640, max(source))
            assert abs(stored.size[0] / stored.size[1] - source[0] / source[1]) < 0.02
        assert all(
            info.compress_type == zipfile.ZIP_STORED for info in archive.infolist() if info.filename != "index.json"
        )
    b1 = photos["img/b1.jpg"]  # the labelled box follows the reduction (1280 x 427 -> 640 x 214)
    assert (b1["width"], b1["height"]) == (640, 214)
    assert b1["box"] == [64, 21, 320, round(212 * 214 / 427)]
    assert photos["img/b0.png"]["box"] is None  # an empty box is no box
    assert photos["img/b0.png"]["width"] == 512  # a PNG is stored as a JPEG under its catalogue name
    ranks = sorted(p["rank"] for p in a)
    assert ranks == [0, 1, 2, 3]  # the four most representative: a prefix of the order
    assert report.per_species["right"]["photos"] == 4 and report.bytes == out.stat().st_size


def test_the_builder_is_deterministic_and_refuses_to_pass_its_budget(catalogue: dict, tmp_path: Path):
    first, second = tmp_path / "one.zip", tmp_path / "two.zip"
    _build(catalogue, first)
    _build(catalogue, second)
    assert first.read_bytes() == second.read_bytes()
    before = first.read_bytes()
    with pytest.raises(ComparisonBuildError, match="budget"):
        _build(catalogue, first, replace(CONFIG, max_bytes=10_000))
    assert first.read_bytes() == before  # an over-budget build leaves the old asset as it was
    assert not list(tmp_path.glob("*.partial"))


def test_an_unreadable_photo_is_skipped_and_reported(catalogue: dict, tmp_path: Path):
    files = dict(catalogue["files"], **{"img/b1.jpg": b"not a photo"})
    report = _build(catalogue, tmp_path / "p.zip", read=files.__getitem__)
    assert any(line.startswith("img/b1.jpg:") for line in report.skipped)
    assert "img/b1.jpg" not in zipfile.ZipFile(tmp_path / "p.zip").namelist()
    assert report.photos == 6


def test_choose_photos_never_picks_rows_without_an_individual(catalogue: dict):
    picked, rank = choose_photos(catalogue["embeddings"], catalogue["ids"], catalogue["species"], CONFIG)
    assert all(catalogue["ids"][i] for i in picked)
    assert rank[-1] == -1 and rank[-2] == -1


# --- the committed asset ------------------------------------------------------------------------------------
def test_the_committed_asset_fits_its_budget_and_matches_the_bundled_catalogue():
    config = ComparisonConfig()
    asset = Path(config.asset)
    # 23 MB: 5 photos per right whale since the verification keeps 5 keypoint photos (was 22 MB for 4)
    assert asset.is_file() and asset.stat().st_size <= config.max_bytes <= 23_000_000
    index = json.loads(zipfile.ZipFile(asset).read("index.json"))
    gallery = Gallery.load(DEFAULT_CATALOGUE)
    stored = {p["image"] for p in index["photos"]}
    known = gallery.individual_ids != ""
    assert {p["individual_id"] for p in index["photos"]} == set(gallery.individual_ids[known].tolist())
    # right whales: K = 5, so the verification stage's keypoint photos (the same function, K <= 5) are all here
    right = np.flatnonzero(gallery.species == "north_atlantic_right_whale")
    for k in (2, 3, 4, 5):
        chosen = right[select_per_individual(gallery.embeddings[right], gallery.individual_ids[right], k)]
        assert set(gallery.image_names[chosen].tolist()) <= stored
    sides = [max(p["width"], p["height"]) for p in index["photos"]]
    assert max(sides) == config.long_side
    assert all(p["rank"] < 6 for p in index["photos"])


# --- the photo store ----------------------------------------------------------------------------------------
class _Out:
    def __init__(self, embedding: np.ndarray) -> None:
        self.embedding = embedding


class _Embedder:
    """A deterministic embedding of the photo's 2×4 grey thumbnail (DIM = 8): no model needed."""

    model_version = "fake-1"

    def prepare(self, source, long_side=None):
        return decode_image(source, long_side=long_side)

    def forward(self, images):
        out = []
        for image in images:
            v = np.asarray(image.convert("L").resize((4, 2)), np.float32).ravel() - 100.0
            out.append(_Out((v / np.linalg.norm(v)).astype(np.float32)))
        return out


def _gallery(catalogue: dict) -> Gallery:
    return Gallery(
        catalogue["embeddings"],
        np.array(catalogue["ids"]),
        np.array(catalogue["species"]),
        np.array(catalogue["names"]),
        model_version="fake-1",
    )


def test_the_store_lists_bundled_photos_by_rank_or_by_similarity_and_reads_them_lazily(
    catalogue: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    asset = tmp_path / "p.zip"
    _build(catalogue, asset)
    reads: list[str] = []
    original = zipfile.ZipFile.read

    def counting(self, name, pwd=None):
        reads.append(str(name))
        return original(self, name, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "read", counting)
    store = ComparisonPhotos(asset, bundled=_gallery(catalogue))
    assert reads == []  # nothing is opened before it is needed
    listed = store.photos("A")
    assert [p.rank for p in listed] == [0, 1, 2, 3] and all(p.source == "bundled" for p in listed)
    assert reads == ["index.json"]  # listing reads the index only, never a photo
    target = listed[2]
    row = catalogue["names"].index(target.reference)
    ranked = store.photos("A", catalogue["embeddings"][row])
    assert ranked[0].reference == target.reference and ranked[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert [p.similarity for p in ranked] == sorted((p.similarity for p in ranked), reverse=True)
    data = store.read(target.reference)
    assert Image.open(io.BytesIO(data)).size == target.size and reads[-1] == target.reference
    assert store.photos("nobody") == []
    with pytest.raises(ComparisonPhotoError):
        store.read("img/not-there.jpg")


def test_a_missing_asset_is_explained_and_user_photos_still_come(catalogue: dict, tmp_path: Path):
    base = _gallery(catalogue)
    catalog = Catalog(tmp_path / "c.sqlite3", base=base, actor="t")
    big = _jpeg(40, (1600, 1200))
    enrol_photo(catalog, _Embedder(), big, "A", source_name="survey/IMG_1.jpg")
    enrol_photo(catalog, _Embedder(), _jpeg(41, (800, 600)), "A", source_name="IMG_2.jpg")
    store = ComparisonPhotos(tmp_path / "missing.zip", catalog=catalog, bundled=base)
    photos = store.photos("A")
    assert "no comparison photos" in store.missing_reason
    assert [p.source for p in photos] == [USER, USER]
    assert photos[0].name == "IMG_2.jpg" and photos[1].name == "survey/IMG_1.jpg"  # newest first
    first = photos[1]
    assert first.reference.startswith("user:") and first.long_side == 768  # CatalogConfig.crop_long_side
    assert Image.open(io.BytesIO(store.read(first.reference))).size == first.size
    query = _Embedder().forward([decode_image(big)])[0].embedding
    ranked = store.photos("A", query)
    assert ranked[0].reference == first.reference and ranked[0].similarity > ranked[1].similarity
    with pytest.raises(ComparisonPhotoError):
        store.read("user:999")
    catalog.close()


def test_user_photos_from_another_model_are_listed_without_a_similarity(catalogue: dict, tmp_path: Path):
    base = _gallery(catalogue)
    catalog = Catalog(tmp_path / "c.sqlite3", base=base, actor="t")
    enrol_photo(catalog, _Embedder(), _jpeg(40, (700, 500)), "B")
    other = Catalog(tmp_path / "c.sqlite3", base=base, model_version="fake-2", actor="t")
    [photo] = ComparisonPhotos(tmp_path / "missing.zip", catalog=other).photos("B", np.ones(DIM, np.float32))
    assert photo.similarity is None
    catalog.close()
    other.close()


# --- the picture ------------------------------------------------------------------------------------------------
def _flat(size: tuple[int, int], colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", size, colour)


def test_zoom_windows_centre_on_the_animal_and_stay_inside_the_photo():
    assert cm.zoom_window((1000, 500), (100, 100, 200, 200), 1.0) == (0, 0, 1000, 500)
    assert cm.zoom_window((1000, 500), (450, 200, 550, 300), 2.0) == (250, 125, 750, 375)
    assert cm.zoom_window((1000, 500), (0, 0, 50, 50), 4.0) == (0, 0, 250, 125)  # moved inside
    assert cm.zoom_window((1000, 500), None, 2.0) == (250, 125, 750, 375)  # no box: the centre


def test_both_photos_are_at_least_512_px_in_either_layout_and_the_box_is_drawn():
    query, photo = _flat((480, 320), (10, 60, 90)), _flat((224, 224), (90, 90, 90))
    for layout in cm.LAYOUTS:
        made = cm.compose(query, (100, 80, 300, 240), photo, layout=layout)
        assert min(max(made.query.size), max(made.photo.size)) >= 512
        assert made.lines == 0
    side = cm.compose(query, (100, 80, 300, 240), photo, layout=cm.SIDE_BY_SIDE)
    x, y = side.query.map(np.array([[100, 160]]))[0][0]
    assert side.image.getpixel((round(x) + 1, round(y))) == cm.BOX_COLOUR


def test_keypoint_lines_are_drawn_between_the_photos_from_a_hand_built_evidence():
    query, photo = _flat((400, 400), (0, 0, 0)), _flat((224, 224), (0, 0, 0))
    evidence = Evidence(
        individual_id="A",
        inliers=3,
        verified=True,
        photo="img/a1.jpg",
        query_points=np.array([[100, 100], [200, 200], [300, 120]], np.float32),
        photo_points=np.array([[50, 60], [80, 90], [100, 30]], np.float32),
        photo_size=(112, 112),  # the points refer to the photo at half its stored size
    )
    shown = ComparisonPhoto("img/a1.jpg", "A", "bundled", (224, 224))
    pairs = cm.evidence_pairs(evidence, shown, (400, 400), (800, 800))
    assert pairs is not None
    np.testing.assert_allclose(pairs[0][0], [50, 50])  # the query's points: photo_size 800 -> shown at 400
    np.testing.assert_allclose(pairs[1][0], [100, 120])  # the catalogue photo's: 112 -> 224
    made = cm.compose(query, None, photo, layout=cm.SIDE_BY_SIDE, pairs=pairs)
    assert made.lines == 3
    (qx, qy), (px, py) = made.query.map(pairs[0][:1])[0][0], made.photo.map(pairs[1][:1])[0][0]
    gap_x = made.query.size[0] + cm.GAP / 2  # the middle of the gap between the two photos
    gap_y = qy + (gap_x - qx) / (px - qx) * (py - qy)
    assert made.image.getpixel((round(gap_x), round(gap_y))) == cm.LINE_COLOURS[0]  # the line crosses the gap
    plain = cm.compose(query, None, photo, layout=cm.SIDE_BY_SIDE)
    assert plain.lines == 0 and plain.image.getpixel((round(gap_x), round(gap_y))) == cm.BACKGROUND
    # another photo of the candidate: the evidence is not about it, so no lines
    assert cm.evidence_pairs(evidence, replace(shown, reference="img/a2.jpg"), (400, 400), (800, 800)) is None
    # zoomed on a corner, only the pairs inside both windows are drawn
    zoomed = cm.compose(query, (40, 40, 60, 60), photo, (90, 110, 110, 130), zoom=4.0, pairs=pairs)
    assert zoomed.lines == 1
    assert cm.evidence_text(evidence, shown) == "verified (3 points)"


def test_the_keypoints_photo_comes_first_and_wide_photos_go_one_above_the_other():
    photos = [ComparisonPhoto(f"p{i}", "A", "bundled", (224, 224), rank=i) for i in range(3)]
    evidence = Evidence("A", 9, True, "p2", np.zeros((0, 2)), np.zeros((0, 2)), (224, 224))
    assert [p.reference for p in cm.order_photos(photos, evidence)] == ["p2", "p0", "p1"]
    assert [p.reference for p in cm.order_photos(photos, None)] == ["p0", "p1", "p2"]
    assert cm.auto_layout((1200, 400), (1280, 427)) == cm.STACKED  # flukes
    # two square right-whale heads would be 470 px side by side: one above the other, each 512 px wide
    assert cm.auto_layout((224, 224), (224, 224)) == cm.STACKED
    assert cm.display_width((224, 224), (224, 224), cm.STACKED) >= 512
    assert cm.auto_layout((900, 1200), (900, 1200)) == cm.SIDE_BY_SIDE  # portraits fit side by side
    assert cm.display_width((1024, 683), (1024, 700), cm.STACKED) >= 512


# --- the Identify page's panel (AppTest, real model) ------------------------------------------------------------


def _control(at: AppTest, label: str):
    [found] = [s for s in at.segmented_control if _plain(s.label).startswith(label)]
    return found


def _button(at: AppTest, label: str):
    [found] = [b for b in at.button if _plain(b.label).startswith(label)]
    return found


def _upload() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.file_uploader[0].set_value((RIGHT_WHALE.name, RIGHT_WHALE.read_bytes(), "image/jpeg")).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_the_panel_compares_the_best_candidate_first_and_switches_candidate_and_photo():
    at = _upload()
    candidate = _control(at, "Candidate")
    result = next(iter(at.session_state["photo_results"].values())).result
    assert len(candidate.options) == 5 and candidate.value == 0
    assert _plain(candidate.options[0]).startswith(f"#1 {result.top5[0].individual_id}")
    strip = _control(at, f"Catalogue photo of {result.top5[0].individual_id}")
    assert len(strip.options) >= 2 and strip.value == 0
    assert "Compare with the catalogue" in [s.value for s in at.subheader]
    pictures = [img for element in at.get("image") for img in element.proto.imgs]
    assert any("your photo" in _plain(img.caption) for img in pictures)
    evidence = result.evidence_for(result.top5[0].individual_id)
    if evidence is None:  # verification did not check it: no lines, nothing said about keypoints
        assert "keypoints agree" not in _texts(at) and "verified (" not in _texts(at)
    else:  # the verification stage's own evidence: said, and its photo is the one compared first
        assert cm.evidence_text(evidence, None) in _texts(at)
        assert any(evidence.photo.rsplit("/", 1)[-1] in _plain(c.value) for c in at.caption)
    strip.set_value(1).run()
    assert "catalogue photo" in _texts(at) and not at.exception
    candidate.set_value(1).run()
    assert not at.exception
    assert _control(at, f"Catalogue photo of {result.top5[1].individual_id}").value == 0
    zoom = _control(at, "Zoom on the animal")
    zoom.set_value("3×").run()
    assert not at.exception and not at.error


def test_verdicts_are_recorded_with_the_reviewer_and_same_adds_the_photo():
    at = _upload()
    result = next(iter(at.session_state["photo_results"].values())).result
    best = result.top5[0].individual_id
    [reviewer] = [t for t in at.text_input if t.label == "Reviewer (audit log)"]
    reviewer.input("Dr Fluke")
    _button(at, "Cannot tell").click().run()
    assert not at.exception
    assert "Cannot tell — recorded by Dr Fluke" in _texts(at)
    _button(at, "Same").click().run()
    text = _texts(at)
    assert "Same — recorded by Dr Fluke" in text and "replaces 1 earlier verdict" in text
    assert at.session_state["actor"] == "Dr Fluke"
    from app.state import services

    catalog = services().catalog
    sha = hashlib.sha256(RIGHT_WHALE.read_bytes()).hexdigest()
    reviews = catalog.reviews(sha)
    assert reviews["decision"].tolist() == ["cannot_tell", "same"]
    assert set(reviews["individual_id"]) == {best} and set(reviews["actor"]) == {"Dr Fluke"}
    details = reviews["details"].iloc[-1]
    assert details["rank"] == 1 and details["compared_photo"] and details["answer"] == result.answer
    # "Same" offers to add the photo to that individual, through the save path
    _button(at, f"Add this photo to {best}").click().run()
    assert not at.exception and any("Saved as image" in _plain(s.value) for s in at.success)
    assert catalog.find_image(sha)[1] == best
    assert catalog.audit_log(best)["actor"].tolist()[-1] == "Dr Fluke"
    # another candidate: its own verdict, none yet
    _control(at, "Candidate").set_value(2).run()
    assert "No verdict recorded for this photo and this individual yet." in _texts(at)
    _button(at, "Different").click().run()
    assert catalog.reviews(sha)["decision"].tolist()[-1] == "different"


def test_evidence_draws_the_matched_keypoints_and_says_verified(monkeypatch: pytest.MonkeyPatch):
    import app.state as state

    original = state.analyse_photo

    def with_evidence(identifier, name, data, config=None):
        out = original(identifier, name, data, config=config)
        result: Identification = out.result
        best: Candidate = result.top5[0]
        store = ComparisonPhotos(bundled=identifier.gallery)
        # the keypoints are on the candidate's least similar photo: the panel must put it first anyway
        matched = store.photos(best.individual_id, result.embedding)[-1]
        w, h = result.photo_size
        evidence = Evidence(
            individual_id=best.individual_id,
            inliers=11,
            verified=True,
            photo=matched.reference,
            query_points=np.array([[w * 0.3, h * 0.4], [w * 0.5, h * 0.5], [w * 0.6, h * 0.7]], np.float32),
            photo_points=np.array([[60, 80], [110, 112], [140, 150]], np.float32),
            photo_size=matched.size,
        )
        out.result = replace(result, evidence=(evidence,))
        return out

    monkeypatch.setattr(state, "analyse_photo", with_evidence)
    at = _upload()
    result = next(iter(at.session_state["photo_results"].values())).result
    [evidence] = result.evidence
    text = _texts(at)
    assert "verified (11 points)" in text
    assert _plain(_control(at, "Candidate").options[0]).endswith("✓")
    strip = _control(at, f"Catalogue photo of {result.top5[0].individual_id}")
    assert strip.value == 0  # the keypoints' photo, first
    assert any(evidence.photo.rsplit("/", 1)[-1] in _plain(c.value) for c in at.caption)
    strip.set_value(1).run()  # another photo: no lines, and the page says where they are
    assert "on another of its photos" in _texts(at)


def test_every_photo_the_verification_can_match_is_a_comparison_photo() -> None:
    """The comparison panel draws the matched keypoints on the catalogue photo they came from: each verified
    species keeps at least as many comparison photos as it has keypoint photos, chosen by the same order."""
    from whales_identify.config import ComparisonConfig, VerifyConfig
    from whales_identify.training.comparison import per_individual_for

    verify = VerifyConfig()
    for species in verify.species:
        assert per_individual_for(species, ComparisonConfig()) >= verify.bundled_per_individual, species
