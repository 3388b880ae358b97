"""Tune the decision rules on validation queries (never on the test split).

The blend weight, the ``new_individual`` threshold, the probability
temperature, the species temperature, the species k-NN weight and the
rejection threshold are chosen by grid search, each for the metric it drives.
Every candidate is a config passed to the same pure rules the ``Identifier``
uses (``matching/rules.py``); nothing shared is modified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from whales_identify.config import NEW_INDIVIDUAL, NON_CETACEAN, InferenceConfig, VerifyConfig
from whales_identify.matching import rules
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.results import Identification
from whales_identify.training.metrics import average_precision_at_5, ground_truth

PROTOTYPE_WEIGHTS = (0.0, 0.15, 0.3, 0.5)
THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.10, 0.90, 0.02), 2))
TEMPERATURES = (5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0)
SPECIES_KNN_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
MIN_ACCEPTANCE = 0.98  # of validation cetaceans kept (the target is 0.97 on new animals: a margin)
SPECIES_TEMPERATURES = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
VERIFY_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.20, 1.60, 0.02), 2))
REJECT_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.02, 0.96, 0.02), 2))


def tune(
    base: InferenceConfig,
    gallery: Gallery,
    queries: Sequence[rules.QueryScores],
    species_names: Sequence[str],
    individual_ids: Sequence[str],
    species: Sequence[str],
) -> tuple[InferenceConfig, dict[str, Any]]:
    """Best settings on these validation queries (their ``QueryScores`` against ``gallery``),
    starting from ``base``, and the validation scores they reach."""
    known = set(gallery.individuals.tolist())
    truths = [ground_truth(i, known) for i in individual_ids]
    cetacean = [s != NON_CETACEAN for s in species]
    whales = [(q, t) for q, t, c in zip(queries, truths, cetacean, strict=True) if c]
    log: dict[str, Any] = {}

    # 1. Blend weight and threshold: MAP@5 over cetacean queries, ranked exactly as answers are, with
    # photos of catalogued and of unseen animals weighing the same (whatever their counts in validation),
    # so that neither "always new" nor "never new" wins by sheer numbers.
    best = (-1.0, base.prototype_weight, base.new_individual_threshold)
    for weight in PROTOTYPE_WEIGHTS:
        for threshold in THRESHOLDS:
            candidate = replace(base, prototype_weight=weight, new_individual_threshold=threshold)
            aps: dict[bool, list[float]] = {True: [], False: []}
            for q, t in whales:
                ranked = rules.decide(gallery, q, species_names, candidate).ranked_answers()
                aps[t == NEW_INDIVIDUAL].append(average_precision_at_5(t, ranked))
            value = float(np.mean([np.mean(v) for v in aps.values() if v]))
            if value > best[0]:
                best = (value, weight, threshold)
    log["val_map5_balanced"], weight, threshold = best
    chosen = replace(base, prototype_weight=weight, new_individual_threshold=threshold)

    # 2. Temperature: negative log-likelihood of the right answer (calibration).
    index = {n: i for i, n in enumerate(gallery.individuals.tolist())}
    blended = [(rules.individual_scores(gallery, q, chosen), t) for q, t in whales]
    best_t, best_nll = base.temperature, np.inf
    for temperature in TEMPERATURES:
        candidate = replace(chosen, temperature=temperature)
        nll = 0.0
        for scores, truth in blended:
            log_p = rules.individual_log_probabilities(scores, candidate)
            nll -= log_p[-1] if truth == NEW_INDIVIDUAL else log_p[index[truth]]
        if nll < best_nll:
            best_t, best_nll = temperature, nll
    log["val_nll_per_query"] = float(best_nll / max(len(whales), 1))
    chosen = replace(chosen, temperature=best_t)

    # 3. Species temperature: NLL of the true species from the head alone.
    truth_species = [list(species_names).index(s) for s in species]
    best_st, best_species_nll = base.species_temperature, np.inf
    for species_t in SPECIES_TEMPERATURES:
        head_only = replace(chosen, species_temperature=species_t, species_knn_weight=0.0)
        nll = -sum(
            float(np.log(rules.species_distribution(gallery, q, species_names, head_only)[t] + 1e-12))
            for q, t in zip(queries, truth_species, strict=True)
        )
        if nll < best_species_nll:
            best_st, best_species_nll = species_t, nll
    log["val_species_nll_per_query"] = float(best_species_nll / max(len(queries), 1))
    chosen = replace(chosen, species_temperature=best_st)

    # 4. Species k-NN weight: species accuracy on cetaceans.
    best_w, best_acc = base.species_knn_weight, -1.0
    best_dists: list[np.ndarray] = []
    for knn_weight in SPECIES_KNN_WEIGHTS:
        candidate = replace(chosen, species_knn_weight=knn_weight)
        dists = [rules.species_distribution(gallery, q, species_names, candidate) for q in queries]
        acc = float(
            np.mean(
                [
                    species_names[rules.best_cetacean_species(d, species_names)] == s
                    for d, s, c in zip(dists, species, cetacean, strict=True)
                    if c
                ]
            )
        )
        if acc > best_acc:
            best_w, best_acc, best_dists = knn_weight, acc, dists
    log["val_species_accuracy"] = best_acc
    chosen = replace(chosen, species_knn_weight=best_w)

    # 5. Rejection threshold. Losing a real whale photo is worse than answering for a landscape,
    # so keep acceptance >= MIN_ACCEPTANCE and reject as much as possible within that
    # (ties: the higher, more conservative threshold).
    p_non = np.array([rules.non_cetacean_probability(d, species_names) for d in best_dists])
    is_cet = np.array(cetacean)
    best_r, best_key = base.reject_threshold, (-1.0, -1.0, -1.0)
    for reject in REJECT_THRESHOLDS:
        rejection = float(np.mean(p_non[~is_cet] > reject)) if (~is_cet).any() else 1.0
        acceptance = float(np.mean(p_non[is_cet] <= reject))
        key = (float(acceptance >= MIN_ACCEPTANCE), rejection, reject)
        if key > best_key:
            best_r, best_key = reject, key
            log["val_non_cetacean_rejection"], log["val_cetacean_acceptance"] = rejection, acceptance
    log["val_p_non_cetacean_quantiles"] = {
        "negatives_5_50": np.quantile(p_non[~is_cet], [0.05, 0.5]).round(4).tolist() if (~is_cet).any() else [],
        "cetaceans_50_99": np.quantile(p_non[is_cet], [0.5, 0.99]).round(4).tolist(),
    }
    return replace(chosen, reject_threshold=best_r), log


def verified_of(gallery: Gallery, result: Identification, cfg: VerifyConfig) -> rules.Verified | None:
    """The verification stage's contribution to ``result`` (from its evidence), to re-decide the same
    photo under other rules without matching again; None when verification did not run."""
    if not result.evidence:
        return None
    index = {name: i for i, name in enumerate(gallery.individuals.tolist())}
    bonus = np.zeros(len(index), np.float32)
    verified = np.zeros(len(index), bool)
    for evidence in result.evidence:
        i = index[evidence.individual_id]
        bonus[i] = cfg.weight * min(evidence.inliers, cfg.inlier_cap) / cfg.inlier_cap
        verified[i] = evidence.verified
    return rules.Verified(bonus, verified)


def tune_verified(
    base: InferenceConfig,
    gallery: Gallery,
    queries: Sequence[rules.QueryScores],
    verification: Sequence[rules.Verified | None],
    truths: Sequence[str],
) -> tuple[InferenceConfig, dict[str, Any]]:
    """The fused scores' ``new_individual`` threshold (balanced MAP@5 of catalogued and unseen animals, as
    for the global scores) and temperature (NLL of the right answer), on the validation queries that were
    verified (``truths``: individual id or ``new_individual``)."""
    checked = [(q, v, t) for q, v, t in zip(queries, verification, truths, strict=True) if v is not None]
    log: dict[str, Any] = {"verified_queries": len(checked)}
    if not checked:
        return base, log
    best = (-1.0, base.verify_new_individual_threshold)
    for threshold in VERIFY_THRESHOLDS:
        candidate = replace(base, verify_new_individual_threshold=threshold)
        aps: dict[bool, list[float]] = {True: [], False: []}
        for q, v, t in checked:
            ranked = _fused_ranking(gallery, q, candidate, v)
            aps[t == NEW_INDIVIDUAL].append(average_precision_at_5(t, ranked))
        value = float(np.mean([np.mean(a) for a in aps.values() if a]))
        if value > best[0]:
            best = (value, threshold)
    log["val_map5_balanced_verified"], threshold = best
    chosen = replace(base, verify_new_individual_threshold=threshold)
    index = {n: i for i, n in enumerate(gallery.individuals.tolist())}
    fused = [(rules.individual_scores(gallery, q, chosen) + v.bonus, t) for q, v, t in checked]
    best_t, best_nll = base.verify_temperature, np.inf
    for temperature in TEMPERATURES:
        candidate = replace(chosen, verify_temperature=temperature)
        nll = 0.0
        for scores, truth in fused:
            log_p = rules.individual_log_probabilities(scores, candidate, verified=True)
            nll -= log_p[-1] if truth == NEW_INDIVIDUAL else log_p[index[truth]]
        if nll < best_nll:
            best_t, best_nll = temperature, nll
    log["val_nll_per_verified_query"] = float(best_nll / len(fused))
    return replace(chosen, verify_temperature=best_t), log


def _fused_ranking(
    gallery: Gallery, scores: rules.QueryScores, config: InferenceConfig, v: rules.Verified
) -> list[str]:
    """Top-5 answers as ``Identification.ranked_answers`` gives them for fused scores (rejection and species
    aside: these are verified right-whale photos): individuals by fused score, ``new_individual`` where its
    threshold ranks it, unless the top answer is verified."""
    fused = rules.individual_scores(gallery, scores, config) + v.bonus
    order = rules.top_k(fused, config.top_k)
    names = [str(gallery.individuals[i]) for i in order]
    threshold = rules.new_individual_threshold(config, verified=True)
    position = int(np.sum(fused[order] > threshold))
    if position == 0 and len(order) and v.verified[order[0]]:
        position = 1
    names.insert(position, NEW_INDIVIDUAL)
    return names[:5]
