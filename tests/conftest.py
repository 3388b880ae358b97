"""Shared fixtures: the real bundled model and the real sample photos in tests/data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from whales_identify.config import DEFAULT_SPECIES_MAP, NON_CETACEAN
from whales_identify.matching.identifier import Identifier

DATA = Path(__file__).parent / "data"


def sample_photo(role: str) -> Path:
    """The bundled sample photo that plays ``role``: "negative" (a frame that is no whale, rejected),
    "unseen" (an animal the catalogue does not hold, answered new_individual) or "right whale" (a catalogued
    one; the first of samples.csv). ``bundle`` picks them afresh for each model (tests/data/samples.csv),
    so a test names the role, never the file."""
    frame = pd.read_csv(DATA / "samples.csv", dtype=str, keep_default_na=False)
    if role == "negative":
        rows = frame[frame["species"] == NON_CETACEAN]
    elif role == "right whale":
        rows = frame[(frame["species"] == "north_atlantic_right_whale") & (frame["individual_id"] != "")]
    elif role == "unseen":
        catalogued = set(map(str, yaml.safe_load(DEFAULT_SPECIES_MAP.read_text(encoding="utf-8"))))
        rows = frame[(frame["individual_id"] != "") & ~frame["individual_id"].isin(catalogued)]
    else:
        raise ValueError(f"no sample role {role!r}")
    assert len(rows), f"tests/data/samples.csv has no {role} sample"
    return DATA / str(rows.iloc[0]["image"])


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
