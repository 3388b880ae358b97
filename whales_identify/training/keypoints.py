"""The bundled catalogue's verification keypoints: ``models/keypoints.npz``.

``build_keypoints`` chooses, for each individual of a verified species (``VerifyConfig.species``),
its ``VerifyConfig.bundled_per_individual`` most representative photos with
``matching.selection.select_per_individual`` (the comparison photos use the same function with a
larger count, so every photo given keypoints is among them), describes each exactly as a query
photo is described (decoded as for identification, then ``matching.verify.describe``), and writes
the image names, the concatenated ``Keypoints.to_bytes`` records and their offsets. It refuses to
write a file over ``VerifyConfig.bundled_max_bytes``. The reader is ``matching.verify.KeypointFile``.

    python -m whales_identify keypoints --data-root ../shared/data
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from whales_identify.config import DEFAULT_CATALOGUE, SpeedConfig, VerifyConfig
from whales_identify.errors import WhaleIdError
from whales_identify.inputs.imaging import decode_image
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.selection import select_per_individual
from whales_identify.matching.verify import Keypoints, record, save_keypoints


class KeypointBuildError(WhaleIdError):
    """The keypoint file could not be built (over the size budget, no photos, no data)."""


@dataclass
class KeypointReport:
    """What ``build_keypoints`` wrote."""

    path: str
    photos: int
    individuals: int
    bytes: int
    keypoints_median: int
    skipped: list[str] = field(default_factory=list)  # "image: reason"
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def choose_keypoint_photos(gallery: Gallery, cfg: VerifyConfig) -> np.ndarray:
    """Rows of ``gallery`` given keypoints: up to ``cfg.bundled_per_individual`` representative photos of
    each individual of a verified species, in row order."""
    rows = np.flatnonzero(np.isin(gallery.species, list(cfg.species)) & (gallery.individual_ids != ""))
    if not len(rows):
        return rows
    picked = select_per_individual(gallery.embeddings[rows], gallery.individual_ids[rows], cfg.bundled_per_individual)
    return rows[picked]


def describe_file(data: bytes | str | Path, cfg: VerifyConfig, speed: SpeedConfig | None = None) -> bytes:
    """A photo's keypoint record, described as the query side is: decoded to the identification size
    (``SpeedConfig.identify_long_side``), then ``describe``."""
    image = decode_image(data, long_side=(speed or SpeedConfig()).identify_long_side)
    return record(image, cfg)


def build_keypoints(
    gallery: Gallery,
    read: Callable[[str], bytes | str | Path],
    out: Path | str,
    cfg: VerifyConfig | None = None,
) -> KeypointReport:
    """Describe the chosen photos of ``gallery`` (``read(image name)`` gives each photo) into ``out``."""
    cfg = cfg or VerifyConfig()
    rows = choose_keypoint_photos(gallery, cfg)
    if not len(rows):
        raise KeypointBuildError(f"the catalogue has no photos of {', '.join(cfg.species)}: nothing to describe")
    names, records, skipped, counts = [], [], [], []
    for row in rows:
        name = str(gallery.image_names[row])
        try:
            blob = describe_file(read(name), cfg)
        except (OSError, WhaleIdError) as exc:
            skipped.append(f"{name}: {exc}")
            continue
        names.append(name)
        records.append(blob)
        counts.append(Keypoints.from_bytes(blob).__len__())
    if not names:
        raise KeypointBuildError("none of the chosen photos could be read: " + "; ".join(skipped[:3]))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {
        "model_version": gallery.model_version,
        "per_individual": cfg.bundled_per_individual,
        "long_side": cfg.long_side,
        "max_keypoints": cfg.max_keypoints,
        "descriptor_bits": cfg.descriptor_bits,
        "species": list(cfg.species),
    }
    handle, temporary = tempfile.mkstemp(suffix=".npz", dir=out.parent)
    os.close(handle)
    try:
        size = save_keypoints(temporary, names, records, meta=json.dumps(settings, sort_keys=True))
        if size > cfg.bundled_max_bytes:
            raise KeypointBuildError(
                f"the keypoint file would be {size / 1e6:.1f} MB, over the {cfg.bundled_max_bytes / 1e6:.1f} MB "
                "budget: fewer photos per individual (bundled_per_individual) or keypoints (max_keypoints)"
            )
        os.replace(temporary, out)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    owners = {str(gallery.individual_ids[r]) for r in rows if str(gallery.image_names[r]) in set(names)}
    return KeypointReport(str(out), len(names), len(owners), size, int(np.median(counts)), skipped, settings)


def build_from_data_root(
    data_root: Path | str,
    catalogue: Path | str = DEFAULT_CATALOGUE,
    out: Path | str | None = None,
    cfg: VerifyConfig | None = None,
) -> KeypointReport:
    """The bundled catalogue's keypoint file from the labelled photos in ``data_root``."""
    cfg = cfg or VerifyConfig()
    root = Path(data_root)
    if not (root / "labels.csv").is_file():
        raise KeypointBuildError(f"no labels.csv in {root}: give the data folder with --data-root")
    gallery = Gallery.load(catalogue)
    return build_keypoints(gallery, lambda name: root / name, out or cfg.keypoints_path, cfg)
