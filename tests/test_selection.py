"""Choosing a few representative photos per individual (matching/selection.py) on hand-built embeddings."""

from __future__ import annotations

import numpy as np

from whales_identify.matching.selection import representative_order, select_per_individual


def _unit(*rows: tuple[float, float]) -> np.ndarray:
    array = np.asarray(rows, np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_the_typical_photo_comes_first_then_the_most_different() -> None:
    # individual A: three near-identical views along x, one side view along y; B: a single photo
    embeddings = _unit((1, 0.05), (1, 0.0), (1, -0.05), (0, 1), (1, 1))
    ids = np.array(["A", "A", "A", "A", "B"])
    rank = representative_order(embeddings, ids)
    assert rank[4] == 0, "an individual's only photo is its representative"
    assert rank[3] == 1, "the side view is the second choice: least like the first"
    assert sorted(rank[:4].tolist()) == [0, 1, 2, 3]
    assert rank[1] == 0 or rank[0] == 0 or rank[2] == 0
    assert set(select_per_individual(embeddings, ids, 2)) == {int(np.flatnonzero(rank[:4] == 0)[0]), 3, 4}


def test_smaller_selections_are_contained_in_larger_ones() -> None:
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(60, 8))
    ids = rng.integers(0, 5, 60).astype(str)
    small, large = set(select_per_individual(embeddings, ids, 2)), set(select_per_individual(embeddings, ids, 5))
    assert small <= large
    assert all((ids[list(large)] == i).sum() == min(5, (ids == i).sum()) for i in np.unique(ids))
    assert np.array_equal(representative_order(embeddings, ids), representative_order(embeddings, ids))
