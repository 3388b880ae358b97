"""Retrieval metrics, Happywhale style."""

from __future__ import annotations

from collections.abc import Sequence

from whales_identify.config import NEW_INDIVIDUAL


def average_precision_at_5(truth: str, predictions: Sequence[str]) -> float:
    """1/rank of the first correct answer among the first five, else 0.

    ``truth`` is ``new_individual`` for a query whose animal is not in the
    gallery (or has no id): then ``new_individual`` is the correct answer.
    """
    for rank, predicted in enumerate(list(predictions)[:5], start=1):
        if predicted == truth:
            return 1.0 / rank
    return 0.0


def map_at_5(truths: Sequence[str], predictions: Sequence[Sequence[str]]) -> float:
    if len(truths) != len(predictions):
        raise ValueError("one prediction list per query is needed")
    if not truths:
        return 0.0
    return sum(average_precision_at_5(t, p) for t, p in zip(truths, predictions, strict=True)) / len(truths)


def top_k_accuracy(truths: Sequence[str], predictions: Sequence[Sequence[str]], k: int) -> float:
    if not truths:
        return 0.0
    hits = sum(1 for t, p in zip(truths, predictions, strict=True) if t in list(p)[:k])
    return hits / len(truths)


def ground_truth(individual_id: str, gallery_ids: set[str]) -> str:
    """What a correct answer is: the id when the gallery knows it, else new_individual."""
    return individual_id if individual_id and individual_id in gallery_ids else NEW_INDIVIDUAL
