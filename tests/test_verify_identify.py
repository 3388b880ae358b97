"""The verification stage inside identification, on real right-whale photos: a true pair of one whale
(tests/data/verify/) against a sample photo of another whale, through ``Identifier.decide``; the
keypoints stored with the bundled and the user's catalogue; the CSV and JSON outputs."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import sample_photo

from whales_identify.batch.local import CSV_COLUMNS, identify_entries, write_csv
from whales_identify.catalog.enrol import enrol_photo
from whales_identify.catalog.store import Catalog
from whales_identify.config import DEFAULT_KEYPOINTS, VerifyConfig
from whales_identify.inputs.archive import ArchiveEntry
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.identifier import Identifier, photo_reference
from whales_identify.matching.verify import KeypointFile, Keypoints, save_keypoints
from whales_identify.training.keypoints import describe_file

DATA = Path(__file__).parent / "data"
SAME = DATA / "verify" / "north_atlantic_right_whale_whale_29858_w_3164.jpg"
QUERY = DATA / "verify" / "north_atlantic_right_whale_whale_29858_w_3510.jpg"
OTHER = sample_photo("right whale")  # another right whale (samples.csv)
CFG = VerifyConfig()


@pytest.fixture(scope="module")
def pair_gallery(identifier: Identifier) -> tuple[Gallery, dict[str, bytes]]:
    """A catalogue of two right whales: whale_29858 (the query's true match) and another one."""
    outputs = identifier.forward([identifier.prepare_input(p) for p in (SAME, OTHER)])
    gallery = Gallery(
        np.stack([o.embedding for o in outputs]),
        np.array(["whale_29858", "whale_other"]),
        np.array(["north_atlantic_right_whale"] * 2),
        np.array(["same.jpg", "other.jpg"]),
        model_version=identifier.model_version,
    )
    return gallery, {"same.jpg": describe_file(SAME, CFG), "other.jpg": describe_file(OTHER, CFG)}


@pytest.fixture()
def verifying(identifier: Identifier, pair_gallery) -> Identifier:
    """The session's identifier searching the pair catalogue with its keypoints (restored afterwards)."""
    gallery, records = pair_gallery
    saved = (identifier.gallery, list(identifier.keypoint_sources))
    identifier.set_gallery(gallery)
    identifier.keypoint_sources = [lambda names: {n: records[n] for n in names if n in records}]
    yield identifier
    identifier.set_gallery(saved[0])
    identifier.keypoint_sources = saved[1]


def test_matching_pair_scores_above_non_matching_through_the_identifier(verifying: Identifier) -> None:
    result = verifying.identify(QUERY, verify=True)
    same, other = result.evidence_for("whale_29858"), result.evidence_for("whale_other")
    assert same is not None and other is not None
    assert same.inliers >= CFG.verified_inliers > other.inliers
    assert result.answer == "whale_29858" and result.verified
    # evidence is ordered best first and names the catalogue photo it matched
    assert result.evidence[0].individual_id == "whale_29858" and same.photo == "same.jpg"
    # the agreeing points: query pixels inside the decoded query photo, catalogue pixels inside photo_size
    assert same.query_points.shape == same.photo_points.shape == (same.inliers, 2)
    width, height = result.photo_size
    assert (same.query_points >= 0).all() and (same.query_points[:, 0] <= width).all()
    assert (same.query_points[:, 1] <= height).all()
    assert same.photo_size == (224, 224) and (same.photo_points <= 224).all()
    # one honest distribution: every individual plus new_individual sums to one
    total = sum(c.probability for c in result.top5) + result.new_individual_probability
    assert total == pytest.approx(1.0, abs=1e-4)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["verified"] is True and data["evidence"][0]["inliers"] == same.inliers


def test_verification_off_gives_no_evidence_and_the_global_scores(verifying: Identifier) -> None:
    off = verifying.identify(QUERY, verify=False)
    output = verifying.forward([verifying.prepare_input(QUERY)])[0]
    plain = verifying.decide(output)
    assert off.evidence == () and not off.verified
    assert [(c.individual_id, c.score, c.probability) for c in off.top5] == [
        (c.individual_id, c.score, c.probability) for c in plain.top5
    ]
    on = verifying.identify(QUERY, verify=True)
    assert on.evidence and on.best.score > off.best.score  # the fused score adds the keypoint evidence


def test_verified_answer_overrides_new_individual(verifying: Identifier) -> None:
    strict = replace(verifying.config, verify_new_individual_threshold=5.0, new_individual_threshold=5.0)
    output = verifying.forward([verifying.prepare_input(QUERY)])[0]
    assert verifying.decide(output, config=strict).new_individual  # far below an impossible threshold
    answer = verifying.decide(output, config=strict, photo=verifying.prepare_input(QUERY))
    assert not answer.new_individual and answer.answer == "whale_29858" and answer.verified


def test_other_species_are_not_verified(verifying: Identifier) -> None:
    verifying.verify_config = replace(CFG, species=("humpback_whale",))
    try:
        assert verifying.identify(QUERY, verify=True).evidence == ()
    finally:
        verifying.verify_config = CFG


def test_csv_rows_carry_verified_and_inliers(verifying: Identifier) -> None:
    entries = [ArchiveEntry("q.jpg", QUERY.read_bytes())]
    (on,) = identify_entries(verifying, entries, verify=True)
    (off,) = identify_entries(verifying, entries)
    assert on.verified is True and on.inliers is not None and on.inliers >= CFG.verified_inliers
    assert off.verified is False and off.inliers is None
    handle = io.StringIO()
    write_csv([on], handle)
    header, row = handle.getvalue().splitlines()[:2]
    assert header.split(",") == list(CSV_COLUMNS) and "verified" in CSV_COLUMNS and "inliers" in CSV_COLUMNS
    cells = dict(zip(header.split(","), row.split(","), strict=False))
    assert cells["verified"] == "True" and cells["inliers"] == str(on.inliers)


def test_keypoint_file_round_trip_and_damage(tmp_path: Path) -> None:
    records = [describe_file(SAME, CFG), describe_file(OTHER, CFG)]
    path = tmp_path / "kp.npz"
    save_keypoints(path, ["a", "b"], records)
    lookup = KeypointFile(path)
    assert lookup(["b", "missing", "a"]) == {"a": records[0], "b": records[1]}
    assert len(Keypoints.from_bytes(lookup(["a"])["a"])) > 0
    path.write_bytes(b"not a zip at all")
    assert KeypointFile(path)(["a"]) == {}  # damaged: no verification, no crash


def test_bundled_keypoints_fit_the_budget_and_name_catalogue_photos(identifier: Identifier) -> None:
    assert DEFAULT_KEYPOINTS.stat().st_size <= CFG.bundled_max_bytes
    bundled = KeypointFile(DEFAULT_KEYPOINTS)
    names = bundled.names()
    catalogue = set(identifier.gallery.image_names.tolist())
    assert names and names <= catalogue
    right = identifier.gallery.species == "north_atlantic_right_whale"
    assert len(names) >= len(set(identifier.gallery.individual_ids[right].tolist()))  # every right whale
    one = next(iter(names))
    record = Keypoints.from_bytes(bundled([one])[one])
    assert len(record) <= CFG.max_keypoints and max(record.size) == CFG.long_side


def test_photo_reference_names_user_photos() -> None:
    assert photo_reference("user/12/IMG_1.jpg") == "user:12"
    assert photo_reference("images/noaa_right_whale/images/w_1.jpg") == "images/noaa_right_whale/images/w_1.jpg"


def test_enrolment_stores_keypoints_and_backfill_fills_missing(identifier: Identifier, tmp_path: Path) -> None:
    with Catalog(tmp_path / "cat.sqlite3", identifier.gallery, model_version=identifier.model_version) as cat:
        row = enrol_photo(cat, identifier, SAME.read_bytes(), "whale_test_1", "north_atlantic_right_whale", new=True)
        stored = cat.query("SELECT keypoints FROM images WHERE id = ?", (row.image_id,))[0]["keypoints"]
        assert stored is not None and len(Keypoints.from_bytes(bytes(stored))) > 10
        enrol_photo(cat, identifier, OTHER.read_bytes(), "whale_test_2", "north_atlantic_right_whale", new=True)
        with cat.transaction() as conn:  # as a photo enrolled before schema 2 or imported
            conn.execute("UPDATE images SET keypoints = NULL")
        assert cat.missing_keypoints() == 2
        name = f"user/{row.image_id}/x.jpg"
        found = cat.keypoints([name, "images/bundled.jpg"])  # on demand: described now, and saved
        assert list(found) == [name] and found[name] == bytes(stored)
        assert cat.missing_keypoints() == 1
        assert cat.backfill_keypoints() == 1 and cat.missing_keypoints() == 0
        # the user's photo is verified through the identifier like a bundled one
        saved = (identifier.gallery, list(identifier.keypoint_sources))
        try:
            identifier.set_gallery(cat.gallery(species="north_atlantic_right_whale"))
            identifier.keypoint_sources = [cat.keypoints]
            result = identifier.identify(QUERY, verify=True)
        finally:
            identifier.set_gallery(saved[0])
            identifier.keypoint_sources = saved[1]
        evidence = result.evidence_for("whale_test_1")
        assert evidence is not None and evidence.photo == f"user:{row.image_id}" and evidence.verified
