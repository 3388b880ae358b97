"""Calibrate the single answer's probability on validation answers (top-label Platt scaling).

The softmax over individual scores was fitted by likelihood over every candidate; what a biologist
reads is the probability of the one answer given. On the validation individuals an answer naming a
catalogued animal at "70 %" was right about a third of the time, and ``new_individual`` answers err
with the share of catalogued animals among the photos. So each kind of answer gets its own map,
``logit p' = slope * logit p + offset`` (``rules.calibrated_probability``), fitted by weighted
logistic regression with catalogued and unseen animals weighing the same (the prior
``InferenceConfig.catalogued_share`` then moves it), and a small pull towards the identity so that a
handful of answers, or answers that are all right, cannot produce a map that claims certainty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from whales_identify.config import InferenceConfig
from whales_identify.matching import rules

# The pull towards slope 1, offset 0, in units of answers: with a few answers the map stays near the
# softmax; with hundreds the data decide.
RIDGE = 2.0
NEWTON_STEPS = 50


@dataclass(frozen=True)
class AnswerOutcome:
    """One validation answer, decided before calibration: what the rules said and whether it was right."""

    probability: float  # the answer's softmax probability
    answered_new: bool
    correct: bool
    catalogued: bool  # the photo shows an animal in the catalogue (the weighting's two groups)


def fit_platt(
    probabilities: np.ndarray, correct: np.ndarray, weights: np.ndarray, ridge: float = RIDGE
) -> tuple[float, float]:
    """(slope, offset) of ``P(correct) = sigmoid(slope * logit p + offset)`` by weighted maximum likelihood
    with a ridge penalty ``ridge / 2 * ((slope - 1)^2 + offset^2)``: Newton's method with step halving
    (the objective is convex, so each accepted step lowers it and the search ends at its minimum)."""
    x = np.array([rules.logit(p) for p in probabilities], dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    features = np.stack([x, np.ones_like(x)], axis=1)
    prior = np.array([1.0, 0.0])

    def objective(theta: np.ndarray) -> float:
        z = features @ theta
        # -log sigmoid(z) = logaddexp(0, -z); -log(1 - sigmoid(z)) = logaddexp(0, z)
        loss = y * np.logaddexp(0.0, -z) + (1 - y) * np.logaddexp(0.0, z)
        return float(w @ loss + ridge / 2 * np.sum((theta - prior) ** 2))

    theta = prior.copy()
    value = objective(theta)
    for _ in range(NEWTON_STEPS):
        q = 1.0 / (1.0 + np.exp(-np.clip(features @ theta, -60, 60)))
        gradient = features.T @ (w * (q - y)) + ridge * (theta - prior)
        hessian = (features * (w * q * (1 - q))[:, None]).T @ features + ridge * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while size > 1e-6 and objective(theta - size * step) > value:
            size /= 2
        if size <= 1e-6:
            break
        theta = theta - size * step
        value = objective(theta)
        if np.abs(size * step).max() < 1e-9:
            break
    return float(theta[0]), float(theta[1])


def balanced_weights(catalogued: Sequence[bool]) -> np.ndarray:
    """Per answer: catalogued and unseen animals weighing the same in all, the weights summing to the count."""
    known = np.asarray(catalogued, dtype=bool)
    n, n_known = len(known), int(known.sum())
    if n_known in (0, n):
        return np.ones(n)
    return np.where(known, n / (2 * n_known), n / (2 * (n - n_known)))


def fit_answer_calibration(
    config: InferenceConfig, outcomes: Sequence[AnswerOutcome], verified: bool = False
) -> tuple[InferenceConfig, dict[str, Any]]:
    """``config`` with the two maps (individual, new_individual; the fused scores' pair when ``verified``)
    fitted on ``outcomes``, and what was fitted on how many answers."""
    weights = balanced_weights([o.catalogued for o in outcomes])
    log: dict[str, Any] = {}
    chosen = config
    for kind, answered_new in (("individual", False), ("new", True)):
        rows = [i for i, o in enumerate(outcomes) if o.answered_new == answered_new]
        slope, offset = (1.0, 0.0)
        if rows:
            slope, offset = fit_platt(
                np.array([outcomes[i].probability for i in rows]),
                np.array([outcomes[i].correct for i in rows]),
                weights[rows],
            )
        slope_field, offset_field = rules.calibration_fields(answered_new, verified)
        fitted: dict[str, Any] = {slope_field: slope, offset_field: offset}
        chosen = replace(chosen, **fitted)
        log[kind] = {"answers": len(rows), "slope": round(slope, 4), "offset": round(offset, 4)}
    return chosen, log


def uncalibrated(config: InferenceConfig) -> InferenceConfig:
    """``config`` with every answer map at the identity and the prior at half and half: the raw softmax."""
    identity: dict[str, Any] = {}
    for answered_new in (False, True):
        for verified in (False, True):
            identity.update(zip(rules.calibration_fields(answered_new, verified), (1.0, 0.0), strict=True))
    return replace(config, catalogued_share=0.5, **identity)
