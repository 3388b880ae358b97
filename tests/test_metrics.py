"""MAP@5 and friends against hand-computed cases."""

from __future__ import annotations

import pytest

from whales_identify.training.metrics import average_precision_at_5, ground_truth, map_at_5, top_k_accuracy


def test_ap5_is_reciprocal_rank_of_first_hit() -> None:
    assert average_precision_at_5("a", ["a", "b", "c"]) == 1.0
    assert average_precision_at_5("a", ["b", "a", "c"]) == 0.5
    assert average_precision_at_5("a", ["b", "c", "d", "e", "a"]) == pytest.approx(0.2)
    assert average_precision_at_5("a", ["b", "c", "d", "e", "f", "a"]) == 0.0


def test_map5_averages_queries() -> None:
    # hits at ranks 1, 3, and none: (1 + 1/3 + 0) / 3
    truths = ["a", "b", "c"]
    predictions = [["a", "x"], ["x", "y", "b"], ["x", "y", "z", "w", "v"]]
    assert map_at_5(truths, predictions) == pytest.approx((1 + 1 / 3) / 3)


def test_new_individual_is_the_right_answer_for_unknown_animals() -> None:
    gallery = {"w1", "w2"}
    assert ground_truth("w9", gallery) == "new_individual"
    assert ground_truth("", gallery) == "new_individual"
    assert ground_truth("w1", gallery) == "w1"
    truth = ground_truth("w9", gallery)
    assert map_at_5([truth], [["w1", "new_individual"]]) == 0.5


def test_top_k() -> None:
    truths = ["a", "b"]
    predictions = [["a"], ["x", "b"]]
    assert top_k_accuracy(truths, predictions, 1) == 0.5
    assert top_k_accuracy(truths, predictions, 2) == 1.0


def test_map5_requires_matching_lengths() -> None:
    with pytest.raises(ValueError):
        map_at_5(["a"], [])
