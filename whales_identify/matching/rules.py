"""The decision rules: one photo's similarities → an ``Identification``.

Pure functions of arrays and an ``InferenceConfig``: no model, no files. The
``Identifier`` computes a photo's ``QueryScores`` once and calls ``decide``;
tuning calls the very same functions with candidate configs, so what is tuned
is exactly what users get. Tested on a hand-built gallery of three individuals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from whales_identify.config import NON_CETACEAN, InferenceConfig, LocaliserConfig, VerifyConfig
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.results import Candidate, Identification


@dataclass(frozen=True)
class QueryScores:
    """What the rules look at for one photo, computed once per photo and gallery."""

    photo_similarities: np.ndarray  # (photos,) cosine to every gallery photo
    prototype_similarities: np.ndarray  # (individuals,) cosine to the individual's ArcFace centre; NaN: none
    species_logits: np.ndarray  # (species,) from the network's species head
    embedding: np.ndarray  # (dim,) kept on the answer (e.g. to enrol the photo later)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first (a partition, not a full sort: 200k individuals)."""
    if len(scores) <= k:
        return np.argsort(-scores, kind="stable")
    best = np.argpartition(-scores, k - 1)[:k]
    return best[np.argsort(-scores[best], kind="stable")]


def prototype_similarities(embedding: np.ndarray, prototypes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Cosine to each gallery individual's ArcFace centre (best sub-centre); NaN where ``rows`` < 0
    (an individual the network was not trained on). ``prototypes``: (individuals, sub-centres, dim)."""
    out = np.full(len(rows), np.nan, dtype=np.float32)
    has = rows >= 0
    if has.any():
        out[has] = (prototypes[rows[has]] @ embedding).max(axis=1)
    return out


def individual_scores(gallery: Gallery, scores: QueryScores, config: InferenceConfig) -> np.ndarray:
    """Score per gallery individual: best photo's cosine, blended with the centre's cosine where there is one."""
    blended = gallery.best_per_individual(scores.photo_similarities)
    w = config.prototype_weight
    has = ~np.isnan(scores.prototype_similarities)
    if w > 0 and has.any():
        blended[has] = (1 - w) * blended[has] + w * scores.prototype_similarities[has]
    return blended


@dataclass(frozen=True)
class Verified:
    """What the verification stage (matching/verify.py) adds to a photo's individual scores."""

    bonus: np.ndarray  # (individuals,) weight * min(inliers, cap) / cap; 0 where not checked
    verified: np.ndarray  # (individuals,) bool: inliers >= VerifyConfig.verified_inliers


def verification_bonus(inliers: np.ndarray | int, cfg: VerifyConfig) -> np.ndarray:
    """What keypoint evidence adds to an individual's score: ``weight * min(inliers, cap) / cap``, and
    nothing below ``min_inliers`` (a few inliers arise by chance between two different whales)."""
    count = np.asarray(inliers, np.float32)
    evidence = np.minimum(count, cfg.inlier_cap) / cfg.inlier_cap
    return np.where(count >= cfg.min_inliers, cfg.weight * evidence, 0.0).astype(np.float32)


def verification(inliers: np.ndarray, cfg: VerifyConfig) -> Verified:
    """The ``Verified`` of per-individual inlier counts (0 where not checked)."""
    return Verified(verification_bonus(inliers, cfg), np.asarray(inliers) >= cfg.verified_inliers)


def logit(p: float) -> float:
    """log(p / (1 - p)), finite for any p in [0, 1] (p is clipped a hair away from 0 and 1)."""
    q = min(max(float(p), 1e-9), 1.0 - 1e-9)
    return math.log(q / (1.0 - q))


def new_individual_threshold(config: InferenceConfig, verified: bool = False) -> float:
    """The tuned score of ``new_individual`` (at ``catalogued_share`` 0.5): fused scores have their own."""
    return config.verify_new_individual_threshold if verified else config.new_individual_threshold


def prior_shift(config: InferenceConfig, verified: bool = False) -> float:
    """How far a stated ``catalogued_share`` moves the new-individual threshold, in score units.

    The softmax over the individuals and ``new_individual`` (scored at the threshold, at the temperature)
    is the odds that the photo shows a catalogued animal; a share moves those odds by share / (1 - share)
    against the half-and-half tuned on, which is the threshold moved by -logit(share) / temperature:
    a population re-sighted year after year (0.9) asks for stronger evidence before "new". 0 at 0.5."""
    temperature = config.verify_temperature if verified else config.temperature
    return -logit(config.catalogued_share) / temperature


def decision_threshold(config: InferenceConfig, verified: bool = False) -> float:
    """The best score below which the answer is ``new_individual``: the tuned threshold under the stated prior."""
    return new_individual_threshold(config, verified) + prior_shift(config, verified)


def individual_log_probabilities(individual: np.ndarray, config: InferenceConfig, verified: bool = False) -> np.ndarray:
    """Log-probabilities over the gallery's individuals plus, last, ``new_individual`` (scored at the tuned
    threshold whatever the stated share: the calibration maps were fitted on these and apply the share
    themselves, ``calibrated_probability``). ``verified``: the scores are fused with keypoint evidence
    (their own threshold and temperature)."""
    temperature = config.verify_temperature if verified else config.temperature
    return log_softmax(np.append(individual, new_individual_threshold(config, verified)) * temperature)


def calibration_fields(answered_new: bool, verified: bool = False) -> tuple[str, str]:
    """The ``InferenceConfig`` fields (slope, offset) of the map for one kind of answer."""
    name = ("verify_" if verified else "") + ("new" if answered_new else "individual") + "_calibration_"
    return name + "slope", name + "offset"


def calibration_map(config: InferenceConfig, answered_new: bool, verified: bool = False) -> tuple[float, float]:
    """The (slope, offset) that recalibrates a single answer of this kind (``calibrate_answer``)."""
    slope, offset = calibration_fields(answered_new, verified)
    return getattr(config, slope), getattr(config, offset)


def calibrated_probability(p: float, answered_new: bool, config: InferenceConfig, verified: bool = False) -> float:
    """The single answer's probability as calibrated on validation (Platt scaling of its softmax probability,
    one map per kind of answer), under the prior ``config.catalogued_share``: the odds that the photo shows
    a catalogued animal move by share / (1 - share) against the half-and-half the maps were fitted on."""
    slope, offset = calibration_map(config, answered_new, verified)
    prior = logit(config.catalogued_share)
    z = slope * logit(p) + offset + (-prior if answered_new else prior)
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def with_entry(probabilities: np.ndarray, index: int, p: float) -> np.ndarray:
    """``probabilities`` with entry ``index`` set to ``p`` and the others scaled to share the rest."""
    out = np.asarray(probabilities, dtype=np.float64).copy()
    rest = float(out.sum() - out[index])
    out *= (1.0 - p) / rest if rest > 0 else 0.0
    out[index] = p
    return out


def calibrate_answer(
    probabilities: np.ndarray, answer: int, answered_new: bool, config: InferenceConfig, verified: bool = False
) -> np.ndarray:
    """``probabilities`` (individuals, then new_individual) with the answer's entry (``answer``) calibrated
    and the others scaled to share the rest in the same proportions (top-label calibration: the order of
    the others, hence the top 5 and MAP@5, is unchanged). The answer stays the most probable entry."""
    p = np.asarray(probabilities, dtype=np.float64)
    others = np.delete(p, answer)
    rest = float(others.sum())
    if rest <= 0.0 or len(others) == 0:
        return p.copy()
    q = calibrated_probability(float(p[answer]), answered_new, config, verified)
    runner_up = float(others.max())
    q = max(q, runner_up / (rest + runner_up))  # so that no other entry, scaled, overtakes the answer
    return with_entry(p, answer, q)


def species_distribution(
    gallery: Gallery, scores: QueryScores, species_names: Sequence[str], config: InferenceConfig
) -> np.ndarray:
    """The species head (at its temperature) blended with a similarity-weighted vote of the k nearest photos."""
    head = softmax(scores.species_logits * config.species_temperature)
    w = config.species_knn_weight
    sims = scores.photo_similarities
    if w <= 0 or len(sims) == 0:
        return head
    nearest = top_k(sims, min(config.species_knn_k, len(sims)))
    weights = softmax(sims[nearest] * config.temperature)
    index = {name: i for i, name in enumerate(species_names)}
    votes = np.zeros_like(head)
    for row, weight in zip(nearest, weights, strict=True):
        position = index.get(str(gallery.species[row]))
        if position is not None:
            votes[position] += weight
    if votes.sum() == 0:
        return head
    return (1 - w) * head + w * votes


def non_cetacean_probability(distribution: np.ndarray, species_names: Sequence[str]) -> float:
    return float(distribution[list(species_names).index(NON_CETACEAN)]) if NON_CETACEAN in species_names else 0.0


def best_cetacean_species(distribution: np.ndarray, species_names: Sequence[str]) -> int:
    """Index of the most probable species that is a whale or dolphin."""
    cetacean = distribution.copy()
    if NON_CETACEAN in species_names:
        cetacean[list(species_names).index(NON_CETACEAN)] = -np.inf
    return int(np.argmax(cetacean))


def other_species(gallery: Gallery, order: np.ndarray, species: str) -> bool:
    """Whether the best individual is of another species than the species answered: the answer is then
    ``new_individual`` (a new animal of the species answered), never "humpback whale, individual <a right
    whale>". On test such answers were wrong every time (8 of 554 named answers under a stated share of
    0.9, 7 of them new animals; 1 of 261 at 0.5): the photo's species and its nearest catalogue animal
    disagree when the animal is not in the catalogue. An individual of unknown species never disagrees."""
    if not len(order):
        return False
    return species_disagree(gallery.individual_species.get(str(gallery.individuals[order[0]]), ""), species)


def species_disagree(theirs: str, species: str) -> bool:
    """An individual of species ``theirs`` cannot be the answer for a photo of ``species`` ("": unknown)."""
    return bool(theirs) and theirs != species


def new_among_species(
    individual: np.ndarray, gallery: Gallery, species: str, config: InferenceConfig, fused: bool
) -> float:
    """P(new_individual) when only the individuals of ``species`` (and those of unknown species) compete: the
    probability of an answer that ``other_species`` made new, rather than the whole catalogue's softmax, in
    which the other species' best individual took nearly everything."""
    same = np.asarray([gallery.individual_species.get(str(n), "") in ("", species) for n in gallery.individuals])
    return float(np.exp(individual_log_probabilities(individual[same], config, fused)[-1]))


def decide(
    gallery: Gallery,
    scores: QueryScores,
    species_names: Sequence[str],
    config: InferenceConfig,
    verification: Verified | None = None,
) -> Identification:
    """The answer for one photo: species, top-k individuals, new individual, or rejected.

    ``verification``: keypoint evidence for the shortlist; the individual scores are fused with it
    (one softmax over all of them and ``new_individual``, at the fused threshold and temperature), and a
    verified top answer is never ``new_individual`` unless it is of another species than the one answered."""
    species_p = species_distribution(gallery, scores, species_names, config)
    p_non = non_cetacean_probability(species_p, species_names)
    species_index = best_cetacean_species(species_p, species_names)
    rejected = p_non > config.reject_threshold

    individual = individual_scores(gallery, scores, config)
    fused = verification is not None
    if verification is not None:
        individual = individual + verification.bonus.astype(np.float32)
    probabilities = np.exp(individual_log_probabilities(individual, config, fused))
    order = top_k(individual, config.top_k)
    confirmed = verification is not None and len(order) > 0 and bool(verification.verified[order[0]])
    best = float(individual[order[0]]) if len(order) else -1.0
    threshold = decision_threshold(config, fused)
    # The species answered and the individual named must agree, keypoint-confirmed or not (other_species).
    species_conflict = not rejected and other_species(gallery, order, species_names[species_index])
    answered_new = not rejected and (species_conflict or (best < threshold and not confirmed))
    if species_conflict and best >= threshold:  # new only because of the species: its probability among them
        new_p = new_among_species(individual, gallery, species_names[species_index], config, fused)
        probabilities = with_entry(probabilities, len(probabilities) - 1, new_p)
    if not rejected and len(order):
        answer = len(probabilities) - 1 if answered_new else int(order[0])
        probabilities = calibrate_answer(probabilities, answer, answered_new, config, fused)
    top = [
        Candidate(
            str(gallery.individuals[i]),
            gallery.individual_species[gallery.individuals[i]],
            float(probabilities[i]),
            float(individual[i]),
        )
        for i in order
    ]
    return Identification(
        species=NON_CETACEAN if rejected else species_names[species_index],
        species_probability=p_non if rejected else float(species_p[species_index]),
        top5=top,
        new_individual=answered_new,
        new_individual_probability=float(probabilities[-1]),
        rejected=rejected,
        rejection_reason=f"this does not look like a whale or dolphin (P = {p_non:.2f})" if rejected else "",
        embedding=scores.embedding,
        species_probabilities={n: float(p) for n, p in zip(species_names, species_p, strict=True)},
        new_individual_threshold=threshold,
    )


def nothing_to_identify(reason: str) -> Identification:
    """The answer for a frame refused before the network: rejected, with no species guess and no candidates."""
    return Identification(
        species=NON_CETACEAN,
        species_probability=1.0,
        top5=[],
        new_individual=False,
        new_individual_probability=0.0,
        rejected=True,
        rejection_reason=reason,
    )


def without_animal(result: Identification, objectness: float | None, config: LocaliserConfig) -> Identification:
    """Rejected when the localiser finds no animal at all (P(animal) below its ``min_objectness``):
    an empty sea, sky or glacier that the species head took for a whale. Chosen on the validation
    split's held-out negative sources, which it rejects whole without losing a cetacean there.
    ``objectness`` None (no localiser ran) or an answer already rejected: unchanged."""
    if not config.reject_without_animal or result.rejected or objectness is None:
        return result
    if objectness >= config.min_objectness:
        return result
    return replace(
        result,
        species=NON_CETACEAN,
        species_probability=1.0 - objectness,
        new_individual=False,
        rejected=True,
        rejection_reason=(
            f"no whale or dolphin found in the photo (P(animal) = {objectness:.2f}); "
            "if there is one, crop the photo around it and try again"
        ),
    )
