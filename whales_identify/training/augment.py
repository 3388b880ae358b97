"""Training views of a photo: the network input as a tensor, and augmentations."""

from __future__ import annotations

import random

import torch
from PIL import Image, ImageEnhance

from whales_identify.config import ModelConfig
from whales_identify.model.preprocess import to_array


def to_tensor(image: Image.Image, config: ModelConfig) -> torch.Tensor:
    """``to_array`` as a tensor, shape (3, H, W)."""
    return torch.from_numpy(to_array(image, config))


def augment(image: Image.Image, rng: random.Random) -> Image.Image:
    """Mild photometric and geometric changes, as between two photos of one animal.

    No horizontal flip: a fin or fluke seen mirrored is a different pattern.
    """
    w, h = image.size
    scale = rng.uniform(0.75, 1.0)
    ratio = rng.uniform(0.85, 1.15)
    cw = min(w, int(w * scale * ratio**0.5))
    ch = min(h, int(h * scale / ratio**0.5))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    image = image.crop((left, top, left + cw, top + ch))
    image = image.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BILINEAR, fillcolor=(128, 128, 128))
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.75, 1.25))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.75, 1.25))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.7, 1.3))
    if rng.random() < 0.1:
        image = image.convert("L").convert("RGB")
    return image
