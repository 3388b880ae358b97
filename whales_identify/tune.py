"""Tune the decision rules on validation queries (never on the test split).

The blend weight, the ``new_individual`` threshold, the probability
temperature, the species k-NN weight and the rejection threshold are chosen
by grid search, each for the metric it drives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .config import NEW_INDIVIDUAL, NON_CETACEAN, InferenceConfig
from .gallery import Gallery
from .identify import Identifier, ModelOutput
from .metrics import average_precision_at_5, ground_truth

PROTOTYPE_WEIGHTS = (0.0, 0.15, 0.3, 0.5)
THRESHOLDS = tuple(np.round(np.arange(0.10, 0.90, 0.02), 2))
TEMPERATURES = (5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0)
SPECIES_KNN_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
MIN_ACCEPTANCE = 0.99
SPECIES_TEMPERATURES = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
REJECT_THRESHOLDS = tuple(np.round(np.arange(0.02, 0.96, 0.02), 2))


def _ranked_with_new(scores: np.ndarray, names: np.ndarray, threshold: float) -> list[str]:
    order = np.argsort(-scores)[:5]
    ranked = [str(names[i]) for i in order]
    position = int(np.sum(scores[order] >= threshold))
    ranked.insert(position, NEW_INDIVIDUAL)
    return ranked[:5]


def tune(
    identifier: Identifier,
    gallery: Gallery,
    outputs: Sequence[ModelOutput],
    individual_ids: Sequence[str],
    species: Sequence[str],
) -> tuple[InferenceConfig, dict]:
    """Best settings on these validation queries, and the validation scores they reach."""
    known = set(gallery.individuals.tolist())
    truths = [ground_truth(i, known) for i in individual_ids]
    cetacean = [s != NON_CETACEAN for s in species]
    base = identifier.config
    log: dict = {}

    # 1. Blend weight and threshold: MAP@5 over cetacean queries.
    best = (-1.0, base.prototype_weight, base.new_individual_threshold)
    score_sets = {}
    for weight in PROTOTYPE_WEIGHTS:
        identifier.config = replace(base, prototype_weight=weight)
        score_sets[weight] = [identifier.individual_scores(o.embedding, gallery) for o in outputs]
        for threshold in THRESHOLDS:
            aps = [
                average_precision_at_5(t, _ranked_with_new(s, gallery.individuals, threshold))
                for s, t, c in zip(score_sets[weight], truths, cetacean, strict=True)
                if c
            ]
            value = float(np.mean(aps))
            if value > best[0]:
                best = (value, weight, float(threshold))
    log["val_map5"], weight, threshold = best

    # 2. Temperature: negative log-likelihood of the right answer (calibration).
    best_t, best_nll = base.temperature, np.inf
    names = list(gallery.individuals)
    index = {n: i for i, n in enumerate(names)}
    for temperature in TEMPERATURES:
        nll = 0.0
        for s, t, c in zip(score_sets[weight], truths, cetacean, strict=True):
            if not c:
                continue
            logits = np.append(s, threshold) * temperature
            logits -= logits.max()
            log_p = logits - np.log(np.exp(logits).sum())
            nll -= log_p[-1] if t == NEW_INDIVIDUAL else log_p[index[t]]
        if nll < best_nll:
            best_t, best_nll = temperature, nll
    log["val_nll_per_query"] = float(best_nll / max(sum(cetacean), 1))

    # 3. Species temperature: NLL of the true species from the head alone.
    species_index = {n: i for i, n in enumerate(identifier.species_names)}
    truth_species = [species_index[s] for s in species]
    best_st, best_species_nll = base.species_temperature, np.inf
    for species_t in SPECIES_TEMPERATURES:
        nll = 0.0
        for o, t in zip(outputs, truth_species, strict=True):
            logits = o.species_logits * species_t
            logits = logits - logits.max()
            nll -= logits[t] - np.log(np.exp(logits).sum())
        if nll < best_species_nll:
            best_st, best_species_nll = species_t, nll
    log["val_species_nll_per_query"] = float(best_species_nll / max(len(outputs), 1))

    # 4. Species k-NN weight: species accuracy on cetaceans; 5. rejection threshold.
    best_w, best_acc = base.species_knn_weight, -1.0
    for knn_weight in SPECIES_KNN_WEIGHTS:
        identifier.config = replace(
            base, species_knn_weight=knn_weight, temperature=best_t, species_temperature=best_st
        )
        dists = [identifier.species_distribution(o, gallery) for o in outputs]
        acc = np.mean(
            [
                identifier.species_names[int(np.argmax(_without_negative(d, identifier)))] == s
                for d, s, c in zip(dists, species, cetacean, strict=True)
                if c
            ]
        )
        if acc > best_acc:
            best_w, best_acc, best_dists = knn_weight, float(acc), dists
    log["val_species_accuracy"] = best_acc
    negative = identifier.species_names.index(NON_CETACEAN)
    p_non = np.array([d[negative] for d in best_dists])
    is_cet = np.array(cetacean)
    # Losing a real whale photo is worse than answering for a landscape, so keep
    # acceptance >= MIN_ACCEPTANCE and reject as much as possible within that
    # (ties: the higher, more conservative threshold).
    best_r, best_key = base.reject_threshold, (-1.0, -1.0, -1.0)
    for reject in REJECT_THRESHOLDS:
        rejection = float(np.mean(p_non[~is_cet] > reject)) if (~is_cet).any() else 1.0
        acceptance = float(np.mean(p_non[is_cet] <= reject))
        key = (float(acceptance >= MIN_ACCEPTANCE), rejection, float(reject))
        if key > best_key:
            best_r, best_key = float(reject), key
            log["val_non_cetacean_rejection"], log["val_cetacean_acceptance"] = rejection, acceptance
    log["val_p_non_cetacean_quantiles"] = {
        "negatives_5_50": np.quantile(p_non[~is_cet], [0.05, 0.5]).round(4).tolist() if (~is_cet).any() else [],
        "cetaceans_50_99": np.quantile(p_non[is_cet], [0.5, 0.99]).round(4).tolist(),
    }

    identifier.config = base
    tuned = replace(
        base,
        prototype_weight=weight,
        new_individual_threshold=threshold,
        temperature=best_t,
        species_temperature=best_st,
        species_knn_weight=best_w,
        reject_threshold=best_r,
    )
    return tuned, log


def _without_negative(distribution: np.ndarray, identifier: Identifier) -> np.ndarray:
    d = distribution.copy()
    if NON_CETACEAN in identifier.species_names:
        d[identifier.species_names.index(NON_CETACEAN)] = 0.0
    return d
