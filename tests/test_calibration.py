"""The single answer's probability: the calibration rule on hand-built distributions, the Platt fit on
made-up validation answers whose true reliability is known, and the prior a user states."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from whales_identify.config import NON_CETACEAN, InferenceConfig
from whales_identify.errors import ModelLoadError
from whales_identify.matching import rules
from whales_identify.matching.gallery import Gallery
from whales_identify.training import calibration

SPECIES = ("humpback_whale", NON_CETACEAN)
IDENTITY = calibration.uncalibrated(InferenceConfig())
# A map that halves the confidence of named individuals and leaves new_individual alone.
SHRINK = replace(IDENTITY, individual_calibration_slope=0.5, individual_calibration_offset=-0.5)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def test_identity_maps_at_half_and_half_leave_the_softmax_as_it_is() -> None:
    probabilities = np.array([0.6, 0.25, 0.1, 0.05])  # three individuals, then new_individual
    for verified in (False, True):  # the shipped defaults of the fused maps are not the identity
        assert InferenceConfig().verify_new_calibration_slope != 1.0
        for answered_new in (False, True):
            assert rules.calibration_map(IDENTITY, answered_new, verified) == (1.0, 0.0)
        out = rules.calibrate_answer(probabilities, 0, False, IDENTITY, verified)
        np.testing.assert_allclose(out, probabilities, atol=1e-12)


def test_the_answer_gets_its_calibrated_probability_and_the_rest_keep_their_order() -> None:
    probabilities = np.array([0.9, 0.05, 0.03, 0.02])
    out = rules.calibrate_answer(probabilities, 0, False, SHRINK)
    expected = float(sigmoid(0.5 * np.log(0.9 / 0.1) - 0.5))
    assert out[0] == pytest.approx(expected)
    assert expected < 0.9  # the map did lower it
    assert out.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(out[1:] / out[1:].sum(), probabilities[1:] / probabilities[1:].sum())
    assert list(np.argsort(-out)) == [0, 1, 2, 3]


def test_the_answer_is_never_shown_below_another_candidate() -> None:
    probabilities = np.array([0.40, 0.38, 0.12, 0.10])  # a close second: the map would put the answer under it
    harsh = replace(IDENTITY, individual_calibration_slope=0.2, individual_calibration_offset=-2.0)
    out = rules.calibrate_answer(probabilities, 0, False, harsh)
    assert out[0] >= out[1:].max() - 1e-12
    assert out.sum() == pytest.approx(1.0)
    assert out[0] < 0.40  # still lowered as far as the order allows


def test_stating_that_most_photos_are_catalogued_moves_both_kinds_of_answer() -> None:
    individual = np.array([0.7, 0.2, 0.1])
    new = np.array([0.1, 0.2, 0.7])
    for share, more in ((0.9, True), (0.1, False)):
        config = replace(IDENTITY, catalogued_share=share)
        named = rules.calibrate_answer(individual, 0, False, config)[0]
        unseen = rules.calibrate_answer(new, 2, True, config)[2]
        assert bool(named > 0.7) is more and bool(unseen < 0.7) is more
    # exactly the prior's odds: logit p' = logit p + logit(share) for a named individual
    config = replace(IDENTITY, catalogued_share=0.8)
    assert rules.logit(rules.calibrated_probability(0.7, False, config)) == pytest.approx(
        rules.logit(0.7) + rules.logit(0.8)
    )


def test_decide_gives_the_calibrated_probability_of_its_answer() -> None:
    embeddings = np.eye(3, dtype=np.float32)
    gallery = Gallery(
        embeddings,
        np.array(["A", "B", "C"]),
        np.array(["humpback_whale"] * 3),
        np.array(["a.jpg", "b.jpg", "c.jpg"]),
    )
    query = np.array([0.95, 0.3, 0.1], np.float32)
    query /= np.linalg.norm(query)
    scores = rules.QueryScores(
        gallery.similarities(query), np.full(3, np.nan, np.float32), np.array([3.0, -3.0], np.float32), query
    )
    config = replace(SHRINK, new_individual_threshold=0.5, temperature=10.0, species_knn_weight=0.0)
    raw = rules.decide(gallery, scores, SPECIES, calibration.uncalibrated(config))
    calibrated = rules.decide(gallery, scores, SPECIES, config)
    assert raw.answer == calibrated.answer == "A"
    assert calibrated.answer_probability == pytest.approx(
        rules.calibrated_probability(raw.answer_probability, False, config)
    )
    assert calibrated.answer_probability < raw.answer_probability
    assert [c.individual_id for c in calibrated.top5] == [c.individual_id for c in raw.top5]
    assert calibrated.ranked_answers() == raw.ranked_answers()
    total = sum(c.probability for c in calibrated.top5) + calibrated.new_individual_probability
    assert total == pytest.approx(1.0)


def test_platt_fit_recovers_a_known_miscalibration() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.3, 0.99, 4000)
    truth = sigmoid(0.5 * np.log(p / (1 - p)) - 0.7)  # over-confident: what the answer really is worth
    correct = rng.random(4000) < truth
    slope, offset = calibration.fit_platt(p, correct, np.ones(4000))
    assert slope == pytest.approx(0.5, abs=0.1) and offset == pytest.approx(-0.7, abs=0.15)


def test_a_few_answers_that_were_all_right_do_not_make_a_map_that_claims_certainty() -> None:
    slope, offset = calibration.fit_platt(np.array([0.8, 0.85, 0.9]), np.array([True, True, True]), np.ones(3))
    assert np.isfinite([slope, offset]).all()
    assert float(sigmoid(slope * rules.logit(0.9) + offset)) < 0.995


def test_catalogued_and_unseen_animals_weigh_the_same_whatever_their_counts() -> None:
    w = calibration.balanced_weights([True, False, False, False])
    assert w[0] == pytest.approx(w[1:].sum()) and w.sum() == pytest.approx(4)
    np.testing.assert_allclose(calibration.balanced_weights([False, False]), [1, 1])


def test_fitted_maps_make_an_overconfident_answer_honest() -> None:
    """Named individuals at 0.9 that are right three times in ten, new_individual at 0.8 right eight in ten."""
    outcomes = [calibration.AnswerOutcome(0.9, False, i % 10 < 3, True) for i in range(200)]
    outcomes += [calibration.AnswerOutcome(0.8, True, i % 10 < 8, i % 10 >= 8) for i in range(200)]
    fitted, log = calibration.fit_answer_calibration(IDENTITY, outcomes)
    assert log["individual"]["answers"] == 200 and log["new"]["answers"] == 200
    assert rules.calibrated_probability(0.9, False, fitted) == pytest.approx(0.3, abs=0.03)
    # new answers are right 8 in 10 as they come; the 40 wrong ones show catalogued animals, which weigh
    # 400 / (2 * 240) each against 400 / (2 * 160) for the 160 unseen ones: 200 / (200 + 33.3) = 0.857
    assert rules.calibrated_probability(0.8, True, fitted) == pytest.approx(200 / (200 + 40 * 400 / 480), abs=0.02)
    assert fitted.verify_individual_calibration_slope == IDENTITY.verify_individual_calibration_slope  # untouched


def test_an_impossible_catalogued_share_in_the_settings_file_is_refused(tmp_path) -> None:
    for value in (0, 1, 1.5, -0.2):
        path = tmp_path / "inference.yaml"
        path.write_text(f"catalogued_share: {value}\n")
        with pytest.raises(ModelLoadError, match="catalogued_share"):
            InferenceConfig.load(path)
    path.write_text("catalogued_share: 0.9\n")
    assert InferenceConfig.load(path).catalogued_share == 0.9


def test_the_shipped_settings_are_calibrated() -> None:
    """The bundled inference.yaml carries fitted maps, one per kind of answer (named individual or
    new_individual, global or fused scores): none is the identity (each was fitted), each is increasing (a
    surer softmax is never shown as less sure), and none turns a middling softmax into near-certainty."""
    shipped = InferenceConfig.load()
    assert shipped.catalogued_share == 0.5
    for verified in (False, True):
        for answered_new in (False, True):
            slope, offset = rules.calibration_map(shipped, answered_new, verified)
            assert (slope, offset) != (1.0, 0.0), (answered_new, verified)
            assert slope > 0, (answered_new, verified)
            shown = [rules.calibrated_probability(p, answered_new, shipped, verified) for p in (0.3, 0.5, 0.7, 0.9)]
            assert shown == sorted(shown) and 0.05 < shown[1] < 0.95, (answered_new, verified, shown)
