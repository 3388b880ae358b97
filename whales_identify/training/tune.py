"""Tune the decision rules on validation queries (never on the test split).

The blend weight, the ``new_individual`` threshold, the probability
temperature, the species temperature, the species k-NN weight and the
rejection threshold are chosen by grid search, each for the metric it drives.
Every candidate is a config passed to the same pure rules the ``Identifier``
uses (``matching/rules.py``); nothing shared is modified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from whales_identify.config import NEW_INDIVIDUAL, NON_CETACEAN, InferenceConfig, VerifyConfig
from whales_identify.matching import rules
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.results import Identification
from whales_identify.training import calibration
from whales_identify.training.metrics import average_precision_at_5, ground_truth

PROTOTYPE_WEIGHTS = (0.0, 0.15, 0.3, 0.5)
THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.10, 0.90, 0.02), 2))
TEMPERATURES = (5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0)
SPECIES_KNN_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
MIN_ACCEPTANCE = 0.98  # of validation cetaceans kept (the target is 0.97 on new animals: a margin)
SPECIES_TEMPERATURES = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
VERIFY_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.20, 1.60, 0.02), 2))
REJECT_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.02, 0.96, 0.02), 2))
# A catalogued animal answered "new individual" is a match the user is told does not exist. Balanced MAP@5
# alone chose thresholds that sent 86 % of validation's catalogued right whales to "new" (95 % on test): it
# scores a list with the right whale second as well as half a list with it first. So a threshold (global or
# fused) may send at most this share of the catalogued validation animals to new_individual; within that,
# balanced MAP@5 chooses. When no threshold keeps to it, the one sending the fewest is taken.
MAX_KNOWN_ANSWERED_NEW = 0.5


def constrained_best(values: np.ndarray, known_answered_new: np.ndarray, limit: float = MAX_KNOWN_ANSWERED_NEW) -> int:
    """Index of the best of ``values`` among the settings that answer new_individual for at most ``limit`` of
    the catalogued animals; when none does, the best among those that send the fewest. Ties: the first."""
    values, sent = np.asarray(values, np.float64), np.asarray(known_answered_new, np.float64)
    eligible = sent <= limit + 1e-9
    if not eligible.any():
        eligible = sent <= sent.min() + 1e-9
    candidates = np.flatnonzero(eligible)
    return int(candidates[np.argmax(values[candidates])])


def tune(
    base: InferenceConfig,
    gallery: Gallery,
    queries: Sequence[rules.QueryScores],
    species_names: Sequence[str],
    individual_ids: Sequence[str],
    species: Sequence[str],
) -> tuple[InferenceConfig, dict[str, Any]]:
    """Best settings on these validation queries (their ``QueryScores`` against ``gallery``),
    starting from ``base``, and the validation scores they reach. Tuned at ``catalogued_share`` 0.5 (the
    thresholds are the half-and-half ones that a stated share then moves, ``rules.decision_threshold``);
    the returned settings keep ``base``'s share."""
    stated_share, base = base.catalogued_share, replace(base, catalogued_share=0.5)
    known = set(gallery.individuals.tolist())
    truths = [ground_truth(i, known) for i in individual_ids]
    cetacean = [s != NON_CETACEAN for s in species]
    whales = [(q, t) for q, t, c in zip(queries, truths, cetacean, strict=True) if c]
    log: dict[str, Any] = {}

    # 1. Blend weight and threshold: MAP@5 over cetacean queries, ranked exactly as answers are, with
    # photos of catalogued and of unseen animals weighing the same (whatever their counts in validation),
    # so that neither "always new" nor "never new" wins by sheer numbers; among the thresholds that send
    # at most MAX_KNOWN_ANSWERED_NEW of the catalogued animals to new_individual.
    settings, values, sent_new = [], [], []
    for weight in PROTOTYPE_WEIGHTS:
        for threshold in THRESHOLDS:
            candidate = replace(base, prototype_weight=weight, new_individual_threshold=threshold)
            aps: dict[bool, list[float]] = {True: [], False: []}
            known_new: list[bool] = []
            for q, t in whales:
                result = rules.decide(gallery, q, species_names, candidate)
                aps[t == NEW_INDIVIDUAL].append(average_precision_at_5(t, result.ranked_answers()))
                if t != NEW_INDIVIDUAL:
                    known_new.append(result.new_individual)
            settings.append((weight, threshold))
            values.append(float(np.mean([np.mean(v) for v in aps.values() if v])))
            sent_new.append(float(np.mean(known_new)) if known_new else 0.0)
    at = constrained_best(np.asarray(values), np.asarray(sent_new))
    weight, threshold = settings[at]
    log["val_map5_balanced"], log["val_known_answered_new"] = values[at], sent_new[at]
    log["val_map5_balanced_unconstrained"] = max(values)
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
    chosen = replace(chosen, reject_threshold=best_r)

    # 6. The single answer's probability: one Platt map per kind of answer (training/calibration.py), on
    # the answers as decided with every setting above, catalogued and unseen animals weighing the same.
    raw = calibration.uncalibrated(chosen)
    outcomes = []
    for q, t in whales:
        result = rules.decide(gallery, q, species_names, raw)
        if not result.rejected:
            outcomes.append(
                calibration.AnswerOutcome(
                    result.answer_probability, result.new_individual, result.answer == t, t != NEW_INDIVIDUAL
                )
            )
    chosen, log["answer_calibration"] = calibration.fit_answer_calibration(
        replace(chosen, catalogued_share=stated_share), outcomes
    )
    return chosen, log


def verified_of(gallery: Gallery, result: Identification, cfg: VerifyConfig) -> rules.Verified | None:
    """The verification stage's contribution to ``result`` (from its evidence's inlier counts) under the
    fusion settings of ``cfg``, to re-decide the same photo under other rules without matching again;
    None when verification did not run."""
    if not result.evidence:
        return None
    index = {name: i for i, name in enumerate(gallery.individuals.tolist())}
    inliers = np.zeros(len(index), np.int64)
    for evidence in result.evidence:
        inliers[index[evidence.individual_id]] = evidence.inliers
    return rules.verification(inliers, cfg)


@dataclass(frozen=True)
class StoredMatches:
    """One split's queries after matching once (``Identifier.decide(..., photo=...)``): what re-fusing them
    under any fusion setting needs. The fused top 5 always lies in the global model's shortlist (the
    bonus is never negative and only shortlisted individuals get one), so the shortlist suffices for the
    ranking; the temperature's likelihood uses every individual's score."""

    shortlist_scores: np.ndarray  # (Q, C) global individual scores of each verified query's shortlist, best first
    inliers: np.ndarray  # (Q, C) int: best photo's inliers per shortlisted individual (0: not checked)
    truth: np.ndarray  # (Q,) the true individual's position in the shortlist; -1: new or not shortlisted
    truth_index: np.ndarray  # (Q,) the true individual's row in ``gallery.individuals``; -1: new_individual
    new: np.ndarray  # (Q,) bool: the truth is new_individual
    scores: np.ndarray  # (Q, I) global individual scores
    shortlist: np.ndarray  # (Q, C) rows in ``gallery.individuals``
    unverified_known_ap: tuple[float, ...]  # AP@5 of queries verification did not run on, catalogued ...
    unverified_new_ap: tuple[float, ...]  # ... and unseen animals (fixed: no fusion setting moves them)
    unverified_known_top1: tuple[bool, ...]
    unverified_new_answered_new: tuple[bool, ...]
    unverified_known_answered_new: tuple[bool, ...]


def store_matches(
    gallery: Gallery,
    queries: Sequence[rules.QueryScores],
    results: Sequence[Identification],
    truths: Sequence[str],
    config: InferenceConfig,
    candidates: int,
) -> StoredMatches:
    """``StoredMatches`` of verified ``results`` (their evidence) against ``gallery``; ``truths``: individual
    id or ``new_individual``; ``config``: the global rules they were decided under; ``candidates``:
    ``VerifyConfig.candidates`` (the shortlist's length)."""
    index = {n: i for i, n in enumerate(gallery.individuals.tolist())}
    short, inl, truth, truth_index, new, full, rows = [], [], [], [], [], [], []
    fixed: dict[str, list] = {"known_ap": [], "new_ap": [], "known_top1": [], "new_new": [], "known_new": []}
    width = min(max(candidates, config.top_k), len(index))  # the fused top_k lies in it (0 inliers beyond)
    for q, r, t in zip(queries, results, truths, strict=True):
        if not r.evidence:
            ranked = answers_of(r)
            if t == NEW_INDIVIDUAL:
                fixed["new_ap"].append(average_precision_at_5(t, ranked))
                fixed["new_new"].append(r.answer == NEW_INDIVIDUAL)
            else:
                fixed["known_ap"].append(average_precision_at_5(t, ranked))
                fixed["known_top1"].append(r.answer == t)
                fixed["known_new"].append(r.answer == NEW_INDIVIDUAL)
            continue
        individual = rules.individual_scores(gallery, q, config)
        order = rules.top_k(individual, width)
        counts = np.zeros(width, np.int64)
        position = {int(i): k for k, i in enumerate(order)}
        for e in r.evidence:
            counts[position[index[e.individual_id]]] = e.inliers  # KeyError: evidence outside the shortlist
        target = index.get(t, -1) if t != NEW_INDIVIDUAL else -1
        short.append(individual[order])
        inl.append(counts)
        truth.append(position.get(target, -1))
        truth_index.append(target)
        new.append(t == NEW_INDIVIDUAL)
        full.append(individual)
        rows.append(order)
    n = len(index)
    return StoredMatches(
        np.asarray(short, np.float32).reshape(-1, width),
        np.asarray(inl, np.int64).reshape(-1, width),
        np.asarray(truth, np.int64),
        np.asarray(truth_index, np.int64),
        np.asarray(new, bool),
        np.asarray(full, np.float32).reshape(-1, n),
        np.asarray(rows, np.int64).reshape(-1, width),
        tuple(fixed["known_ap"]),
        tuple(fixed["new_ap"]),
        tuple(fixed["known_top1"]),
        tuple(fixed["new_new"]),
        tuple(fixed["known_new"]),
    )


def answers_of(result: Identification) -> list[str]:
    """Top-5 answers of ``result`` led by its answer: ``ranked_answers``, except that a verified top answer
    (which overrides ``new_individual``) comes first, as ``Identification.answer`` gives it."""
    ranked = result.ranked_answers()
    if not result.rejected and not result.new_individual and ranked and ranked[0] == NEW_INDIVIDUAL:
        ranked = [ranked[1], NEW_INDIVIDUAL, *ranked[2:]] if len(ranked) > 1 else ranked
    return ranked


def fused_outcomes(
    stored: StoredMatches, cfg: VerifyConfig, thresholds: Sequence[float], top_k: int = 5
) -> dict[str, np.ndarray]:
    """The verified queries re-decided under ``cfg``'s fusion (weight, cap, min_inliers, verified_inliers)
    for each fused ``new_individual`` threshold, as ``rules.decide`` decides them: per threshold and query,
    the AP@5 of the answer list, whether the answer is right, whether it is new_individual; and per query
    whether the top answer is verified (it then overrides new_individual). The species rule
    (``rules.other_species``) is not re-applied: the stored shortlist carries no species. On the right
    whales this is tuned on it changed no answer (bench_verify_identify checks the re-fusion against
    ``rules.decide`` on test)."""
    q = len(stored.truth)
    h = np.asarray(thresholds, np.float32)[:, None]
    if q == 0:
        empty = np.zeros((len(h), 0))
        return {
            "ap": empty,
            "right": empty.astype(bool),
            "answered_new": empty.astype(bool),
            "verified": np.zeros(0, bool),
            "top_right": np.zeros(0, bool),
        }
    fused = stored.shortlist_scores + rules.verification_bonus(stored.inliers, cfg)
    order = np.argsort(-fused, axis=1, kind="stable")[:, :top_k]
    top = np.take_along_axis(fused, order, axis=1)
    verified = np.take_along_axis(stored.inliers, order[:, :1], axis=1)[:, 0] >= cfg.verified_inliers
    hit = order == stored.truth[:, None]
    rank = np.where(hit.any(axis=1), hit.argmax(axis=1), top_k)  # the truth's rank among the individuals
    above = (top[None, :, :] >= h[:, :, None]).sum(axis=2)  # (H, Q): individuals ranked above new_individual
    above = np.where((above == 0) & verified[None, :], 1, above)
    position = np.where(stored.new[None, :], above, rank[None, :] + (above <= rank[None, :]))
    ap = np.where(position < top_k, 1.0 / (position + 1), 0.0)
    ap = np.where(~stored.new[None, :] & (rank[None, :] >= top_k), 0.0, ap)
    answered_new = above == 0
    right = np.where(stored.new[None, :], answered_new, (rank[None, :] == 0) & ~answered_new)
    return {"ap": ap, "right": right, "answered_new": answered_new, "verified": verified, "top_right": rank == 0}


def fused_metrics(stored: StoredMatches, cfg: VerifyConfig, thresholds: Sequence[float]) -> dict[str, np.ndarray]:
    """Per threshold, over every query of the split (the unverified ones as they were answered): balanced
    MAP@5 (catalogued and unseen animals weighing the same), known top-1, the share of catalogued animals
    answered new_individual, new-individual recall; and the verified answers' count and precision
    (independent of the threshold)."""
    out = fused_outcomes(stored, cfg, thresholds)
    known, new = ~stored.new, stored.new
    n_known = int(known.sum()) + len(stored.unverified_known_ap)
    n_new = int(new.sum()) + len(stored.unverified_new_ap)
    known_map = (out["ap"][:, known].sum(axis=1) + sum(stored.unverified_known_ap)) / max(n_known, 1)
    new_map = (out["ap"][:, new].sum(axis=1) + sum(stored.unverified_new_ap)) / max(n_new, 1)
    parts = [m for m, n in ((known_map, n_known), (new_map, n_new)) if n]
    right = out["right"]
    verified = out["verified"]
    correct = verified & out["top_right"] & known
    return {
        "map5_balanced": np.mean(parts, axis=0),
        "known_map5": known_map,
        "known_top1": (right[:, known].sum(axis=1) + sum(stored.unverified_known_top1)) / max(n_known, 1),
        "known_answered_new": (out["answered_new"][:, known].sum(axis=1) + sum(stored.unverified_known_answered_new))
        / max(n_known, 1),
        "new_individual_recall": (right[:, new].sum(axis=1) + sum(stored.unverified_new_answered_new)) / max(n_new, 1),
        "verified_answers": np.asarray(int(verified.sum())),
        "verified_precision": np.asarray(float(correct.sum() / verified.sum()) if verified.any() else np.nan),
    }


FUSION_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)
INLIER_CAPS = (4, 6, 8, 10, 12, 16, 20)
MIN_INLIERS = (0, 3, 4, 5, 6, 7, 8)
VERIFIED_INLIERS = (6, 7, 8, 9, 10, 12)
# A "verified match" must be one users can trust: its precision on validation may not fall below this.
MIN_VERIFIED_PRECISION = 0.95


def tune_fusion(
    base: InferenceConfig, verify: VerifyConfig, stored: StoredMatches
) -> tuple[InferenceConfig, VerifyConfig, dict[str, Any]]:
    """The fusion of keypoint evidence with the global scores, tuned jointly on validation queries matched
    once (``store_matches``): weight, inlier cap, minimum inliers, verified inliers and the fused
    ``new_individual`` threshold by balanced MAP@5 over every query of the split (catalogued and unseen
    animals weighing the same, as for the global threshold), keeping the verified answers' precision at
    least ``MIN_VERIFIED_PRECISION`` and the catalogued animals answered new_individual at most
    ``MAX_KNOWN_ANSWERED_NEW`` (settings that keep to it first); then the fused temperature by the NLL of
    the right answer. Ties keep the first setting in grid order (the smaller weight, cap and minimum)."""
    log: dict[str, Any] = {"verified_queries": len(stored.truth)}
    if not len(stored.truth):
        return base, verify, log
    best: tuple[tuple[bool, float], VerifyConfig, float] | None = None
    for weight in FUSION_WEIGHTS:
        for cap in INLIER_CAPS:
            for minimum in MIN_INLIERS:
                if minimum > cap:
                    continue
                for verified in VERIFIED_INLIERS:
                    cfg = replace(verify, weight=weight, inlier_cap=cap, min_inliers=minimum, verified_inliers=verified)
                    m = fused_metrics(stored, cfg, VERIFY_THRESHOLDS)
                    precision = float(m["verified_precision"])
                    if not np.isnan(precision) and precision < MIN_VERIFIED_PRECISION:
                        continue
                    at = constrained_best(m["map5_balanced"], m["known_answered_new"])
                    keeps = bool(m["known_answered_new"][at] <= MAX_KNOWN_ANSWERED_NEW + 1e-9)
                    key = (keeps, float(m["map5_balanced"][at]))
                    if best is None or key[0] > best[0][0] or (key[0] == best[0][0] and key[1] > best[0][1] + 1e-12):
                        best = (key, cfg, VERIFY_THRESHOLDS[at])
    if best is None:
        return base, verify, log
    (_, value), chosen_verify, threshold = best
    chosen = replace(base, verify_new_individual_threshold=threshold)
    bonus = np.zeros_like(stored.scores)
    np.put_along_axis(bonus, stored.shortlist, rules.verification_bonus(stored.inliers, chosen_verify), axis=1)
    fused = stored.scores + bonus
    best_t, best_nll = base.verify_temperature, np.inf
    for temperature in TEMPERATURES:
        candidate = replace(chosen, verify_temperature=temperature)
        nll = 0.0
        for scores, truth in zip(fused, stored.truth_index, strict=True):
            log_p = rules.individual_log_probabilities(scores, candidate, verified=True)
            nll -= log_p[-1] if truth < 0 else log_p[truth]
        if nll < best_nll:
            best_t, best_nll = temperature, nll
    chosen = replace(chosen, verify_temperature=best_t)
    chosen, log["answer_calibration"] = calibration.fit_answer_calibration(
        chosen, fused_answers(stored, fused, chosen, chosen_verify), verified=True
    )
    m = fused_metrics(stored, chosen_verify, [threshold])
    log.update(
        {
            "val_map5_balanced": value,
            "val_known_top1": float(m["known_top1"][0]),
            "val_known_map5": float(m["known_map5"][0]),
            "val_known_answered_new": float(m["known_answered_new"][0]),
            "val_new_individual_recall": float(m["new_individual_recall"][0]),
            "val_verified_answers": int(m["verified_answers"]),
            "val_verified_precision": float(m["verified_precision"]),
            "val_nll_per_verified_query": float(best_nll / len(fused)),
        }
    )
    return chosen, chosen_verify, log


def fused_answers(
    stored: StoredMatches, fused: np.ndarray, config: InferenceConfig, cfg: VerifyConfig
) -> list[calibration.AnswerOutcome]:
    """The verified queries' single answers under the fused scores ``fused`` (Q, individuals), decided as
    ``rules.decide`` decides them (a verified top answer overrides ``new_individual``), each at its softmax
    probability: what ``rules.calibrate_answer`` maps (before it lifts an overriding answer to stay on top)."""
    raw = calibration.uncalibrated(config)
    verified = np.zeros(fused.shape, bool)
    np.put_along_axis(verified, stored.shortlist, stored.inliers >= cfg.verified_inliers, axis=1)
    threshold = rules.new_individual_threshold(raw, verified=True)
    outcomes = []
    for scores, flags, truth in zip(fused, verified, stored.truth_index, strict=True):
        top = int(rules.top_k(scores, 1)[0])
        answered_new = bool(scores[top] < threshold and not flags[top])
        log_p = rules.individual_log_probabilities(scores, raw, verified=True)
        probability = float(np.exp(log_p[-1] if answered_new else log_p[top]))
        correct = truth < 0 if answered_new else top == truth
        outcomes.append(calibration.AnswerOutcome(probability, answered_new, bool(correct), bool(truth >= 0)))
    return outcomes
