"""Training views of the animal as the field shows it: a crop around its box, seen from afar.

Field photos of new animals are small, distant, hazy and grey (a fin 2-10 % of the frame);
the shared photos are mostly tight crops. Each view therefore crops around the box with a
random margin, then may shrink and re-enlarge it (distance), blur it, veil it in haze, add
glare, drain its colour, and jitter light and colour. Never a horizontal flip: a mirrored fin
is another animal. Hard negatives are patches of sea and sky cut beside the animal's box.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from whales_identify.model.localiser import grow_box

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class FieldAugment:
    """How strong each field effect may be; each applies with its probability."""

    margin: tuple[float, float] = (0.15, 0.45)  # of the box's longer side, each side (inference: 0.3)
    shift: float = 0.08  # the box's centre moves by up to this share of its size
    distance_p: float = 0.4
    distance_scale: tuple[float, float] = (0.25, 0.8)  # shrink to this, then back: detail lost with distance
    blur_p: float = 0.25
    blur_radius: tuple[float, float] = (0.5, 2.0)
    haze_p: float = 0.35
    haze_alpha: tuple[float, float] = (0.1, 0.45)
    glare_p: float = 0.15
    grey_p: float = 0.2
    light: tuple[float, float] = (0.7, 1.3)  # brightness and contrast factors
    colour: tuple[float, float] = (0.6, 1.3)
    rotation: float = 10.0  # degrees


FIELD = FieldAugment()  # the field effects, for every species not listed as gentle

# Aligned close-ups (the right whales' aerial head crops): the pattern that identifies the animal fills
# the photo, and the photos users bring of such animals are of the same kind, so their views keep its
# detail: no distance effect, and blur, haze and glare rarely and lightly (``TrainConfig.gentle_species``).
ALIGNED = FieldAugment(
    margin=(0.2, 0.4),
    shift=0.05,
    distance_p=0.0,
    blur_p=0.1,
    blur_radius=(0.3, 1.0),
    haze_p=0.1,
    haze_alpha=(0.05, 0.2),
    glare_p=0.05,
)


def crop_around(
    image: Image.Image, box: Box | None, margin: float, shift: tuple[float, float] = (0.0, 0.0)
) -> Image.Image:
    """The square crop identification makes around ``box`` (``model.localiser.grow_box``), its centre
    moved by ``shift`` of the box's size; the whole photo when there is no box."""
    if box is None:
        return image
    x1, y1, x2, y2 = box
    dx, dy = shift[0] * (x2 - x1), shift[1] * (y2 - y1)
    left, top, right, bottom = grow_box((x1 + dx, y1 + dy, x2 + dx, y2 + dy), margin, *image.size)
    if right - left < 8 or bottom - top < 8:
        return image
    return image.crop((left, top, right, bottom))


def field_view(image: Image.Image, box: Box | None, rng: random.Random, aug: FieldAugment = FIELD) -> Image.Image:
    """One augmented view of the animal in ``box`` (None: the whole photo is the animal)."""
    shift = (rng.uniform(-aug.shift, aug.shift), rng.uniform(-aug.shift, aug.shift))
    view = crop_around(image, box, rng.uniform(*aug.margin), shift).convert("RGB")
    if rng.random() < aug.distance_p:
        w, h = view.size
        s = rng.uniform(*aug.distance_scale)
        small = view.resize((max(8, int(w * s)), max(8, int(h * s))), Image.Resampling.BILINEAR)
        view = small.resize((w, h), Image.Resampling.BILINEAR)
    if rng.random() < aug.blur_p:
        view = view.filter(ImageFilter.GaussianBlur(rng.uniform(*aug.blur_radius)))
    view = view.rotate(rng.uniform(-aug.rotation, aug.rotation), Image.Resampling.BILINEAR, fillcolor=(110, 120, 125))
    view = ImageEnhance.Brightness(view).enhance(rng.uniform(*aug.light))
    view = ImageEnhance.Contrast(view).enhance(rng.uniform(*aug.light))
    view = ImageEnhance.Color(view).enhance(rng.uniform(*aug.colour))
    if rng.random() < aug.haze_p:
        tone = rng.randint(150, 215)
        veil = Image.new("RGB", view.size, (tone, tone + rng.randint(0, 15), tone + rng.randint(0, 25)))
        view = Image.blend(view, veil, rng.uniform(*aug.haze_alpha))
    if rng.random() < aug.glare_p:
        view = _glare(view, rng)
    if rng.random() < aug.grey_p:
        view = view.convert("L").convert("RGB")
    return view


def _glare(view: Image.Image, rng: random.Random) -> Image.Image:
    """A soft bright patch, as sun on water or on a wet back."""
    w, h = view.size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.2, 0.6) * max(w, h)
    light = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None] * rng.uniform(60, 140)
    return Image.fromarray(np.clip(np.asarray(view, np.float32) + light, 0, 255).astype(np.uint8))


def background_patches(
    image: Image.Image, box: Box, rng: random.Random, n: int, min_side: int = 64
) -> list[Image.Image]:
    """Up to ``n`` patches of sea or sky that do not overlap the animal's box (hard negatives)."""
    w, h = image.size
    x1, y1, x2, y2 = box
    patches: list[Image.Image] = []
    for _ in range(20 * n):
        if len(patches) == n:
            break
        side = rng.randint(min_side, max(min_side, min(w, h) // 2))
        if side > min(w, h):
            break
        left, top = rng.randint(0, w - side), rng.randint(0, h - side)
        if left < x2 and left + side > x1 and top < y2 and top + side > y1:
            continue  # overlaps the animal
        patches.append(image.crop((left, top, left + side, top + side)))
    return patches
