"""Typed results: what identification answers, ready for JSON, CSV and the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from whales_identify.config import NEW_INDIVIDUAL


@dataclass(frozen=True)
class Candidate:
    """One catalogue individual proposed for a photo."""

    individual_id: str
    species: str
    probability: float
    score: float  # blended cosine similarity in [-1, 1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "individual_id": self.individual_id,
            "species": self.species,
            "probability": round(self.probability, 4),
            "score": round(self.score, 4),
        }


@dataclass(frozen=True)
class Evidence:
    """Keypoint evidence (matching/verify.py) that the photo shows one candidate: the candidate's
    catalogue photo whose local pattern agrees best with the query, and the agreeing points."""

    individual_id: str
    inliers: int  # keypoint matches consistent with one similarity transform
    verified: bool  # inliers >= VerifyConfig.verified_inliers: a match the keypoints confirm
    photo: str  # the catalogue photo matched: a bundled image name, or "user:<image id>"
    query_points: np.ndarray = field(repr=False)  # (inliers, 2) float32, pixels of the query photo (photo_size)
    photo_points: np.ndarray = field(repr=False)  # (inliers, 2) float32, pixels of the catalogue photo at photo_size
    photo_size: tuple[int, int] = (0, 0)  # (width, height) that photo_points refer to

    def to_dict(self) -> dict[str, Any]:
        return {
            "individual_id": self.individual_id,
            "inliers": self.inliers,
            "verified": self.verified,
            "photo": self.photo,
        }


@dataclass
class Identification:
    """The answer for one photo.

    ``top5`` lists catalogue individuals, most probable first; their
    probabilities and ``new_individual_probability`` share one distribution
    (with the rest of the catalogue), so they can be compared directly.
    """

    species: str
    species_probability: float
    top5: list[Candidate]
    new_individual: bool
    new_individual_probability: float
    rejected: bool = False
    rejection_reason: str = ""
    box: tuple[int, int, int, int] | None = None  # the animal, in pixels of a photo of ``photo_size``
    photo_size: tuple[int, int] | None = None  # (width, height) of the photo the box refers to
    embedding: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32), repr=False)
    species_probabilities: dict[str, float] = field(default_factory=dict, repr=False)
    # Keypoint evidence for the candidates the verification stage checked (best first); empty when
    # verification did not run (not asked for, another species, no keypoints in the catalogue).
    evidence: tuple[Evidence, ...] = ()
    # The score below which the answer was new_individual (the fused scores' own when verification ran),
    # moved by the stated catalogued_share (``rules.decision_threshold``); None when nothing was scored.
    new_individual_threshold: float | None = None

    def evidence_for(self, individual_id: str) -> Evidence | None:
        """The keypoint evidence for one candidate, if it was checked."""
        return next((e for e in self.evidence if e.individual_id == individual_id), None)

    @property
    def verified(self) -> bool:
        """The top answer is a known individual that the keypoints confirm."""
        best = self.best
        found = self.evidence_for(best.individual_id) if best and not (self.rejected or self.new_individual) else None
        return bool(found and found.verified)

    def box_for(self, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """The animal's box in the same photo decoded at ``size`` (e.g. the app's display size)."""
        if self.box is None or not self.photo_size:
            return self.box
        sx, sy = size[0] / self.photo_size[0], size[1] / self.photo_size[1]
        x1, y1, x2, y2 = self.box
        return (round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy))

    @property
    def best(self) -> Candidate | None:
        return self.top5[0] if self.top5 else None

    @property
    def answer(self) -> str:
        """The single answer: an individual id, ``new_individual`` or ``rejected``."""
        if self.rejected:
            return "rejected"
        if self.new_individual or not self.top5:
            return "new_individual"
        return self.top5[0].individual_id

    @property
    def answer_probability(self) -> float:
        """The probability of the single ``answer`` (of an individual, or of ``new_individual``); for a
        rejected photo, the probability of no whale or dolphin."""
        if self.rejected:
            return self.species_probability
        if self.new_individual or not self.top5:
            return self.new_individual_probability
        return self.top5[0].probability

    def ranked_answers(self) -> list[str]:
        """Five answers, best first (the Happywhale submission format, used for MAP@5): the single
        ``answer`` first (``new_individual`` for a rejected photo), then the other top-5 ids and
        ``new_individual`` in order of probability."""
        if self.rejected:  # no cetacean: certainly no known individual
            return [NEW_INDIVIDUAL, *[c.individual_id for c in self.top5][:4]]
        ranked = [(c.probability, c.individual_id) for c in self.top5]
        ranked.append((self.new_individual_probability, NEW_INDIVIDUAL))
        ranked.sort(key=lambda item: -item[0])
        first = self.answer
        return [first, *[name for _, name in ranked if name != first]][:5]

    def to_dict(self, with_embedding: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "answer": self.answer,
            "species": self.species,
            "species_probability": round(self.species_probability, 4),
            "new_individual": self.new_individual,
            "new_individual_probability": round(self.new_individual_probability, 4),
            "rejected": self.rejected,
            "rejection_reason": self.rejection_reason,
            "top5": [c.to_dict() for c in self.top5],
            "box": list(self.box) if self.box else None,
            "photo_size": list(self.photo_size) if self.photo_size else None,
            "verified": self.verified,
            "evidence": [e.to_dict() for e in self.evidence],
            "new_individual_threshold": None
            if self.new_individual_threshold is None
            else round(self.new_individual_threshold, 4),
        }
        if with_embedding:
            data["embedding"] = [round(float(v), 6) for v in self.embedding]
        return data
