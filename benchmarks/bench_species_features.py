"""Species of animals never trained on: the shipped species head against linear classifiers on other features.

The question (issue 11): is the species head, trained with the identities, the limit, or would a
classifier on features that never learnt individuals (EfficientNet-Lite0's ImageNet features) or on
our embedding name the species of a new animal better? Every photo is seen as the network sees it
(the localiser's crop). Multinomial logistic regression (L2, with or without class balancing) is fitted
on the training individuals, its strength and balancing chosen on the validation individuals (species
accuracy without right whales), and the test individuals are measured once. The shipped answer blends
the head with a vote of the nearest catalogue photos: ``bench_generalisation.py`` measures that.

    python benchmarks/bench_species_features.py   # needs ../shared/data and the [train] extra
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _report import header, save  # beside this script

from whales_identify.config import DEFAULT_CHECKPOINT, DEFAULT_DATA_ROOT, NON_CETACEAN
from whales_identify.matching.identifier import Identifier
from whales_identify.model.network import WhaleNet  # noqa: F401  (the torchvision guard, before timm)
from whales_identify.model.preprocess import to_array
from whales_identify.training.data import load_dataset
from whales_identify.training.pretrained import load_imagenet_weights

RIGHT_WHALE = "north_atlantic_right_whale"
STRENGTHS = (0.3, 1.0, 3.0, 10.0)  # C: inverse L2 strength, as in the usual logistic regression


def features(identifier: Identifier, paths: list[str]) -> dict[str, np.ndarray]:
    """Per photo, on the network's view: our embedding and species logits, and ImageNet Lite0 features."""
    import timm

    backbone = identifier.network.config.backbone
    imagenet = timm.create_model(backbone, pretrained=False, num_classes=0)
    load_imagenet_weights(imagenet, backbone)
    imagenet.eval()
    out: dict[str, list[np.ndarray]] = {"embedding": [], "logits": [], "imagenet": []}
    for index, path in enumerate(paths):
        image = identifier.prepare_input(Path(path))
        view, _, _ = identifier.network_view(image)
        (output,) = identifier.forward([image])
        out["embedding"].append(output.embedding)
        out["logits"].append(output.species_logits)
        with torch.no_grad():
            x = torch.from_numpy(to_array(view, identifier.network.config))[None]
            out["imagenet"].append(imagenet(x)[0].numpy())
        if index % 500 == 0:
            print(f"{index}/{len(paths)} photos", file=sys.stderr, flush=True)
    return {name: np.stack(rows) for name, rows in out.items()}


def fit(x: np.ndarray, y: np.ndarray, classes: int, strength: float, balanced: bool) -> torch.nn.Linear:
    """Multinomial logistic regression by L-BFGS: mean (optionally class-balanced) cross-entropy plus
    ||W||^2 / (2 C n), the usual parametrisation."""
    torch.manual_seed(0)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).long()
    counts = torch.bincount(yt, minlength=classes).float().clamp(min=1)
    weights = (len(yt) / (classes * counts)) if balanced else torch.ones(classes)
    model = torch.nn.Linear(x.shape[1], classes)
    optimiser = torch.optim.LBFGS(model.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt, weight=weights)
        loss = loss + (model.weight**2).sum() / (2 * strength * len(yt))
        loss.backward()
        return loss

    optimiser.step(closure)
    return model


def scores(predicted: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    right = predicted[mask] == truth[mask]
    per = [float(np.mean(right[truth[mask] == k])) for k in np.unique(truth[mask])]
    return {"n": int(mask.sum()), "accuracy": round(float(right.mean()), 3), "macro": round(float(np.mean(per)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "species_features.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    identifier = Identifier.load(args.checkpoint, catalogue=None)
    seed = int(identifier.network.meta.get("train_config", {}).get("seed", 17))
    frame = load_dataset(args.data_root, seed, "individual")
    frame = frame[frame["species"] != NON_CETACEAN].reset_index(drop=True)
    found = features(identifier, list(frame["path"]))
    names = list(identifier.species_names)
    cetaceans = [n for n in names if n != NON_CETACEAN]
    truth = np.array([cetaceans.index(s) for s in frame["species"]])
    split = frame["species"].to_numpy(), frame["split"].to_numpy()
    other = split[0] != RIGHT_WHALE
    masks = {name: (split[1] == name) & other for name in ("val", "test")}
    train = split[1] == "train"

    logits = found["logits"].copy()
    logits[:, names.index(NON_CETACEAN)] = -np.inf
    head = np.array([cetaceans.index(names[i]) for i in logits.argmax(axis=1)])
    report: dict[str, Any] = {
        **header("python benchmarks/bench_species_features.py " + " ".join(sys.argv[1:])),
        "model_version": identifier.model_version,
        "how_to_read": (
            "Species accuracy on whales and dolphins other than right whales, individuals never trained on "
            "(val: chose each classifier's strength and balancing; test: measured once). 'head' is the shipped "
            "species head alone, argmax over cetaceans."
        ),
        "head": {name: scores(head, truth, mask) for name, mask in masks.items()},
        "classifiers": {},
    }
    for feature in ("embedding", "imagenet"):
        x = found[feature] / np.linalg.norm(found[feature], axis=1, keepdims=True)
        trials = []
        for strength in STRENGTHS:
            for balanced in (False, True):
                model = fit(x[train], truth[train], len(cetaceans), strength, balanced)
                with torch.no_grad():
                    predicted = model(torch.from_numpy(x).float()).argmax(dim=1).numpy()
                trials.append(({"C": strength, "balanced": balanced}, predicted))
        setting, predicted = max(trials, key=lambda t: scores(t[1], truth, masks["val"])["accuracy"])
        report["classifiers"][feature] = {
            "chosen_on_validation": setting,
            **{name: scores(predicted, truth, mask) for name, mask in masks.items()},
            "validation_of_every_setting": [{**s, **scores(p, truth, masks["val"])} for s, p in trials],
        }
        print(feature, report["classifiers"][feature]["chosen_on_validation"], flush=True)
    save(report, args.out)
    print("head", report["head"])
    for feature, row in report["classifiers"].items():
        print(feature, {k: row[k] for k in ("chosen_on_validation", "val", "test")})


if __name__ == "__main__":
    main()
