"""Accuracy on the held-out test split of the shared data, through the `evaluate` contract.

Uses the split the checkpoint was trained with (by individual for the current model: then
the queries are animals never trained on and only species and rejection mean much here, see
bench_generalisation.py; by photo for older checkpoints: re-identifying trained animals).
Writes the test split as LABELS.csv (gallery = training split, query = test
split: photos never used in training or tuning), runs the same code as
`python -m whales_identify evaluate`, and reports overall, per-source-group
and per-species numbers against the targets.

    python benchmarks/bench_accuracy.py [--data-root ../shared/data] [--out benchmarks/results/accuracy.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import tempfile
from pathlib import Path

import pandas as pd

from whales_identify.config import DEFAULT_CHECKPOINT, DEFAULT_DATA_ROOT, DEFAULT_INFERENCE_CONFIG
from whales_identify.matching.identifier import Identifier
from whales_identify.training.data import load_dataset
from whales_identify.training.evaluate import QueryRecord, evaluate, format_table, summarise

GROUPS = {
    "right_whales": ["noaa_right_whale"],
    "happywhale_style": [
        "whales_identification_0x0000dead",
        "happywhale_segmented_whaleway",
        "kabuga_individual_id",
        "fin_whale_catrlog",
        "humpback_flukes_misc",
        "bottlenose_fins_naukma",
    ],
}
TARGETS = {
    "right_whales": {"known_top1": 0.90, "known_top5": 0.97, "known_map5": 0.92},
    "happywhale_style": {"species_accuracy": 0.85},
    "all": {"non_cetacean_rejection": 0.95, "cetacean_acceptance": 0.97},
}


def write_contract_csv(data_root: Path, seed: int, split: str, path: Path) -> pd.DataFrame:
    frame = load_dataset(data_root, seed, split)
    frame = frame[frame["split"].isin(["train", "test"])].copy()
    frame["split"] = frame["split"].map({"train": "gallery", "test": "query"})
    frame[["image", "individual_id", "species", "split", "source"]].to_csv(path, index=False)
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--out", default="benchmarks/results/accuracy.json")
    args = parser.parse_args()

    identifier = Identifier.load(args.checkpoint, catalogue=None, inference_config=DEFAULT_INFERENCE_CONFIG)
    train_config = identifier.network.meta["train_config"]
    seed, split = int(train_config["seed"]), str(train_config.get("split", "photo"))
    with tempfile.TemporaryDirectory() as tmp:
        labels = Path(tmp) / "labels.csv"
        frame = write_contract_csv(Path(args.data_root), seed, split, labels)
        report = evaluate(identifier, labels, args.data_root)
    print(format_table(report))

    source_of = dict(zip(frame["image"], frame["source"], strict=True))
    records = [QueryRecord(**q) for q in report["queries"]]
    groups = {}
    for group, sources in GROUPS.items():
        subset = [r for r in records if source_of[r.image] in sources and r.species != "non_cetacean"]
        groups[group] = summarise(subset)
    groups["all"] = {k: v for k, v in report.items() if k not in ("queries", "per_species", "inference_config")}
    print("\ngroup            metric                    value   target")
    for group, targets in TARGETS.items():
        for metric, target in targets.items():
            value = groups[group].get(metric)
            shown = "—" if value is None else f"{value:.3f}"
            print(f"{group:<16} {metric:<24} {shown:>6}   ≥ {target:.2f}")
    result = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.processor() or ''} CPU, {__import__('os').cpu_count()} cores",
        "command": "python benchmarks/bench_accuracy.py",
        "groups": groups,
        "targets": TARGETS,
        "per_species": report["per_species"],
        "inference_config": report["inference_config"],
        "model_version": report["model_version"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
