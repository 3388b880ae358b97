"""Keypoint verification (``matching/verify.py``) re-ranking the global model's shortlist.

Right whales: the held-out test split of the shared data (one query photo per individual, as in
``bench_accuracy``), gallery = the training split. For each query the bundled model's top K
individuals are verified against each one's M photos most similar to the query (RootSIFT, ratio
test, RANSAC similarity); the best photo's inlier count is fused with the global score. The
fusion weight and cap are tuned on the queries of one half of the individuals and reported on the
other half (split by individual). Unseen individuals' test photos (answer: new individual) count
against the precision of "verified" answers. Fins and flukes: one query per individual with two
or more photos, the rest of those collections as gallery, with the right-whale weights.
Everything runs on one core; gallery descriptors and embeddings are cached under --cache.

    python benchmarks/bench_verify.py [--variants] [--set FIELD=VALUE ...] [--out benchmarks/results/verify.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _cache  # beside this script
import cv2
import numpy as np
import pandas as pd
from _report import header, save  # beside this script

from whales_identify.config import DEFAULT_DATA_ROOT, InferenceConfig, SpeedConfig, TrainConfig, VerifyConfig
from whales_identify.inputs.imaging import decode_image
from whales_identify.matching import rules
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.identifier import Identifier, ModelOutput
from whales_identify.matching.verify import Keypoints, describe, fuse, match
from whales_identify.model.threads import single_threaded_blas
from whales_identify.training.data import assign_splits, read_labels

LATER_SOURCES = ["orcatag_norway", "humpback_kaggle2019_samples"]
OLD_PLACEHOLDER = "unknown(not 1056)"
K_MAX, M_MAX = 50, 12  # inliers are measured once for the widest shortlist; narrower ones are read off it
FIN_SOURCES = [
    "whales_identification_0x0000dead",
    "happywhale_segmented_whaleway",
    "kabuga_individual_id",
    "fin_whale_catrlog",
    "humpback_flukes_misc",
]
WEIGHTS = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0]
CAPS = [4, 6, 8, 10, 12, 15, 20, 30]
THRESHOLDS = [4, 5, 6, 8, 10, 12]


# --- data and the global model ----------------------------------------------------------
def embeddings(identifier: Identifier, paths: Sequence[str], cache: Path) -> dict[str, ModelOutput]:
    key = hashlib.sha1((identifier.model_version + "\n".join(paths)).encode()).hexdigest()[:12]
    file = cache / f"embeddings_{key}.npz"
    if file.exists():
        data = np.load(file)
        return {p: ModelOutput(e, s) for p, e, s in zip(paths, data["e"], data["s"], strict=True)}
    outputs = [identifier.forward([identifier.prepare_input(p)], threads=1)[0] for p in paths]
    np.savez(file, e=np.stack([o.embedding for o in outputs]), s=np.stack([o.species_logits for o in outputs]))
    return dict(zip(paths, outputs, strict=True))


def descriptors(paths: Sequence[str], cfg: VerifyConfig, cache: Path) -> dict[str, Keypoints]:
    """Keypoints of every photo, cached as their stored bytes (what a catalogue would hold)."""
    records = _cache.cached_records(
        paths, cfg, cache, "keypoints", lambda p: describe(load_photo(p, cfg), cfg).to_bytes()
    )
    return {p: Keypoints.from_bytes(records[p]) for p in paths}


def photo_split(data_root: Path, seed: int) -> pd.DataFrame:
    """The split the bundled model was trained on (by photo, seed 17, models/MODEL_CARD.md: 3,242 train /
    509 val / 671 test): reproduced on the data as it was then, before the two sources added later and
    while the unidentified bottlenose fins carried the placeholder id they had."""
    frame = read_labels(data_root / "labels.csv")
    frame = frame[~frame["source"].isin(LATER_SOURCES)].reset_index(drop=True)
    placeholder = (frame["source"] == "bottlenose_fins_naukma") & (frame["individual_id"] == "")
    frame.loc[placeholder, "individual_id"] = OLD_PLACEHOLDER
    frame["path"] = [str(data_root / image) for image in frame["image"]]
    frame["split"] = assign_splits(frame, seed)
    assert frame["split"].value_counts().to_dict() == {"train": 3242, "test": 671, "val": 509}, "split drifted"
    frame.loc[placeholder, "individual_id"] = ""  # not an animal: neither a query nor a gallery individual
    return frame


def load_photo(path: str, cfg: VerifyConfig) -> np.ndarray:
    return np.asarray(decode_image(path, long_side=2 * cfg.long_side).convert("L"))


class Shortlists:
    """Per query: the global model's top K_MAX individuals, each with its photos by cosine, best first."""

    def __init__(self, identifier: Identifier, gallery: Gallery, outputs: dict[str, ModelOutput], queries: list[str]):
        config = InferenceConfig.load()
        self.queries = queries
        self.individuals: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.photos: list[list[list[str]]] = []
        rows_of = {name: np.flatnonzero(gallery.individual_ids == name) for name in gallery.individuals}
        for query in queries:
            scores = identifier.scores(outputs[query], gallery)
            individual = rules.individual_scores(gallery, scores, config)
            top = rules.top_k(individual, K_MAX)
            self.individuals.append(gallery.individuals[top])
            self.scores.append(individual[top])
            per = []
            for name in gallery.individuals[top]:
                rows = rows_of[name]
                rows = rows[np.argsort(-scores.photo_similarities[rows], kind="stable")][:M_MAX]
                per.append([str(p) for p in gallery.image_names[rows]])
            self.photos.append(per)


def inlier_table(lists: Shortlists, keypoints: dict[str, Keypoints], cfg: VerifyConfig, k_max: int) -> np.ndarray:
    """(queries, k_max, M_MAX) inliers of each candidate's photos; -1 where it has fewer photos."""
    table = np.full((len(lists.queries), k_max, M_MAX), -1, np.int16)
    for q, query in enumerate(lists.queries):
        mine = keypoints[query]
        for k, photos in enumerate(lists.photos[q][:k_max]):
            for m, photo in enumerate(photos):
                table[q, k, m] = match(mine, keypoints[photo], cfg).inliers
    return table


# --- metrics ------------------------------------------------------------------------------
def ranks(order_ids: list[np.ndarray], truths: list[str]) -> np.ndarray:
    """1-based rank of the true individual (0: not in the list)."""
    out = []
    for ids, truth in zip(order_ids, truths, strict=True):
        hit = np.flatnonzero(ids == truth)
        out.append(int(hit[0]) + 1 if len(hit) else 0)
    return np.asarray(out)


def summary(rank: np.ndarray) -> dict[str, float]:
    found = rank > 0
    return {
        "top1": round(float(np.mean(rank == 1)), 3),
        "top5": round(float(np.mean(found & (rank <= 5))), 3),
        "map5": round(float(np.mean(np.where(found & (rank <= 5), 1.0 / np.maximum(rank, 1), 0.0))), 3),
        "queries": len(rank),
    }


def fused_answers(
    lists: Shortlists, table: np.ndarray, idx: Sequence[int], cfg: VerifyConfig
) -> tuple[list[np.ndarray], np.ndarray]:
    """Re-ranked individuals (best first) and the top answer's inliers, per query in ``idx``."""
    k, m = cfg.candidates, cfg.photos_per_candidate
    orders, top_inliers = [], []
    for q in idx:
        inliers = np.maximum(table[q, :k, :m].max(axis=1), 0)
        fused = fuse(lists.scores[q][:k], inliers, cfg)
        order = np.argsort(-fused, kind="stable")
        ids = np.concatenate([lists.individuals[q][:k][order], lists.individuals[q][k:]])
        orders.append(ids)
        top_inliers.append(inliers[order[0]])
    return orders, np.asarray(top_inliers)


def evaluate(lists: Shortlists, table: np.ndarray, truths: list[str], idx: Sequence[int], cfg: VerifyConfig) -> dict:
    orders, _ = fused_answers(lists, table, idx, cfg)
    return summary(ranks(orders, [truths[q] for q in idx]))


def tune(lists: Shortlists, table: np.ndarray, truths: list[str], idx: Sequence[int], cfg: VerifyConfig):
    """Weight and cap with the best MAP@5 (then top-1, then the smaller weight) on ``idx``."""
    best: tuple | None = None
    for weight in WEIGHTS:
        for cap in CAPS:
            trial = dataclasses.replace(cfg, weight=weight, inlier_cap=cap)
            got = evaluate(lists, table, truths, idx, trial)
            key = (got["map5"], got["top1"], -weight)
            if best is None or key > best[0]:
                best = (key, trial)
    assert best is not None
    return best[1]


def verified_precision(
    lists: Shortlists, table: np.ndarray, truths: list[str], idx: Sequence[int], cfg: VerifyConfig
) -> list[dict[str, Any]]:
    """Of the answers whose top candidate has ≥ t inliers, the share that is the right animal; unseen
    animals' queries (truth not in the gallery) are always wrong when verified."""
    orders, top = fused_answers(lists, table, idx, cfg)
    right = np.asarray([ids[0] == truths[q] for ids, q in zip(orders, idx, strict=True)])
    rows = []
    for t in THRESHOLDS:
        v = top >= t
        rows.append(
            {
                "inliers_at_least": t,
                "answers_verified": int(v.sum()),
                "of_queries": len(idx),
                "precision": round(float(right[v].mean()), 3) if v.any() else None,
                "wrong": int((v & ~right).sum()),
            }
        )
    return rows


def split_by_individual(truths: list[str], known: list[int], seed: int) -> tuple[list[int], list[int]]:
    names = sorted({truths[q] for q in known})
    random.Random(seed).shuffle(names)
    half = set(names[: len(names) // 2])
    return [q for q in known if truths[q] in half], [q for q in known if truths[q] not in half]


def time_queries(lists: Shortlists, keypoints: dict, idx: Sequence[int], cfg: VerifyConfig, load: Callable) -> dict:
    """One core: describe the query photo, match the top K × M photos (stored descriptors)."""
    per_query, per_describe = [], []
    for q in idx:
        query = lists.queries[q]
        photo = load(query)
        start = time.perf_counter()
        mine = describe(photo, cfg)
        described = time.perf_counter()
        for photos in lists.photos[q][: cfg.candidates]:
            for other in photos[: cfg.photos_per_candidate]:
                match(mine, keypoints[other], cfg)
        per_query.append(time.perf_counter() - start)
        per_describe.append(described - start)
    return {
        "queries_timed": len(idx),
        "ms_per_query_median": round(1000 * float(np.median(per_query)), 1),
        "ms_per_query_p95": round(1000 * float(np.percentile(per_query, 95)), 1),
        "ms_describe_median": round(1000 * float(np.median(per_describe)), 1),
    }


# --- experiments ----------------------------------------------------------------------------
def right_whales(identifier: Identifier, frame: pd.DataFrame, cache: Path, cfg: VerifyConfig, variants: bool) -> dict:
    rw = frame[frame["source"] == "noaa_right_whale"]
    train = frame[(frame["split"] == "train") & (frame["individual_id"] != "")]
    queries_frame = rw[(rw["split"] == "test") & (rw["individual_id"] != "")]
    paths = sorted(set(train["path"]) | set(queries_frame["path"]))
    outputs = embeddings(identifier, paths, cache)
    gallery = Gallery(
        np.stack([outputs[p].embedding for p in train["path"]]),
        train["individual_id"].to_numpy(),
        train["species"].to_numpy(),
        train["path"].to_numpy(),
    )
    queries = list(queries_frame["path"])
    truths = list(queries_frame["individual_id"])
    known_names = set(gallery.individuals)
    known = [q for q, t in enumerate(truths) if t in known_names]
    unseen = [q for q, t in enumerate(truths) if t not in known_names]
    lists = Shortlists(identifier, gallery, outputs, queries)
    tune_idx, measure_idx = split_by_individual(truths, known, seed=cfg.seed + 1)
    unseen_tune, unseen_measure = unseen[::2], unseen[1::2]
    print(
        f"right whales: {len(known)} known queries ({len(tune_idx)} tune / {len(measure_idx)} measure), "
        f"{len(unseen)} unseen; gallery {len(gallery)} photos, {len(gallery.individuals)} individuals",
        flush=True,
    )

    rw_paths = sorted(set(rw["path"]) & set(paths))
    start = time.perf_counter()
    keypoints = descriptors(rw_paths, cfg, cache)
    print(f"descriptors: {time.perf_counter() - start:.0f} s", flush=True)
    for p in {ph for q in lists.photos for c in q for ph in c} - set(keypoints):  # other species: rare
        keypoints[p] = describe(load_photo(p, cfg), cfg)
    start = time.perf_counter()
    tag = f"{cfg.long_side}_{cfg.max_keypoints}_{cfg.descriptor_bits}_{cfg.ratio}_{cfg.ransac_threshold}_{cfg.seed}"
    key = hashlib.sha1((tag + "\n".join(queries)).encode()).hexdigest()[:12]
    file = cache / f"inliers_{K_MAX}_{M_MAX}_{tag}_{key}.npy"
    table = np.load(file) if file.exists() else inlier_table(lists, keypoints, cfg, K_MAX)
    np.save(file, table)
    print(f"inliers: {time.perf_counter() - start:.0f} s", flush=True)

    def global_summary(idx: Sequence[int]) -> dict:
        return summary(ranks([lists.individuals[q] for q in idx], [truths[q] for q in idx]))

    tuned = tune(lists, table, truths, tune_idx, cfg)
    other = tune(lists, table, truths, measure_idx, cfg)  # the other fold, for the cross-fitted total
    orders_a, _ = fused_answers(lists, table, measure_idx, tuned)
    orders_b, _ = fused_answers(lists, table, tune_idx, other)
    crossfit = summary(ranks(orders_a + orders_b, [truths[q] for q in measure_idx] + [truths[q] for q in tune_idx]))
    sweep = []
    for k in (10, 20, 50):
        for m in (1, 3, 5, 8, 12):
            trial = dataclasses.replace(cfg, candidates=k, photos_per_candidate=m)
            t = tune(lists, table, truths, tune_idx, trial)
            sweep.append(
                {
                    "candidates": k,
                    "photos_per_candidate": m,
                    "weight": t.weight,
                    "inlier_cap": t.inlier_cap,
                    **evaluate(lists, table, truths, measure_idx, t),
                }
            )
    size = [len(keypoints[p].to_bytes()) for p in rw_paths]
    result: dict[str, Any] = {
        "queries": {"known": len(known), "tune": len(tune_idx), "measure": len(measure_idx), "unseen": len(unseen)},
        "gallery_photos": len(gallery),
        "config": dataclasses.asdict(tuned),
        "measure_half": {
            "global": global_summary(measure_idx),
            "fused": evaluate(lists, table, truths, measure_idx, tuned),
        },
        "tune_half": {"global": global_summary(tune_idx), "fused": evaluate(lists, table, truths, tune_idx, tuned)},
        "all_known_crossfitted": {
            "global": global_summary(known),
            "fused": crossfit,
            "note": "each half re-ranked with weights tuned on the other half",
        },
        "true_in_global_top_k": {
            k: round(float(np.mean([truths[q] in lists.individuals[q][:k] for q in known])), 3) for k in (5, 10, 20, 50)
        },
        "verified_precision_measure_half_plus_unseen": verified_precision(
            lists, table, truths, measure_idx + unseen_measure, tuned
        ),
        "verified_precision_all_known_plus_unseen": verified_precision(lists, table, truths, known + unseen, tuned),
        "shortlist_sweep_measure_half": sweep,
        "bytes_per_photo": {"median": int(np.median(size)), "mean": int(np.mean(size)), "max": int(max(size))},
        "keypoints_per_photo_median": int(np.median([len(keypoints[p]) for p in rw_paths])),
        "timing_one_core": time_queries(lists, keypoints, measure_idx[:60], tuned, lambda p: load_photo(p, tuned)),
    }
    _ = unseen_tune
    if variants:
        result["variants"] = descriptor_variants(lists, truths, tune_idx, measure_idx, rw_paths, cache, tuned)
    return result


def descriptor_variants(lists, truths, tune_idx, measure_idx, rw_paths, cache, base: VerifyConfig) -> list[dict]:
    """Cheap variants of the descriptor and matcher, each tuned on the tune half, at the base shortlist."""
    changes = [
        {},
        {"ratio": 0.75},
        {"ratio": 0.85},
        {"max_keypoints": 150},
        {"max_keypoints": 200},
        {"descriptor_bits": 4},
        {"max_keypoints": 200, "descriptor_bits": 4},
        {"max_keypoints": 500},
        {"long_side": 320},
    ]
    rows = []
    for change in changes:
        cfg = dataclasses.replace(base, **change)
        keypoints = descriptors(rw_paths, cfg, cache)
        for p in {ph for q in lists.photos for c in q for ph in c} - set(keypoints):
            keypoints[p] = describe(load_photo(p, cfg), cfg)
        idx = tune_idx + measure_idx
        sub = Shortlists.__new__(Shortlists)
        sub.queries = [lists.queries[q] for q in idx]
        sub.individuals = [lists.individuals[q] for q in idx]
        sub.scores = [lists.scores[q] for q in idx]
        sub.photos = [lists.photos[q] for q in idx]
        sub_truths = [truths[q] for q in idx]
        start = time.perf_counter()
        table = inlier_table(sub, keypoints, cfg, cfg.candidates)
        per_query = (time.perf_counter() - start) / len(idx)
        a, b = list(range(len(tune_idx))), list(range(len(tune_idx), len(idx)))
        t = tune(sub, table, sub_truths, a, cfg)
        got = evaluate(sub, table, sub_truths, b, t)
        precision = {
            r["inliers_at_least"]: (r["precision"], r["answers_verified"])
            for r in verified_precision(sub, table, sub_truths, b, t)
        }
        size = int(np.median([len(keypoints[p].to_bytes()) for p in rw_paths]))
        row = {
            "change": change or "base",
            "weight": t.weight,
            "inlier_cap": t.inlier_cap,
            **got,
            "verified_precision_8": precision[8],
            "bytes_per_photo": size,
            "ms_matching_per_query": round(1000 * per_query, 1),
        }
        print(row, flush=True)
        rows.append(row)
    return rows


def fins_and_flukes(identifier: Identifier, frame: pd.DataFrame, cache: Path, cfg: VerifyConfig) -> dict:
    other = frame[frame["source"].isin(FIN_SOURCES) & (frame["individual_id"] != "")]
    counts = other["individual_id"].value_counts()
    multi = sorted(counts[counts >= 2].index)
    queries, truths = [], []
    for name in multi:  # the test-split photo when there is one, else the first
        rows = other[other["individual_id"] == name].sort_values("image")
        test = rows[rows["split"] == "test"]
        queries.append((test if len(test) else rows).iloc[0]["path"])
        truths.append(name)
    gallery_rows = other[~other["path"].isin(queries)]
    paths = sorted(set(other["path"]))
    outputs = embeddings(identifier, paths, cache)
    gallery = Gallery(
        np.stack([outputs[p].embedding for p in gallery_rows["path"]]),
        gallery_rows["individual_id"].to_numpy(),
        gallery_rows["species"].to_numpy(),
        gallery_rows["path"].to_numpy(),
    )
    lists = Shortlists(identifier, gallery, outputs, queries)
    idx = list(range(len(queries)))
    out: dict[str, Any] = {
        "queries": len(queries),
        "gallery_photos": len(gallery),
        "gallery_individuals": len(gallery.individuals),
        "sources": FIN_SOURCES,
        "global": summary(ranks(list(lists.individuals), truths)),
    }
    for long_side in (cfg.long_side, 448):
        trial = dataclasses.replace(cfg, long_side=long_side)
        keypoints = descriptors(paths, trial, cache)
        table = inlier_table(lists, keypoints, trial, K_MAX)
        out[f"fused_long_side_{long_side}"] = {
            **evaluate(lists, table, truths, idx, trial),
            "verified_precision": verified_precision(lists, table, truths, idx, trial),
        }
    return out


def main() -> None:
    with single_threaded_blas():
        run()


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--cache", default="/tmp/whales_verify_cache")
    parser.add_argument("--variants", action="store_true", help="also try descriptor/matcher variants")
    parser.add_argument("--skip-fins", action="store_true")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="override a VerifyConfig default"
    )
    parser.add_argument("--out", default="benchmarks/results/verify.json")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    identifier = Identifier.load(catalogue=None, speed=SpeedConfig(onnx_threads=1, batch_workers=1))
    frame = photo_split(Path(args.data_root), TrainConfig().seed)
    cfg = VerifyConfig()
    for item in args.set:
        name, value = item.split("=", 1)
        cfg = dataclasses.replace(cfg, **{name: type(getattr(cfg, name))(value)})
    result: dict[str, Any] = header("python benchmarks/bench_verify.py " + " ".join(sys.argv[1:]))
    result["machine"] = result["machine"] + "; one thread (cv2.setNumThreads(1), BLAS 1 thread)"
    result["right_whales"] = right_whales(identifier, frame, cache, cfg, args.variants)
    if not args.skip_fins:
        result["fins_and_flukes"] = fins_and_flukes(
            identifier,
            frame,
            cache,
            dataclasses.replace(
                cfg,
                weight=result["right_whales"]["config"]["weight"],
                inlier_cap=result["right_whales"]["config"]["inlier_cap"],
            ),
        )
    save(result, args.out)
    rw = result["right_whales"]
    for part in ("measure_half", "all_known_crossfitted"):
        print(part, "global", rw[part]["global"], "fused", rw[part]["fused"])


if __name__ == "__main__":
    main()
