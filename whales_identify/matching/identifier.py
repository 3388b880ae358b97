"""Identification: photo → embedding → catalogue search → typed answer.

The one entry point every front end uses (CLI, app, benchmarks, evaluation). A
thin wrapper: the network runs in an engine (``model/``), the rules are pure
functions (``matching/rules.py``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from whales_identify.config import (
    DEFAULT_CATALOGUE,
    DEFAULT_CHECKPOINT,
    DEFAULT_INFERENCE_CONFIG,
    InferenceConfig,
    SpeedConfig,
    VerifyConfig,
)
from whales_identify.errors import ModelLoadError, WhaleIdError
from whales_identify.inputs.content import blank_reason
from whales_identify.inputs.imaging import decode_image
from whales_identify.matching import rules
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.results import Evidence, Identification
from whales_identify.matching.verify import KeypointFile, KeypointLookup, Keypoints, best_match, describe_query
from whales_identify.model.engines import Engine, open_network
from whales_identify.model.info import NetworkInfo
from whales_identify.model.localiser import Localiser, grow_box, load_localiser
from whales_identify.model.preprocess import to_array
from whales_identify.model.threads import single_threaded_blas

log = logging.getLogger(__name__)
ImageSource = bytes | str | Path | Image.Image
CHUNKS_AHEAD_PER_WORKER = 2  # queued chunks per batch worker: enough to keep it busy, few enough to bound memory


@dataclass
class ModelOutput:
    """What one forward pass gives for one photo."""

    embedding: np.ndarray  # (D,) L2-normalised
    species_logits: np.ndarray  # (S,) from the species head
    box: tuple[int, int, int, int] | None = None  # the crop the network saw (None: the whole photo)
    photo_size: tuple[int, int] | None = None  # (width, height) of the photo the box is in
    objectness: float | None = None  # the localiser's P(an animal is in the photo); None: no localiser


class Identifier:
    """A loaded model, a gallery and the tuned decision rules.

    Thread-safe: Streamlit sessions share one instance; the engines are safe to
    call from several threads, everything else is pure numpy.
    """

    def __init__(
        self,
        network: NetworkInfo,
        gallery: Gallery,
        config: InferenceConfig,
        engine: Engine,
        speed: SpeedConfig | None = None,
        localiser: Localiser | None = None,
        verify: VerifyConfig | None = None,
        keypoints: Iterable[KeypointLookup] = (),
    ) -> None:
        self.network = network
        # The animal's box, when the network was trained on crops around it (else the whole photo).
        self.localiser = localiser if network.config.crop_to_animal else None
        self.config = config
        self.speed = speed or SpeedConfig()
        self.engine = engine
        self.verify_config = verify or VerifyConfig()
        # Where catalogue photos' keypoints are found (bundled file, user catalogue), asked in turn.
        self.keypoint_sources: list[KeypointLookup] = list(keypoints)
        self.species_names: list[str] = list(network.species)
        self._prototype_index = {name: i for i, name in enumerate(network.individuals)}
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
        verify: VerifyConfig | None = None,
    ) -> Identifier:
        """``engine``: ``auto`` (default; ``WHALE_ID_ENGINE`` overrides), ``onnx`` or ``torch``;
        ``speed``: threads and batching (default: this machine's cores); ``verify``: the verification
        stage (its keypoint file, read on first use, is searched with the bundled catalogue)."""
        speed = speed or SpeedConfig.from_env()
        runner, network = open_network(engine or speed.engine, checkpoint, speed)
        if isinstance(catalogue, Gallery):
            gallery = catalogue
        elif catalogue is None:
            gallery = Gallery.empty(network.config.embedding_dim)
        else:
            gallery = Gallery.load(catalogue)
        # Embeddings of another model live in another space: comparing them would give confident nonsense.
        version = network.model_version
        if len(gallery) and gallery.model_version and version and gallery.model_version != version:
            where = "the catalogue given" if isinstance(catalogue, Gallery) else Path(str(catalogue)).name
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
        localiser = load_localiser() if network.config.crop_to_animal else None
        if network.config.crop_to_animal and localiser is None:
            log.warning("this model looks at the animal's box but no localiser is installed: whole photos instead")
        verify = verify or VerifyConfig()
        keypoints = [KeypointFile(verify.keypoints_path)] if catalogue is not None and verify.keypoints_path else []
        return cls(network, gallery, config, runner, speed, localiser, verify, keypoints)

    @property
    def model_version(self) -> str:
        return self.network.model_version

    def set_gallery(self, gallery: Gallery) -> None:
        """Swap the catalogue searched (e.g. after enrolment, or for evaluation)."""
        # One assignment, so a decision on another thread never pairs a gallery with another's rows.
        self._view = (gallery, self._prototype_rows(gallery))
        self.gallery = gallery

    def _prototype_rows(self, gallery: Gallery) -> np.ndarray:
        """For each gallery individual, its row among the network's prototypes (-1: not trained on)."""
        return np.asarray([self._prototype_index.get(name, -1) for name in gallery.individuals], dtype=np.int64)

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

    def network_view(self, image: Image.Image) -> tuple[Image.Image, tuple[int, int, int, int] | None, float | None]:
        """What the network looks at: the crop around the animal (the localiser's box grown by the
        model's margin), or the whole photo when there is no localiser or no animal was found;
        with the localiser's P(animal) (None without a localiser)."""
        if self.localiser is None:
            return image, None, None
        location = self.localiser.locate(image)
        if location.box is None:
            return image, None, location.objectness
        crop = grow_box(location.box, self.network.config.crop_margin, *image.size)
        return image.crop(crop), crop, location.objectness

    def forward(self, images: list[Image.Image], threads: int | None = None) -> list[ModelOutput]:
        """Embeddings and species-head logits for a batch of photos (each seen as ``network_view``).

        ``threads``: CPU threads for this pass (default: the engine's best for one photo).
        """
        if not images:
            return []
        views = [self.network_view(image) for image in images]
        batch = np.stack([to_array(view, self.network.config) for view, _, _ in views])
        if threads is None and len(images) == 1 and self.engine.name == "torch":
            threads = self.speed.single_photo_threads
        embeddings, species_logits = self.engine.run(batch, threads)
        return [
            ModelOutput(e, s, box, image.size, objectness)
            for e, s, (_, box, objectness), image in zip(embeddings, species_logits, views, images, strict=True)
        ]

    # --- the decision --------------------------------------------------------------
    def scores(self, output: ModelOutput, gallery: Gallery | None = None) -> rules.QueryScores:
        """One pass over the catalogue: what the decision rules look at for this photo."""
        current, current_rows = self._view
        gallery = current if gallery is None else gallery
        rows = current_rows if gallery is current else self._prototype_rows(gallery)
        return rules.QueryScores(
            photo_similarities=gallery.similarities(output.embedding),
            prototype_similarities=rules.prototype_similarities(output.embedding, self.network.prototypes, rows),
            species_logits=output.species_logits,
            embedding=output.embedding,
        )

    def decide(
        self,
        output: ModelOutput,
        gallery: Gallery | None = None,
        config: InferenceConfig | None = None,
        photo: Image.Image | None = None,
    ) -> Identification:
        """Turn one forward pass into the answer, against ``gallery`` (default: the catalogue)
        under ``config`` (default: the tuned rules). ``photo`` (the decoded photo of ``output``):
        verify the shortlist by keypoints (``verify_shortlist``); None: the global scores alone."""
        if gallery is None:
            gallery, _ = self._view  # one read: the gallery and its prototype rows stay a pair
        config = config or self.config
        scores = self.scores(output, gallery)
        result = rules.decide(gallery, scores, self.species_names, config)
        if self.localiser is not None:
            result = rules.without_animal(result, output.objectness, self.localiser.config)
        if photo is not None:
            result = self.verify_shortlist(photo, result, scores, gallery, config)
        return replace(result, box=output.box, photo_size=output.photo_size)

    # --- verification ------------------------------------------------------------------
    def keypoints_for(self, names: list[str]) -> dict[str, bytes]:
        """Stored keypoint records of these catalogue photos (those that have them)."""
        found: dict[str, bytes] = {}
        for source in self.keypoint_sources:
            missing = [n for n in names if n not in found]
            if not missing:
                break
            found.update(source(missing))
        return found

    def verify_shortlist(
        self,
        photo: Image.Image,
        result: Identification,
        scores: rules.QueryScores,
        gallery: Gallery,
        config: InferenceConfig,
    ) -> Identification:
        """The answer re-decided with keypoint evidence (``matching/verify.py``) for the global model's top
        ``VerifyConfig.candidates`` individuals: each one's photos that have keypoints, most similar
        (cosine) first, ``photos_per_candidate`` of them, matched against the query photo's keypoints;
        the best photo's inlier count is fused with the individual's score. Unchanged when the photo is
        rejected, of a species not verified, or when no candidate photo has keypoints."""
        vc = self.verify_config
        if result.rejected or result.species not in vc.species or not self.keypoint_sources:
            return result
        individual = rules.individual_scores(gallery, scores, config)
        shortlist = rules.top_k(individual, vc.candidates)
        ranked = []
        for position in shortlist:
            rows = gallery.rows_of(int(position))
            ranked.append(rows[np.argsort(-scores.photo_similarities[rows], kind="stable")])
        names = [str(gallery.image_names[r]) for rows in ranked for r in rows]
        stored = self.keypoints_for(names)
        if not stored:
            return result
        with single_threaded_blas():  # many small products: one BLAS thread is 2-3x faster than several
            return self._verified(photo, result, scores, gallery, config, individual, shortlist, ranked, stored)

    def _verified(
        self,
        photo: Image.Image,
        result: Identification,
        scores: rules.QueryScores,
        gallery: Gallery,
        config: InferenceConfig,
        individual: np.ndarray,
        shortlist: np.ndarray,
        ranked: list[np.ndarray],
        stored: dict[str, bytes],
    ) -> Identification:
        vc = self.verify_config
        query = describe_query(photo, vc)
        sx, sy = photo.size[0] / query.size[0], photo.size[1] / query.size[1]
        bonus = np.zeros(len(individual), np.float32)
        verified = np.zeros(len(individual), bool)
        evidence: list[tuple[float, Evidence]] = []
        for position, rows in zip(shortlist, ranked, strict=True):
            chosen: list[tuple[str, Keypoints]] = []
            for row in rows:
                name = str(gallery.image_names[row])
                if name in stored:
                    try:
                        chosen.append((name, Keypoints.from_bytes(stored[name])))
                    except ValueError:
                        log.warning("damaged keypoints for %s: skipped", name)
                if len(chosen) == vc.photos_per_candidate:
                    break
            if not chosen:
                continue
            best, found = best_match(query, [k for _, k in chosen], vc)
            name, matched = chosen[best]
            bonus[position] = float(rules.verification_bonus(found.inliers, vc))
            verified[position] = found.inliers >= vc.verified_inliers
            points = (
                query.xy[found.pairs[:, 0]] * np.asarray([sx, sy], np.float32)
                if found.inliers
                else np.zeros((0, 2), np.float32)
            )
            evidence.append(
                (
                    float(individual[position] + bonus[position]),
                    Evidence(
                        individual_id=str(gallery.individuals[position]),
                        inliers=found.inliers,
                        verified=bool(verified[position]),
                        photo=photo_reference(name),
                        query_points=points.astype(np.float32),
                        photo_points=matched.xy[found.pairs[:, 1]].astype(np.float32)
                        if found.inliers
                        else np.zeros((0, 2), np.float32),
                        photo_size=matched.size,
                    ),
                )
            )
        decided = rules.decide(gallery, scores, self.species_names, config, rules.Verified(bonus, verified))
        ordered = tuple(e for _, e in sorted(evidence, key=lambda item: -item[0]))
        return replace(decided, evidence=ordered)

    # --- convenience -----------------------------------------------------------------
    def identify(
        self, source: ImageSource, verify: bool = True, config: InferenceConfig | None = None
    ) -> Identification:
        """Identify one photo (path, bytes or PIL image). ``verify``: check the shortlist by keypoints
        (for the species ``VerifyConfig.species``; about 0.15 s more a photo). ``config``: other rules for
        this call (e.g. a user's stated ``catalogued_share``); default the tuned ones."""
        return self.answer([self.prepare_input(source)], verify=verify, config=config)[0]

    def answer(
        self,
        images: list[Image.Image],
        threads: int | None = None,
        verify: bool = False,
        config: InferenceConfig | None = None,
    ) -> list[Identification]:
        """Decoded photos → answers. A frame with nothing in it (uniform, smooth, noise) is refused
        by the content gate before the network, which would answer it with confident nonsense.
        ``verify``: the verification stage for each (``verify_shortlist``)."""
        blank = [blank_reason(image) for image in images]
        kept = [image for image, reason in zip(images, blank, strict=True) if not reason]
        outputs = iter(zip(self.forward(kept, threads), kept, strict=True))
        answers = []
        for reason in blank:
            if reason:
                answers.append(rules.nothing_to_identify(reason))
                continue
            output, image = next(outputs)
            answers.append(self.decide(output, config=config, photo=image if verify else None))
        return answers

    def identify_many(
        self,
        sources: Iterable[tuple[str, ImageSource]],
        batch_size: int | None = None,
        verify: bool = False,
        config: InferenceConfig | None = None,
    ) -> Iterator[tuple[str, Identification | WhaleIdError]]:
        """Identify a stream of named photos, in input order; a bad photo yields its error, the rest go on.

        Chunks of ``batch_size`` photos are decoded, embedded and decided by
        ``SpeedConfig.batch_workers`` threads side by side (decoding and ONNX Runtime
        release the GIL), with a bounded number of chunks in flight, so memory stays
        flat however long the stream is. ``verify``: the verification stage for each photo (off by
        default: it costs about 0.15 s a right-whale photo, the fast path a few milliseconds). ``config``:
        other rules for every photo of this batch (default: the tuned ones).
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
                        in_flight.append(pool.submit(self._identify_chunk, chunk, threads, verify, config))
                        chunk = []
                        while len(in_flight) > CHUNKS_AHEAD_PER_WORKER * workers:
                            yield from in_flight.popleft().result()
                if chunk:
                    in_flight.append(pool.submit(self._identify_chunk, chunk, threads, verify, config))
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
        self,
        chunk: list[tuple[str, ImageSource]],
        threads: int | None,
        verify: bool = False,
        config: InferenceConfig | None = None,
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
        answers = self.answer(images, threads=threads, verify=verify, config=config)
        for position, answer in zip(positions, answers, strict=True):
            outcomes[position] = answer
        return [(name, outcome) for (name, _), outcome in zip(chunk, outcomes, strict=True)]  # type: ignore[misc]


def photo_reference(name: str) -> str:
    """A catalogue photo as ``Evidence.photo`` names it: the bundled image name, or ``user:<image id>``
    for the user's photos (their gallery names are ``user/<image id>/<file name>``)."""
    if name.startswith("user/"):
        return "user:" + name.split("/", 2)[1]
    return name


__all__ = ["Identifier", "ImageSource", "ModelOutput", "photo_reference"]
