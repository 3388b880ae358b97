"""The by-individual split and the catalogue checks, on hand-built label tables (no photos needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from whales_identify.config import NON_CETACEAN
from whales_identify.errors import LabelsError
from whales_identify.training.catalogue_check import degenerate_photos, placeholder_ids, refuse_placeholders
from whales_identify.training.data import assign_splits_by_individual


def _labels() -> pd.DataFrame:
    rows = []
    for species, n_individuals in (("humpback_whale", 10), ("beluga", 5), ("gray_whale", 1)):
        for i in range(n_individuals):
            for photo in range(3):
                rows.append((f"{species}/{i}_{photo}.jpg", "happywhale", species, f"{species[:3]}{i}"))
    for source, scene, n in (("web", "sea", 6), ("web", "street", 4), ("web", "forest", 9), ("zoo", "seal", 3)):
        rows += [(f"neg/{scene}_{k}.jpg", source, NON_CETACEAN, "") for k in range(n)]
    rows += [(f"fins/unnamed_{k}.jpg", "fins", "bottlenose_dolphin", "") for k in range(4)]
    return pd.DataFrame(rows, columns=["image", "source", "species", "individual_id"])


def test_no_individual_and_no_negative_group_is_in_two_splits() -> None:
    frame = _labels()
    frame["split"] = assign_splits_by_individual(frame, seed=3)
    named = frame[frame["individual_id"] != ""]
    assert (named.groupby("individual_id")["split"].nunique() == 1).all()
    scenes = frame[frame["species"] == NON_CETACEAN]["image"].str.split("/").str[1].str.split("_").str[0]
    assert (frame.loc[scenes.index].groupby(scenes)["split"].nunique() == 1).all()
    per_species = named.groupby(["species", "split"])["individual_id"].nunique().unstack(fill_value=0)
    assert per_species.loc["humpback_whale", "test"] == 2 and per_species.loc["humpback_whale", "val"] == 1
    assert per_species.loc["beluga", "test"] == 1 and per_species.loc["beluga", "train"] >= 3
    assert set(frame[frame["species"] == "gray_whale"]["split"]) == {"train"}  # one individual: cannot be tested
    assert set(frame[frame["image"].str.startswith("fins/")]["split"]) == {"train"}  # unidentified: training only
    held_out = set(frame[(frame["species"] == NON_CETACEAN) & (frame["split"] != "train")]["image"])
    assert held_out and "neg/forest_0.jpg" not in held_out  # the largest group trains


def test_the_split_is_reproducible_and_depends_on_the_seed() -> None:
    frame = _labels()
    first = assign_splits_by_individual(frame, seed=3)
    assert first.equals(assign_splits_by_individual(frame, seed=3))
    assert not first.equals(assign_splits_by_individual(frame, seed=4))


def test_placeholder_ids_are_refused_with_their_names() -> None:
    ids = ["W1", "unknown(not 1056)", "new_whale", "HW-07", "", "Unidentified 3", "none"]
    assert placeholder_ids(ids) == ["Unidentified 3", "new_whale", "none", "unknown(not 1056)"]
    with pytest.raises(LabelsError, match=r"unknown\(not 1056\)"):
        refuse_placeholders(ids, "labels.csv")
    refuse_placeholders(["W1", "HW-07", "1056", "whale_78628"], "labels.csv")  # real ids pass


def test_degenerate_photos_are_found(tmp_path) -> None:
    grey = tmp_path / "grey.png"
    Image.new("RGB", (512, 512), (128, 128, 128)).save(grey)
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.png"
    scene = np.kron(rng.integers(0, 255, (16, 16, 3)), np.ones((32, 32, 1))).astype(np.uint8)
    Image.fromarray(scene).save(photo)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    problems = degenerate_photos([photo, grey, broken])
    assert set(problems) == {1, 2} and "uniform" in problems[1]


def test_the_open_set_protocol_catalogues_half_and_asks_about_all() -> None:
    from whales_identify.training.protocol import open_set

    frame = _labels()
    frame["split"] = assign_splits_by_individual(frame, seed=3)
    protocol = open_set(frame, "test", seed=3)
    gallery, queries = set(protocol.gallery.tolist()), protocol.queries.tolist()
    assert not gallery & set(queries)  # a query is never its own catalogue photo
    assert gallery >= set(np.flatnonzero(frame["split"] == "train"))
    ids = frame["individual_id"].to_numpy()
    test_individuals = set(frame[(frame["split"] == "test") & (frame["individual_id"] != "")]["individual_id"])
    known = {ids[q] for q, k in zip(queries, protocol.known, strict=True) if k}
    unseen = {ids[q] for q, k in zip(queries, protocol.known, strict=True) if not k and ids[q]}
    assert known and unseen and known | unseen == test_individuals and not known & unseen
    for individual in known:  # in the catalogue and asked about
        assert any(ids[g] == individual for g in gallery)
    for individual in unseen:  # never in the catalogue: the right answer is new_individual
        assert not any(ids[g] == individual for g in gallery)
    test_negatives = set(np.flatnonzero((frame["split"] == "test") & (frame["species"] == NON_CETACEAN)))
    assert test_negatives <= set(queries)
