"""Who is in the catalogue and who asks: the open-set protocol used to tune and to measure.

A user's catalogue holds animals the network never trained on, and photos keep arriving of
animals that are in it and of animals that are not. So, over the individuals of one held-out
split (validation to tune, test to measure), seeded per species:

* a *known* half: half their photos (rounded up) go into the catalogue, the rest are queries;
* an *unseen* half: none of their photos is in the catalogue, every one is a query (its right
  answer is ``new_individual``, and its species was never trained on: what a new animal gets);
* the split's negatives and unidentified animals are queries too (rejection, species).

The catalogue is every training photo plus the known half's photos.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import numpy as np
import pandas as pd

from whales_identify.config import NON_CETACEAN

KNOWN_SHARE = 0.5


@dataclass(frozen=True)
class OpenSet:
    """Row positions (``iloc``) into the labels frame."""

    gallery: np.ndarray  # the catalogue searched
    queries: np.ndarray  # the photos identified
    known: np.ndarray  # per query: its individual is in the catalogue


def open_set(frame: pd.DataFrame, split: str, seed: int, known_share: float = KNOWN_SHARE) -> OpenSet:
    """The catalogue and the queries for the individuals of ``split`` (see the module docstring)."""
    in_split = (frame["split"] == split).to_numpy()
    ids = frame["individual_id"].to_numpy()
    species = frame["species"].to_numpy()
    gallery = (frame["split"] == "train").to_numpy().copy()
    queries: list[int] = []
    known: list[bool] = []
    named = in_split & (ids != "") & (species != NON_CETACEAN)
    for name in sorted(set(species[named])):
        individuals = sorted(set(ids[named & (species == name)]))
        digest = hashlib.sha256(f"{seed}:{split}:{name}".encode()).hexdigest()
        random.Random(int(digest[:16], 16)).shuffle(individuals)
        n_known = round(known_share * len(individuals))
        for position, individual in enumerate(individuals):
            rows = np.flatnonzero(named & (ids == individual))
            if position < n_known and len(rows) >= 2:
                in_catalogue = (len(rows) + 1) // 2
                gallery[rows[:in_catalogue]] = True
                queries += rows[in_catalogue:].tolist()
                known += [True] * (len(rows) - in_catalogue)
            else:
                queries += rows.tolist()
                known += [False] * len(rows)
    others = np.flatnonzero(in_split & ~named)  # negatives and unidentified animals
    queries += others.tolist()
    known += [False] * len(others)
    order = np.argsort(queries, kind="stable")
    return OpenSet(np.flatnonzero(gallery), np.asarray(queries)[order], np.asarray(known)[order])


def protocol_summary(frame: pd.DataFrame, protocol: OpenSet) -> str:
    """One line: how many queries of each kind."""
    queries = frame.iloc[protocol.queries]
    negatives = int((queries["species"] == NON_CETACEAN).sum())
    known = int(protocol.known.sum())
    unseen = len(queries) - known - negatives
    return f"{len(queries)} queries: {known} of catalogued animals, {unseen} of unseen ones, {negatives} negatives"
