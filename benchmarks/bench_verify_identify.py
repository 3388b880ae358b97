"""The verification stage end to end, through the ``Identifier``, on right whales never trained on.

Split by individual (``training/data.py``, the bundled model's split) and the open-set protocol of
``training/protocol.py`` over the right whales: catalogue = training photos + half the photos of half
the held-out individuals; queries = their other photos (known) and every photo of the other half (new).
The catalogue photos given keypoints are chosen as for the shipped file (``training/keypoints.py``:
``select_per_individual``, K per individual), for each (K, max_keypoints) tried. Each query goes through
``Identifier.decide(output, photo=...)`` (the same path as ``identify(..., verify=True)``); the fused
``new_individual`` threshold and temperature are tuned on the validation individuals
(``training/tune.tune_verified``) and measured on the test individuals, with the trade-off curve
(known top-1 vs new-individual recall) with and without verification. Timing: ``identify(path, verify=...)``
on one thread; batch throughput with ``identify_entries(..., verify=True)``.

    python benchmarks/bench_verify_identify.py [--data-root ../shared/data] [--configs 3x200,4x150,2x200]
        [--timed 40] [--out benchmarks/results/verify_identify.json] [--figure verify_tradeoff]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import resource
import sys
import time
from pathlib import Path
from typing import Any

import altair as alt
import cv2
import numpy as np
import pandas as pd
from _report import header, save  # beside this script

from whales_identify.batch.local import identify_entries
from whales_identify.config import DEFAULT_DATA_ROOT, MODELS_DIR, NEW_INDIVIDUAL, REPO_DIR, SpeedConfig, VerifyConfig
from whales_identify.inputs.archive import ArchiveEntry
from whales_identify.matching import rules
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.identifier import Identifier, ModelOutput
from whales_identify.matching.results import Identification
from whales_identify.matching.selection import select_per_individual
from whales_identify.model.threads import single_threaded_blas
from whales_identify.training.data import load_dataset
from whales_identify.training.evaluate import embed_files
from whales_identify.training.keypoints import describe_file
from whales_identify.training.metrics import average_precision_at_5
from whales_identify.training.protocol import open_set
from whales_identify.training.tune import tune_verified, verified_of

RIGHT_WHALE = "north_atlantic_right_whale"
FIGURES = MODELS_DIR / "figures"


def cached_outputs(identifier: Identifier, frame: pd.DataFrame, cache: Path) -> list:
    key = hashlib.sha1((identifier.model_version + "\n".join(frame["path"])).encode()).hexdigest()[:12]
    file = cache / f"outputs_{key}.npz"
    if file.exists():
        data = np.load(file)
        return [ModelOutput(e, s) if ok else None for e, s, ok in zip(data["e"], data["s"], data["ok"], strict=True)]
    outputs = embed_files(identifier, [Path(p) for p in frame["path"]])
    ok = np.array([isinstance(o, ModelOutput) for o in outputs])
    dim, n_species = identifier.network.config.embedding_dim, len(identifier.species_names)
    e = np.stack([o.embedding if isinstance(o, ModelOutput) else np.zeros(dim, np.float32) for o in outputs])
    s = np.stack([o.species_logits if isinstance(o, ModelOutput) else np.zeros(n_species, np.float32) for o in outputs])
    np.savez(file, e=e, s=s, ok=ok)
    return [o if isinstance(o, ModelOutput) else None for o in outputs]


def cached_records(paths: list[str], cfg: VerifyConfig, cache: Path) -> dict[str, bytes]:
    tag = f"{cfg.long_side}_{cfg.max_keypoints}_{cfg.descriptor_bits}"
    key = hashlib.sha1((tag + "\n".join(paths)).encode()).hexdigest()[:12]
    file = cache / f"records_{tag}_{key}.npz"
    if file.exists():
        data = np.load(file)
        raw, offsets = data["raw"].tobytes(), data["offsets"]
        return {p: raw[offsets[i] : offsets[i + 1]] for i, p in enumerate(paths)}
    blobs = [describe_file(p, cfg) for p in paths]
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    np.savez(file, raw=np.frombuffer(b"".join(blobs), np.uint8), offsets=offsets)
    return dict(zip(paths, blobs, strict=True))


@dataclasses.dataclass
class Protocol:
    gallery: Gallery
    queries: list[int]  # frame positions
    truths: list[str]  # individual id, or new_individual


def protocol_for(frame: pd.DataFrame, outputs: list, split: str, seed: int, version: str) -> Protocol:
    rw = frame["species"].to_numpy() == RIGHT_WHALE
    p = open_set(frame, split, seed)
    rows = [int(i) for i in p.gallery if rw[i] and outputs[i] is not None]
    gallery = Gallery(
        np.stack([outputs[i].embedding for i in rows]),
        frame["individual_id"].to_numpy()[rows],
        frame["species"].to_numpy()[rows],
        frame["path"].to_numpy()[rows],
        model_version=version,
    )
    queries, truths = [], []
    for i, known in zip(p.queries, p.known, strict=True):
        if rw[i] and outputs[i] is not None and frame.at[i, "individual_id"]:
            queries.append(int(i))
            truths.append(str(frame.at[i, "individual_id"]) if known else NEW_INDIVIDUAL)
    return Protocol(gallery, queries, truths)


def keypoint_names(gallery: Gallery, per_individual: int) -> set[str]:
    """As ``training/keypoints.choose_keypoint_photos`` chooses for the shipped file."""
    rows = np.flatnonzero(gallery.individual_ids != "")
    picked = rows[select_per_individual(gallery.embeddings[rows], gallery.individual_ids[rows], per_individual)]
    return {str(n) for n in gallery.image_names[picked]}


def run_queries(identifier: Identifier, frame: pd.DataFrame, outputs: list, protocol: Protocol, verify: bool) -> list:
    results = []
    for i in protocol.queries:
        photo = identifier.prepare_input(frame.at[i, "path"]) if verify else None
        results.append(identifier.decide(outputs[i], protocol.gallery, photo=photo))
    return results


def metrics(results: list[Identification], truths: list[str]) -> dict[str, Any]:
    known = [t != NEW_INDIVIDUAL for t in truths]
    ranked = [r.ranked_answers() for r in results]
    k_top1 = [rk[:1] == [t] for rk, t, k in zip(ranked, truths, known, strict=True) if k]
    k_top5 = [t in rk[:5] for rk, t, k in zip(ranked, truths, known, strict=True) if k]
    k_map5 = [average_precision_at_5(t, rk) for rk, t, k in zip(ranked, truths, known, strict=True) if k]
    k_new = [r.new_individual for r, k in zip(results, known, strict=True) if k]
    n_new = [r.answer == NEW_INDIVIDUAL for r, k in zip(results, known, strict=True) if not k]
    verified = [r.answer == t for r, t in zip(results, truths, strict=True) if r.verified]
    return {
        "known_queries": len(k_top1),
        "new_queries": len(n_new),
        "known_top1": round(float(np.mean(k_top1)), 3),
        "known_top5": round(float(np.mean(k_top5)), 3),
        "known_map5": round(float(np.mean(k_map5)), 3),
        "known_answered_new": round(float(np.mean(k_new)), 3),
        "new_individual_recall": round(float(np.mean(n_new)), 3) if n_new else None,
        "map5_all": round(
            float(np.mean([average_precision_at_5(t, rk) for rk, t in zip(ranked, truths, strict=True)])), 3
        ),
        "answers_verified": len(verified),
        "verified_precision": round(float(np.mean(verified)), 3) if verified else None,
    }


def tradeoff(
    identifier: Identifier, protocol: Protocol, outputs: list, frame: pd.DataFrame, results: list, verify: bool
):
    """Known top-1 and new-individual recall as the (fused, when ``verify``) threshold moves."""
    scores = [identifier.scores(outputs[i], protocol.gallery) for i in protocol.queries]
    extra = [verified_of(protocol.gallery, r, identifier.verify_config) if verify else None for r in results]
    field = "verify_new_individual_threshold" if verify else "new_individual_threshold"
    tuned = getattr(identifier.config, field)
    grid = np.round(np.arange(0.2, 1.6 if verify else 0.8, 0.02), 2)
    rows = []
    for threshold in grid:
        config = dataclasses.replace(identifier.config, **{field: float(threshold)})
        answers = [
            rules.decide(protocol.gallery, s, identifier.species_names, config, v).answer
            for s, v in zip(scores, extra, strict=True)
        ]
        known_hits = [a == t for a, t in zip(answers, protocol.truths, strict=True) if t != NEW_INDIVIDUAL]
        new_hits = [a == NEW_INDIVIDUAL for a, t in zip(answers, protocol.truths, strict=True) if t == NEW_INDIVIDUAL]
        rows.append(
            {
                "threshold": float(threshold),
                "verification": "with verification" if verify else "without",
                "known_top1": float(np.mean(known_hits)),
                "new_individual_recall": float(np.mean(new_hits)),
                "tuned": abs(float(threshold) - tuned) < 1e-6,
            }
        )
    return rows


def chart(rows: list[dict], stem: str) -> str:
    FIGURES.mkdir(parents=True, exist_ok=True)
    curve = pd.DataFrame(rows)
    base = alt.Chart(curve).encode(
        x=alt.X("new_individual_recall:Q", title="new right whales answered new", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("known_top1:Q", title="catalogued right whales: right at top-1", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("verification:N", title=""),
        tooltip=["verification", "threshold", "known_top1", "new_individual_recall"],
    )
    tuned = base.transform_filter("datum.tuned").mark_point(size=120, filled=True, shape="diamond")
    path = FIGURES / f"{stem}.png"
    (base.mark_line(point=True) + tuned).properties(
        title="Right whales never trained on: the new-individual threshold, with and without keypoint verification "
        "(diamond: tuned on validation)",
        width=420,
        height=300,
    ).save(str(path), scale_factor=1.5)
    return str(path.relative_to(REPO_DIR))


def timing(identifier: Identifier, paths: list[str], verify: bool) -> dict[str, Any]:
    times = []
    for path in paths:
        start = time.perf_counter()
        identifier.identify(path, verify=verify)
        times.append(time.perf_counter() - start)
    return {
        "photos": len(times),
        "s_per_photo_median": round(float(np.median(times)), 3),
        "s_per_photo_p95": round(float(np.percentile(times, 95)), 3),
    }


def batch_throughput(identifier: Identifier, paths: list[str], verify: bool) -> dict[str, Any]:
    entries = [ArchiveEntry(Path(p).name, Path(p).read_bytes()) for p in paths]
    start = time.perf_counter()
    rows = list(identify_entries(identifier, entries, verify=verify))
    seconds = time.perf_counter() - start
    return {
        "photos": len(rows),
        "photos_per_s": round(len(rows) / seconds, 1),
        "ms_per_photo": round(1000 * seconds / len(rows), 1),
        "verified_rows": sum(bool(r.verified) for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--cache", default="/tmp/whales_verify_identify_cache")
    parser.add_argument("--configs", default="3x200,4x150,2x200", help="KxMAX_KEYPOINTS, comma-separated")
    parser.add_argument("--timed", type=int, default=40, help="photos timed end to end")
    parser.add_argument("--out", default="benchmarks/results/verify_identify.json")
    parser.add_argument("--figure", default="verify_tradeoff")
    args = parser.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    cv2.setNumThreads(1)
    speed = SpeedConfig(onnx_threads=1, batch_workers=1)
    identifier = Identifier.load(catalogue=None, speed=speed)
    seed = int(identifier.network.meta.get("train_config", {}).get("seed", 17))
    frame = load_dataset(args.data_root, seed, "individual")
    frame = frame[frame["species"] == RIGHT_WHALE].reset_index(drop=True)
    with single_threaded_blas():
        outputs = cached_outputs(identifier, frame, cache)
        val = protocol_for(frame, outputs, "val", seed, identifier.model_version)
        test = protocol_for(frame, outputs, "test", seed, identifier.model_version)
        report: dict[str, Any] = header("python benchmarks/bench_verify_identify.py " + " ".join(sys.argv[1:]))
        report["machine"] += "; one thread (ONNX Runtime, OpenCV, BLAS)"
        report["model_version"] = identifier.model_version
        report["protocol"] = {
            name: {
                "gallery_photos": len(p.gallery),
                "gallery_individuals": len(p.gallery.individuals),
                "known_queries": sum(t != NEW_INDIVIDUAL for t in p.truths),
                "new_queries": sum(t == NEW_INDIVIDUAL for t in p.truths),
            }
            for name, p in (("validation", val), ("test", test))
        }
        print(report["protocol"], flush=True)
        base_config = identifier.config
        report["without_verification_test"] = metrics(run_queries(identifier, frame, outputs, test, False), test.truths)
        print("without", report["without_verification_test"], flush=True)
        report["configs"] = []
        best: tuple | None = None
        for spec in args.configs.split(","):
            k, n = (int(v) for v in spec.split("x"))
            cfg = dataclasses.replace(VerifyConfig(), max_keypoints=n, bundled_per_individual=k)
            records = cached_records(list(frame["path"]), cfg, cache)
            identifier.verify_config = cfg
            identifier.config = base_config
            row: dict[str, Any] = {"per_individual": k, "max_keypoints": n}
            for name, protocol in (("validation", val), ("test", test)):
                chosen = keypoint_names(protocol.gallery, k)
                identifier.keypoint_sources = [lambda names, c=chosen, r=records: {n: r[n] for n in names if n in c}]
                results = run_queries(identifier, frame, outputs, protocol, True)
                if name == "validation":
                    scores = [identifier.scores(outputs[i], protocol.gallery) for i in protocol.queries]
                    extra = [verified_of(protocol.gallery, r, cfg) for r in results]
                    tuned, log = tune_verified(base_config, protocol.gallery, scores, extra, protocol.truths)
                    row["tuned"] = {
                        "verify_new_individual_threshold": tuned.verify_new_individual_threshold,
                        "verify_temperature": tuned.verify_temperature,
                        **log,
                    }
                    identifier.config = tuned
                else:
                    row["test"] = metrics(results, protocol.truths)
                    row["keypoint_photos"] = len(chosen)
                    row["mean_bytes_per_photo"] = int(np.mean([len(records[c]) for c in chosen]))
                    key = (row["test"]["known_top1"], row["test"]["known_map5"])
                    if best is None or key > best[0]:
                        best = (key, spec, tuned, cfg, results)
            print(row, flush=True)
            report["configs"].append(row)
        assert best is not None
        _, spec, tuned, cfg, results = best
        report["chosen"] = spec
        identifier.verify_config, identifier.config = cfg, tuned
        curve = tradeoff(identifier, test, outputs, frame, results, True)
        identifier.config = base_config
        curve += tradeoff(identifier, test, outputs, frame, results, False)
        report["tradeoff_test"] = curve
        report["figure"] = chart(curve, args.figure)
        # timing: through identify(path), the catalogue = the test protocol's, one thread
        identifier.config = tuned
        identifier.set_gallery(test.gallery)
        k = int(spec.split("x")[0])
        records = cached_records(list(frame["path"]), cfg, cache)
        chosen = keypoint_names(test.gallery, k)
        identifier.keypoint_sources = [lambda names: {n: records[n] for n in names if n in chosen}]
        timed = [str(frame.at[i, "path"]) for i in test.queries[:: max(1, len(test.queries) // args.timed)]][
            : args.timed
        ]
        identifier.identify(timed[0])  # warm
        report["timing_identify_one_thread"] = {
            "with_verification": timing(identifier, timed, True),
            "without": timing(identifier, timed, False),
        }
        report["batch_one_worker"] = {
            "with_verify": batch_throughput(identifier, timed, True),
            "without": batch_throughput(identifier, timed, False),
        }
    report["resident_memory_mb_peak"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    save(report, args.out)


if __name__ == "__main__":
    main()
