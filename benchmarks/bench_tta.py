"""Would several views of each photo rank right whales better? Test-time augmentation, measured.

    python benchmarks/bench_tta.py [--data-root ../shared/data] [--out benchmarks/results/tta.json]

Each right-whale photo is embedded as it is and as four variants made from the photo before the
localiser (centre crops of 90 % and 80 % of its side, the photo framed by 8 % of grey, and an
autocontrast copy); a photo's embedding is then the normalised mean of a chosen set of views, for
the photo being identified ("query"), for the catalogue's photos ("catalogue"), or both. Scored as
the product scores individuals (``rules.individual_scores``: best photo blended with the ArcFace
centre) on the open set's catalogued right whales that were never trained on, closed set (never
answering new_individual): the ranking alone, which is what limits known top-1. Validation chooses,
test is reported beside it. Not (yet) in the product: a view costs one more forward pass per photo.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
from _report import header, save  # beside this script
from PIL import Image, ImageOps

from whales_identify.config import DEFAULT_DATA_ROOT, REPO_DIR
from whales_identify.matching import rules
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.identifier import Identifier, ModelOutput
from whales_identify.training.data import load_dataset
from whales_identify.training.protocol import open_set

RIGHT_WHALE = "north_atlantic_right_whale"
VIEWS = ("as taken", "centre 90 %", "centre 80 %", "framed 8 %", "autocontrast")
CHOICES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {  # name: (query views, catalogue views)
    "none": ((0,), (0,)),
    "query: zooms": ((0, 1, 2, 3), (0,)),
    "query: all five": ((0, 1, 2, 3, 4), (0,)),
    "catalogue: zooms": ((0,), (0, 1, 2, 3)),
    "catalogue: all five": ((0,), (0, 1, 2, 3, 4)),
    "both: centre 90 %": ((0, 1), (0, 1)),
    "both: zooms": ((0, 1, 2, 3), (0, 1, 2, 3)),
    "both: all five": ((0, 1, 2, 3, 4), (0, 1, 2, 3, 4)),
    "both: autocontrast": ((0, 4), (0, 4)),
}


def views(image: Image.Image) -> list[Image.Image]:
    """The five views of ``VIEWS``, each the size of the photo."""
    w, h = image.size
    out = [image]
    for share in (0.9, 0.8):
        cw, ch = round(w * share), round(h * share)
        left, top = (w - cw) // 2, (h - ch) // 2
        out.append(image.crop((left, top, left + cw, top + ch)).resize((w, h)))
    out.append(ImageOps.expand(image, border=round(w * 0.08), fill=(128, 128, 128)).resize((w, h)))
    out.append(ImageOps.autocontrast(image, cutoff=1))
    return out


def embed_views(identifier: Identifier, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(photos, views, dim) embeddings and the species logits of the photo as taken."""
    embeddings, logits = [], []
    for start in range(0, len(paths), 32):
        images = [identifier.prepare_input(p) for p in paths[start : start + 32]]
        outputs = identifier.forward([v for image in images for v in views(image)])
        embeddings.append(np.stack([o.embedding for o in outputs]).reshape(len(images), len(VIEWS), -1))
        logits += [outputs[i * len(VIEWS)].species_logits for i in range(len(images))]
        print(f"{start + len(images)} / {len(paths)} photos", file=sys.stderr, flush=True)
    return np.concatenate(embeddings), np.stack(logits)


def mean_of(embeddings: np.ndarray, chosen: tuple[int, ...]) -> np.ndarray:
    m = embeddings[:, list(chosen)].mean(axis=1)
    return (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)


def ranking(
    identifier: Identifier, frame: Any, rows: np.ndarray, embeddings: np.ndarray, logits: np.ndarray, split: str
) -> dict[str, dict[str, float]]:
    """Per choice of views: known top-1 / top-5 of the split's catalogued right whales, closed set."""
    protocol = open_set(frame, split, 17)
    where = {row: i for i, row in enumerate(rows)}
    species = frame["species"].to_numpy()
    gallery_rows = [r for r in protocol.gallery if species[r] == RIGHT_WHALE]
    query_rows = [q for q, k in zip(protocol.queries, protocol.known, strict=True) if k and species[q] == RIGHT_WHALE]
    ids = frame["individual_id"].to_numpy()
    out = {}
    for name, (query_views, catalogue_views) in CHOICES.items():
        gallery = Gallery(
            mean_of(embeddings[[where[r] for r in gallery_rows]], catalogue_views),
            ids[gallery_rows],
            species[gallery_rows],
            frame["image"].to_numpy()[gallery_rows],
        )
        queries = mean_of(embeddings[[where[q] for q in query_rows]], query_views)
        index = {n: i for i, n in enumerate(gallery.individuals.tolist())}
        ranks = []
        for q, embedding in zip(query_rows, queries, strict=True):
            scores = identifier.scores(ModelOutput(embedding, logits[where[q]]), gallery)
            individual = rules.individual_scores(gallery, scores, identifier.config)
            ranks.append(int((individual > individual[index[ids[q]]]).sum()))
        r = np.asarray(ranks)
        out[name] = {"top1": round(float((r == 0).mean()), 3), "top5": round(float((r < 5).mean()), 3)}
    out["queries"] = len(query_rows)  # type: ignore[assignment]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--out", default=str(REPO_DIR / "benchmarks" / "results" / "tta.json"))
    args = parser.parse_args()
    identifier = Identifier.load(catalogue=None)
    frame = load_dataset(args.data_root, 17, "individual")
    rows = np.flatnonzero((frame["species"] == RIGHT_WHALE).to_numpy())
    embeddings, logits = embed_views(identifier, [str(p) for p in frame["path"].to_numpy()[rows]])
    report = {
        **header("python benchmarks/bench_tta.py " + " ".join(sys.argv[1:])),
        "model_version": identifier.model_version,
        "views": list(VIEWS),
        "choices": {
            name: {"query": [VIEWS[v] for v in q], "catalogue": [VIEWS[v] for v in c]}
            for name, (q, c) in CHOICES.items()
        },
        "validation": ranking(identifier, frame, rows, embeddings, logits, "val"),
        "test": ranking(identifier, frame, rows, embeddings, logits, "test"),
    }
    val = {k: v for k, v in report["validation"].items() if k != "queries"}
    best = max(val, key=lambda k: (val[k]["top1"], val[k]["top5"]))
    report["chosen_on_validation"] = {"choice": best, "validation": val[best], "test": report["test"][best]}
    save(report, args.out)
    for name in CHOICES:
        print(f"{name:22s} validation {report['validation'][name]}  test {report['test'][name]}")


if __name__ == "__main__":
    main()
