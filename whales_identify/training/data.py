"""The labelled photographs and the held-out split used to train and measure.

Split (by image, seeded): for each individual with two or more photos, one photo
is a *test* query and, with four or more, one more is a *validation* query; a
seeded 10 % of individuals are held out entirely (half validation, half test)
so that ``new_individual`` can be measured; negatives are split 40/20/40.
Everything else is *train*, which is also the gallery when measuring.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from whales_identify.config import NON_CETACEAN
from whales_identify.errors import LabelsError

SPLITS = ("train", "val", "test")
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


def load_dataset(data_root: Path | str, seed: int) -> pd.DataFrame:
    """labels.csv of the shared data with absolute paths, boxes and a split column."""
    data_root = Path(data_root)
    frame = read_labels(data_root / "labels.csv")
    frame["path"] = [str(data_root / image) for image in frame["image"]]
    frame["box"] = [parse_box(text) for text in frame["bbox_xyxy"]]
    frame["split"] = assign_splits(frame, seed)
    return frame


def samples(frame: pd.DataFrame) -> list[Sample]:
    return [
        Sample(Path(row.path), row.individual_id, row.species, row.box)
        for row in frame[["path", "individual_id", "species", "box"]].itertuples(index=False)
    ]
