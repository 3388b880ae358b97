"""The labelled photographs and the held-out splits used to train and measure.

Two splits, both seeded and reproducible:

* **by individual** (``assign_splits_by_individual``, the default since the field-photo issue):
  within each species a seeded 20 % of the individuals are *test* and 10 % *validation*, every
  photo of an individual following it, so no photo of a test or validation animal is ever
  trained on; a species with one individual stays in training. Negatives are held out as whole
  groups (their ``source``, or ``source/scene`` with the scene from the file name), so the
  rejection is measured on kinds of pictures it never saw. This is what a new animal gets.
* **by photo** (``assign_splits``, the earlier split): for each individual with two or more
  photos one photo is a *test* query and, with four or more, one more is a *validation* query;
  a seeded 10 % of individuals are held out whole. It measures re-identifying a known animal
  from another photo; its species figures are learnt per individual and flatter new animals.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from whales_identify.config import NON_CETACEAN
from whales_identify.errors import LabelsError
from whales_identify.training.catalogue_check import refuse_placeholders

SPLITS = ("train", "val", "test")
SPLIT_KINDS = ("individual", "photo")
TEST_INDIVIDUAL_SHARE = 0.2  # by individual: of each species' individuals
VAL_INDIVIDUAL_SHARE = 0.1
HELD_OUT_INDIVIDUAL_SHARE = 0.10
MAX_HELD_OUT_PHOTOS = 20


@dataclass(frozen=True)
class Sample:
    path: Path
    individual_id: str  # "" when unknown
    species: str
    box: tuple[float, float, float, float] | None


def read_labels(csv_path: Path | str) -> pd.DataFrame:
    """The labels CSV with ``individual_id`` and ``bbox_xyxy`` as clean strings."""
    csv_path = Path(csv_path)
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LabelsError(f"cannot read {csv_path}: {exc}") from exc
    missing = {"image", "species"} - set(frame.columns)
    if missing:
        raise LabelsError(f"{csv_path} lacks the column(s) {', '.join(sorted(missing))}")
    for column in ("individual_id", "bbox_xyxy"):
        if column not in frame.columns:
            frame[column] = ""
    frame["individual_id"] = frame["individual_id"].str.strip()
    frame["species"] = frame["species"].str.strip()
    return frame


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    parts = text.split()
    if len(parts) != 4:
        return None
    x1, y1, x2, y2 = (float(p) for p in parts)
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def assign_splits(frame: pd.DataFrame, seed: int) -> pd.Series:
    """A ``split`` value (train/val/test) for every row, reproducible from the seed."""
    rng = random.Random(seed)
    split = pd.Series("train", index=frame.index)
    by_individual: dict[str, list[int]] = defaultdict(list)
    for index, individual in frame["individual_id"].items():
        if individual:
            by_individual[individual].append(index)
    individuals = sorted(by_individual)
    rng.shuffle(individuals)
    # Only ordinary individuals are held out whole: one with hundreds of photos
    # would swamp the new-individual queries.
    eligible = [i for i in individuals if len(by_individual[i]) <= MAX_HELD_OUT_PHOTOS]
    held_out = set(eligible[: int(len(individuals) * HELD_OUT_INDIVIDUAL_SHARE)])
    for position, individual in enumerate(sorted(held_out)):
        split[by_individual[individual]] = "val" if position % 2 == 0 else "test"
    for individual in individuals:
        if individual in held_out:
            continue
        rows = sorted(by_individual[individual])
        rng.shuffle(rows)
        if len(rows) >= 2:
            split[rows[0]] = "test"
        if len(rows) >= 4:
            split[rows[1]] = "val"
    negatives = sorted(frame.index[frame["species"] == NON_CETACEAN])
    rng.shuffle(negatives)
    n = len(negatives)
    for position, index in enumerate(negatives):
        split[index] = "test" if position < 0.4 * n else ("val" if position < 0.6 * n else "train")
    return split


def _seeded(seed: int, key: str) -> random.Random:
    """A generator of its own for each key, so adding a species or a source changes no other's split."""
    return random.Random(int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:16], 16))


def negative_group(image: str, source: str) -> str:
    """The hold-out group of a negative photo: its source and scene (the file name's first word)."""
    return f"{source}/{Path(image).name.split('_')[0]}"


def assign_splits_by_individual(frame: pd.DataFrame, seed: int) -> pd.Series:
    """``train``/``val``/``test`` for every row: whole individuals per species, whole negative groups."""
    split = pd.Series("train", index=frame.index, dtype=object)
    ids = frame["individual_id"]
    named = frame[(frame["species"] != NON_CETACEAN) & (ids != "")]
    species_of = named.groupby("individual_id")["species"].agg(lambda s: s.value_counts().index[0])
    for species, members in species_of.groupby(species_of):
        pool = sorted(members.index)
        _seeded(seed, f"species:{species}").shuffle(pool)
        n = len(pool)
        n_test = min(max(1, round(TEST_INDIVIDUAL_SHARE * n)), n - 1) if n >= 2 else 0
        n_val = min(max(1, round(VAL_INDIVIDUAL_SHARE * n)), n - 1 - n_test) if n >= 3 else 0
        for position, individual in enumerate(pool):
            name = "test" if position < n_test else ("val" if position < n_test + n_val else "train")
            split[named.index[named["individual_id"] == individual]] = name
    negatives = frame[frame["species"] == NON_CETACEAN]
    source = negatives["source"] if "source" in negatives.columns else pd.Series("", index=negatives.index)
    groups = pd.Series(
        [negative_group(i, s) for i, s in zip(negatives["image"], source, strict=True)], index=negatives.index
    )
    sizes = groups.value_counts()
    order = sorted(sizes.index)
    _seeded(seed, "negatives").shuffle(order)
    order.sort(key=lambda g: -sizes[g])  # the largest group trains; then test, val, train, ... in seeded order
    for position, group in enumerate(order):
        split[groups.index[groups == group]] = ("train", "test", "val")[position % 3]
    return split


def load_dataset(data_root: Path | str, seed: int, split: str = "individual") -> pd.DataFrame:
    """labels.csv of the shared data with absolute paths, boxes and a ``split`` column made
    ``by individual`` (default) or ``by photo``; placeholder ids are refused."""
    if split not in SPLIT_KINDS:
        raise LabelsError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_KINDS)}")
    data_root = Path(data_root)
    frame = read_labels(data_root / "labels.csv")
    frame["path"] = [str(data_root / image) for image in frame["image"]]
    frame["box"] = [parse_box(text) for text in frame["bbox_xyxy"]]
    refuse_placeholders(frame["individual_id"], str(data_root / "labels.csv"))
    frame["split"] = assign_splits_by_individual(frame, seed) if split == "individual" else assign_splits(frame, seed)
    return frame


def samples(frame: pd.DataFrame) -> list[Sample]:
    return [
        Sample(Path(row.path), row.individual_id, row.species, row.box)
        for row in frame[["path", "individual_id", "species", "box"]].itertuples(index=False)
    ]
