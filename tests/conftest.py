"""Shared fixtures: the real bundled model and the real sample photos in tests/data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from whales_identify.matching.identifier import Identifier

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def identifier() -> Identifier:
    return Identifier.load()


@pytest.fixture(scope="session")
def samples() -> pd.DataFrame:
    frame = pd.read_csv(DATA / "samples.csv", dtype=str, keep_default_na=False)
    frame["path"] = [str(DATA / name) for name in frame["image"]]
    return frame


@pytest.fixture(scope="session")
def known_samples(samples: pd.DataFrame, identifier: Identifier) -> pd.DataFrame:
    known = set(identifier.gallery.individuals.tolist())
    return samples[samples["individual_id"].isin(known)]


@pytest.fixture(autouse=True)
def private_catalog_home(tmp_path_factory, monkeypatch) -> None:
    """Never read or write the real user's catalogue from a test."""
    monkeypatch.setenv("WHALE_ID_HOME", str(tmp_path_factory.mktemp("whales_home")))
