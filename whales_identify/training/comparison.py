"""The bundled catalogue's comparison photos: whole photos a reviewer compares a new photo with.

``build_comparison_photos`` chooses each individual's photos with
``matching.selection.select_per_individual`` (its most typical photo first, then the ones least
like those already chosen), reduces each to ``ComparisonConfig.long_side`` (never enlarged), stores
them as JPEGs in one ZIP (members named by the catalogue's image names, stored uncompressed) with an
``index.json`` (individual, species, size, representative rank and, where the labels give one, the
animal's box in pixels of the stored photo), and refuses to write an asset over
``ComparisonConfig.max_bytes``. The reader is ``catalog/photos.py``.

Right whales get at least as many photos as the verification stage gives keypoints, from the same
selection function, so the photo its keypoints matched is always among the comparison photos.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from whales_identify.config import DEFAULT_CATALOGUE, ComparisonConfig
from whales_identify.errors import InvalidImageError, WhaleIdError
from whales_identify.inputs.imaging import decode_image, encode_jpeg
from whales_identify.matching.selection import representative_order, select_per_individual

INDEX_NAME = "index.json"
FORMAT = "whales_identify-comparison-photos"
FORMAT_VERSION = 1
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member dates: the same inputs give the same bytes
Box = tuple[int, int, int, int]


class ComparisonBuildError(WhaleIdError):
    """The comparison photos could not be built (over the size budget, no photos, unreadable data)."""


@dataclass
class BuildReport:
    """What ``build_comparison_photos`` wrote."""

    path: str
    photos: int
    individuals: int
    bytes: int
    per_species: dict[str, dict[str, int]] = field(default_factory=dict)  # species -> photos, individuals, bytes
    skipped: list[str] = field(default_factory=list)  # "image: reason" for photos that could not be read
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def per_individual_for(species: str, config: ComparisonConfig) -> int:
    """How many photos each individual of ``species`` keeps."""
    return dict(config.species_per_individual).get(species, config.per_individual)


def choose_photos(
    embeddings: np.ndarray, individual_ids: np.ndarray, species: np.ndarray, config: ComparisonConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(rows chosen, in input order; every row's representative rank within its individual).

    Rows without an individual (negatives, unidentified animals) are never chosen. Each species
    keeps ``per_individual_for`` photos per individual, by ``select_per_individual``."""
    ids = np.asarray(individual_ids, dtype=str)
    kinds = np.asarray(species, dtype=str)
    vectors = np.asarray(embeddings, np.float32)
    known = np.flatnonzero(ids != "")
    rank = np.full(len(ids), -1, np.int64)
    if len(known):
        rank[known] = representative_order(vectors[known], ids[known])
    chosen: list[np.ndarray] = []
    for kind in np.unique(kinds[known]):
        rows = known[kinds[known] == kind]
        chosen.append(rows[select_per_individual(vectors[rows], ids[rows], per_individual_for(str(kind), config))])
    picked = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    return picked, rank


def _scaled_box(box: Sequence[float] | None, source: tuple[int, int], stored: tuple[int, int]) -> Box | None:
    """A box in pixels of the source image, in pixels of the stored photo (None when the photo was turned
    upright by its EXIF orientation: the source's axes are not the stored photo's)."""
    if box is None or len(box) != 4 or min(source) <= 0:
        return None
    sx, sy = stored[0] / source[0], stored[1] / source[1]
    if abs(sx - sy) > 0.05 * max(sx, sy):
        return None
    x1, y1, x2, y2 = (float(v) for v in box)
    scaled = (
        max(0, round(x1 * sx)),
        max(0, round(y1 * sy)),
        min(stored[0], round(x2 * sx)),
        min(stored[1], round(y2 * sy)),
    )
    return scaled if scaled[2] > scaled[0] and scaled[3] > scaled[1] else None


def encode_photo(data: bytes, config: ComparisonConfig) -> tuple[bytes, tuple[int, int], tuple[int, int]]:
    """(JPEG of the whole photo, upright, long side at most ``config.long_side``; its size; the source's size)."""
    try:
        with Image.open(io.BytesIO(data)) as header:
            source = header.size
    except (OSError, ValueError) as exc:
        raise InvalidImageError(f"not a readable image ({type(exc).__name__})") from exc
    image = decode_image(data, long_side=config.long_side)
    encoded = encode_jpeg(image, config.long_side, config.quality, optimize=True)
    with Image.open(io.BytesIO(encoded)) as written:
        size = written.size
    return encoded, size, source


def build_comparison_photos(
    image_names: Sequence[str] | np.ndarray,
    individual_ids: Sequence[str] | np.ndarray,
    species: Sequence[str] | np.ndarray,
    embeddings: np.ndarray,
    read: Callable[[str], bytes],
    out: Path | str,
    config: ComparisonConfig | None = None,
    boxes: Mapping[str, Sequence[float]] | None = None,
) -> BuildReport:
    """Choose, reduce and store the comparison photos of a catalogue; ``read(image_name)`` gives a photo's bytes.

    ``boxes``: the animal's box (x1, y1, x2, y2) in pixels of the source image, by image name, where known.
    Written to a temporary file first: an over-budget or failed build leaves ``out`` as it was."""
    config = config or ComparisonConfig()
    names = np.asarray(image_names, dtype=str)
    ids = np.asarray(individual_ids, dtype=str)
    kinds = np.asarray(species, dtype=str)
    if not (len(names) == len(ids) == len(kinds) == len(embeddings)):
        raise ComparisonBuildError("the catalogue's arrays differ in length")
    picked, rank = choose_photos(embeddings, ids, kinds, config)
    if not len(picked):
        raise ComparisonBuildError("the catalogue has no photo of a named individual")
    boxes = boxes or {}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".partial")
    index: list[dict[str, Any]] = []
    skipped: list[str] = []
    per_species: dict[str, Counter[str]] = {}
    # Grouped by individual, most representative first: one individual's photos lie side by side.
    order = sorted(picked.tolist(), key=lambda i: (ids[i], int(rank[i]), names[i]))
    try:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED) as archive:
            for row in order:
                name = str(names[row])
                try:
                    jpeg, size, source = encode_photo(read(name), config)
                except (OSError, WhaleIdError) as exc:
                    skipped.append(f"{name}: {exc}")
                    continue
                archive.writestr(zipfile.ZipInfo(name, ZIP_TIME), jpeg)
                index.append(
                    {
                        "image": name,
                        "individual_id": str(ids[row]),
                        "species": str(kinds[row]),
                        "width": size[0],
                        "height": size[1],
                        "rank": int(rank[row]),
                        "box": _scaled_box(boxes.get(name), source, size),
                    }
                )
                counts = per_species.setdefault(str(kinds[row]), Counter())
                counts["photos"] += 1
                counts["bytes"] += len(jpeg)
            if not index:
                raise ComparisonBuildError(f"none of the {len(order)} chosen photos could be read: {skipped[:3]}")
            settings = {
                "long_side": config.long_side,
                "quality": config.quality,
                "per_individual": config.per_individual,
                "species_per_individual": dict(config.species_per_individual),
            }
            manifest = {"format": FORMAT, "version": FORMAT_VERSION, "settings": settings, "photos": index}
            info = zipfile.ZipInfo(INDEX_NAME, ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, json.dumps(manifest, sort_keys=True, separators=(",", ":")))
        total = temporary.stat().st_size
        if total > config.max_bytes:
            raise ComparisonBuildError(
                f"the comparison photos take {total / 1e6:.1f} MB, over the {config.max_bytes / 1e6:.1f} MB budget: "
                "lower the long side, the JPEG quality or the photos per individual (ComparisonConfig)"
            )
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    for kind, counts in per_species.items():
        counts["individuals"] = len({p["individual_id"] for p in index if p["species"] == kind})
    return BuildReport(
        path=str(out),
        photos=len(index),
        individuals=len({p["individual_id"] for p in index}),
        bytes=total,
        per_species={kind: dict(counts) for kind, counts in sorted(per_species.items())},
        skipped=skipped,
        settings=settings,
    )


def label_boxes(data_root: Path | str) -> dict[str, tuple[float, float, float, float]]:
    """The labelled animal boxes of ``data_root/labels.csv`` (``bbox_xyxy``), by image name."""
    import pandas as pd

    labels = pd.read_csv(Path(data_root) / "labels.csv", dtype=str, keep_default_na=False)
    found: dict[str, tuple[float, float, float, float]] = {}
    for name, text in zip(labels["image"], labels.get("bbox_xyxy", [""] * len(labels)), strict=True):
        parts = str(text).split()
        if len(parts) == 4:
            try:
                x1, y1, x2, y2 = (float(v) for v in parts)
            except ValueError:
                continue
            found[str(name)] = (x1, y1, x2, y2)
    return found


def build_from_data_root(
    data_root: Path | str,
    catalogue: Path | str = DEFAULT_CATALOGUE,
    out: Path | str | None = None,
    config: ComparisonConfig | None = None,
) -> BuildReport:
    """The comparison photos of the bundled catalogue (``catalogue``) from the labelled photos in ``data_root``."""
    from whales_identify.matching.gallery import Gallery

    config = config or ComparisonConfig()
    root = Path(data_root)
    if not (root / "labels.csv").is_file():
        raise ComparisonBuildError(f"no labels.csv in {root}: give the data folder with --data-root")
    gallery = Gallery.load(catalogue)

    def read(name: str) -> bytes:
        path = (root / name).resolve()
        if root.resolve() not in path.parents:
            raise ComparisonBuildError(f"{name} is outside the data folder")
        return path.read_bytes()

    return build_comparison_photos(
        gallery.image_names,
        gallery.individual_ids,
        gallery.species,
        gallery.embeddings,
        read,
        out or config.asset,
        config,
        boxes=label_boxes(root),
    )
