"""Which of an individual's catalogue photos to keep when only a few can ship or be checked.

The bundled catalogue holds up to dozens of photos per individual; the comparison photos and the
verification keypoints that ship with it can afford only a few. ``representative_order`` ranks
each individual's photos so that any prefix is a good choice of that size: first the photo
nearest the individual's mean embedding (its most typical view), then, one by one, the photo
least like those already chosen (farthest-point sampling: other sides, angles, seasons).
Because every choice is a prefix of the same order, the photos given keypoints (the first k)
are always among the comparison photos (the first m >= k). Pure numpy; deterministic.
"""

from __future__ import annotations

import numpy as np


def _order_one(embeddings: np.ndarray) -> np.ndarray:
    """Positions of one individual's photos, most representative first (unit-norm rows)."""
    n = len(embeddings)
    if n <= 1:
        return np.arange(n)
    centre = embeddings.mean(axis=0)
    first = int(np.argmax(embeddings @ centre))
    chosen = [first]
    # distance of each photo to its nearest chosen photo, as 1 - cosine
    nearest = 1.0 - embeddings @ embeddings[first]
    nearest[first] = -np.inf
    for _ in range(n - 1):
        pick = int(np.argmax(nearest))  # ties: the lowest position, so the order is deterministic
        chosen.append(pick)
        nearest = np.minimum(nearest, 1.0 - embeddings @ embeddings[pick])
        nearest[chosen] = -np.inf
    return np.asarray(chosen)


def representative_order(embeddings: np.ndarray, individual_ids: np.ndarray) -> np.ndarray:
    """Each photo's rank within its individual (0 = most representative), aligned with the inputs.

    ``rank < k`` selects at most k photos per individual, and the selection for k is contained
    in the selection for any larger k.
    """
    embeddings = np.asarray(embeddings, np.float32)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.maximum(norms, 1e-12)
    ids = np.asarray(individual_ids)
    rank = np.zeros(len(ids), np.int64)
    for individual in np.unique(ids):
        members = np.flatnonzero(ids == individual)
        rank[members[_order_one(unit[members])]] = np.arange(len(members))
    return rank


def select_per_individual(embeddings: np.ndarray, individual_ids: np.ndarray, per_individual: int) -> np.ndarray:
    """Indices of at most ``per_individual`` photos of each individual, in input order."""
    return np.flatnonzero(representative_order(embeddings, individual_ids) < per_individual)
