"""Is there anything in this frame? A pure-numpy gate that runs before the network.

Three statistics on a luminance grid of about 128 px (stride-sampled, so pixel noise
keeps its full strength whatever the input size):

* ``coarse_std``: std of the 4×4 block means: how much the picture varies at the scale
  of objects. ~0 for a uniform frame; tens of grey levels for any photograph.
* ``structure``: ``coarse_std / fine_std``. Independent pixel noise loses a factor 4
  when 4×4 pixels are averaged (~0.25); photographs keep most of their variance (0.6-1).
* ``detail``: mean |Laplacian| of the block means: ~0 for a smooth gradient.

A frame fails when it has no coarse variation, when its variation is pixel noise, or
when it is a smooth field without detail. Well under a millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from whales_identify.config import ContentGateConfig

GATE = ContentGateConfig()


@dataclass(frozen=True)
class ContentStats:
    fine_std: float
    coarse_std: float
    structure: float
    detail: float


def content_stats(image: Image.Image | np.ndarray, config: ContentGateConfig = GATE) -> ContentStats:
    """The gate's statistics for an RGB or greyscale photo of any size."""
    pixels = np.asarray(image)
    h, w = pixels.shape[:2]
    step = max(1, -(-max(h, w) // config.grid))
    sub = pixels[::step, ::step].astype(np.float32)
    lum = sub[..., 0] * 0.299 + sub[..., 1] * 0.587 + sub[..., 2] * 0.114 if sub.ndim == 3 else sub
    b = config.block
    gh, gw = (lum.shape[0] // b) * b, (lum.shape[1] // b) * b
    if gh < 3 * b or gw < 3 * b:
        return ContentStats(0.0, 0.0, 0.0, 0.0)
    lum = lum[:gh, :gw]
    coarse = lum.reshape(gh // b, b, gw // b, b).mean(axis=(1, 3))
    fine_std, coarse_std = float(lum.std()), float(coarse.std())
    laplacian = 4 * coarse[1:-1, 1:-1] - coarse[:-2, 1:-1] - coarse[2:, 1:-1] - coarse[1:-1, :-2] - coarse[1:-1, 2:]
    return ContentStats(fine_std, coarse_std, coarse_std / (fine_std + 1e-6), float(np.abs(laplacian).mean()))


def blank_reason(image: Image.Image | np.ndarray, config: ContentGateConfig = GATE) -> str:
    """Why this frame shows nothing to identify ("" when it may show an animal)."""
    stats = content_stats(image, config)
    if stats.coarse_std < config.min_coarse_std:
        return "the picture is almost uniform: there is nothing in it to identify"
    if stats.structure < config.min_structure:
        return "the picture looks like random noise, not a photograph"
    if stats.detail < config.min_detail:
        return "the picture is a smooth field with no detail: there is nothing in it to identify"
    return ""
