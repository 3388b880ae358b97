"""Training the animal-box localiser that ``model/localiser.py`` serves (``train-localiser``).

Only 24 photos of the shared data carry a box we can trust: 54 of the 80 labelled boxes are in the
original photo's pixels, not the stored copy's, and two more are misplaced. So the head learns
mostly from boxes we know by construction: pre-cropped sources (the box is the whole frame), the
background-removed Happywhale PNGs (the box is the foreground's), and composites of those animals
pasted small onto background strips cut beside the real boxes (the field photo: a fin a few
percent of the frame, haze, blur); negatives, empty background crops and blank frames teach it
when there is no animal. The backbone stays frozen with its ImageNet weights, so its features are
computed once and cached, and the head trains in minutes on a CPU.

Evaluated by individual (``assign_splits_by_individual``): cross-validation over the individuals
of the real boxed photos, then the final head on the test split's held-out individuals, composites
of held-out animals on held-out backgrounds, and held-out negative scenes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageFilter
from torch import nn

from whales_identify.config import NON_CETACEAN, LocaliserTrainConfig
from whales_identify.errors import LabelsError
from whales_identify.inputs.imaging import decode_image
from whales_identify.model.localiser import INPUT_NAME, Box, letterbox, to_input
from whales_identify.training.boxes import fits, scaled_box
from whales_identify.training.data import load_dataset

log = logging.getLogger(__name__)

OUTPUT_NAMES = ("box", "objectness")
POSITIVE_KINDS = ("real", "segmented", "whole", "composite")
NEGATIVE_KINDS = ("negative", "background", "blank")
REPORTED_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5)
# Settings that change neither the samples nor their features: a cache survives changing them.
_TRAINING_ONLY = {
    "out",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "cell_loss_weight",
    "l1_loss_weight",
    "giou_loss_weight",
    "cv_folds",
    "head_width",
    "threads",
}


@dataclass
class Sample:
    """One letterboxed training or evaluation picture and its target."""

    square: np.ndarray  # (S, S, 3) uint8
    box: np.ndarray  # (4,) xyxy in [0, 1] of the square; zeros when there is no animal
    positive: bool
    kind: str  # one of POSITIVE_KINDS or NEGATIVE_KINDS
    split: str  # train / val / test
    group: str = ""  # the individual, for cross-validation by individual
    view: int = 0  # real photos: 0 is the photo itself (evaluated), others are jittered crops
    area: float = 0.0  # composites: the animal's share of the frame


@dataclass
class Features:
    """The frozen backbone's two maps for every sample plus what the head and the report need of it."""

    f16: torch.Tensor  # (N, C16, S/16, S/16) float16
    f32: torch.Tensor  # (N, C32, S/32, S/32) float16
    boxes: torch.Tensor  # (N, 4)
    positive: torch.Tensor  # (N,) bool
    view: torch.Tensor  # (N,)
    area: torch.Tensor  # (N,)
    kind: list[str]
    split: list[str]
    group: list[str]


def _rng(seed: int, key: str) -> np.random.Generator:
    """A generator per purpose, so adding composites does not change the negatives."""
    return np.random.default_rng(int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:12], 16))


def photometric(image: Image.Image, rng: np.random.Generator, strength: float = 1.0) -> Image.Image:
    """Brightness, contrast, colour and sometimes grey: field light varies more than the datasets'."""
    image = ImageEnhance.Brightness(image).enhance(1 + strength * rng.uniform(-0.3, 0.3))
    image = ImageEnhance.Contrast(image).enhance(1 + strength * rng.uniform(-0.4, 0.3))
    image = ImageEnhance.Color(image).enhance(1 + strength * rng.uniform(-0.5, 0.3))
    if rng.random() < 0.15 * strength:
        image = image.convert("L").convert("RGB")
    return image


def jitter_view(rgb: np.ndarray, box: Box, rng: np.random.Generator) -> tuple[np.ndarray, Box]:
    """A random crop that keeps the whole box, maybe flipped, with photometric jitter: more views of few boxes."""
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3])
    cx1, cy1 = min(int(rng.uniform(0, x1 + 1e-3)), int(x1)), min(int(rng.uniform(0, y1 + 1e-3)), int(y1))
    cx2 = max(math.ceil(rng.uniform(x2, w + 1e-3)), cx1 + 8)
    cy2 = max(math.ceil(rng.uniform(y2, h + 1e-3)), cy1 + 8)
    out = np.asarray(photometric(Image.fromarray(rgb[cy1:cy2, cx1:cx2]), rng))
    moved = (x1 - cx1, y1 - cy1, x2 - cx1, y2 - cy1)
    if rng.random() < 0.5:
        out = out[:, ::-1]
        cw = out.shape[1]
        moved = (cw - moved[2], moved[1], cw - moved[0], moved[3])
    return np.ascontiguousarray(out), moved


def background_strips(rgb: np.ndarray, box: Box, min_side: int = 64) -> list[np.ndarray]:
    """The photo above, below, left and right of the animal: real sea and sky with no animal in it."""
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in box)
    strips = [rgb[: max(0, y1 - 4)], rgb[min(h, y2 + 4) :], rgb[:, : max(0, x1 - 4)], rgb[:, min(w, x2 + 4) :]]
    return [s for s in strips if s.shape[0] >= min_side and s.shape[1] >= min_side]


def random_background(pool: list[np.ndarray], rng: np.random.Generator, long_side: int) -> np.ndarray:
    """A crop of a background, stretched to a camera's aspect ratio and maybe flipped."""
    background = pool[int(rng.integers(len(pool)))]
    aspect = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4)[int(rng.integers(5))]
    w, h = (long_side, int(long_side / aspect)) if aspect >= 1 else (int(long_side * aspect), long_side)
    bh, bw = background.shape[:2]
    cw = int(bw * rng.uniform(0.5, 1.0))
    ch = int(cw * h / w)
    if ch > bh:
        ch, cw = bh, min(bw, int(bh * w / h))
    cw, ch = max(8, cw), max(8, ch)
    ox, oy = int(rng.integers(0, bw - cw + 1)), int(rng.integers(0, bh - ch + 1))
    image = Image.fromarray(background[oy : oy + ch, ox : ox + cw]).resize((w, h), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(image)


def _feathered(width: int, height: int) -> np.ndarray:
    """A rectangle's mask fading out at its edges, so a pasted crop shows no hard seam."""
    f = max(1, min(width, height) // 8)
    ramp_x = np.minimum(np.arange(width) + 1, np.arange(width)[::-1] + 1) / f
    ramp_y = np.minimum(np.arange(height) + 1, np.arange(height)[::-1] + 1) / f
    return np.clip(np.minimum(ramp_x[None, :], ramp_y[:, None]), 0, 1).astype(np.float32)


def composite(
    animal: np.ndarray,
    mask: np.ndarray | None,
    backgrounds: list[np.ndarray],
    rng: np.random.Generator,
    config: LocaliserTrainConfig,
) -> tuple[np.ndarray, Box, float]:
    """An animal (with its mask, or a feathered rectangle) pasted small onto a background, with haze, blur
    and grey as in field photos → (photo, the animal's box, its share of the frame)."""
    canvas = random_background(backgrounds, rng, config.composite_long_side)
    H, W = canvas.shape[:2]
    low, high = config.composite_area
    area = math.exp(rng.uniform(math.log(low), math.log(high)))
    oh, ow = animal.shape[:2]
    s = math.sqrt(area * H * W / (oh * ow))
    nw, nh = max(4, int(ow * s)), max(4, int(oh * s))
    if nw > W or nh > H:
        shrink = min(W / nw, H / nh) * 0.95
        nw, nh = max(4, int(nw * shrink)), max(4, int(nh * shrink))
    pasted = photometric(Image.fromarray(animal).resize((nw, nh), Image.Resampling.BILINEAR), rng, 0.7)
    if rng.random() < 0.4:
        pasted = pasted.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    if mask is None:
        m = _feathered(nw, nh)
    else:
        small = Image.fromarray((mask * 255).astype(np.uint8)).resize((nw, nh), Image.Resampling.BILINEAR)
        m = np.asarray(small, np.float32) / 255
    x, y = int(rng.integers(0, W - nw + 1)), int(rng.integers(0, H - nh + 1))
    out = canvas.astype(np.float32)
    patch = out[y : y + nh, x : x + nw]
    out[y : y + nh, x : x + nw] = patch * (1 - m[..., None]) + np.asarray(pasted, np.float32) * m[..., None]
    if rng.random() < 0.4:  # haze
        a = rng.uniform(0.1, 0.45)
        out = out * (1 - a) + a * np.asarray([rng.uniform(170, 235)] * 3, np.float32)
    image = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.2:
        image = image.convert("L").convert("RGB")
    ys, xs = np.nonzero(m > 0.5)
    box = (x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1) if len(xs) else (x, y, x + nw, y + nh)
    return np.asarray(image), (float(box[0]), float(box[1]), float(box[2]), float(box[3])), area


def foreground(rgb: np.ndarray) -> tuple[Box, np.ndarray, np.ndarray] | None:
    """A background-removed photo's animal (the pixels unlike its border colour, near-white 254 in the
    Happywhale PNGs) → (its box, ignoring stray specks; the cut-out; its mask), or None when nearly empty."""
    a = rgb.astype(np.int16)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    mask = np.abs(a - np.median(border, axis=0)).max(axis=2) > 12
    ys, xs = np.nonzero(mask)
    if len(xs) < 200:
        return None
    box = (
        float(np.percentile(xs, 0.2)),
        float(np.percentile(ys, 0.2)),
        float(np.percentile(xs, 99.8) + 1),
        float(np.percentile(ys, 99.8) + 1),
    )
    y1, y2, x1, x2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return box, rgb[y1:y2, x1:x2], mask[y1:y2, x1:x2].astype(np.float32)


def square_sample(rgb: np.ndarray, box: Box | None, config: LocaliserTrainConfig, **fields: Any) -> Sample:
    """The picture letterboxed exactly as serving does, and its box in [0, 1] of the square."""
    square, placement = letterbox(Image.fromarray(rgb), config.input_size, config.pad_value)
    target = np.clip(placement.to_square(box), 0, 1) if box is not None else np.zeros(4)
    return Sample(square, target.astype(np.float32), box is not None, **fields)


def _scene(image: str) -> str:
    return Path(image).name.split("_")[0]


def build_samples(frame: pd.DataFrame, config: LocaliserTrainConfig) -> list[Sample]:
    """Every training and evaluation picture of the recipe in the module's docstring."""
    decoded: dict[str, np.ndarray] = {}

    def rgb_of(path: str) -> np.ndarray:
        if path not in decoded:
            decoded[path] = np.asarray(decode_image(path, long_side=config.decode_long_side))
        return decoded[path]

    rng = _rng(config.seed, "build")
    samples: list[Sample] = []
    held = {"train": "train", "val": "train", "test": "test"}  # only real photos keep val apart (the final head)

    # Real boxed photos whose box fits the stored photo (the others are in the original's pixels).
    backgrounds: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for row in frame[frame["box"].notna() & ~frame["image"].isin(config.rejected_boxes)].itertuples():
        with Image.open(row.path) as stored:
            stored_size = stored.size
        if not fits(row.box, stored_size):
            continue
        rgb = rgb_of(row.path)
        box = scaled_box(row.box, stored_size, (rgb.shape[1], rgb.shape[0]))
        for view in range(config.real_views):
            picture, moved = (rgb, box) if view == 0 else jitter_view(rgb, box, rng)
            samples.append(
                square_sample(picture, moved, config, kind="real", split=row.split, group=row.individual_id, view=view)
            )
        backgrounds[held[row.split]].extend(background_strips(rgb, box))
    negatives = frame[frame["species"] == NON_CETACEAN]
    negative_split = {"train": "train", "val": "test", "test": "test"}
    for row in negatives[negatives["image"].map(_scene).isin(config.background_scenes)].itertuples():
        backgrounds[negative_split[row.split]].append(rgb_of(row.path))
    log.info("background pictures: %d train, %d test", len(backgrounds["train"]), len(backgrounds["test"]))

    # Animals to paste: segmented cut-outs (true masks) and the pre-cropped photos (feathered rectangles).
    animals: dict[str, list[tuple[np.ndarray, np.ndarray | None]]] = {"train": [], "test": []}
    for row in frame[frame["source"] == config.segmented_source].itertuples():
        found = foreground(rgb_of(row.path))
        if found is not None:
            box, cut, mask = found
            animals[held[row.split]].append((cut, mask))
            samples.append(
                square_sample(
                    rgb_of(row.path), box, config, kind="segmented", split=held[row.split], group=row.individual_id
                )
            )
    cetaceans = frame[frame["species"] != NON_CETACEAN]
    for source, cap in config.whole_frame_sources:
        rows = cetaceans[cetaceans["source"] == source]
        for row in rows.sample(min(cap, len(rows)), random_state=config.seed).itertuples():
            rgb = rgb_of(row.path)
            whole = (0.0, 0.0, float(rgb.shape[1]), float(rgb.shape[0]))
            samples.append(
                square_sample(rgb, whole, config, kind="whole", split=held[row.split], group=row.individual_id)
            )
            animals[held[row.split]].append((rgb, None))

    for key, count in (("train", config.composites_train), ("test", config.composites_test)):
        pool, pool_backgrounds = animals[key], backgrounds[key]
        if not (pool and pool_backgrounds):
            log.warning("no %s composites: %d animals, %d backgrounds", key, len(pool), len(pool_backgrounds))
            continue
        crng = _rng(config.seed, f"composite:{key}")
        for _ in range(count):
            animal, animal_mask = pool[int(crng.integers(len(pool)))]
            rgb, box, area = composite(animal, animal_mask, pool_backgrounds, crng, config)
            samples.append(square_sample(rgb, box, config, kind="composite", split=key, area=area))

    # Negatives: scene photos (held out by scene), empty background crops, blank frames.
    for row in negatives.itertuples():
        key = negative_split[row.split]
        rgb = rgb_of(row.path)
        samples.append(square_sample(rgb, None, config, kind="negative", split=key))
        if key == "train":
            h, w = rgb.shape[:2]
            for _ in range(config.negative_views):
                crop, _ = jitter_view(rgb, (w * 0.4, h * 0.4, w * 0.6, h * 0.6), rng)
                samples.append(square_sample(crop, None, config, kind="negative", split=key))
    for key, count in (("train", config.backgrounds_train), ("test", config.backgrounds_test)):
        brng = _rng(config.seed, f"background:{key}")
        for _ in range(count if backgrounds[key] else 0):
            rgb = random_background(backgrounds[key], brng, config.composite_long_side)
            samples.append(square_sample(rgb, None, config, kind="background", split=key))
    brng = _rng(config.seed, "blank")
    for i in range(config.blank_frames):
        colour = brng.integers(0, 256, 3)
        rgb = np.clip(colour + brng.normal(0, (0, 3, 10, 40)[i % 4], (240, 320, 3)), 0, 255).astype(np.uint8)
        samples.append(square_sample(rgb, None, config, kind="blank", split="train"))
    return samples


def build_backbone(config: LocaliserTrainConfig) -> nn.Module:
    """The frozen ImageNet EfficientNet-Lite0 giving its stride-16 and stride-32 maps."""
    from whales_identify.model import _torchvision_guard  # noqa: F401  (before timm)  isort: skip
    import timm

    from whales_identify.training.pretrained import load_imagenet_weights

    full = timm.create_model(config.backbone, pretrained=False, num_classes=0)
    load_imagenet_weights(full, config.backbone)
    features = timm.create_model(config.backbone, pretrained=False, features_only=True, out_indices=(3, 4))
    missing, _ = features.load_state_dict(full.state_dict(), strict=False)
    if missing:
        raise RuntimeError(f"{config.backbone}: feature extractor weights not in the ImageNet model: {missing}")
    features.eval()
    for parameter in features.parameters():
        parameter.requires_grad_(False)
    return features


class BoxHead(nn.Module):
    """Per cell of the stride-16 map (plus the upsampled stride-32 map): a "the animal is here" logit and
    the distances to the box's sides. The box is the softmax-weighted mean of the cells' boxes (one box,
    differentiable); objectness is the log-mean-exp of the cell logits plus a bias (an animal anywhere
    lights up some cell)."""

    def __init__(self, c16: int, c32: int, width: int) -> None:
        super().__init__()
        self.reduce32 = nn.Conv2d(c32, width, 1)
        self.reduce16 = nn.Conv2d(c16, width, 1)
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.logit = nn.Conv2d(width, 1, 1)
        self.ltrb = nn.Conv2d(width, 4, 1)
        self.obj_bias = nn.Parameter(torch.zeros(1))
        assert self.ltrb.bias is not None
        nn.init.constant_(self.ltrb.bias, -2.0)  # small boxes to start with

    def forward(self, f16: torch.Tensor, f32: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """→ box (B, 4) xyxy in [0, 1], objectness logit (B,), cell logits (B, H, W)."""
        x = self.reduce16(f16) + F.interpolate(self.reduce32(f32), size=f16.shape[-2:], mode="nearest")
        x = self.body(x)
        logits = self.logit(x)[:, 0]
        b, h, w = logits.shape
        ltrb = F.softplus(self.ltrb(x)) * 0.25  # in units of the square's side
        ys = (torch.arange(h, dtype=x.dtype) + 0.5) / h
        xs = (torch.arange(w, dtype=x.dtype) + 0.5) / w
        cy, cx = ys.view(1, h, 1).expand(b, h, w), xs.view(1, 1, w).expand(b, h, w)
        boxes = torch.stack([cx - ltrb[:, 0], cy - ltrb[:, 1], cx + ltrb[:, 2], cy + ltrb[:, 3]], dim=1)
        weights = torch.softmax(logits.reshape(b, -1), dim=1).view(b, 1, h, w)
        box = (boxes * weights).sum(dim=(2, 3)).clamp(0.0, 1.0)
        objectness = torch.logsumexp(logits.reshape(b, -1), dim=1) - math.log(h * w) + self.obj_bias
        return box, objectness, logits


class LocaliserNet(nn.Module):
    """Backbone and head as one graph for ONNX: (B, 3, S, S) in [-1, 1] → box (B, 4), objectness logit (B,)."""

    def __init__(self, backbone: nn.Module, head: BoxHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f16, f32 = self.backbone(x)
        box, objectness, _ = self.head(f16, f32)
        return box, objectness


@torch.no_grad()
def extract(samples: list[Sample], backbone: nn.Module, config: LocaliserTrainConfig) -> Features:
    """The frozen backbone's maps of every sample, in half precision (4,585 samples: about 300 MB)."""
    f16s, f32s = [], []
    for start in range(0, len(samples), config.batch_size):
        batch = samples[start : start + config.batch_size]
        f16, f32 = backbone(torch.from_numpy(np.stack([to_input(s.square) for s in batch])))
        f16s.append(f16.half())
        f32s.append(f32.half())
    return Features(
        f16=torch.cat(f16s),
        f32=torch.cat(f32s),
        boxes=torch.from_numpy(np.stack([s.box for s in samples])).float(),
        positive=torch.tensor([s.positive for s in samples]),
        view=torch.tensor([s.view for s in samples]),
        area=torch.tensor([s.area for s in samples]),
        kind=[s.kind for s in samples],
        split=[s.split for s in samples],
        group=[s.group for s in samples],
    )


def _fingerprint(config: LocaliserTrainConfig, labels: Path) -> str:
    """What the cached features depend on: the labels file and the sample settings."""
    settings = {k: v for k, v in asdict(config).items() if k not in _TRAINING_ONLY}
    digest = hashlib.sha256(labels.read_bytes())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def cached_features(frame: pd.DataFrame, backbone: nn.Module, config: LocaliserTrainConfig) -> Features:
    """The features from ``cache/`` beside the output when the same data and settings made them; else
    built (decode, samples, backbone: most of a run's time) and saved there."""
    cache_file = Path(config.out).parent / "cache" / f"localiser-{_fingerprint(config, labels_path(config))}.pt"
    if cache_file.exists():
        log.info("using cached features %s", cache_file)
        return Features(**torch.load(cache_file, weights_only=True))
    started = time.time()
    samples = build_samples(frame, config)
    log.info("%d samples built in %.0f s", len(samples), time.time() - started)
    features = extract(samples, backbone, config)
    log.info("features %s %s in %.0f s", tuple(features.f16.shape), tuple(features.f32.shape), time.time() - started)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp")
    torch.save(asdict(features), tmp)
    tmp.replace(cache_file)
    return features


def giou_loss(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Generalised IoU loss: still a gradient when the boxes do not overlap."""
    ix = (torch.min(p[:, 2], t[:, 2]) - torch.max(p[:, 0], t[:, 0])).clamp(min=0)
    iy = (torch.min(p[:, 3], t[:, 3]) - torch.max(p[:, 1], t[:, 1])).clamp(min=0)
    inter = ix * iy

    def area(z: torch.Tensor) -> torch.Tensor:
        return (z[:, 2] - z[:, 0]).clamp(min=0) * (z[:, 3] - z[:, 1]).clamp(min=0)

    union = area(p) + area(t) - inter + 1e-7
    hull = (torch.max(p[:, 2], t[:, 2]) - torch.min(p[:, 0], t[:, 0])) * (
        torch.max(p[:, 3], t[:, 3]) - torch.min(p[:, 1], t[:, 1])
    ) + 1e-7
    return (1 - inter / union + (hull - union) / hull).mean()


def inside_mask(boxes: torch.Tensor, positive: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H, W): 1 for the cells whose centre is inside the animal's box (at least its centre cell)."""
    ys = (torch.arange(h) + 0.5) / h
    xs = (torch.arange(w) + 0.5) / w
    b = boxes[:, :, None, None]
    inside = (
        (xs[None, None, :] >= b[:, 0])
        & (xs[None, None, :] <= b[:, 2])
        & (ys[None, :, None] >= b[:, 1])
        & (ys[None, :, None] <= b[:, 3])
    )
    mask = inside.float() * positive[:, None, None].float()
    cx = ((boxes[:, 0] + boxes[:, 2]) / 2 * w).long().clamp(0, w - 1)
    cy = ((boxes[:, 1] + boxes[:, 3]) / 2 * h).long().clamp(0, h - 1)
    rows = torch.arange(len(boxes))
    mask[rows, cy, cx] = torch.maximum(mask[rows, cy, cx], positive.float())
    return mask


def train_head(features: Features, indices: np.ndarray, config: LocaliserTrainConfig, seed: int) -> BoxHead:
    """The head trained on the cached features of ``indices``: objectness, cells, L1 and GIoU losses."""
    torch.manual_seed(seed)
    head = BoxHead(features.f16.shape[1], features.f32.shape[1], config.head_width)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(indices) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps, pct_start=0.1)
    order_rng = np.random.default_rng(seed)
    head.train()
    for _ in range(config.epochs):
        order = order_rng.permutation(indices)
        for start in range(0, len(order), config.batch_size):
            b = torch.from_numpy(order[start : start + config.batch_size])
            box, objectness, logits = head(features.f16[b].float(), features.f32[b].float())
            positive, target = features.positive[b], features.boxes[b]
            loss = F.binary_cross_entropy_with_logits(objectness, positive.float())
            cells = inside_mask(target, positive, logits.shape[1], logits.shape[2])
            loss = loss + config.cell_loss_weight * F.binary_cross_entropy_with_logits(logits, cells)
            if positive.any():
                p, t = box[positive], target[positive]
                loss = loss + config.l1_loss_weight * F.l1_loss(p, t) + config.giou_loss_weight * giou_loss(p, t)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    head.eval()
    return head


@torch.no_grad()
def predict(head: BoxHead, features: Features, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4) in [0, 1] and P(animal) (N,) for the samples ``indices``."""
    boxes, scores = [], []
    for start in range(0, len(indices), 256):
        b = torch.from_numpy(indices[start : start + 256])
        box, objectness, _ = head(features.f16[b].float(), features.f32[b].float())
        boxes.append(box.numpy())
        scores.append(torch.sigmoid(objectness).numpy())
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    return np.concatenate(boxes), np.concatenate(scores)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of matching rows of two (N, 4) xyxy arrays."""
    ix = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def iou_summary(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """n, mean IoU and the shares at IoU ≥ 0.5 and ≥ 0.3."""
    if not len(pred):
        return {"n": 0}
    iou = box_iou(pred, true)
    return {
        "n": len(iou),
        "mean_iou": round(float(iou.mean()), 3),
        "iou50": round(float(np.mean(iou >= 0.5)), 3),
        "iou30": round(float(np.mean(iou >= 0.3)), 3),
    }


def cross_validate(features: Features, config: LocaliserTrainConfig) -> dict[str, Any]:
    """Folds of the real boxed photos' individuals: each fold's photos scored by a head that never saw that
    animal (all made-up training pictures always in), against the whole-frame box as the baseline."""
    kind, split, group = np.array(features.kind), np.array(features.split), np.array(features.group)
    real = kind == "real"
    made_up_train = np.nonzero(~real & (split == "train"))[0]
    fold_of = {g: int(hashlib.sha256(f"{config.seed}:{g}".encode()).hexdigest(), 16) % config.cv_folds for g in group}
    fold = np.array([fold_of[g] for g in group])
    evaluated = real & (features.view.numpy() == 0)
    pred = np.zeros((len(kind), 4), np.float32)
    for k in range(config.cv_folds):
        held = real & (fold == k)
        head = train_head(features, np.concatenate([made_up_train, np.nonzero(real & ~held)[0]]), config, seed=k)
        scored = np.nonzero(held & evaluated)[0]
        pred[scored] = predict(head, features, scored)[0]
        log.info("fold %d: %s", k, iou_summary(pred[scored], features.boxes[scored].numpy()))
    scored = np.nonzero(evaluated)[0]
    true = features.boxes[scored].numpy()
    whole = np.tile(np.array([[0, 0, 1, 1]], np.float32), (len(scored), 1))
    return {
        "real_held_out_individuals": iou_summary(pred[scored], true),
        "whole_frame_baseline": iou_summary(whole, true),
    }


def held_out_report(head: BoxHead, features: Features, config: LocaliserTrainConfig) -> dict[str, Any]:
    """The final head on the test split: boxes per kind (composites by size) and objectness per kind."""
    kind, split = np.array(features.kind), np.array(features.split)
    tested = np.nonzero((split == "test") & ((kind != "real") | (features.view.numpy() == 0)))[0]
    pred, score = predict(head, features, tested)
    true, kinds = features.boxes[tested].numpy(), kind[tested]
    areas = features.area[tested].numpy()
    report: dict[str, Any] = {"boxes": {k: iou_summary(pred[kinds == k], true[kinds == k]) for k in POSITIVE_KINDS}}
    low, high = config.composite_area
    edges = (low, 0.05, 0.10, high)
    report["composites_by_area"] = {
        f"{a:.2f}-{b:.2f}": iou_summary(pred[m], true[m])
        for a, b in itertools.pairwise(edges)
        if (m := (kinds == "composite") & (areas >= a) & (areas < b)).any()
    }
    report["objectness"] = {
        k: {
            "n": int(m.sum()),
            "min": float(score[m].min()),
            "median": float(np.median(score[m])),
            "max": float(score[m].max()),
        }
        for k in (*POSITIVE_KINDS, *NEGATIVE_KINDS)
        if (m := kinds == k).any()
    }
    positive = features.positive[tested].numpy()
    report["thresholds"] = {
        f"{t:.2f}": {
            "animals_kept": float(np.mean(score[positive] >= t)) if positive.any() else None,
            **{f"{k}_rejected": float(np.mean(score[kinds == k] < t)) for k in NEGATIVE_KINDS if (kinds == k).any()},
        }
        for t in REPORTED_THRESHOLDS
    }
    return report


def export_onnx(net: LocaliserNet, path: Path, size: int) -> float:
    """Write the ONNX file the serving ``Localiser`` reads; → its largest difference from PyTorch."""
    import onnxruntime as ort

    net.eval()
    example = torch.from_numpy(to_input(np.full((size, size, 3), 128, np.uint8))[None])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and a constant-folding trace note
        torch.onnx.export(
            net,
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
            opset_version=17,
            dynamo=False,
        )
    with torch.no_grad():
        expected = [t.numpy() for t in net(example)]
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: example.numpy()})
    tmp.replace(path)
    return float(max(np.abs(g - e).max() for g, e in zip(got, expected, strict=True)))


def labels_path(config: LocaliserTrainConfig) -> Path:
    return Path(config.data_root) / "labels.csv"


def train_localiser(config: LocaliserTrainConfig) -> dict[str, Any]:
    """Samples → cached features → cross-validation → the final head on everything but the test split →
    ``config.out`` (ONNX) and its report beside it (``.json``); → the report."""
    torch.set_num_threads(config.threads)
    started = time.time()
    frame = load_dataset(config.data_root, config.seed, split="individual")
    if "source" not in frame.columns:
        raise LabelsError(f"{labels_path(config)} lacks the column source (which photos are pre-cropped)")
    backbone = build_backbone(config)
    features = cached_features(frame, backbone, config)
    kind, split = np.array(features.kind), np.array(features.split)
    report: dict[str, Any] = {
        "samples": pd.crosstab(kind, split).to_dict(orient="index"),
        "config": asdict(config),
    }
    if config.cv_folds:
        report["cross_validation"] = cross_validate(features, config)
    # Made-up training pictures and the real photos of training and validation individuals.
    final = np.nonzero(np.where(kind == "real", split != "test", split == "train"))[0]
    head = train_head(features, final, config, seed=0)
    report["test"] = held_out_report(head, features, config)
    out = Path(config.out)
    report["onnx_max_abs_diff"] = export_onnx(LocaliserNet(backbone, head), out, config.input_size)
    report["seconds"] = round(time.time() - started)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    log.info("wrote %s and its report %s", out, out.with_suffix(".json"))
    return report
