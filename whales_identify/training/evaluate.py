"""``evaluate``: build a catalogue from gallery rows, identify the query rows, score.

The contract (also how the model is checked on photographs we have not seen):
LABELS.csv has ``image`` (relative to ``--root``), ``individual_id`` (may be
empty), ``species`` and ``split`` (``gallery`` or ``query``); other columns are
ignored. The bundled catalogue is not used.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from whales_identify.config import NEW_INDIVIDUAL, NON_CETACEAN
from whales_identify.errors import LabelsError, WhaleIdError
from whales_identify.inputs.content import blank_reason
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.identifier import Identifier, ModelOutput
from whales_identify.training.data import read_labels
from whales_identify.training.metrics import average_precision_at_5, ground_truth

REQUIRED_COLUMNS = ("image", "individual_id", "species", "split")
SPLIT_VALUES = ("gallery", "query")


@dataclass
class QueryRecord:
    """One query's truth and answer, kept so any grouping can be scored later."""

    image: str
    individual_id: str
    species: str
    truth: str  # the individual id when the gallery knows it, else new_individual
    answer: str
    ranked: list[str]
    predicted_species: str
    rejected: bool
    error: str = ""

    @property
    def ap5(self) -> float:
        return average_precision_at_5(self.truth, self.ranked)


def load_evaluation_labels(csv_path: Path | str, root: Path | str) -> pd.DataFrame:
    """The labels, checked: columns, split values, and that every image exists."""
    frame = read_labels(csv_path)
    missing_columns = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing_columns:
        raise LabelsError(f"{csv_path} lacks the column(s): {', '.join(missing_columns)}")
    frame["split"] = frame["split"].str.strip().str.lower()
    bad = frame.loc[~frame["split"].isin(SPLIT_VALUES)]
    if len(bad):
        rows = ", ".join(str(i + 2) for i in bad.index[:5])
        raise LabelsError(f"{csv_path}: split must be 'gallery' or 'query' (bad at line(s) {rows})")
    if (frame["image"].str.strip() == "").any():
        raise LabelsError(f"{csv_path}: some rows have an empty image path")
    root = Path(root)
    absent = [image for image in frame["image"] if not (root / image).is_file()]
    if absent:
        shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
        raise LabelsError(f"{len(absent)} image(s) listed in {csv_path} are missing under {root}: {shown}")
    if not (frame["split"] == "query").any():
        raise LabelsError(f"{csv_path} has no query rows")
    return frame


def embed_files(identifier: Identifier, paths: Sequence[Path], batch_size: int = 8) -> list[ModelOutput | WhaleIdError]:
    """One forward pass per photo, in batches; an unreadable photo, or one with nothing in it (the
    content gate), gives its error instead."""
    outputs: list[ModelOutput | WhaleIdError] = [WhaleIdError("not processed")] * len(paths)
    ready: list[tuple[int, Any]] = []

    def flush() -> None:
        results = identifier.forward([image for _, image in ready])
        for (index, _), output in zip(ready, results, strict=True):
            outputs[index] = output
        ready.clear()

    for index, path in enumerate(paths):
        try:
            image = identifier.prepare_input(path)
        except WhaleIdError as exc:
            outputs[index] = exc
            continue
        reason = blank_reason(image)
        if reason:  # a frame with nothing in it is never a catalogue photo, nor a query the network sees
            outputs[index] = WhaleIdError(reason)
        else:
            ready.append((index, image))
        if len(ready) == batch_size:
            flush()
    if ready:
        flush()
    return outputs


def gallery_from_outputs(
    outputs: Sequence[ModelOutput | WhaleIdError],
    individual_ids: Sequence[str],
    species: Sequence[str],
    names: Sequence[str],
    model_version: str = "",
) -> Gallery:
    keep = [i for i, o in enumerate(outputs) if isinstance(o, ModelOutput)]
    embedded = [o for o in outputs if isinstance(o, ModelOutput)]
    dim = embedded[0].embedding.shape[0] if embedded else 0
    embeddings = np.stack([o.embedding for o in embedded]) if embedded else np.zeros((0, dim), np.float32)
    return Gallery(
        embeddings,
        np.asarray([individual_ids[i] for i in keep], dtype=str),
        np.asarray([species[i] for i in keep], dtype=str),
        np.asarray([names[i] for i in keep], dtype=str),
        model_version=model_version,
    )


def gallery_of_rows(
    frame: pd.DataFrame,
    outputs: Sequence[ModelOutput | WhaleIdError],
    rows: Sequence[int] | np.ndarray,
    model_version: str = "",
) -> Gallery:
    """The photos at positions ``rows`` of a labels frame (``outputs`` aligned with it) as a catalogue;
    the ones that could not be embedded are left out."""
    positions = [int(i) for i in rows]
    return gallery_from_outputs(
        [outputs[i] for i in positions],
        frame["individual_id"].to_numpy()[positions].tolist(),
        frame["species"].to_numpy()[positions].tolist(),
        frame["image"].to_numpy()[positions].tolist(),
        model_version,
    )


def score_queries(
    identifier: Identifier, gallery: Gallery, outputs: Sequence[ModelOutput | WhaleIdError], frame: pd.DataFrame
) -> list[QueryRecord]:
    known = set(gallery.individuals.tolist())
    records = []
    for output, row in zip(outputs, frame.itertuples(index=False), strict=True):
        truth = ground_truth(row.individual_id, known)
        if not isinstance(output, ModelOutput):
            records.append(
                QueryRecord(row.image, row.individual_id, row.species, truth, "error", [], "", False, str(output))
            )
            continue
        result = identifier.decide(output, gallery)
        records.append(
            QueryRecord(
                row.image,
                row.individual_id,
                row.species,
                truth,
                result.answer,
                result.ranked_answers(),
                result.species,
                result.rejected,
            )
        )
    return records


def summarise(records: Sequence[QueryRecord]) -> dict[str, Any]:
    """Happywhale metrics over a set of query records."""
    n = len(records)
    if n == 0:
        return {"n_queries": 0}
    cetaceans = [r for r in records if r.species != NON_CETACEAN]
    negatives = [r for r in records if r.species == NON_CETACEAN]
    known = [r for r in records if r.truth != NEW_INDIVIDUAL]
    new = [r for r in cetaceans if r.truth == NEW_INDIVIDUAL]
    return {
        "n_queries": n,
        "top1": _share(r.ranked[:1] == [r.truth] for r in records),
        "top5": _share(r.truth in r.ranked[:5] for r in records),
        "map5": float(np.mean([r.ap5 for r in records])),
        "n_known": len(known),
        "known_top1": _share(r.ranked[:1] == [r.truth] for r in known) if known else None,
        "known_top5": _share(r.truth in r.ranked[:5] for r in known) if known else None,
        "known_map5": float(np.mean([r.ap5 for r in known])) if known else None,
        "n_new": len(new),
        "new_individual_recall": _share(r.answer == NEW_INDIVIDUAL for r in new) if new else None,
        "species_accuracy": _share(r.predicted_species == r.species for r in cetaceans) if cetaceans else None,
        "non_cetacean_rejection": _share(r.rejected for r in negatives) if negatives else None,
        "cetacean_acceptance": _share(not r.rejected for r in cetaceans) if cetaceans else None,
        "errors": sum(1 for r in records if r.error),
    }


def _share(flags: Iterable[bool]) -> float:
    values = list(flags)
    return sum(values) / len(values) if values else 0.0


def per_species(records: Sequence[QueryRecord]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[QueryRecord]] = defaultdict(list)
    for record in records:
        groups[record.species].append(record)
    table = {}
    for name, group in sorted(groups.items()):
        table[name] = {
            "n": len(group),
            "top1": _share(r.ranked[:1] == [r.truth] for r in group),
            "map5": float(np.mean([r.ap5 for r in group])),
            "species_accuracy": _share(
                (r.rejected if name == NON_CETACEAN else r.predicted_species == r.species) for r in group
            ),
        }
    return table


def evaluate(identifier: Identifier, labels_csv: Path | str, root: Path | str) -> dict[str, Any]:
    """Run the whole contract; returns the JSON-ready report (with every query's record)."""
    frame = load_evaluation_labels(labels_csv, root)
    root = Path(root)
    gallery_rows = frame[frame["split"] == "gallery"].reset_index(drop=True)
    query_rows = frame[frame["split"] == "query"].reset_index(drop=True)
    started = time.perf_counter()
    gallery_outputs = embed_files(identifier, [root / p for p in gallery_rows["image"]])
    gallery = gallery_from_outputs(
        gallery_outputs,
        gallery_rows["individual_id"].tolist(),
        gallery_rows["species"].tolist(),
        gallery_rows["image"].tolist(),
        identifier.model_version,
    )
    query_outputs = embed_files(identifier, [root / p for p in query_rows["image"]])
    records = score_queries(identifier, gallery, query_outputs, query_rows)
    elapsed = time.perf_counter() - started
    report = summarise(records)
    report["per_species"] = per_species(records)
    report["n_gallery"] = len(gallery_rows)
    report["gallery_errors"] = sum(1 for o in gallery_outputs if not isinstance(o, ModelOutput))
    report["images_per_second"] = round((len(gallery_rows) + len(query_rows)) / max(elapsed, 1e-9), 2)
    report["model_version"] = identifier.model_version
    report["inference_config"] = asdict(identifier.config)
    report["queries"] = [asdict(r) for r in records]
    return report


def format_table(report: dict[str, Any]) -> str:
    """A short human-readable summary of an evaluation report."""

    def fmt(value: Any) -> str:
        return "—" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))

    lines = [f"queries {report['n_queries']}  gallery {report['n_gallery']}  ({report['images_per_second']} images/s)"]
    for key in (
        "top1",
        "top5",
        "map5",
        "known_top1",
        "known_top5",
        "new_individual_recall",
        "species_accuracy",
        "non_cetacean_rejection",
        "cetacean_acceptance",
    ):
        lines.append(f"  {key:<24}{fmt(report.get(key))}")
    lines.append(f"  {'species':<28}{'n':>5}{'top1':>8}{'map5':>8}{'sp.acc':>8}")
    for name, row in report["per_species"].items():
        lines.append(f"  {name:<28}{row['n']:>5}{row['top1']:>8.3f}{row['map5']:>8.3f}{row['species_accuracy']:>8.3f}")
    return "\n".join(lines)
