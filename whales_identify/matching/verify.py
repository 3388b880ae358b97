"""Training-free verification of the global model's shortlist by keypoint geometry.

Two photos of the same animal share many local patterns (callosities, nicks, scars) in the
same arrangement; two animals rarely do. ``describe`` finds RootSIFT keypoints on a small
greyscale copy of a photo (compact enough to store with a catalogue), ``match`` counts the
descriptor matches (Lowe's ratio test) consistent with one similarity transform (RANSAC), and
``rerank`` fuses that inlier count with the global model's score. Pure functions; the numbers
live in ``VerifyConfig``; measured by ``benchmarks/bench_verify.py``.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from whales_identify.config import VerifyConfig

log = logging.getLogger(__name__)
DESCRIPTOR_DIM = 128
_MAGIC = b"WKP1"
_HEADER = struct.Struct("<4sBHHH")  # magic, descriptor bits, keypoints, width, height
_XY_SCALE = 16.0  # stored coordinates: 1/16 px, uint16 (photos up to 4095 px)
# Stored RootSIFT components are min(1, value * scale) quantised to 2**bits - 1 levels: the
# components of a unit RootSIFT vector rarely exceed 0.5, so the top of the range is not wasted.
_COMPONENT_SCALE = 2.0


@dataclass(frozen=True)
class Keypoints:
    """A photo's keypoints: positions and quantised RootSIFT descriptors, strongest first."""

    xy: np.ndarray  # (N, 2) float32, pixels of the described image (``size``)
    descriptors: np.ndarray  # (N, 128) uint8 quantised levels, 0 .. 2**bits - 1
    size: tuple[int, int]  # (width, height) of the described image (long side = VerifyConfig.long_side)
    bits: int = 8

    def __len__(self) -> int:
        return len(self.xy)

    @cached_property
    def unit(self) -> np.ndarray:
        """Descriptors as float32 unit vectors (RootSIFT, dequantised): what ``match`` compares."""
        values = self.descriptors.astype(np.float32)
        norms = np.linalg.norm(values, axis=1, keepdims=True)
        return values / np.maximum(norms, 1e-6)

    def to_bytes(self) -> bytes:
        """Compact form to store with a catalogue: a 11-byte header, uint16 xy, packed descriptors."""
        n = len(self)
        xy = np.clip(np.round(self.xy * _XY_SCALE), 0, 65535).astype("<u2")
        desc = self.descriptors.astype(np.uint8)
        packed = ((desc[:, 0::2] << 4) | desc[:, 1::2]).astype(np.uint8) if self.bits == 4 else desc
        return _HEADER.pack(_MAGIC, self.bits, n, *self.size) + xy.tobytes() + packed.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Keypoints:
        """Inverse of ``to_bytes`` (ValueError on anything else)."""
        if len(data) < _HEADER.size:
            raise ValueError("keypoint record too short")
        magic, bits, n, width, height = _HEADER.unpack_from(data)
        if magic != _MAGIC or bits not in (4, 8):
            raise ValueError("not a keypoint record")
        per_row = DESCRIPTOR_DIM * bits // 8
        if len(data) != _HEADER.size + n * (4 + per_row):
            raise ValueError("keypoint record has the wrong length")
        offset = _HEADER.size
        xy = np.frombuffer(data, "<u2", n * 2, offset).reshape(n, 2).astype(np.float32) / _XY_SCALE
        packed = np.frombuffer(data, np.uint8, n * per_row, offset + n * 4).reshape(n, per_row)
        if bits == 4:
            desc = np.empty((n, DESCRIPTOR_DIM), np.uint8)
            desc[:, 0::2], desc[:, 1::2] = packed >> 4, packed & 0x0F
        else:
            desc = packed.copy()
        return cls(xy, desc, (width, height), bits)


@dataclass(frozen=True)
class Verification:
    """One query photo against one candidate photo."""

    inliers: int  # matches consistent with the transform: the evidence
    pairs: np.ndarray  # (inliers, 2) int: (query keypoint, candidate keypoint) rows, for drawing
    transform: np.ndarray | None  # 2 × 3 similarity mapping query xy → candidate xy; None: no fit
    matches: int = 0  # matches that passed the ratio test


@dataclass(frozen=True)
class Reranked:
    """The shortlist after verification, aligned with the candidates given to ``rerank``."""

    scores: np.ndarray  # fused scores
    order: np.ndarray  # candidate indices, best first
    verified: np.ndarray  # bool: inliers ≥ VerifyConfig.verified_inliers


def _grey(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("L"))
    array = np.asarray(image)
    if array.ndim == 3:
        code = cv2.COLOR_RGBA2GRAY if array.shape[2] == 4 else cv2.COLOR_RGB2GRAY
        array = cv2.cvtColor(array, code)
    return np.ascontiguousarray(array, dtype=np.uint8)


def describe(image: Image.Image | np.ndarray, cfg: VerifyConfig) -> Keypoints:
    """RootSIFT keypoints of a photo (PIL, or an RGB/greyscale uint8 array) at ``cfg.long_side``."""
    grey = _grey(image)
    h, w = grey.shape
    scale = cfg.long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size != (w, h):
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    sift = cv2.SIFT_create(nfeatures=cfg.max_keypoints)  # type: ignore[attr-defined]
    found, desc = sift.detectAndCompute(grey, None)
    if desc is None or not found:
        return Keypoints(
            np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_DIM), np.uint8), size, cfg.descriptor_bits
        )
    strongest = np.argsort([-k.response for k in found], kind="stable")[: cfg.max_keypoints]
    xy = np.asarray([found[i].pt for i in strongest], np.float32).reshape(-1, 2)
    desc = desc[strongest].astype(np.float32)
    root = np.sqrt(desc / np.maximum(desc.sum(axis=1, keepdims=True), 1e-6))  # RootSIFT: unit L2
    levels = (1 << cfg.descriptor_bits) - 1
    quantised = np.round(np.minimum(root * _COMPONENT_SCALE, 1.0) * levels).astype(np.uint8)
    return Keypoints(xy, quantised, size, cfg.descriptor_bits)


def describe_query(image: Image.Image | np.ndarray, cfg: VerifyConfig) -> Keypoints:
    """The keypoints of the photo being identified: ``cfg.query_keypoints`` of them (0: ``max_keypoints``)."""
    return describe(image, replace(cfg, max_keypoints=cfg.query_keypoints or cfg.max_keypoints))


def ratio_matches(query: Keypoints, candidate: Keypoints, ratio: float) -> np.ndarray:
    """(M, 2) rows (query, candidate) whose nearest candidate descriptor beats the second by ``ratio``,
    each candidate keypoint used once (its closest query keypoint)."""
    if len(query) == 0 or len(candidate) < 2:
        return np.zeros((0, 2), np.int64)
    sims = query.unit @ candidate.unit.T
    two = np.argpartition(-sims, 1, axis=1)[:, :2]
    rows = np.arange(len(query))
    first, second = sims[rows, two[:, 0]], sims[rows, two[:, 1]]
    swap = second > first
    best = np.where(swap, two[:, 1], two[:, 0])
    s1, s2 = np.maximum(first, second), np.minimum(first, second)
    # Unit vectors: squared distance = 2 - 2 cos.
    d1, d2 = np.sqrt(np.maximum(2 - 2 * s1, 0)), np.sqrt(np.maximum(2 - 2 * s2, 0))
    keep = np.flatnonzero(d1 < ratio * d2)
    keep = keep[np.argsort(d1[keep], kind="stable")]
    _, first_use = np.unique(best[keep], return_index=True)
    keep = np.sort(keep[first_use])
    return np.stack([keep, best[keep]], axis=1)


def match(query: Keypoints, candidate: Keypoints, cfg: VerifyConfig) -> Verification:
    """Ratio-test matches, then the RANSAC similarity transform (rotation, uniform scale, shift)
    that most of them agree on; deterministic (``cfg.seed``)."""
    pairs = ratio_matches(query, candidate, cfg.ratio)
    empty = np.zeros((0, 2), np.int64)
    if len(pairs) < 3:
        return Verification(0, empty, None, len(pairs))
    cv2.setRNGSeed(cfg.seed)
    transform, mask = cv2.estimateAffinePartial2D(
        query.xy[pairs[:, 0]],
        candidate.xy[pairs[:, 1]],
        method=cv2.RANSAC,
        ransacReprojThreshold=cfg.ransac_threshold,
        maxIters=cfg.ransac_iterations,
        confidence=cfg.ransac_confidence,
    )
    if transform is None or mask is None:
        return Verification(0, empty, None, len(pairs))
    inlier = pairs[mask.ravel().astype(bool)]
    return Verification(len(inlier), inlier, transform, len(pairs))


def best_match(query: Keypoints, photos: Sequence[Keypoints], cfg: VerifyConfig) -> tuple[int, Verification]:
    """The candidate photo (index) with the most inliers, and its verification (index -1: no photos)."""
    best, found = -1, Verification(0, np.zeros((0, 2), np.int64), None)
    for index, photo in enumerate(photos):
        result = match(query, photo, cfg)
        if result.inliers > found.inliers or best < 0:
            best, found = index, result
    return best, found


def fuse(scores: np.ndarray, inliers: np.ndarray, cfg: VerifyConfig) -> np.ndarray:
    """Global score + weight × min(inliers, cap) / cap."""
    evidence = np.minimum(np.asarray(inliers, np.float32), cfg.inlier_cap) / cfg.inlier_cap
    return np.asarray(scores, np.float32) + cfg.weight * evidence


def rerank(candidate_scores: np.ndarray, inliers: np.ndarray, cfg: VerifyConfig) -> Reranked:
    """Re-order the shortlist by the fused score (ties keep the global order); flag verified ones."""
    fused = fuse(candidate_scores, inliers, cfg)
    order = np.argsort(-fused, kind="stable")
    return Reranked(fused, order, np.asarray(inliers) >= cfg.verified_inliers)


def record(image: Image.Image | np.ndarray, cfg: VerifyConfig) -> bytes:
    """What a catalogue stores for a photo: ``describe(image).to_bytes()``."""
    return describe(image, cfg).to_bytes()


# Stored keypoints by catalogue photo name (bundled image name, or a user row's gallery name) → records.
KeypointLookup = Callable[[Sequence[str]], dict[str, bytes]]


def save_keypoints(path: Path | str, names: Sequence[str], records: Sequence[bytes], meta: str = "") -> int:
    """Write a keypoint file: photo names, the concatenated records and their offsets; returns its size."""
    if len(names) != len(records):
        raise ValueError("one record per photo name")
    offsets = np.cumsum([0] + [len(r) for r in records]).astype(np.int64)
    np.savez_compressed(
        path,
        image_names=np.asarray(list(names), dtype=str),
        offsets=offsets,
        records=np.frombuffer(b"".join(records), dtype=np.uint8),
        meta=np.asarray(meta),
    )
    return Path(path).stat().st_size


class KeypointFile:
    """The bundled catalogue's keypoints (``save_keypoints``), read once on first use; a lookup.

    A missing or unreadable file is an empty one (verification then has nothing to check against:
    identification goes on without it, with a warning in the log).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._index: dict[str, tuple[int, int]] | None = None
        self._raw = b""
        self._lock = threading.Lock()

    def _load(self) -> dict[str, tuple[int, int]]:
        with self._lock:
            if self._index is not None:
                return self._index
            index: dict[str, tuple[int, int]] = {}
            if self.path.exists():
                try:
                    with np.load(self.path, allow_pickle=False) as data:
                        names, offsets = data["image_names"], data["offsets"].astype(np.int64)
                        raw = data["records"].tobytes()
                    if len(offsets) != len(names) + 1 or offsets[0] != 0 or offsets[-1] != len(raw):
                        raise ValueError("offsets do not match the records")
                    if np.any(np.diff(offsets) < 0):
                        raise ValueError("offsets go backwards")
                    index = {str(n): (int(offsets[i]), int(offsets[i + 1])) for i, n in enumerate(names)}
                    self._raw = raw
                except Exception as exc:  # never str(exc) from numpy (it suggests allow_pickle)
                    log.warning(
                        "%s is not a readable keypoint file (%s): no verification", self.path.name, type(exc).__name__
                    )
                    index = {}
            self._index = index
            return index

    def __len__(self) -> int:
        return len(self._load())

    def names(self) -> set[str]:
        return set(self._load())

    def __call__(self, names: Sequence[str]) -> dict[str, bytes]:
        index = self._load()
        found = {}
        for name in names:
            span = index.get(name)
            if span is not None:
                found[name] = self._raw[span[0] : span[1]]
        return found
