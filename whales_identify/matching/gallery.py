"""The catalogue as seen by the matcher: embeddings of known photos and who they are.

Scores follow the Happywhale winners: an individual's score is its best
photo's cosine similarity, blended with the cosine to its ArcFace centre when
the model was trained on it. This module is storage-agnostic: the bundled
catalogue file and the user's database both produce a ``Gallery``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from whales_identify.errors import ModelLoadError


@dataclass
class Gallery:
    """Embeddings (N, D) L2-normalised, with one individual id ("" = none) and species per row."""

    embeddings: np.ndarray
    individual_ids: np.ndarray
    species: np.ndarray
    image_names: np.ndarray
    thumbnails: dict[str, bytes] = field(default_factory=dict)  # individual id → JPEG
    model_version: str = ""

    def __post_init__(self) -> None:
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        self.individual_ids = np.asarray(self.individual_ids, dtype=str)
        self.species = np.asarray(self.species, dtype=str)
        self.image_names = np.asarray(self.image_names, dtype=str)
        n = len(self.embeddings)
        if not (len(self.individual_ids) == len(self.species) == len(self.image_names) == n):
            raise ValueError("gallery arrays differ in length")
        self._index()

    def _index(self) -> None:
        """Rows of each individual side by side, so best-per-individual is one ``maximum.reduceat``."""
        known = np.flatnonzero(self.individual_ids != "")
        self._order = known[np.argsort(self.individual_ids[known], kind="stable")]
        owners = self.individual_ids[self._order]
        self._starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]]) if len(owners) else np.zeros(0, int)
        self.individuals: np.ndarray = owners[self._starts] if len(owners) else np.array([], str)
        # Each individual's species: that of its first row in the catalogue.
        first = {name: idx for idx, name in zip(known[::-1], self.individual_ids[known[::-1]], strict=True)}
        self.individual_species: dict[str, str] = {name: str(self.species[first[name]]) for name in self.individuals}

    def __len__(self) -> int:
        return len(self.embeddings)

    @classmethod
    def empty(cls, dim: int) -> Gallery:
        return cls(np.zeros((0, dim), np.float32), np.array([], str), np.array([], str), np.array([], str))

    def subset(self, mask: np.ndarray) -> Gallery:
        """The rows where ``mask`` is true (e.g. one species), thumbnails kept."""
        return Gallery(
            self.embeddings[mask],
            self.individual_ids[mask],
            self.species[mask],
            self.image_names[mask],
            self.thumbnails,
            self.model_version,
        )

    def similarities(self, query: np.ndarray) -> np.ndarray:
        """Cosine similarity of one embedding to every row."""
        return self.embeddings @ query.astype(np.float32)

    def rows_of(self, individual: int) -> np.ndarray:
        """The rows of the ``individual``-th entry of ``self.individuals``."""
        start = int(self._starts[individual])
        end = int(self._starts[individual + 1]) if individual + 1 < len(self._starts) else len(self._order)
        return self._order[start:end]

    def best_per_individual(self, sims: np.ndarray) -> np.ndarray:
        """Highest similarity per individual, aligned with ``self.individuals`` (the one search path)."""
        if not len(self._starts):
            return np.zeros(0, dtype=np.float32)
        return np.maximum.reduceat(sims[self._order], self._starts).astype(np.float32, copy=False)

    # --- persistence of the bundled, read-only catalogue -----------------------
    def save(self, path: Path) -> None:
        ids = sorted(self.thumbnails)
        blobs = [self.thumbnails[i] for i in ids]
        offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        np.savez_compressed(
            path,
            embeddings=self.embeddings.astype(np.float16),
            individual_ids=self.individual_ids,
            species=self.species,
            image_names=self.image_names,
            thumb_ids=np.asarray(ids, dtype=str),
            thumb_offsets=offsets,
            thumb_bytes=np.frombuffer(b"".join(blobs), dtype=np.uint8),
            model_version=np.asarray(self.model_version),
        )

    @classmethod
    def load(cls, path: Path | str) -> Gallery:
        path = Path(path)
        if not path.exists():
            raise ModelLoadError(f"catalogue file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                offsets = data["thumb_offsets"]
                raw = data["thumb_bytes"].tobytes()
                thumbs = {str(name): raw[offsets[i] : offsets[i + 1]] for i, name in enumerate(data["thumb_ids"])}
                return cls(
                    data["embeddings"].astype(np.float32),
                    data["individual_ids"],
                    data["species"],
                    data["image_names"],
                    thumbs,
                    str(data["model_version"]),
                )
        except Exception as exc:
            # Not ``str(exc)`` and ``from None``: numpy's messages suggest allow_pickle, which would run
            # whatever code the file holds. Never pass that on.
            problem = f"missing {exc}" if isinstance(exc, KeyError) else type(exc).__name__
            raise ModelLoadError(
                f"{path.name} is not a readable catalogue ({problem}): it is damaged, cut short or another kind "
                "of file. Use the catalogue that came with the checkpoint (models/catalogue.npz), or rebuild it "
                "with `python -m whales_identify bundle --checkpoint CHECKPOINT`."
            ) from None
