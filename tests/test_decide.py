"""The decision rules on a hand-built gallery of three individuals: no model, no files.

Individuals A and B are humpbacks, C is a beluga; the network was trained on A and C
(they have ArcFace prototypes), B was enrolled later (no prototype).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from whales_identify.config import NEW_INDIVIDUAL, NON_CETACEAN, InferenceConfig, VerifyConfig
from whales_identify.matching import rules
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.results import Evidence
from whales_identify.training import calibration
from whales_identify.training.metrics import average_precision_at_5
from whales_identify.training.tune import (
    MAX_KNOWN_ANSWERED_NEW,
    StoredMatches,
    answers_of,
    constrained_best,
    fused_answers,
    fused_metrics,
    fused_outcomes,
    store_matches,
    tune,
    tune_fusion,
    verified_of,
)

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


BELUGA = (0.0, 2.0, -2.0)  # species logits of a photo the head takes for a beluga (C's species)

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


def test_a_stated_share_of_catalogued_photos_moves_the_new_individual_decision(gallery: Gallery) -> None:
    """The best score lies 0.06 under the threshold 0.6: "new" at half and half. A population re-sighted year
    after year (0.9: the odds move by 9, the threshold by -ln 9 / 10 = -0.22) answers A; a survey of mostly
    unknown animals (0.3) stays new. At 0.5 the threshold is the tuned one, unmoved."""
    query = unit(0.54, 0, 0, float(np.sqrt(1 - 0.54**2)))  # 0.54 like A's photo, 0.54 like A's prototype
    s = scores_for(gallery, query)
    assert rules.individual_scores(gallery, s, CONFIG)[0] == pytest.approx(0.54, abs=1e-5)
    assert rules.decision_threshold(CONFIG) == CONFIG.new_individual_threshold  # 0.5: exactly as tuned
    answers = {
        share: rules.decide(gallery, s, SPECIES, replace(CONFIG, catalogued_share=share)).answer
        for share in (0.3, 0.5, 0.9)
    }
    assert answers == {0.3: NEW_INDIVIDUAL, 0.5: NEW_INDIVIDUAL, 0.9: "A"}
    assert rules.prior_shift(replace(CONFIG, catalogued_share=0.9)) == pytest.approx(-np.log(9) / 10)
    # fused scores move by their own temperature
    fused = replace(CONFIG, catalogued_share=0.9, verify_new_individual_threshold=0.8, verify_temperature=20.0)
    assert rules.decision_threshold(fused, verified=True) == pytest.approx(0.8 - np.log(9) / 20)
    # the other way: the same photo 0.06 above the threshold is new when nearly every photo is of a new animal
    above = scores_for(gallery, unit(0.66, 0, 0, float(np.sqrt(1 - 0.66**2))))
    assert rules.decide(gallery, above, SPECIES, CONFIG).answer == "A"
    assert rules.decide(gallery, above, SPECIES, replace(CONFIG, catalogued_share=0.1)).answer == NEW_INDIVIDUAL


def test_an_answer_never_names_an_individual_of_another_species_than_it_answers(gallery: Gallery) -> None:
    """A photo nearest C (a beluga) that the species head takes for a humpback: not "humpback whale,
    individual C" but a new humpback; C stays among the candidates to compare. Taken for a beluga, it is C."""
    query = unit(0.05, 0.02, 1, 0)
    as_humpback = rules.decide(gallery, scores_for(gallery, query), SPECIES, CONFIG)
    assert as_humpback.species == "humpback_whale" and as_humpback.top5[0].individual_id == "C"
    assert as_humpback.top5[0].score > CONFIG.new_individual_threshold  # the threshold alone would name C
    assert as_humpback.new_individual and as_humpback.answer == NEW_INDIVIDUAL
    # its probability: new against the humpbacks A and B (far from the photo), not against all of the catalogue,
    # where C takes nearly everything
    individual = rules.individual_scores(gallery, scores_for(gallery, query), CONFIG)
    among = rules.new_among_species(individual, gallery, "humpback_whale", CONFIG, False)
    assert among > 0.9 and as_humpback.new_individual_probability == pytest.approx(among)
    assert np.exp(rules.individual_log_probabilities(individual, CONFIG)[-1]) < 0.1
    as_beluga = rules.decide(gallery, scores_for(gallery, query, BELUGA), SPECIES, CONFIG)
    assert as_beluga.species == "beluga" and as_beluga.answer == "C"


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
    queries = [scores_for(gallery, unit(1, 0.05, 0, 0)), scores_for(gallery, unit(0.05, 0.02, 1, 0), BELUGA)]
    queries += [scores_for(gallery, unit(0.4, 0.4, 0.1, 0.8))]  # an animal the gallery does not know
    base = replace(CONFIG, new_individual_threshold=0.95)  # a bad start: everything would be new
    before = replace(base)
    tuned, log = tune(base, gallery, queries, SPECIES, ["A", "C", "Z"], ["humpback_whale", "beluga", "beluga"])
    assert base == before  # candidates were passed in, nothing shared was overwritten
    assert log["val_map5_balanced"] == pytest.approx(1.0)
    for query, truth in zip(queries, ["A", "C", NEW_INDIVIDUAL], strict=True):
        assert rules.decide(gallery, query, SPECIES, tuned).answer == truth


def test_tune_chooses_half_and_half_thresholds_and_keeps_the_stated_share(gallery: Gallery) -> None:
    """A settings file stating 0.9 must not shift the thresholds being tuned: they are the half-and-half
    ones that the share then moves. The tuned settings keep the file's share."""
    queries = [scores_for(gallery, unit(1, 0.05, 0, 0)), scores_for(gallery, unit(0.05, 0.02, 1, 0), BELUGA)]
    queries += [scores_for(gallery, unit(0.4, 0.4, 0.1, 0.8))]
    args = (gallery, queries, SPECIES, ["A", "C", "Z"], ["humpback_whale", "beluga", "beluga"])
    at_half, _ = tune(CONFIG, *args)
    stated, _ = tune(replace(CONFIG, catalogued_share=0.9), *args)
    assert stated.catalogued_share == 0.9
    assert replace(stated, catalogued_share=0.5) == at_half


def test_constrained_best_keeps_catalogued_animals_out_of_new_where_it_can() -> None:
    values = np.array([0.9, 0.8, 0.7, 0.95])
    assert constrained_best(values, np.array([0.9, 0.5, 0.3, 0.6]), limit=0.5) == 1  # the best that keeps to it
    assert constrained_best(values, np.array([0.9, 0.5, 0.3, 0.6]), limit=1.0) == 3  # no limit: the best
    assert constrained_best(values, np.array([0.9, 0.7, 0.7, 0.8]), limit=0.5) == 1  # none keeps: fewest sent


def test_tune_sends_no_more_catalogued_animals_to_new_than_allowed(gallery: Gallery) -> None:
    """Balanced MAP@5 alone prefers a threshold between 0.7 and 0.9 here: the unseen animal (0.7 like A) is
    then answered new, at the price of two of three photos of A (0.5 like A) answered new too. The tuned
    threshold may not send more than MAX_KNOWN_ANSWERED_NEW of the catalogued animals to new: it answers A."""
    assert MAX_KNOWN_ANSWERED_NEW < 2 / 3

    def like_a(cosine: float) -> rules.QueryScores:
        return scores_for(gallery, unit(cosine, 0, 0, float(np.sqrt(1 - cosine**2))))

    queries = [like_a(0.9), like_a(0.5), like_a(0.5), like_a(0.7)]
    truths = ["A", "A", "A", "Z"]
    tuned, log = tune(CONFIG, gallery, queries, SPECIES, truths, ["humpback_whale"] * 4)
    assert log["val_map5_balanced_unconstrained"] > log["val_map5_balanced"]  # the limit bound the choice
    assert log["val_known_answered_new"] <= MAX_KNOWN_ANSWERED_NEW
    answers = [rules.decide(gallery, q, SPECIES, tuned).answer for q in queries[:3]]
    assert answers == ["A", "A", "A"]


# --- the verification stage's fusion: the bonus, and tuning it on stored matches --------------------------------
def test_verification_bonus_is_capped_and_nothing_below_the_minimum() -> None:
    cfg = VerifyConfig(weight=0.5, inlier_cap=10, min_inliers=5)
    bonus = rules.verification_bonus(np.array([0, 4, 5, 10, 40]), cfg)
    np.testing.assert_allclose(bonus, [0.0, 0.0, 0.25, 0.5, 0.5], atol=1e-6)
    verified = rules.verification(np.array([0, 7, 8]), replace(cfg, verified_inliers=8)).verified
    assert verified.tolist() == [False, False, True]


def _random_split(seed: int) -> tuple[Gallery, list[rules.QueryScores], list[str], list[np.ndarray]]:
    """Twelve individuals (two photos each) in 8 dimensions, queries near some of them or near none,
    inlier counts for every individual (the true one often higher)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, 8))
    photos = np.concatenate([centres + 0.6 * rng.normal(size=centres.shape) for _ in range(2)])
    photos /= np.linalg.norm(photos, axis=1, keepdims=True)
    ids = np.array([f"w{i:02d}" for i in range(12)] * 2)
    gallery = Gallery(
        photos.astype(np.float32), ids, np.array(["humpback_whale"] * 24), np.array([f"{i}.jpg" for i in range(24)])
    )
    queries, truths, inliers = [], [], []
    for q in range(60):
        known = q % 3 != 0
        target = int(rng.integers(12))
        e = (centres[target] if known else rng.normal(size=8)) + 0.8 * rng.normal(size=8)
        e = (e / np.linalg.norm(e)).astype(np.float32)
        queries.append(
            rules.QueryScores(gallery.similarities(e), np.full(12, np.nan, np.float32), np.array([3.0, 0.0, -3.0]), e)
        )
        truths.append(f"w{target:02d}" if known else NEW_INDIVIDUAL)
        counts = rng.integers(0, 7, size=12)
        if known and rng.random() < 0.6:
            counts[gallery.individuals.tolist().index(f"w{target:02d}")] = rng.integers(4, 20)
        inliers.append(counts)
    return gallery, queries, truths, inliers


def _matched_split() -> tuple[Gallery, list[rules.QueryScores], list[str], list, StoredMatches, InferenceConfig]:
    """``_random_split`` matched once, as ``Identifier`` decides a verified photo (a shortlist of 6, longer
    than the top 5: only it is checked), stored as the tuner stores it; the first query unverified."""
    gallery, queries, truths, inliers = _random_split(3)
    config = replace(CONFIG, prototype_weight=0.0, new_individual_threshold=0.5)
    measured = VerifyConfig(candidates=6)
    results = []
    for q, counts in zip(queries, inliers, strict=True):
        shortlist = rules.top_k(rules.individual_scores(gallery, q, config), measured.candidates)
        checked = np.zeros(12, np.int64)
        checked[shortlist] = counts[shortlist]
        first = rules.decide(gallery, q, SPECIES, config, rules.verification(checked, measured))
        evidence = tuple(
            Evidence(str(gallery.individuals[i]), int(checked[i]), False, "x.jpg", np.zeros((0, 2)), np.zeros((0, 2)))
            for i in shortlist
        )
        results.append(replace(first, evidence=evidence))
    results[0] = replace(results[0], evidence=())  # verification did not run on this one: kept as answered
    stored = store_matches(gallery, queries, results, truths, config, measured.candidates)
    return gallery, queries, truths, results, stored, config


FUSIONS = [
    VerifyConfig(weight=1.0, inlier_cap=6, min_inliers=0, verified_inliers=8),
    VerifyConfig(weight=0.3, inlier_cap=12, min_inliers=5, verified_inliers=10),
    VerifyConfig(weight=0.05, inlier_cap=4, min_inliers=4, verified_inliers=5),  # verified answers override new
]


@pytest.mark.parametrize("fusion", FUSIONS)
def test_fused_answers_for_calibration_are_what_decide_answers(fusion: VerifyConfig) -> None:
    """The answers that the fused scores' calibration maps are fitted on (``tune.fused_answers``) are, query
    by query, the answer ``rules.decide`` gives the same evidence before calibration, at the probability the
    map is applied to: the softmax's, which ``decide`` shows unchanged unless a verified answer overriding
    ``new_individual`` has to be lifted above it."""
    gallery, queries, truths, results, stored, config = _matched_split()
    bonus = np.zeros_like(stored.scores)
    np.put_along_axis(bonus, stored.shortlist, rules.verification_bonus(stored.inliers, fusion), axis=1)
    kinds, overrides = set(), 0
    for threshold in (0.3, 0.6, 0.9, 1.2):
        raw = calibration.uncalibrated(replace(config, verify_new_individual_threshold=threshold))
        outcomes = fused_answers(stored, stored.scores + bonus, raw, fusion)
        assert len(outcomes) == 59
        for q, r, t, outcome in zip(queries[1:], results[1:], truths[1:], outcomes, strict=True):
            decided = rules.decide(gallery, q, SPECIES, raw, verified_of(gallery, r, fusion))
            assert outcome.answered_new == (decided.answer == NEW_INDIVIDUAL)
            assert outcome.correct == (decided.answer == t)
            assert outcome.catalogued == (t != NEW_INDIVIDUAL)
            overridden = not decided.new_individual and decided.top5[0].score < threshold  # verified, kept on top
            if overridden:  # the map's input is the softmax; decide then lifts the answer to stay on top
                assert outcome.probability < decided.answer_probability
                overrides += 1
            else:
                assert outcome.probability == pytest.approx(decided.answer_probability, rel=1e-5)
        kinds |= {o.answered_new for o in outcomes}
    assert kinds == {True, False}  # both kinds of answer were checked
    assert overrides > 0 or fusion.verified_inliers > 5  # the fusion whose verified answers override new does


@pytest.mark.parametrize("fusion", FUSIONS)
def test_refusing_stored_matches_gives_what_decide_gives(fusion: VerifyConfig) -> None:
    """The vectorised re-fusion that the tuner searches with agrees, query by query, with ``rules.decide``
    fed the same evidence (as ``Identifier`` decides a verified photo), for every threshold."""
    gallery, queries, truths, results, stored, config = _matched_split()
    assert len(stored.truth) == 59 and len(stored.unverified_known_ap) + len(stored.unverified_new_ap) == 1
    thresholds = [0.3, 0.6, 0.9, 1.2]
    metrics = fused_metrics(stored, fusion, thresholds)
    for at, threshold in enumerate(thresholds):
        trial = replace(config, verify_new_individual_threshold=threshold)
        decided = [
            results[0],
            *(
                rules.decide(gallery, q, SPECIES, trial, verified_of(gallery, r, fusion))
                for q, r in zip(queries[1:], results[1:], strict=True)
            ),
        ]
        known = [t != NEW_INDIVIDUAL for t in truths]
        top1 = np.mean([d.answer == t for d, t, k in zip(decided, truths, known, strict=True) if k])
        recall = np.mean([d.answer == NEW_INDIVIDUAL for d, k in zip(decided, known, strict=True) if not k])
        aps = [average_precision_at_5(t, answers_of(d)) for d, t in zip(decided, truths, strict=True)]
        balanced = np.mean(
            [np.mean([a for a, k in zip(aps, known, strict=True) if k == side]) for side in (True, False)]
        )
        assert metrics["known_top1"][at] == pytest.approx(top1)
        assert metrics["new_individual_recall"][at] == pytest.approx(recall)
        sent_new = np.mean([d.answer == NEW_INDIVIDUAL for d, k in zip(decided, known, strict=True) if k])
        assert metrics["known_answered_new"][at] == pytest.approx(sent_new)
        assert metrics["map5_balanced"][at] == pytest.approx(balanced)
    overriding = fused_outcomes(stored, fusion, [5.0])  # a threshold nothing reaches: only verified answers stay
    assert (~overriding["answered_new"][0] == overriding["verified"]).all()


def test_tune_fusion_finds_a_minimum_that_silences_chance_matches() -> None:
    """As for a right-whale sample of an earlier model (w_6141): a wrong individual gets 4 inliers by chance
    and the true one 2, where the cosine winner is right (0.57 against 0.39); elsewhere the cosine is a near
    tie and only the true individual's 12 inliers decide. The previous fusion (weight 1, cap 6, no minimum)
    loses the first kind; the tuned one must get both right."""
    names = [f"w{i}" for i in range(8)]
    gallery = Gallery(np.eye(8, dtype=np.float32), np.array(names), np.array(["humpback_whale"] * 8), np.array(names))
    base = replace(CONFIG, prototype_weight=0.0)
    queries, results, truths = [], [], []
    for q in range(40):
        truth, chance = q % 8, (q + 2) % 8
        sims = np.full(8, 0.30, np.float32)
        inliers = np.full(8, 3)
        if q % 2:  # the cosine winner is right; a chance match elsewhere
            sims[truth], sims[chance] = 0.57, 0.39
            inliers[truth], inliers[chance] = 2, 4
        else:  # a near tie that only the keypoints settle
            sims[truth], sims[(truth + 1) % 8] = 0.32, 0.40
            inliers[truth] = 12
        scores = rules.QueryScores(sims, np.full(8, np.nan, np.float32), np.array([3.0, 0.0, -3.0]), np.eye(8)[truth])
        evidence = tuple(
            Evidence(n, int(c), False, "x", np.zeros((0, 2)), np.zeros((0, 2)))
            for n, c in zip(names, inliers, strict=True)
        )
        queries.append(scores)
        results.append(replace(rules.decide(gallery, scores, SPECIES, base), evidence=evidence))
        truths.append(names[truth])
    stored = store_matches(gallery, queries, results, truths, base, 8)
    previous = VerifyConfig(weight=1.0, inlier_cap=6, min_inliers=0)
    assert fused_metrics(stored, previous, [0.0])["known_top1"][0] == pytest.approx(0.5)  # every such query lost
    config, fusion, log = tune_fusion(base, VerifyConfig(), stored)
    assert log["val_known_top1"] == pytest.approx(1.0)
    for q, r, t in zip(queries, results, truths, strict=True):
        assert rules.decide(gallery, q, SPECIES, config, verified_of(gallery, r, fusion)).answer == t


def test_ranked_answers_always_start_with_the_answer() -> None:
    """A verified top answer overrides new_individual even when new_individual is the more probable:
    the submission order must then start with that individual, as ``answer`` does."""
    from whales_identify.matching.results import Candidate, Identification

    top = [Candidate("A", "s", 0.30, 0.9), Candidate("B", "s", 0.10, 0.5)]
    kept = Identification("s", 0.9, top, new_individual=False, new_individual_probability=0.55)
    assert kept.answer == "A" and kept.ranked_answers() == ["A", NEW_INDIVIDUAL, "B"]
    new = Identification("s", 0.9, top, new_individual=True, new_individual_probability=0.2)
    assert new.answer == NEW_INDIVIDUAL and new.ranked_answers() == [NEW_INDIVIDUAL, "A", "B"]


def test_no_animal_found_rejects_whatever_the_species_head_said() -> None:
    from whales_identify.config import LocaliserConfig
    from whales_identify.matching.results import Candidate, Identification

    answer = Identification("beluga", 0.9, [Candidate("A", "beluga", 0.8, 0.9)], False, 0.1)
    config = LocaliserConfig()
    empty = rules.without_animal(answer, 0.01, config)
    assert empty.rejected and empty.species == NON_CETACEAN and empty.species_probability == pytest.approx(0.99)
    assert empty.rejection_reason.startswith("no whale or dolphin found") and not empty.new_individual
    assert [c.individual_id for c in empty.top5] == ["A"], "the closest matches stay for 'show anyway'"
    assert rules.without_animal(answer, config.min_objectness, config) is answer  # an animal found
    assert rules.without_animal(answer, None, config) is answer  # no localiser ran
    assert rules.without_animal(answer, 0.01, replace(config, reject_without_animal=False)) is answer
