"""Where is the animal? A box on the photo, so the network looks at the animal, not the sea.

Field photos of a new animal show a fin 2-10 % of the frame in grey sea; a model looking at
the whole frame learns the sea. The localiser (frozen EfficientNet-Lite0 features with a small
trained box head, ``training/localiser.py``) runs on the photo letterboxed into a 192 px
square with ONNX Runtime: a few milliseconds. It answers a box in the photo's pixels and the
probability that an animal is there at all; below ``min_objectness`` there is no box and the
whole photo is used.
"""

from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from whales_identify.config import LocaliserConfig
from whales_identify.errors import ModelLoadError
from whales_identify.model.engines import session_options

Box = tuple[float, float, float, float]
INPUT_NAME = "image"


@dataclass(frozen=True)
class Letterbox:
    """How a photo sits in the localiser's square: letterboxed px per photo px, and the padding."""

    scale: float
    pad_x: float
    pad_y: float
    size: int

    def to_photo(self, box01: np.ndarray) -> Box:
        """A box in [0, 1] of the square → pixels of the photo."""
        b = np.asarray(box01, dtype=np.float64) * self.size
        return (
            float((b[0] - self.pad_x) / self.scale),
            float((b[1] - self.pad_y) / self.scale),
            float((b[2] - self.pad_x) / self.scale),
            float((b[3] - self.pad_y) / self.scale),
        )

    def to_square(self, box: Box) -> np.ndarray:
        """A box in photo pixels → [0, 1] of the square (training targets)."""
        x1, y1, x2, y2 = box
        return (
            np.array(
                [
                    x1 * self.scale + self.pad_x,
                    y1 * self.scale + self.pad_y,
                    x2 * self.scale + self.pad_x,
                    y2 * self.scale + self.pad_y,
                ]
            )
            / self.size
        )


def letterbox(image: Image.Image, size: int, pad_value: int = 128) -> tuple[np.ndarray, Letterbox]:
    """The photo centred in a ``size`` square (aspect kept, grey padding), uint8 (size, size, 3)."""
    w, h = image.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = np.asarray(image.convert("RGB").resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=2.0))
    square = np.full((size, size, 3), pad_value, dtype=np.uint8)
    px, py = (size - nw) // 2, (size - nh) // 2
    square[py : py + nh, px : px + nw] = small
    return square, Letterbox(scale, float(px), float(py), size)


def to_input(square: np.ndarray) -> np.ndarray:
    """(size, size, 3) uint8 → (3, size, size) float32 in [-1, 1] (the backbone's ImageNet scaling)."""
    return square.transpose(2, 0, 1).astype(np.float32) * (2.0 / 255.0) - 1.0


def grow_box(box: Box, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The square around ``box`` (its longer side) grown by ``margin`` of that side on each side,
    moved inside the photo where it can be, clipped where it cannot; in whole pixels.

    Square, because the network's input is square: a thin box stretched to a square would
    distort the fin's shape. A margin, because a tight box loses the fin's tip and edge."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx = min(max((x1 + x2) / 2, side / 2), width - side / 2) if side < width else width / 2
    cy = min(max((y1 + y2) / 2, side / 2), height - side / 2) if side < height else height / 2
    left, top = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
    right, bottom = min(width, math.ceil(cx + side / 2)), min(height, math.ceil(cy + side / 2))
    return left, top, right, bottom


@dataclass(frozen=True)
class Location:
    """The localiser's answer: the animal's box in photo pixels (None: use the whole photo) and P(animal)."""

    box: Box | None
    objectness: float


class Localiser:
    """The exported localiser, safe to call from several threads (one ONNX Runtime session per caller)."""

    def __init__(self, path: Path | str, config: LocaliserConfig | None = None) -> None:
        import onnxruntime as ort  # serving dependency, already used by the identification engine

        self.config = config or LocaliserConfig()
        self.path = Path(path)
        self._ort = ort
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        try:
            first = self._session()
        except Exception as exc:  # onnxruntime raises its own types for bad files
            raise ModelLoadError(f"{self.path.name} is not a readable localiser model ({type(exc).__name__})") from exc
        self.size = int(first.get_inputs()[0].shape[-1])
        self._idle.put(first)
        self._lock = threading.Lock()

    def _session(self) -> Any:
        options = session_options(self._ort, self.config.threads)  # one photo per run, shapes fixed
        return self._ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def locate(self, image: Image.Image) -> Location:
        """Where the animal is in ``image`` (any size; the box is in its pixels)."""
        square, placement = letterbox(image, self.size, self.config.pad_value)
        try:
            session = self._idle.get_nowait()
        except queue.Empty:
            session = self._session()
        try:
            box01, objectness_logit = session.run(None, {INPUT_NAME: to_input(square)[None]})
        finally:
            self._idle.put(session)
        objectness = float(1.0 / (1.0 + np.exp(-float(objectness_logit[0]))))
        box = placement.to_photo(box01[0])
        w, h = image.size
        x1, y1, x2, y2 = max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3])
        share = min((x2 - x1) / w, (y2 - y1) / h) if w and h else 0.0
        if objectness < self.config.min_objectness or share < self.config.min_side_share:
            return Location(None, objectness)
        return Location((x1, y1, x2, y2), objectness)


def load_localiser(config: LocaliserConfig | None = None) -> Localiser | None:
    """The shipped localiser, or None when there is none (then the whole photo is used)."""
    config = config or LocaliserConfig()
    path = Path(config.model_path)
    return Localiser(path, config) if path.exists() else None
