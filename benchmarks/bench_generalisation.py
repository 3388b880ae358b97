"""What a new animal gets: species, rejection and identity measured on individuals never trained on.

    python benchmarks/bench_generalisation.py [--checkpoint models/whale_id.pt] [--inference-config FILE]
        [--data-root ../shared/data] [--out benchmarks/results/generalisation.json]

Split by individual (``training/data.py``): no photo of a test individual was trained on or tuned
on, and negatives are held out as whole groups (source/scene), so the rejection is measured on
kinds of pictures the model never saw. Two protocols over the test individuals:

* **species and rejection**: catalogue = the training photos only; every test photo is a query.
* **identity, open set** (``training/protocol.py``): catalogue = the training photos plus half the
  photos of half the test individuals; queries = their other photos (known animals, never trained
  on) and every photo of the other half (new animals: the right answer is ``new_individual``).

Also: every synthetic blank/uniform/noise frame must be rejected; reliability diagrams (predicted
probability against observed accuracy) for the species answer and for the single answer; the
species confusion matrix. Charts are written as PNG next to the model card (Altair, rendered offline).
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
from _report import header, save  # beside this script
from PIL import Image

from whales_identify.config import (
    DEFAULT_CHECKPOINT,
    DEFAULT_DATA_ROOT,
    DEFAULT_INFERENCE_CONFIG,
    MODELS_DIR,
    NEW_INDIVIDUAL,
    NON_CETACEAN,
    REPO_DIR,
    InferenceConfig,
)
from whales_identify.matching import rules
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.identifier import Identifier, ModelOutput
from whales_identify.matching.results import Identification
from whales_identify.training import calibration
from whales_identify.training.data import load_dataset, negative_group
from whales_identify.training.evaluate import embed_files, gallery_of_rows
from whales_identify.training.metrics import average_precision_at_5
from whales_identify.training.protocol import open_set, protocol_summary

BINS = 10
FIGURES = MODELS_DIR / "figures"


def blank_frames() -> dict[str, bytes]:
    """Frames with nothing in them, as JPEG bytes: solid colours, gradients, noise, an empty flat sea."""
    rng = np.random.default_rng(0)
    h, w = 480, 640
    frames = {f"solid {c}": np.full((h, w, 3), c, np.uint8) for c in (0, 128, 255)}
    frames["solid sea blue"] = np.broadcast_to(np.array([40, 70, 90], np.uint8), (h, w, 3)).copy()
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    frames["gradient"] = np.broadcast_to(ramp, (h, w, 3)).astype(np.uint8)
    for sigma in (5, 25, 80):
        frames[f"grey noise σ{sigma}"] = np.clip(128 + rng.normal(0, sigma, (h, w, 3)), 0, 255).astype(np.uint8)
    frames["uniform noise"] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = {}
    for name, pixels in frames.items():
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
        out[name] = buffer.getvalue()
    return out


def answer(
    identifier: Identifier, output: Any, gallery: Gallery, config: InferenceConfig | None = None
) -> Identification | None:
    """The product's answer (under ``config``, default the shipped rules); None when the content gate refused
    the photo (it is then rejected)."""
    return identifier.decide(output, gallery, config) if isinstance(output, ModelOutput) else None


def reliability(probabilities: list[float], correct: list[bool], weights: list[float] | None = None) -> dict[str, Any]:
    """Accuracy per probability bin and the expected calibration error; ``weights``: each answer's weight
    (e.g. catalogued and unseen animals weighing the same), the bins' means and the error weighted by them."""
    p, c = np.asarray(probabilities), np.asarray(correct, dtype=float)
    w = np.ones_like(p) if weights is None else np.asarray(weights, dtype=float)
    edges = np.linspace(0, 1, BINS + 1)
    rows, ece = [], 0.0
    for low, high in itertools.pairwise(edges):
        inside = (p >= low) & ((p < high) | (high == 1.0))
        if inside.any():
            mean_p = float(np.average(p[inside], weights=w[inside]))
            accuracy = float(np.average(c[inside], weights=w[inside]))
            rows.append(
                {"bin": f"{low:.1f}–{high:.1f}", "mean_p": mean_p, "accuracy": accuracy, "n": int(inside.sum())}
            )
            ece += w[inside].sum() / w.sum() * abs(mean_p - accuracy)
    return {"bins": rows, "ece": float(ece), "n": len(p), "weighted": weights is not None}


def species_and_rejection(identifier: Identifier, frame: pd.DataFrame, outputs: list) -> dict[str, Any]:
    train = np.flatnonzero((frame["split"] == "train").to_numpy())
    gallery = gallery_of_rows(frame, outputs, train, identifier.model_version)
    test = np.flatnonzero((frame["split"] == "test").to_numpy())
    per_species: dict[str, list[bool]] = defaultdict(list)
    confusion: dict[tuple[str, str], int] = defaultdict(int)
    probabilities, correct, accepted = [], [], []
    rejections: dict[str, list[bool]] = defaultdict(list)
    for i in test:
        truth = frame.at[i, "species"]
        result = answer(identifier, outputs[i], gallery)
        rejected = result is None or result.rejected
        if truth == NON_CETACEAN:
            rejections[negative_group(frame.at[i, "image"], frame.at[i, "source"])].append(rejected)
            continue
        accepted.append(not rejected)
        predicted = "rejected" if rejected else result.species  # type: ignore[union-attr]
        per_species[truth].append(predicted == truth)
        confusion[(truth, predicted)] += 1
        if result is not None and not rejected:
            probabilities.append(result.species_probability)
            correct.append(predicted == truth)
    all_hits = [hit for hits in per_species.values() for hit in hits]
    all_rejections = [r for group in rejections.values() for r in group]
    return {
        "catalogue": "training photos only",
        "n_cetacean_queries": len(all_hits),
        "species_accuracy": float(np.mean(all_hits)),
        "species_accuracy_without_right_whales": float(
            np.mean([h for s, hits in per_species.items() if s != "north_atlantic_right_whale" for h in hits])
        ),
        "species_accuracy_macro": float(np.mean([np.mean(h) for h in per_species.values()])),
        "per_species": {s: {"n": len(h), "accuracy": float(np.mean(h))} for s, h in sorted(per_species.items())},
        "cetacean_acceptance": float(np.mean(accepted)),
        "non_cetacean_rejection": float(np.mean(all_rejections)) if all_rejections else None,
        "rejection_per_held_out_group": {
            g: {"n": len(r), "rejected": float(np.mean(r))} for g, r in rejections.items()
        },
        "confusion": [{"truth": t, "predicted": p, "n": n} for (t, p), n in sorted(confusion.items())],
        "reliability_species": reliability(probabilities, correct),
    }


def identity_groups(
    identifier: Identifier,
    frame: pd.DataFrame,
    outputs: list,
    protocol: Any,
    gallery: Gallery,
    config: InferenceConfig | None = None,
) -> dict[str, dict[str, Any]]:
    """Per group (right whales, other species, all): MAP@5, known top-1 / top-5, catalogued animals
    answered new and new-individual recall of the open set's cetacean queries, as the product answers
    them under ``config`` (a rejected photo counts as answered new)."""
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for i, known in zip(protocol.queries, protocol.known, strict=True):
        species = frame.at[i, "species"]
        if species == NON_CETACEAN:
            continue
        truth = frame.at[i, "individual_id"] if known else NEW_INDIVIDUAL
        result = answer(identifier, outputs[i], gallery, config)
        ranked = result.ranked_answers() if result is not None else [NEW_INDIVIDUAL]
        single = NEW_INDIVIDUAL if result is None or result.rejected else result.answer
        group = "right whales" if species == "north_atlantic_right_whale" else "other species"
        for name in (group, "all"):
            g = groups[name]
            g["ap5"].append(average_precision_at_5(truth, ranked))
            if known:
                g["known_top1"].append(float(ranked[:1] == [truth]))
                g["known_top5"].append(float(truth in ranked[:5]))
                g["known_answered_new"].append(float(single == NEW_INDIVIDUAL))
            else:
                g["new_recall"].append(float(single == NEW_INDIVIDUAL))
    return {
        name: {
            "n_known": len(g["known_top1"]),
            "n_new": len(g["new_recall"]),
            "map5": float(np.mean(g["ap5"])),
            "known_top1": float(np.mean(g["known_top1"])) if g["known_top1"] else None,
            "known_top5": float(np.mean(g["known_top5"])) if g["known_top5"] else None,
            "known_answered_new": float(np.mean(g["known_answered_new"])) if g["known_answered_new"] else None,
            "new_individual_recall": float(np.mean(g["new_recall"])) if g["new_recall"] else None,
        }
        for name, g in groups.items()
    }


def identity(identifier: Identifier, frame: pd.DataFrame, outputs: list, seed: int) -> dict[str, Any]:
    protocol = open_set(frame, "test", seed)
    gallery = gallery_of_rows(frame, outputs, protocol.gallery, identifier.model_version)
    scored = scored_queries(identifier, frame, outputs, protocol, gallery)
    return {
        "protocol": protocol_summary(frame, protocol),
        "groups": identity_groups(identifier, frame, outputs, protocol, gallery),
        **answer_reliability(identifier, frame, outputs, protocol, gallery),
        "tradeoff": tradeoff(identifier, scored, gallery),
        "stated_share": share_sweep(identifier, frame, outputs, protocol, gallery),
    }


def answer_reliability(
    identifier: Identifier, frame: pd.DataFrame, outputs: list, protocol: Any, gallery: Gallery
) -> dict[str, Any]:
    """How far the single answer's probability can be trusted (answers that were not rejections):

    * as shipped, with catalogued and unseen animals weighing the same (the prior the probabilities assume,
      ``catalogued_share`` 0.5): ``reliability_answer``;
    * with ``catalogued_share`` set to the test queries' own share of catalogued animals, on the queries as
      they come: ``reliability_answer_stated_share`` (what a user who states their share gets);
    * the shipped 0.5 on the queries as they come (what a wrongly stated share costs);
    * both before calibration (the softmax alone), for comparison."""
    rows = []
    for i, known in zip(protocol.queries, protocol.known, strict=True):
        if frame.at[i, "species"] != NON_CETACEAN and isinstance(outputs[i], ModelOutput):
            rows.append((i, frame.at[i, "individual_id"] if known else NEW_INDIVIDUAL, bool(known)))
    share = float(np.mean([k for _, _, k in rows]))
    weights = calibration.balanced_weights([k for _, _, k in rows])

    def measured(config: InferenceConfig, weighted: bool) -> dict[str, Any]:
        p, c, w = [], [], []
        for (i, truth, _), weight in zip(rows, weights, strict=True):
            result = identifier.decide(outputs[i], gallery, config)
            if not result.rejected:
                p.append(result.answer_probability)
                c.append(result.answer == truth)
                w.append(weight)
        return reliability(p, c, w if weighted else None)

    shipped = identifier.config
    stated = replace(shipped, catalogued_share=share)
    raw = calibration.uncalibrated(shipped)
    return {
        "catalogued_share_of_queries": share,
        "reliability_answer": measured(shipped, True),
        "reliability_answer_stated_share": measured(stated, False),
        "reliability_answer_shipped_share_as_they_come": measured(shipped, False),  # the share stated wrong
        "reliability_answer_uncalibrated": {"balanced": measured(raw, True), "as_they_come": measured(raw, False)},
    }


ScoredQuery = tuple[rules.QueryScores, str, bool, str]  # scores, truth, catalogued, group


def scored_queries(
    identifier: Identifier, frame: pd.DataFrame, outputs: list, protocol: Any, gallery: Gallery
) -> list[ScoredQuery]:
    """The open set's cetacean queries that reached the network, scored once against ``gallery``."""
    queries = []
    for i, known in zip(protocol.queries, protocol.known, strict=True):
        species = frame.at[i, "species"]
        if species == NON_CETACEAN or not isinstance(outputs[i], ModelOutput):
            continue
        truth = frame.at[i, "individual_id"] if known else NEW_INDIVIDUAL
        group = "right whales" if species == "north_atlantic_right_whale" else "other species"
        queries.append((identifier.scores(outputs[i], gallery), truth, bool(known), group))
    return queries


SHARES = (0.1, 0.3, 0.5, 0.7, 0.9)
SWEPT = ("n_known", "n_new", "known_top1", "known_answered_new", "new_individual_recall")  # per share and group


def share_sweep(
    identifier: Identifier, frame: pd.DataFrame, outputs: list, protocol: Any, gallery: Gallery
) -> list[dict[str, Any]]:
    """What stating a share of catalogued photos (``catalogued_share``, ``rules.decision_threshold``) does to
    the answers, counted as ``identity_groups`` counts them: known top-1, catalogued animals answered new,
    new-individual recall, per group."""
    rows = []
    for share in SHARES:
        config = replace(identifier.config, catalogued_share=share)
        groups = identity_groups(identifier, frame, outputs, protocol, gallery, config)
        for group in ("right whales", "other species", "all"):
            g = groups[group]
            rows.append(
                {
                    "catalogued_share": share,
                    "group": group,
                    "threshold": round(rules.decision_threshold(config), 4),
                    **{k: g[k] for k in SWEPT},
                }
            )
    return rows


def tradeoff(identifier: Identifier, queries: list[ScoredQuery], gallery: Gallery) -> list:
    """Known top-1 against new-individual recall as the ``new_individual`` threshold moves."""
    rows = []
    for threshold in np.round(np.arange(0.20, 0.80, 0.02), 2):
        config = replace(identifier.config, new_individual_threshold=float(threshold), catalogued_share=0.5)
        for group in ("right whales", "all"):
            chosen = [q for q in queries if group == "all" or q[3] == group]
            answers = [
                (rules.decide(gallery, q, identifier.species_names, config).answer, t, k) for q, t, k, _ in chosen
            ]
            known_hits = [a == t for a, t, k in answers if k]
            new_hits = [a == NEW_INDIVIDUAL for a, t, k in answers if not k]
            rows.append(
                {
                    "threshold": float(threshold),
                    "group": group,
                    "known_top1": float(np.mean(known_hits)) if known_hits else None,
                    "new_individual_recall": float(np.mean(new_hits)) if new_hits else None,
                    "tuned": abs(float(threshold) - identifier.config.new_individual_threshold) < 1e-6,
                }
            )
    return rows


def charts(report: dict[str, Any], stem: str) -> list[str]:
    """Confusion matrix and reliability diagrams as PNG (Altair, rendered offline by vl-convert)."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    written = []
    confusion = pd.DataFrame(report["species"]["confusion"])
    totals = confusion.groupby("truth")["n"].transform("sum")
    confusion["share"] = confusion["n"] / totals
    matrix = (
        alt.Chart(confusion, title="Species of animals never trained on: truth (rows) vs answer")
        .mark_rect()
        .encode(
            x=alt.X("predicted:N", title="answer", axis=alt.Axis(labelAngle=-45)),
            y=alt.Y("truth:N", title="truth"),
            color=alt.Color("share:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), title="share of row"),
            tooltip=["truth", "predicted", "n", alt.Tooltip("share:Q", format=".0%")],
        )
        .properties(width=520, height=420)
    )
    text = matrix.mark_text(fontSize=9).encode(text="n:Q", color=alt.value("black"))
    path = FIGURES / f"{stem}_confusion.png"
    (matrix + text).save(str(path), scale_factor=1.5)
    written.append(str(path.relative_to(REPO_DIR)))
    panels = []
    share = report["identity"]["catalogued_share_of_queries"]
    for key, title in (
        ("reliability_species", "Species answer"),
        ("reliability_answer", "Single answer, half catalogued (as shipped)"),
        ("reliability_answer_stated_share", f"Single answer, share {share:.2f} stated"),
    ):
        source = report["species"] if key == "reliability_species" else report["identity"]
        bins = pd.DataFrame(source[key]["bins"])
        if bins.empty:
            continue
        diagonal = (
            alt.Chart(pd.DataFrame({"p": [0, 1]})).mark_line(strokeDash=[4, 4], color="grey").encode(x="p:Q", y="p:Q")
        )
        x = alt.X("mean_p:Q", title="predicted probability", scale=alt.Scale(domain=[0, 1]))
        y = alt.Y("accuracy:Q", title="observed accuracy", scale=alt.Scale(domain=[0, 1]))
        line = alt.Chart(bins).mark_line(color="#1f77b4").encode(x=x, y=y)
        points = (
            alt.Chart(bins)
            .mark_circle(color="#1f77b4", opacity=0.8)
            .encode(x=x, y=y, size=alt.Size("n:Q", title="photos"), tooltip=["bin", "n", "accuracy:Q"])
        )
        ece = source[key]["ece"]
        panels.append(
            alt.layer(diagonal, line, points).properties(title=f"{title} (ECE {ece:.3f})", width=260, height=260)
        )
    curve = pd.DataFrame(report["identity"]["tradeoff"]).dropna()
    if not curve.empty:
        base = alt.Chart(curve).encode(
            x=alt.X("new_individual_recall:Q", title="new individuals answered new", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("known_top1:Q", title="catalogued animals: right at top-1", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("group:N", title=""),
            tooltip=["group", "threshold", "known_top1", "new_individual_recall"],
        )
        tuned = base.transform_filter("datum.tuned").mark_point(size=120, filled=True, shape="diamond")
        path = FIGURES / f"{stem}_tradeoff.png"
        (base.mark_line(point=True) + tuned).properties(
            title="The new-individual threshold: known top-1 vs new-individual recall (diamond: shipped)",
            width=420,
            height=300,
        ).save(str(path), scale_factor=1.5)
        written.append(str(path.relative_to(REPO_DIR)))
    if panels:
        path = FIGURES / f"{stem}_reliability.png"
        alt.hconcat(*panels).resolve_scale(size="shared").save(str(path), scale_factor=1.5)
        written.append(str(path.relative_to(REPO_DIR)))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--inference-config", default=str(DEFAULT_INFERENCE_CONFIG))
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--out", default=str(REPO_DIR / "benchmarks" / "results" / "generalisation.json"))
    parser.add_argument("--figures", default="generalisation", help="file name stem of the charts (models/figures/)")
    args = parser.parse_args()
    identifier = Identifier.load(args.checkpoint, catalogue=None, inference_config=args.inference_config)
    train_config = identifier.network.meta.get("train_config", {})
    seed = int(train_config.get("seed", 17))
    trained_split = str(train_config.get("split", "photo"))
    frame = load_dataset(args.data_root, seed, "individual")
    print(f"embedding {len(frame)} photos …", file=sys.stderr)
    outputs = embed_files(identifier, [Path(p) for p in frame["path"]])
    blanks = {name: identifier.identify(data) for name, data in blank_frames().items()}
    report = {
        **header("python benchmarks/bench_generalisation.py " + " ".join(sys.argv[1:])),
        "model_version": identifier.model_version,
        "trained_split": trained_split,
        "caveat": None
        if trained_split == "individual"
        else (
            "this model was trained with the by-photo split: it has seen photos of most test individuals, "
            "so these figures flatter it"
        ),
        "seed": seed,
        "species": species_and_rejection(identifier, frame, outputs),
        "identity": identity(identifier, frame, outputs, seed),
        "blank_frames_rejected": {name: result.rejected for name, result in blanks.items()},
    }
    report["figures"] = charts(report, args.figures)
    save(report, args.out)
    s, ident = report["species"], report["identity"]["groups"]
    print(
        f"species (new animals) {s['species_accuracy']:.3f} (without right whales "
        f"{s['species_accuracy_without_right_whales']:.3f}, macro {s['species_accuracy_macro']:.3f}); "
        f"rejection {s['non_cetacean_rejection']}; acceptance {s['cetacean_acceptance']:.3f}; "
        f"blank frames rejected {sum(report['blank_frames_rejected'].values())}/{len(blanks)}"
    )
    for name, g in ident.items():
        print(f"{name}: {g}")
    for row in report["identity"]["stated_share"]:
        print(f"stated share {row['catalogued_share']}: {row}")


if __name__ == "__main__":
    main()
