"""The real bundled model on real photographs it has never seen (held out of the catalogue)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import sample_photo

from whales_identify.batch.local import identify_entries
from whales_identify.config import DEFAULT_SPECIES_MAP, NEW_INDIVIDUAL, NON_CETACEAN
from whales_identify.errors import InvalidImageError
from whales_identify.inputs.archive import ArchiveEntry
from whales_identify.matching import rules


def test_samples_cover_known_new_and_negative(samples, known_samples) -> None:
    assert len(known_samples) >= 4
    assert (samples["species"] == NON_CETACEAN).sum() >= 1
    assert len(samples) > len(known_samples) + 1  # at least one new individual too


def test_known_animals_are_identified(identifier, known_samples) -> None:
    for row in known_samples.itertuples():
        # the global model's answer (the keypoint verification is measured in bench_verify_identify: with few
        # keypoint photos per whale it can move a sample that the global model gets right)
        result = identifier.identify(Path(row.path), verify=False)
        assert not result.rejected, row.image
        assert not result.new_individual, row.image
        assert result.answer == row.individual_id, row.image
        assert result.species == row.species, row.image


def test_new_individual_is_reported(identifier, samples) -> None:
    known = set(identifier.gallery.individuals.tolist())
    new = samples[(samples["individual_id"] != "") & ~samples["individual_id"].isin(known)]
    assert len(new) >= 1
    for row in new.itertuples():
        result = identifier.identify(Path(row.path))
        assert result.new_individual and result.answer == NEW_INDIVIDUAL
        assert result.new_individual_probability > result.top5[0].probability


def test_non_cetacean_is_rejected(identifier, samples) -> None:
    for row in samples[samples["species"] == NON_CETACEAN].itertuples():
        result = identifier.identify(Path(row.path))
        assert result.rejected and result.answer == "rejected"
        assert not result.new_individual  # no animal, so no new animal either
        assert "whale or dolphin" in result.rejection_reason


def test_probabilities_are_one_ranked_distribution(identifier, known_samples) -> None:
    result = identifier.identify(Path(known_samples.iloc[0]["path"]))
    probabilities = [c.probability for c in result.top5]
    assert len(result.top5) == 5
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) + result.new_individual_probability <= 1 + 1e-6
    assert sum(result.species_probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert np.linalg.norm(result.embedding) == pytest.approx(1.0, abs=1e-4)
    assert result.ranked_answers()[0] == result.answer


def test_bytes_path_and_pil_give_the_same_answer(identifier, known_samples) -> None:
    path = Path(known_samples.iloc[0]["path"])
    a = identifier.identify(path)
    b = identifier.identify(path.read_bytes())
    c = identifier.identify(identifier.prepare(path))
    assert a.answer == b.answer == c.answer
    assert np.allclose(a.embedding, b.embedding, atol=1e-5) and np.allclose(a.embedding, c.embedding, atol=1e-5)


def test_batch_identification_matches_one_by_one(identifier, samples) -> None:
    sources = [(row.image, Path(row.path)) for row in samples.itertuples()]
    sources.insert(1, ("broken.jpg", b"not a photo"))
    answers = dict(identifier.identify_many(sources, batch_size=3))
    assert isinstance(answers["broken.jpg"], InvalidImageError)
    for row in samples.itertuples():
        single = identifier.identify(Path(row.path), verify=False)  # a batch verifies only when asked
        assert answers[row.image].answer == single.answer
        assert np.allclose(answers[row.image].embedding, single.embedding, atol=1e-4)


def test_species_map_matches_catalogue(identifier) -> None:
    species_map = yaml.safe_load(DEFAULT_SPECIES_MAP.read_text())
    assert set(species_map) == set(identifier.gallery.individuals.tolist())
    for individual, species in list(species_map.items())[:50]:
        assert identifier.gallery.individual_species[individual] == species
    assert all(identifier.gallery.thumbnails.get(i) for i in list(species_map)[:50])


def test_checkpoint_carries_what_reproduces_it(identifier) -> None:
    meta = identifier.network.meta
    assert meta["individuals"] and meta["species"] and NON_CETACEAN in meta["species"]
    assert "train" in meta["command"] and meta["train_config"]["seed"] is not None
    assert identifier.gallery.model_version == identifier.model_version


def test_one_call_can_be_decided_under_a_stated_share_leaving_the_shared_rules(identifier, known_samples) -> None:
    """A user who says nearly every photo shows a new animal asks for stronger evidence before naming one: a
    catalogued humpback, named under the shipped half-and-half, is then answered new (its best score is under
    the moved threshold), one photo alone or in a batch; the identifier's own rules stay as tuned."""
    row = known_samples[known_samples["species"] == "humpback_whale"].iloc[0]
    photo = Path(row["path"])
    shipped = identifier.identify(photo, verify=False)
    assert shipped.answer == row["individual_id"]
    assert shipped.new_individual_threshold == pytest.approx(identifier.config.new_individual_threshold)
    unsure = replace(identifier.config, catalogued_share=0.001)
    assert shipped.top5[0].score < rules.decision_threshold(unsure)  # what makes this photo a good case
    moved = identifier.identify(photo, verify=False, config=unsure)
    assert moved.new_individual and moved.top5[0].individual_id == row["individual_id"]
    assert moved.new_individual_threshold == pytest.approx(rules.decision_threshold(unsure))
    [batch] = list(identify_entries(identifier, [ArchiveEntry(photo.name, photo.read_bytes())], config=unsure))
    assert batch.new_individual and batch.probability == pytest.approx(moved.answer_probability, abs=1e-4)
    assert identifier.config.catalogued_share == 0.5
    assert identifier.identify(photo, verify=False).answer == row["individual_id"]


def test_a_photo_is_never_named_as_an_individual_of_another_species(identifier) -> None:
    """The unseen humpback's nearest catalogue animal is a right whale: however sure the user is that their
    photos show catalogued animals, the answer is a new humpback, not "humpback whale, <a right whale>"."""
    photo = sample_photo("unseen")
    sure = replace(identifier.config, catalogued_share=0.999)
    result = identifier.identify(photo, verify=False, config=sure)
    assert result.species == "humpback_whale"
    assert result.top5[0].species != result.species  # what makes this photo a good case
    assert result.top5[0].score > rules.decision_threshold(sure)  # the threshold alone would name it
    assert result.new_individual and result.answer == NEW_INDIVIDUAL
