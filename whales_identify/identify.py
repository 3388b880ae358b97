"""Identification: photo → embedding → catalogue search → typed answer.

The one entry point every front end uses (CLI, app, benchmarks, evaluation).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .checkpoint import load_checkpoint
from .config import (
    DEFAULT_CATALOGUE,
    DEFAULT_CHECKPOINT,
    DEFAULT_INFERENCE_CONFIG,
    NEW_INDIVIDUAL,
    NON_CETACEAN,
    InferenceConfig,
    SpeedConfig,
)
from .errors import WhaleIdError
from .gallery import Gallery
from .imaging import decode_image
from .model import WhaleNet
from .preprocess import to_tensor
from .results import Candidate, Identification

ImageSource = bytes | str | Path | Image.Image
SPEED = SpeedConfig()


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


@dataclass
class ModelOutput:
    """What one forward pass gives for one photo."""

    embedding: np.ndarray  # (D,) L2-normalised
    species_logits: np.ndarray  # (S,) from the species head


class Identifier:
    """A loaded model, a gallery and the tuned decision rules.

    Thread-safe: Streamlit sessions share one instance; the forward pass is
    serialised by a lock, everything else is pure numpy.
    """

    def __init__(self, model: WhaleNet, meta: dict[str, Any], gallery: Gallery, config: InferenceConfig) -> None:
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.meta = meta
        self.config = config
        self.species_names: list[str] = list(meta["species"])
        self._non_cetacean = self.species_names.index(NON_CETACEAN) if NON_CETACEAN in self.species_names else -1
        # ArcFace centres: one prototype per training individual (best sub-centre at query time).
        self._prototypes = model.arcface.prototypes().detach().numpy()
        self._prototype_index = {name: i for i, name in enumerate(meta["individuals"])}
        self._lock = threading.Lock()
        self.gallery = gallery
        self.set_gallery(gallery)

    # --- construction ------------------------------------------------------------
    @classmethod
    def load(
        cls,
        checkpoint: Path | str = DEFAULT_CHECKPOINT,
        catalogue: Path | str | Gallery | None = DEFAULT_CATALOGUE,
        inference_config: Path | str | InferenceConfig = DEFAULT_INFERENCE_CONFIG,
    ) -> Identifier:
        torch.set_num_threads(max(1, torch.get_num_threads()))
        model, meta = load_checkpoint(checkpoint)
        if isinstance(catalogue, Gallery):
            gallery = catalogue
        elif catalogue is None:
            gallery = Gallery.empty(model.config.embedding_dim)
        else:
            gallery = Gallery.load(catalogue)
        # Embeddings of another model live in another space: comparing them would give confident nonsense.
        version = str(meta.get("model_version", ""))
        if len(gallery) and gallery.model_version and version and gallery.model_version != version:
            from .errors import ModelLoadError  # local: this method is the only user

            where = "the catalogue given" if isinstance(catalogue, Gallery) else Path(catalogue).name
            raise ModelLoadError(
                f"{where} was built with model version {gallery.model_version}, but the checkpoint "
                f"{Path(checkpoint).name} is model version {version}: their embeddings cannot be compared. "
                "Use the catalogue that came with this checkpoint, or rebuild it with "
                "`python -m whales_identify bundle --checkpoint CHECKPOINT`."
            )
        config = (
            inference_config
            if isinstance(inference_config, InferenceConfig)
            else InferenceConfig.load(inference_config)
        )
        return cls(model, meta, gallery, config)

    @property
    def model_version(self) -> str:
        return str(self.meta.get("model_version", ""))

    def set_gallery(self, gallery: Gallery) -> None:
        """Swap the catalogue searched (e.g. after enrolment, or for evaluation)."""
        self.gallery = gallery
        proto_rows = [self._prototype_index.get(name, -1) for name in gallery.individuals]
        self._gallery_proto_rows = np.asarray(proto_rows, dtype=np.int64)

    # --- the model ---------------------------------------------------------------
    def prepare(self, source: ImageSource) -> Image.Image:
        """Decode any accepted input into an upright RGB photo (InvalidImageError otherwise)."""
        if isinstance(source, Image.Image):
            return source.convert("RGB")
        return decode_image(source)

    @torch.inference_mode()
    def forward(self, images: list[Image.Image]) -> list[ModelOutput]:
        """Embeddings and species-head probabilities for a batch of photos."""
        if not images:
            return []
        batch = torch.stack([to_tensor(image, self.model.config) for image in images])
        batch = batch.contiguous(memory_format=torch.channels_last)
        with self._lock:
            threads = torch.get_num_threads()
            if len(images) == 1:
                torch.set_num_threads(min(threads, SPEED.single_photo_threads))
            try:
                embeddings, species_logits = self.model(batch)
            finally:
                torch.set_num_threads(threads)
        return [ModelOutput(e, s) for e, s in zip(embeddings.numpy(), species_logits.numpy(), strict=True)]

    # --- the decision --------------------------------------------------------------
    def individual_scores(self, embedding: np.ndarray, gallery: Gallery | None = None) -> np.ndarray:
        """Blended score per gallery individual (aligned with ``gallery.individuals``)."""
        gallery = gallery or self.gallery
        sims = gallery.similarities(embedding)
        scores = gallery.best_per_individual(sims)
        rows = (
            self._gallery_proto_rows
            if gallery is self.gallery
            else np.asarray([self._prototype_index.get(name, -1) for name in gallery.individuals], dtype=np.int64)
        )
        has_proto = rows >= 0
        w = self.config.prototype_weight
        if w > 0 and has_proto.any():
            proto_sims = (self._prototypes[rows[has_proto]] @ embedding).max(axis=1)
            scores[has_proto] = (1 - w) * scores[has_proto] + w * proto_sims
        return scores

    def species_distribution(self, output: ModelOutput, gallery: Gallery | None = None) -> np.ndarray:
        """Species head blended with a similarity-weighted vote of the k nearest catalogue photos."""
        gallery = gallery or self.gallery
        head = _softmax(output.species_logits * self.config.species_temperature)
        w = self.config.species_knn_weight
        if w <= 0 or len(gallery) == 0:
            return head
        sims = gallery.similarities(output.embedding)
        k = min(self.config.species_knn_k, len(sims))
        nearest = np.argpartition(-sims, k - 1)[:k]
        votes = np.zeros_like(head)
        weights = _softmax(sims[nearest] * self.config.temperature)
        index = {name: i for i, name in enumerate(self.species_names)}
        for row, weight in zip(nearest, weights, strict=True):
            position = index.get(str(gallery.species[row]))
            if position is not None:
                votes[position] += weight
        if votes.sum() == 0:
            return head
        return (1 - w) * head + w * votes

    def decide(self, output: ModelOutput, gallery: Gallery | None = None) -> Identification:
        """Turn one forward pass into the answer, against ``gallery`` (default: the catalogue)."""
        gallery = gallery or self.gallery
        cfg = self.config
        species_p = self.species_distribution(output, gallery)
        p_non = float(species_p[self._non_cetacean]) if self._non_cetacean >= 0 else 0.0
        cetacean_p = species_p.copy()
        if self._non_cetacean >= 0:
            cetacean_p[self._non_cetacean] = 0.0
        species_index = int(np.argmax(cetacean_p))
        species = self.species_names[species_index]
        species_probability = float(species_p[species_index])
        rejected = p_non > cfg.reject_threshold
        reason = f"this does not look like a whale or dolphin (P = {p_non:.2f})" if rejected else ""

        scores = self.individual_scores(output.embedding, gallery)
        logits = np.append(scores, cfg.new_individual_threshold) * cfg.temperature
        probabilities = _softmax(logits)
        order = np.argsort(-scores)[: cfg.top_k]
        top = [
            Candidate(
                str(gallery.individuals[i]),
                gallery.individual_species[gallery.individuals[i]],
                float(probabilities[i]),
                float(scores[i]),
            )
            for i in order
        ]
        best = float(scores[order[0]]) if len(order) else -1.0
        return Identification(
            species=species if not rejected else NON_CETACEAN,
            species_probability=species_probability if not rejected else p_non,
            top5=top,
            new_individual=not rejected and best < cfg.new_individual_threshold,
            new_individual_probability=float(probabilities[-1]),
            rejected=rejected,
            rejection_reason=reason,
            embedding=output.embedding,
            species_probabilities={n: float(p) for n, p in zip(self.species_names, species_p, strict=True)},
        )

    # --- convenience -----------------------------------------------------------------
    def identify(self, source: ImageSource) -> Identification:
        """Identify one photo (path, bytes or PIL image)."""
        return self.decide(self.forward([self.prepare(source)])[0])

    def identify_many(
        self, sources: Iterable[tuple[str, ImageSource]], batch_size: int = 16
    ) -> Iterator[tuple[str, Identification | WhaleIdError]]:
        """Identify a stream of named photos in batches; a bad photo yields its error, the rest go on."""
        pending: list[tuple[str, Image.Image]] = []
        for name, source in sources:
            try:
                pending.append((name, self.prepare(source)))
            except WhaleIdError as exc:
                yield name, exc
                continue
            if len(pending) == batch_size:
                yield from self._flush(pending)
                pending = []
        yield from self._flush(pending)

    def _flush(self, pending: list[tuple[str, Image.Image]]) -> Iterator[tuple[str, Identification]]:
        outputs = self.forward([image for _, image in pending])
        for (name, _), output in zip(pending, outputs, strict=True):
            yield name, self.decide(output)


__all__ = ["NEW_INDIVIDUAL", "Identifier", "ModelOutput"]
