"""All tunable numbers of the project, in one place.

Model/training settings travel inside each checkpoint (so a checkpoint is
reproducible on its own); inference settings (thresholds, blend weights,
temperatures) are tuned on held-out data and saved beside the checkpoint in
``models/inference.yaml``.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
MODELS_DIR = REPO_DIR / "models"
DEFAULT_CHECKPOINT = MODELS_DIR / "whale_id.pt"
DEFAULT_INFERENCE_CONFIG = MODELS_DIR / "inference.yaml"
DEFAULT_CATALOGUE = MODELS_DIR / "catalogue.npz"
DEFAULT_SPECIES_MAP = MODELS_DIR / "species_map.yaml"
DEFAULT_KEYPOINTS = MODELS_DIR / "keypoints.npz"  # the bundled catalogue's verification keypoints
DEFAULT_DATA_ROOT = REPO_DIR.parent / "shared" / "data"

NON_CETACEAN = "non_cetacean"
NEW_INDIVIDUAL = "new_individual"
# Every environment variable the project reads starts with this (WHALE_ID_ENGINE, WHALE_ID_HOME, ...).
ENV_PREFIX = "WHALE_ID_"
# The catalogue folder's variable before ENV_PREFIX was the rule; still honoured so existing set-ups keep working.
LEGACY_HOME_ENV = "WHALES_ID_HOME"
# The image files accepted everywhere: uploads, folders, ZIP members (the decoder checks the bytes).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif")
# A batch's summary names this many of its failed files, and of its skipped ones (the table has them all).
SUMMARY_NAMED_FILES = 10


def env(name: str) -> str | None:
    """``$WHALE_ID_<NAME>``, or None when unset or empty."""
    return os.environ.get(ENV_PREFIX + name.upper()) or None


def is_cetacean(species: str) -> bool:
    """False for the negative class: photos that show no whale or dolphin."""
    return species != NON_CETACEAN


@dataclass
class ModelConfig:
    """Architecture: backbone → GeM → BN embedding neck → (ArcFace, species) heads."""

    backbone: str = "tf_efficientnet_lite0"
    image_size: int = 224
    embedding_dim: int = 512
    gem_p: float = 3.0
    # Normalisation of the EfficientNet-Lite ImageNet weights (TF port): mean = std = 0.5.
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    arcface_scale: float = 30.0
    arcface_margin: float = 0.3
    arcface_subcenters: int = 2
    # Happywhale-winner trick: individuals with few photos get a larger margin.
    dynamic_margin: bool = True
    dynamic_margin_min: float = 0.2
    dynamic_margin_max: float = 0.45
    # What the network sees: the whole photo, or the square around the animal's box (the localiser's at
    # inference) grown by ``crop_margin`` of its longer side on each side. Older checkpoints: whole photo.
    crop_to_animal: bool = False
    crop_margin: float = 0.3  # square crops; tight ones lose the fin's tip (measured: species 0.96 → 0.85)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
        return cls(**values)


@dataclass
class TrainConfig:
    """Training recipe. Early backbone stages are frozen and their outputs cached
    for several augmented views, so training fits a 2-core CPU."""

    data_root: str = str(DEFAULT_DATA_ROOT)
    out: str = str(DEFAULT_CHECKPOINT)
    seed: int = 17
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1.5e-3
    head_lr_mult: float = 10.0
    weight_decay: float = 1e-2
    # CPU: stem + blocks[0:4] frozen, their outputs cached for ``views`` views of every photo.
    # 0: the whole backbone trains on views made afresh every epoch (a GPU run: scripts/train_gpu.sh).
    frozen_stages: int = 4
    views: int = 5  # cached views per photo: 1 clean + (views - 1) field-augmented
    species_loss_weight: float = 0.5
    label_smoothing: float = 0.1
    # Species are learnt balanced: a photo is drawn with weight count(its species) ** -species_balance
    # (0: as they come, 1: every species equally often), and the loss weighs species the same way.
    species_balance: float = 0.5
    split: str = "individual"  # "individual": no photo of a validation/test animal is trained on; "photo"
    background_patches: int = 2  # hard negatives (sea, sky) cut beside the animal in each boxed photo
    # Species (comma-separated) whose views are the gentle ``training/views.ALIGNED`` ones, not the field
    # effects (distance, blur, haze): aligned close-ups whose fine pattern is the identity. "": none.
    gentle_species: str = ""
    decode_long_side: int = 640  # photos are decoded as for identification, then cropped
    resume: bool = True  # continue from ``out``.resume.pt, written after every epoch, when it matches
    stop_after: int = 0  # >0: stop after this many epochs in this run (the same command continues later)
    workers: int = 2
    device: str = "auto"
    limit: int = 0  # >0: use only this many training images (smoke tests)


@dataclass
class InferenceConfig:
    """Decision rules, tuned on the validation split by ``whales_identify tune``."""

    # score(individual) = (1 - w) * best image cosine + w * ArcFace prototype cosine
    prototype_weight: float = 0.3
    # Answer new_individual when the best individual score is below this.
    new_individual_threshold: float = 0.45
    # Probability = softmax(score * temperature) over candidates + new_individual.
    temperature: float = 20.0
    # Species: blend of the species head and the catalogue's k nearest photos.
    species_knn_weight: float = 0.5
    species_knn_k: int = 5
    # Species probabilities = softmax(logits * this): calibrates a head trained with smoothing and class weights.
    species_temperature: float = 1.0
    # Reject when P(non_cetacean) exceeds this.
    reject_threshold: float = 0.5
    top_k: int = 5
    # When the verification stage ran (matching/verify.py), the fused scores (cosine + keypoint evidence)
    # are on another scale: their own new_individual threshold and temperature, tuned on validation by
    # benchmarks/bench_verify_identify.py. The defaults are its values for the shipped fusion, so that
    # ``bundle`` (which re-tunes the global scores only) keeps them in models/inference.yaml.
    verify_new_individual_threshold: float = 0.62
    verify_temperature: float = 20.0
    # The single answer's probability, recalibrated (top-label Platt scaling, ``rules.calibrate_answer``):
    # logit p' = slope * logit p + offset, one map for answers that name an individual and one for
    # new_individual (they err differently: a named individual at "70 %" was right about a third of the
    # time), fitted on validation with catalogued and unseen animals weighing the same. 1 and 0: the
    # softmax as it is. ``bundle`` fits the first two maps (tune step 6); the fused (verified) scores' maps are
    # fitted with the fusion by benchmarks/bench_verify_identify.py, and default to its values for the
    # shipped fusion so that a re-bundle keeps them.
    individual_calibration_slope: float = 1.0
    individual_calibration_offset: float = 0.0
    new_calibration_slope: float = 1.0
    new_calibration_offset: float = 0.0
    verify_individual_calibration_slope: float = 0.7941
    verify_individual_calibration_offset: float = -0.6404
    verify_new_calibration_slope: float = 0.6555
    verify_new_calibration_offset: float = 0.4876
    # The share of photos expected to show an animal already in the catalogue: the prior that the
    # probabilities assume (0.5, as calibrated: half and half). Whether "new individual, 80 %" is right
    # eight times in ten depends on it: a population re-sighted year after year calls for more (0.9).
    catalogued_share: float = 0.5
    tuned_on: str = ""  # description of the data the values were tuned on

    @classmethod
    def load(cls, path: Path | str = DEFAULT_INFERENCE_CONFIG) -> InferenceConfig:
        """The tuned rules from ``path`` (the defaults when it does not exist); a ``ModelLoadError`` that
        says what is wrong when it cannot be read, is not YAML, or holds a value of the wrong kind."""
        from whales_identify.errors import ModelLoadError

        path = Path(path)
        if not path.exists():
            return cls()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ModelLoadError(f"{path.name} is not valid YAML{where}: {exc.problem or exc.context}") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ModelLoadError(f"{path.name} cannot be read ({type(exc).__name__}: {exc})") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ModelLoadError(
                f"{path.name} should map each setting to its value (e.g. 'temperature: 20.0'), "
                f"not hold a {type(data).__name__}"
            )
        values = {}
        for f in fields(cls):
            if f.name in data:
                values[f.name] = _checked_setting(path.name, f.name, data[f.name], getattr(cls, f.name))
        share = values.get("catalogued_share", cls.catalogued_share)
        if not 0.0 < share < 1.0:
            raise ModelLoadError(f"{path.name}: catalogued_share should be a share between 0 and 1, not {share!r}")
        return cls(**values)

    def save(self, path: Path | str = DEFAULT_INFERENCE_CONFIG) -> None:
        Path(path).write_text(yaml.safe_dump(asdict(self), sort_keys=False))


def _checked_setting(file: str, name: str, value: Any, default: Any) -> Any:
    """``value`` if it is of the kind ``default`` is (a number, a whole number, text), else ModelLoadError."""
    from whales_identify.errors import ModelLoadError

    if isinstance(default, str):
        if not isinstance(value, str):
            raise ModelLoadError(f"{file}: {name} should be text, not {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelLoadError(f"{file}: {name} should be a whole number, not {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ModelLoadError(f"{file}: {name} should be a number, not {value!r}")
        if not math.isfinite(value):
            raise ModelLoadError(f"{file}: {name} should be a finite number, not {value!r}")
        return float(value)
    return value


def available_cores() -> int:
    """CPU cores this process may use (a container's or a Ray worker's share, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class SpeedConfig:
    """How the forward pass uses this CPU. Measured on 2 cores (docs/SPEED.md): PyTorch runs one
    photo fastest on one thread (27 ms; 45 ms on two); ONNX Runtime runs one photo in about 8 ms on
    two threads, and batches fastest as two single-threaded workers side by side on small chunks."""

    engine: str = "auto"  # auto (ONNX Runtime when its export matches the checkpoint), onnx, torch
    single_photo_threads: int = 1  # PyTorch, one photo
    # ONNX Runtime, one photo: all cores up to 4 (the gain flattens; measured only on 2 cores).
    onnx_threads: int = field(default_factory=lambda: min(available_cores(), 4))
    # Photos decoded and run in parallel by this many single-threaded workers: one per core.
    batch_workers: int = field(default_factory=available_cores)
    # Photos per forward pass in the batch pipeline. One is as fast as four on a single-threaded
    # session, and ONNX Runtime's memory arena grows with the batch: a 500-photo batch peaked at
    # 605 MB with 1, 758 MB with 4 and 1.4 GB with 16.
    batch_chunk: int = 1
    # A photo being identified is decoded straight to about this long side (JPEG draft mode): a 12 MP
    # phone JPEG decodes in 13 ms instead of 54 ms. Held-out accuracy (bench_accuracy) was unchanged
    # at 640 and 896 px and lost 2 of 43 Happywhale-style top-1 answers at 448 px.
    identify_long_side: int = 640

    @classmethod
    def from_env(cls) -> SpeedConfig:
        """``WHALE_ID_ENGINE`` picks the engine (e.g. ``torch`` to compare with the reference)."""
        speed = cls()
        speed.engine = env("ENGINE") or speed.engine
        return speed


@dataclass
class ImageLimits:
    """Limits on what the decoder accepts: bad input gets a clear message."""

    max_file_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 120_000_000  # beyond this Pillow treats the file as a bomb
    # Memory one decode may take (peak RSS growth, measured: docs/RELIABILITY.md). Worked out from the
    # header for every format (decoded pixels × bytes per pixel of the decoded mode, plus the codec's own
    # buffers) and refused above it before any pixel is read. A JPEG is reduced while decoding, so a
    # baseline JPEG of any size up to ``max_pixels`` costs under 60 MB; 256 MiB still takes a 48 MP
    # progressive JPEG, a 50 MP RGB (120 MP palette or greyscale) PNG, TIFF up to 27 MP in one strip and
    # a 12 MP WebP (libwebp holds four copies).
    max_decode_bytes: int = 256 * 1024 * 1024
    decode_long_side: int = 1280  # images are reduced to this while decoding
    min_side: int = 16


@dataclass
class ArchiveLimits:
    """Limits checked on a ZIP's directory before anything is extracted."""

    max_members: int = 5_000
    # All members together, from the directory and again as bytes are read (a directory can lie). 2 GiB is
    # 5,000 photos of 400 kB, or 200 of 10 MB; 4,000 members of 1 MiB padded with random bytes (which pass
    # the ratio checks) are refused.
    max_total_uncompressed: int = 2 * 1024**3
    max_member_uncompressed: int = 60 * 1024 * 1024
    max_compression_ratio: float = 200.0
    image_suffixes: tuple[str, ...] = IMAGE_SUFFIXES


@dataclass
class CatalogConfig:
    """The user's own catalogue (SQLite): where it lives, what each photo keeps, how exports are checked."""

    home_env: str = ENV_PREFIX + "HOME"  # folder override for the database (LEGACY_HOME_ENV is honoured too)
    default_home: str = "~/.local/share/whales_identify"
    file_name: str = "catalog.sqlite3"
    busy_timeout_ms: int = 30_000  # a second writer waits this long for the lock instead of failing
    # stored photo (the whole photo, reduced): enough to recompute embeddings when the model changes, and shown
    # at >= 512 px when a reviewer compares a new photo with it (catalog/photos.py)
    crop_long_side: int = 768
    crop_quality: int = 90
    thumbnail_size: int = 128
    thumbnail_quality: int = 80
    embed_batch_size: int = 4  # photos per forward pass while enrolling (memory grows with it; see SpeedConfig)
    export_format: str = "whales_identify-catalog-export"
    export_format_version: int = 1
    max_import_bytes: int = 8 * 1024**3  # uncompressed size of an export ZIP accepted for import
    max_csv_bytes: int = 16 * 1024 * 1024  # an enrolment or export CSV larger than this is refused


@dataclass(frozen=True)
class ExchangeLimits:
    """What a catalogue export may hold before it is imported: checked on the ZIP's directory first,
    then again while each member is streamed (never more than its declared size is read)."""

    max_members: int = 600_000  # two photos a row: about 300,000 catalogue photos
    max_manifest_bytes: int = 64 * 1024 * 1024  # one checksum per member
    max_table_bytes: int = 64 * 1024 * 1024  # individuals.csv, images.csv, audit_log.csv, each
    max_embeddings_bytes: int = 1024**3  # each embeddings/<n>.npy (300,000 × 512 float32 is 600 MB)
    max_embedding_dim: int = 4096  # a model version this catalogue has no rows of (this project's is 512)
    max_image_bytes: int = 8 * 1024 * 1024  # each thumbnail or crop (a stored crop is about 100-200 kB)
    max_image_side: int = 4096  # px; stored crops are 768 px, thumbnails 128 (re-embedding decodes crops whole)
    max_compression_ratio: float = 200.0  # each member over 1 MiB, and the whole export
    max_text_chars: int = 10_000  # any one text cell (notes, tags, a file name)
    norm_tolerance: float = 1e-3  # an embedding is unit length: |‖e‖ − 1| ≤ this
    # The total uncompressed size is CatalogConfig.max_import_bytes.


# Individual ids: ASCII letters and digits, with _ . : ( ) anywhere and - and space inside; 1–64 characters.
# Every id of the bundled catalogue fits (hex, UUIDs, 'whale_53889', 'CRC-20448', 'unknown(not 1056)').
# Not allowed: a leading '-' or space (with '=', '+', '@' outside the alphabet, no id can start a spreadsheet
# formula), a trailing space, control characters, Markdown/HTML punctuation, '/', and letters of other
# alphabets (look-alikes such as Cyrillic 'а' would make two ids that read the same).
INDIVIDUAL_ID_PATTERN = r"[A-Za-z0-9_.:()](?:[A-Za-z0-9_.:() -]{0,62}[A-Za-z0-9_.:()-])?"
# A species is one of the model's species names, or a new name in snake_case.
SPECIES_PATTERN = r"[a-z][a-z0-9_]{1,63}"
# A model version (the checkpoint's hash in this project; 'fake-1' in tests).
MODEL_VERSION_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}"


@dataclass(frozen=True)
class TextRules:
    """Untrusted text: where ids, species and CSV cells come from users' files (``inputs/text.py``)."""

    individual_id_pattern: str = INDIVIDUAL_ID_PATTERN
    individual_id_max_chars: int = 64
    species_pattern: str = SPECIES_PATTERN
    model_version_pattern: str = MODEL_VERSION_PATTERN
    max_csv_field_chars: int = 4_096  # one cell of an enrolment CSV (a file path, an id, a species)
    # OWASP CSV injection: a cell starting with one of these is prefixed with ' unless it is a number.
    csv_formula_starts: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class MaskConfig:
    """The animal mask: rembg's u2netp (salient-object segmentation) with rembg's pre- and post-processing, run
    by ONNX Runtime directly (importing rembg compiled pymatting with numba: 33-193 s on a first photo)."""

    model_path: str = str(MODELS_DIR / "u2netp.onnx")
    input_long_side: int = 640  # the photo is reduced to this before the net (which works at 320 px)
    threshold: float = 0.5  # mask value (0..1) above which a pixel counts as animal
    min_coverage: float = 0.002  # below this fraction of the photo there is no usable box
    threads: int = 2


@dataclass(frozen=True)
class ScaleSettings:
    """How the work is cut up and how often it is saved; one place for the trade-offs."""

    # Photos per Ray task: a task is the unit that is lost on a crash and the unit of Ray's
    # per-task overhead (tens of ms); at ~100 photos/s a task of 64 is well under a second.
    photos_per_task: int = 64
    # One core per worker: on CPU, single-threaded workers side by side give the most photos per core.
    # Each worker's model runs on this many threads (its own batch pipeline is not parallel again).
    cpus_per_worker: int = 1
    # A local instance holds only small blocks of names and result rows: photos never enter the store.
    local_object_store_bytes: int = 256 * 1024**2
    fsync_every_s: float = 10.0  # flush on every result block; fsync (survives power loss) this often
    progress_every_s: float = 30.0  # a progress line on stderr this often
    connect_timeout_s: float = 5.0  # a cluster address must answer within this


@dataclass(frozen=True)
class ContentGateConfig:
    """Frames with nothing in them are refused before the network sees them (inputs/content.py).

    A classifier trained on photographs answers a black, grey or noise frame with confident
    nonsense. Measured on the 4,433 shared photos at the 640 px decode: every one passes each
    threshold by a factor ≥ 2 (except one uniform grey catalogue photo, which the bundle check
    removes); all 164 synthetic blank, gradient and noise frames tried fail at least one. The
    thresholds are low on purpose: a dark fin of 0.8 % of a flat grey sea still passes, and an
    empty sea with waves passes too (the network's rejection handles it).
    """

    grid: int = 128  # analysed long side, stride-sampled (never averaged: pixel noise keeps its strength)
    block: int = 4  # block size of the coarse thumbnail
    min_coarse_std: float = 2.0  # grey levels (0-255) of the block-mean thumbnail
    min_structure: float = 0.40  # coarse/fine std; i.i.d. noise gives ~0.25, photographs 0.6-1
    min_detail: float = 0.7  # mean |Laplacian| of the block-mean thumbnail; a radial vignette gives 0.64


@dataclass(frozen=True)
class VerifyConfig:
    """Training-free verification of the global model's shortlist (``matching/verify.py``): RootSIFT
    keypoints, Lowe's ratio test, a RANSAC similarity transform; its inlier count re-ranks the top
    candidates. Defaults measured on the right-whale heads by ``benchmarks/bench_verify.py``."""

    long_side: int = 224  # keypoints are found on the greyscale photo reduced (or enlarged) to this long side
    max_keypoints: int = 120  # the strongest this many are kept (and stored): bytes per photo grow with it
    # The photo being identified is stored nowhere, so it may keep more than the catalogue's photos do:
    # each stored keypoint then finds its partner more often. 0: as many as ``max_keypoints``.
    query_keypoints: int = 0
    descriptor_bits: int = 4  # stored RootSIFT precision per component: 4 (two per byte; measured as good as 8) or 8
    ratio: float = 0.85  # Lowe's ratio test: best / second-best descriptor distance below this
    ransac_threshold: float = 4.0  # reprojection error (px at long_side) for a RANSAC inlier
    ransac_iterations: int = 2000
    ransac_confidence: float = 0.995
    seed: int = 0  # OpenCV's RNG seed before each RANSAC: the same pair always scores the same
    candidates: int = 20  # the global model's top this many individuals are verified
    photos_per_candidate: int = 8  # each candidate's photos most similar to the query (cosine), matched
    # fused = global score + weight * min(inliers, cap) / cap (nothing below min_inliers), tuned jointly with the
    # fused new_individual threshold on the right-whale validation individuals, for the shipped keypoint file
    # (5 photos x 120 keypoints: better balanced MAP@5 and known top-1 than 3 x 200), by
    # benchmarks/bench_verify_identify.py (training/tune.tune_fusion, which also keeps the catalogued whales
    # answered new_individual to at most tune.MAX_KNOWN_ANSWERED_NEW; verify_identify.json).
    weight: float = 0.4
    inlier_cap: int = 8
    # Fewer inliers than this add nothing (matching/rules.verification_bonus). Chance matches between two
    # different whales give 3-5 (validation: the best wrong candidate reaches 4 in 80 % of queries, 6 in 4 %),
    # yet every inlier counting measured best on validation: a chance match adds at most 0.25 against the
    # true whale's 0.4 from 8 inliers, and the true whale's own few inliers lift it just as much.
    min_inliers: int = 0
    # A top answer with at least this many inliers is "verified": right 93-95 % of the time on held-out
    # right whales (unseen animals' photos included), 95-96 % from 10 inliers.
    verified_inliers: int = 8
    # Species whose photos are verified (the predicted species): measured better only on right-whale heads;
    # fins and flukes lost top-1 (benchmarks/results/verify.json, fins_and_flukes).
    species: tuple[str, ...] = ("north_atlantic_right_whale",)
    keypoints_path: str = str(DEFAULT_KEYPOINTS)  # the bundled catalogue's keypoints (training/keypoints.py)
    # The bundled catalogue's photos given keypoints per individual (matching/selection.py), chosen by
    # benchmarks/bench_verify_identify.py under the size budget below.
    bundled_per_individual: int = 5
    bundled_max_bytes: int = 10_000_000


@dataclass(frozen=True)
class LocaliserConfig:
    """Where the animal is (``model/localiser.py``): a small box head on frozen EfficientNet-Lite0
    features, run by ONNX Runtime on the photo letterboxed into a square."""

    model_path: str = str(MODELS_DIR / "localiser.onnx")
    input_size: int = 192  # the square's side; the file says which size it was exported for
    pad_value: int = 128  # grey letterbox padding, as in training
    threads: int = 1
    # Below this P(animal) there is no box. Low on purpose (a distant beaked whale in the training photos
    # scored 0.006); no cetacean of the validation or test individuals scored under 0.15.
    min_objectness: float = 0.05
    # ... and the photo is rejected ("no whale or dolphin found"): on the by-individual split this rejects
    # every held-out negative scene of validation (34/34) and lifts test from 0.80 to 0.975, losing no
    # cetacean the species head accepted (benchmarks/bench_generalisation.py). False: the whole photo is used.
    reject_without_animal: bool = True
    # A box this thin (share of the photo's side) is unreliable: the whole photo instead.
    min_side_share: float = 0.02


@dataclass
class LocaliserTrainConfig:
    """How ``train-localiser`` rebuilds ``models/localiser.onnx`` (``training/localiser.py``): a box head on
    frozen EfficientNet-Lite0 features, trained on a few real boxes and many made-up field photos."""

    data_root: str = str(DEFAULT_DATA_ROOT)
    out: str = str(REPO_DIR / "runs" / "localiser.onnx")  # features are cached in ``cache/`` beside it
    seed: int = 11
    backbone: str = "tf_efficientnet_lite0"
    input_size: int = 192  # the letterboxed square's side (LocaliserConfig.input_size serves it)
    pad_value: int = 128
    decode_long_side: int = 640  # photos decoded as for identification
    head_width: int = 96
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    # Loss = objectness BCE + cells * per-cell BCE + l1 * L1 + giou * GIoU on the animal photos.
    cell_loss_weight: float = 0.5
    l1_loss_weight: float = 5.0
    giou_loss_weight: float = 2.0
    cv_folds: int = 4  # by individual over the real boxed photos; 0: no cross-validation
    real_views: int = 4  # each real boxed photo as it is plus (real_views - 1) jittered crops
    # In-bounds labelled boxes seen to be misplaced (the prototype's reliable_boxes.json, by eye).
    rejected_boxes: tuple[str, ...] = (
        "images/whales_identification_0x0000dead/test_split/positives/77fd86c950074d.jpg",
        "images/whales_identification_0x0000dead/extra_happywhale/0024057bbc89a4.jpg",
    )
    segmented_source: str = "happywhale_segmented_whaleway"  # background removed: the box is the foreground's
    # Pre-cropped sources (the animal fills the frame) and how many photos of each; orcatag_norway is left
    # out: whole scenes with several animals.
    whole_frame_sources: tuple[tuple[str, int], ...] = (
        ("noaa_right_whale", 300),
        ("bottlenose_fins_naukma", 150),
        ("kabuga_individual_id", 100),
        ("fin_whale_catrlog", 100),
        ("humpback_flukes_misc", 100),
        ("humpback_kaggle2019_samples", 100),
    )
    background_scenes: tuple[str, ...] = ("sea", "glacier")  # negative scenes that serve as backgrounds too
    composites_train: int = 2400  # animals pasted small onto background strips
    composites_test: int = 400
    composite_area: tuple[float, float] = (0.02, 0.30)  # share of the frame, drawn log-uniform
    composite_long_side: int = 384
    backgrounds_train: int = 500  # empty background crops: negatives the composites must not fool
    backgrounds_test: int = 150
    negative_views: int = 2  # extra jittered crops of each training negative
    blank_frames: int = 60  # flat or noisy single-colour frames: negatives
    threads: int = 2


@dataclass(frozen=True)
class ComparisonConfig:
    """The bundled catalogue's comparison photos (``models/comparison_photos.zip``, built by
    ``python -m whales_identify photos`` with ``training/comparison.py``, read by ``catalog/photos.py``):
    whole photos a reviewer compares a new photo with, chosen per individual by
    ``matching.selection.select_per_individual`` (most typical first, then the most different)."""

    asset: str = str(MODELS_DIR / "comparison_photos.zip")
    long_side: int = 640  # stored long side (smaller photos are kept at their size: enlarging adds nothing)
    quality: int = 80  # JPEG quality (optimised Huffman tables)
    per_individual: int = 6  # photos per individual, unless its species is listed below
    # Right whales: K >= the verification stage's keypoint photos, so the photo it matched is always here.
    species_per_individual: tuple[tuple[str, int], ...] = (("north_atlantic_right_whale", 5),)
    max_bytes: int = 23_000_000  # the whole asset: the repository's working tree must stay small
    min_display_side: int = 512  # the app shows each photo's long side at least this large (enlarged if needed)
