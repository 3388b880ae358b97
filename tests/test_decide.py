"""The decision rules on a hand-built gallery of three individuals: no model, no files.

Individuals A and B are humpbacks, C is a beluga; the network was trained on A and C
(they have ArcFace prototypes), B was enrolled later (no prototype).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from whales_identify.config import NEW_INDIVIDUAL, NON_CETACEAN, InferenceConfig
from whales_identify.matching import rules
from whales_identify.matching.gallery import Gallery
from whales_identify.training.tune import tune

SPECIES = ("humpback_whale", "beluga", NON_CETACEAN)
E = np.eye(4, dtype=np.float32)


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def gallery() -> Gallery:
    # Two photos of A (axis 0 and a little off it), one of B (axis 1), one of C (axis 2), one negative.
    embeddings = np.stack([E[0], unit(1, 0.2, 0, 0), E[1], E[2], E[3]])
    return Gallery(
        embeddings,
        np.array(["A", "A", "B", "C", ""]),
        np.array(["humpback_whale", "humpback_whale", "humpback_whale", "beluga", NON_CETACEAN]),
        np.array(["a1.jpg", "a2.jpg", "b1.jpg", "c1.jpg", "sea.jpg"]),
    )


def scores_for(gallery: Gallery, query: np.ndarray, logits: tuple[float, ...] = (2.0, 0.0, -2.0)) -> rules.QueryScores:
    prototypes = np.stack([E[0][None, :], E[2][None, :]])  # (2 individuals, 1 sub-centre, 4)
    rows = np.array([0, -1, 1])  # A → prototype 0, B → none, C → prototype 1 (gallery.individuals is sorted)
    return rules.QueryScores(
        photo_similarities=gallery.similarities(query),
        prototype_similarities=rules.prototype_similarities(query, prototypes, rows),
        species_logits=np.asarray(logits, dtype=np.float32),
        embedding=query,
    )


CONFIG = InferenceConfig(
    prototype_weight=0.5,
    new_individual_threshold=0.6,
    temperature=10.0,
    species_knn_weight=0.0,
    species_temperature=1.0,
    reject_threshold=0.5,
)


def test_individual_scores_take_the_best_photo_and_blend_only_where_a_prototype_exists(gallery: Gallery) -> None:
    query = unit(0.2, 1, 0, 0)  # nearest B's photo; A's second photo is nearer than its first
    s = scores_for(gallery, query)
    assert gallery.individuals.tolist() == ["A", "B", "C"]
    best = gallery.best_per_individual(s.photo_similarities)
    np.testing.assert_allclose(best, [float(unit(1, 0.2, 0, 0) @ query), query[1], 0.0], atol=1e-6)
    assert np.isnan(s.prototype_similarities[1]) and not np.isnan(s.prototype_similarities[[0, 2]]).any()
    blended = rules.individual_scores(gallery, s, CONFIG)
    assert blended[1] == pytest.approx(best[1])  # B: no prototype, its best photo alone
    assert blended[0] == pytest.approx(0.5 * best[0] + 0.5 * query[0])  # A: half photo, half centre
    assert rules.individual_scores(gallery, s, replace(CONFIG, prototype_weight=0.0)) == pytest.approx(best)


def test_a_known_animal_is_ranked_first_and_probabilities_share_one_distribution(gallery: Gallery) -> None:
    result = rules.decide(gallery, scores_for(gallery, E[0]), SPECIES, CONFIG)
    assert result.answer == "A" and not result.new_individual and not result.rejected
    assert [c.individual_id for c in result.top5] == ["A", "B", "C"]
    assert [c.species for c in result.top5] == ["humpback_whale", "humpback_whale", "beluga"]
    total = sum(c.probability for c in result.top5) + result.new_individual_probability
    assert total == pytest.approx(1.0)  # three individuals + new_individual: the whole distribution
    assert result.top5[0].probability > result.new_individual_probability
    assert result.ranked_answers()[0] == "A"


def test_a_photo_far_from_every_individual_is_a_new_individual(gallery: Gallery) -> None:
    query = unit(0.3, 0.3, 0.3, 0.85)  # nearest the negative photo, no individual above the threshold
    result = rules.decide(gallery, scores_for(gallery, query), SPECIES, CONFIG)
    assert result.new_individual and result.answer == NEW_INDIVIDUAL
    assert result.new_individual_probability > max(c.probability for c in result.top5)
    assert result.ranked_answers()[0] == NEW_INDIVIDUAL
    stricter = rules.decide(gallery, scores_for(gallery, query), SPECIES, replace(CONFIG, new_individual_threshold=0.0))
    assert not stricter.new_individual  # the threshold, not anything else, made it new


def test_species_head_alone_or_blended_with_the_nearest_photos(gallery: Gallery) -> None:
    s = scores_for(gallery, E[2], logits=(1.0, 0.0, -3.0))  # head says humpback; the photo is C, a beluga
    head_only = rules.species_distribution(gallery, s, SPECIES, CONFIG)
    np.testing.assert_allclose(head_only, rules.softmax(np.array([1.0, 0.0, -3.0])), atol=1e-6)
    voted = rules.species_distribution(gallery, s, SPECIES, replace(CONFIG, species_knn_weight=0.8, species_knn_k=1))
    assert SPECIES[int(np.argmax(voted))] == "beluga"
    assert voted.sum() == pytest.approx(1.0)
    assert (
        rules.decide(gallery, s, SPECIES, replace(CONFIG, species_knn_weight=0.8, species_knn_k=1)).species == "beluga"
    )


def test_a_non_cetacean_photo_is_rejected_and_never_a_new_individual(gallery: Gallery) -> None:
    s = scores_for(gallery, E[3], logits=(0.0, 0.0, 4.0))
    result = rules.decide(gallery, s, SPECIES, CONFIG)
    assert result.rejected and result.answer == "rejected" and not result.new_individual
    assert result.species == NON_CETACEAN and result.species_probability > CONFIG.reject_threshold
    kept = rules.decide(gallery, s, SPECIES, replace(CONFIG, reject_threshold=0.999))
    assert not kept.rejected and kept.species in ("humpback_whale", "beluga")  # the best *cetacean* species


def test_tune_chooses_from_candidates_and_leaves_the_base_config_alone(gallery: Gallery) -> None:
    queries = [scores_for(gallery, unit(1, 0.05, 0, 0)), scores_for(gallery, unit(0.05, 0.02, 1, 0))]
    queries += [scores_for(gallery, unit(0.4, 0.4, 0.1, 0.8))]  # an animal the gallery does not know
    base = replace(CONFIG, new_individual_threshold=0.95)  # a bad start: everything would be new
    before = replace(base)
    tuned, log = tune(base, gallery, queries, SPECIES, ["A", "C", "Z"], ["humpback_whale", "beluga", "beluga"])
    assert base == before  # candidates were passed in, nothing shared was overwritten
    assert log["val_map5_balanced"] == pytest.approx(1.0)
    for query, truth in zip(queries, ["A", "C", NEW_INDIVIDUAL], strict=True):
        assert rules.decide(gallery, query, SPECIES, tuned).answer == truth
