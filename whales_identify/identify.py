"""Identification: photo → embedding → catalogue search → typed answer.

The one entry point every front end uses (CLI, app, benchmarks, evaluation).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
from .cpu import single_threaded_blas
from .engines import Engine, TorchEngine, choose_engine, onnx_path_for
from .errors import WhaleIdError
from .gallery import Gallery
from .imaging import decode_image
from .model import WhaleNet
from .preprocess import to_array
from .results import Candidate, Identification

ImageSource = bytes | str | Path | Image.Image
CHUNKS_AHEAD_PER_WORKER = 2  # queued chunks per batch worker: enough to keep it busy, few enough to bound memory


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first (a partition, not a full sort: 200k individuals)."""
    if len(scores) <= k:
        return np.argsort(-scores, kind="stable")
    best = np.argpartition(-scores, k - 1)[:k]
    return best[np.argsort(-scores[best], kind="stable")]


@dataclass
class ModelOutput:
    """What one forward pass gives for one photo."""

    embedding: np.ndarray  # (D,) L2-normalised
    species_logits: np.ndarray  # (S,) from the species head


class Identifier:
    """A loaded model, a gallery and the tuned decision rules.

    Thread-safe: Streamlit sessions share one instance; the engines are safe to
    call from several threads, everything else is pure numpy.
    """

    def __init__(
        self,
        model: WhaleNet,
        meta: dict[str, Any],
        gallery: Gallery,
        config: InferenceConfig,
        engine: Engine | None = None,
        speed: SpeedConfig | None = None,
    ) -> None:
        self.model = model.eval()
        self.meta = meta
        self.config = config
        self.speed = speed or SpeedConfig()
        self.engine: Engine = engine or TorchEngine(model)
        self.species_names: list[str] = list(meta["species"])
        self._non_cetacean = self.species_names.index(NON_CETACEAN) if NON_CETACEAN in self.species_names else -1
        # ArcFace centres: one prototype per training individual (best sub-centre at query time).
        self._prototypes = model.arcface.prototypes().detach().numpy()
        self._prototype_index = {name: i for i, name in enumerate(meta["individuals"])}
        self.set_gallery(gallery)

    # --- construction ------------------------------------------------------------
    @classmethod
    def load(
        cls,
        checkpoint: Path | str = DEFAULT_CHECKPOINT,
        catalogue: Path | str | Gallery | None = DEFAULT_CATALOGUE,
        inference_config: Path | str | InferenceConfig = DEFAULT_INFERENCE_CONFIG,
        engine: str | None = None,
        speed: SpeedConfig | None = None,
    ) -> Identifier:
        """``engine``: ``auto`` (default; ``WHALE_ID_ENGINE`` overrides), ``onnx`` or ``torch``;
        ``speed``: threads and batching (default: this machine's cores)."""
        speed = speed or SpeedConfig.from_env()
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
        runner = choose_engine(engine or speed.engine, model, version, onnx_path_for(checkpoint), speed)
        return cls(model, meta, gallery, config, runner, speed)

    @property
    def model_version(self) -> str:
        return str(self.meta.get("model_version", ""))

    def set_gallery(self, gallery: Gallery) -> None:
        """Swap the catalogue searched (e.g. after enrolment, or for evaluation)."""
        proto_rows = [self._prototype_index.get(name, -1) for name in gallery.individuals]
        # One assignment, so a decision on another thread never pairs a gallery with another's rows.
        self._view = (gallery, np.asarray(proto_rows, dtype=np.int64))
        self.gallery = gallery

    # --- the model ---------------------------------------------------------------
    def prepare(self, source: ImageSource, long_side: int | None = None) -> Image.Image:
        """Decode any accepted input into an upright RGB photo (InvalidImageError otherwise).

        ``long_side``: reduce to about this while decoding (default: the display size, 1280 px).
        """
        if isinstance(source, Image.Image):
            return source.convert("RGB")
        return decode_image(source, long_side=long_side)

    def prepare_input(self, source: ImageSource) -> Image.Image:
        """Decode for the network only: straight to ``SpeedConfig.identify_long_side`` (JPEG draft
        mode), several times faster than the display-size decode for a phone photo."""
        return self.prepare(source, long_side=self.speed.identify_long_side)

    def forward(self, images: list[Image.Image], threads: int | None = None) -> list[ModelOutput]:
        """Embeddings and species-head logits for a batch of photos.

        ``threads``: CPU threads for this pass (default: the engine's best for one photo).
        """
        if not images:
            return []
        batch = np.stack([to_array(image, self.model.config) for image in images])
        if threads is None and len(images) == 1 and self.engine.name == "torch":
            threads = self.speed.single_photo_threads
        embeddings, species_logits = self.engine.run(batch, threads)
        return [ModelOutput(e, s) for e, s in zip(embeddings, species_logits, strict=True)]

    # --- the decision --------------------------------------------------------------
    def individual_scores(
        self, embedding: np.ndarray, gallery: Gallery | None = None, sims: np.ndarray | None = None
    ) -> np.ndarray:
        """Blended score per gallery individual (aligned with ``gallery.individuals``).

        ``sims``: the embedding's cosine to every gallery photo, when the caller has it already.
        """
        gallery = gallery or self.gallery
        sims = gallery.similarities(embedding) if sims is None else sims
        scores = gallery.best_per_individual(sims)
        current, current_rows = self._view
        rows = (
            current_rows
            if gallery is current
            else np.asarray([self._prototype_index.get(name, -1) for name in gallery.individuals], dtype=np.int64)
        )
        has_proto = rows >= 0
        w = self.config.prototype_weight
        if w > 0 and has_proto.any():
            proto_sims = (self._prototypes[rows[has_proto]] @ embedding).max(axis=1)
            scores[has_proto] = (1 - w) * scores[has_proto] + w * proto_sims
        return scores

    def species_distribution(
        self, output: ModelOutput, gallery: Gallery | None = None, sims: np.ndarray | None = None
    ) -> np.ndarray:
        """Species head blended with a similarity-weighted vote of the k nearest catalogue photos."""
        gallery = gallery or self.gallery
        head = _softmax(output.species_logits * self.config.species_temperature)
        w = self.config.species_knn_weight
        if w <= 0 or len(gallery) == 0:
            return head
        sims = gallery.similarities(output.embedding) if sims is None else sims
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
        sims = gallery.similarities(output.embedding)  # the one pass over the catalogue
        species_p = self.species_distribution(output, gallery, sims)
        p_non = float(species_p[self._non_cetacean]) if self._non_cetacean >= 0 else 0.0
        cetacean_p = species_p.copy()
        if self._non_cetacean >= 0:
            cetacean_p[self._non_cetacean] = 0.0
        species_index = int(np.argmax(cetacean_p))
        species = self.species_names[species_index]
        species_probability = float(species_p[species_index])
        rejected = p_non > cfg.reject_threshold
        reason = f"this does not look like a whale or dolphin (P = {p_non:.2f})" if rejected else ""

        scores = self.individual_scores(output.embedding, gallery, sims)
        logits = np.append(scores, cfg.new_individual_threshold) * cfg.temperature
        probabilities = _softmax(logits)
        order = _top_k(scores, cfg.top_k)
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
        return self.decide(self.forward([self.prepare_input(source)])[0])

    def identify_many(
        self, sources: Iterable[tuple[str, ImageSource]], batch_size: int | None = None
    ) -> Iterator[tuple[str, Identification | WhaleIdError]]:
        """Identify a stream of named photos, in input order; a bad photo yields its error, the rest go on.

        Chunks of ``batch_size`` photos are decoded, embedded and decided by
        ``SpeedConfig.batch_workers`` threads side by side (decoding and ONNX Runtime
        release the GIL), with a bounded number of chunks in flight, so memory stays
        flat however long the stream is.
        """
        chunk_size, workers, threads = self.batch_plan(batch_size)
        in_flight: deque[Future] = deque()
        chunk: list[tuple[str, ImageSource]] = []
        # numpy's BLAS stays on one thread for the whole batch (toggling it per chunk halved the
        # throughput); closing the generator early, or an error, leaves the ``with`` and lifts it.
        with single_threaded_blas():
            pool = ThreadPoolExecutor(workers, thread_name_prefix="whales-identify")
            try:
                for item in sources:
                    chunk.append(item)
                    if len(chunk) == chunk_size:
                        in_flight.append(pool.submit(self._identify_chunk, chunk, threads))
                        chunk = []
                        while len(in_flight) > CHUNKS_AHEAD_PER_WORKER * workers:
                            yield from in_flight.popleft().result()
                if chunk:
                    in_flight.append(pool.submit(self._identify_chunk, chunk, threads))
                while in_flight:
                    yield from in_flight.popleft().result()
            finally:  # also when the caller stops early or an error escapes: queued chunks are dropped
                pool.shutdown(wait=True, cancel_futures=True)

    def batch_plan(self, batch_size: int | None = None) -> tuple[int, int, int | None]:
        """Photos per forward pass, worker threads, and engine threads per pass for a batch."""
        chunk_size, workers = max(1, batch_size or self.speed.batch_chunk), max(1, self.speed.batch_workers)
        # ONNX Runtime: one single-threaded session per worker beats one session on all cores.
        threads = 1 if self.engine.name == "onnx" and workers > 1 else None
        return chunk_size, workers, threads

    def max_photos_in_flight(self, batch_size: int | None = None) -> int:
        """The most photos ``identify_many`` holds at once: the chunks queued or running, plus
        the one being gathered and the one being handed out. Memory is bounded by this."""
        chunk_size, workers, _ = self.batch_plan(batch_size)
        return (CHUNKS_AHEAD_PER_WORKER * workers + 2) * chunk_size

    def _identify_chunk(
        self, chunk: list[tuple[str, ImageSource]], threads: int | None
    ) -> list[tuple[str, Identification | WhaleIdError]]:
        """One chunk, start to finish, on a worker thread."""
        outcomes: list[Identification | WhaleIdError | None] = []
        images: list[Image.Image] = []
        positions: list[int] = []
        for _, source in chunk:
            try:
                images.append(self.prepare_input(source))
                positions.append(len(outcomes))
                outcomes.append(None)
            except WhaleIdError as exc:
                outcomes.append(exc)
        for position, output in zip(positions, self.forward(images, threads=threads), strict=True):
            outcomes[position] = self.decide(output)
        return [(name, outcome) for (name, _), outcome in zip(chunk, outcomes, strict=True)]  # type: ignore[misc]


__all__ = ["NEW_INDIVIDUAL", "Identifier", "ModelOutput"]
