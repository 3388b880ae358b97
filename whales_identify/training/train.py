"""Training: ArcFace over individuals + a balanced species head, on the animal as the field shows it.

Each training photo is seen as crops around the animal's box (the labels' box, else the
localiser's, else the whole photo: ``training/boxes.py``) with field augmentations
(``training/views.py``); patches of sea and sky beside the animals are hard negatives.
Species are drawn and weighed balanced. Two ways to run, one recipe:

* **CPU** (``frozen_stages`` > 0): the first stages keep their ImageNet weights; their outputs
  are computed once for ``views`` views of every photo and cached on disk, and each epoch trains
  the rest on a random cached view: a 2-core CPU trains in well under an hour.
* **GPU** (``frozen_stages`` = 0): the whole backbone trains on views made afresh every epoch
  (``scripts/train_gpu.sh``).

Either way the run can be stopped and continued: after every epoch the model, optimiser,
schedule and random state go to ``OUT.resume.pt``, and the same command picks up from there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import random
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from whales_identify.config import NON_CETACEAN, ModelConfig, TrainConfig
from whales_identify.inputs.imaging import decode_image
from whales_identify.model.checkpoint import save_checkpoint
from whales_identify.model.network import WhaleNet, dynamic_margins
from whales_identify.training.augment import to_tensor
from whales_identify.training.boxes import Box, training_boxes
from whales_identify.training.data import load_dataset
from whales_identify.training.metrics import ground_truth, map_at_5, top_k_accuracy
from whales_identify.training.pretrained import load_imagenet_weights
from whales_identify.training.views import ALIGNED, FIELD, FieldAugment, background_patches, crop_around, field_view

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


@dataclass(frozen=True)
class TrainItem:
    """One thing the network learns from: a photo (and the animal's box in it) or a background patch."""

    path: Path
    individual_id: str  # "" when unknown or not an animal
    species: str
    box: Box | None  # in the decoded photo's pixels; None: the whole photo
    patch: int = -1  # >= 0: the patch-th background patch beside ``box`` (a hard negative)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def training_items(
    rows: pd.DataFrame, boxes: dict[str, Box | None], labelled: set[str], config: TrainConfig
) -> list[TrainItem]:
    """Every photo of ``rows``, plus ``background_patches`` hard negatives beside each labelled box."""
    items: list[TrainItem] = []
    for row in rows.itertuples(index=False):
        box = boxes.get(row.path)
        items.append(TrainItem(Path(row.path), row.individual_id, row.species, box))
        if row.path in labelled and box is not None and row.species != NON_CETACEAN:
            items += [TrainItem(Path(row.path), "", NON_CETACEAN, box, k) for k in range(config.background_patches)]
    return items


def item_view(
    item: TrainItem,
    image: Image.Image,
    rng: random.Random,
    clean: bool,
    margin: float,
    aug: FieldAugment = FIELD,
) -> Image.Image:
    """The view of ``item`` the network learns from: clean (the inference crop) or augmented by ``aug``
    (the field effects; ``ALIGNED`` for the gentle species' close-ups)."""
    if item.patch >= 0:
        assert item.box is not None
        # The same patch every time for this item (a stable seed, unlike hash() of a string).
        patches = background_patches(
            image, item.box, random.Random(zlib.crc32(f"{item.path}#{item.patch}".encode())), 1
        )
        patch = patches[0] if patches else image
        return patch if clean else field_view(patch, None, rng)
    return crop_around(image, item.box, margin) if clean else field_view(image, item.box, rng, aug)


def views_tensor(
    item: TrainItem, n_views: int, model_config: ModelConfig, config: TrainConfig, seed: int, first_clean: bool = True
) -> torch.Tensor:
    """``n_views`` network inputs of one item: the clean crop first (unless not ``first_clean``),
    then field-augmented ones."""
    image = decode_image(item.path, long_side=config.decode_long_side)
    rng = random.Random(seed)
    margin = model_config.crop_margin
    gentle = item.species in {s.strip() for s in config.gentle_species.split(",") if s.strip()}
    aug = ALIGNED if gentle else FIELD
    return torch.stack(
        [
            to_tensor(item_view(item, image, rng, clean=first_clean and v == 0, margin=margin, aug=aug), model_config)
            for v in range(n_views)
        ]
    )


def _as_input(features: torch.Tensor, device: torch.device) -> torch.Tensor:
    return features.to(device).float().contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def cache_stem_features(
    model: WhaleNet,
    items: Sequence[TrainItem],
    n_views: int,
    config: TrainConfig,
    device: torch.device,
    cache_file: Path | None = None,
) -> torch.Tensor:
    """Frozen-stage outputs of every item's views, shape (N, views, C, H, W), float16; kept in
    ``cache_file`` so that a resumed run does not compute them again."""
    if cache_file is not None and cache_file.exists():
        log.info("using cached features %s", cache_file)
        return torch.load(cache_file, weights_only=True)
    model.eval()
    out: list[torch.Tensor] = []
    started = time.time()
    frozen = config.frozen_stages
    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        for start in range(0, len(items), 16):
            batch = list(enumerate(items[start : start + 16], start=start))
            stacks = list(
                pool.map(lambda ii: views_tensor(ii[1], n_views, model.config, config, config.seed + ii[0]), batch)
            )
            images = torch.cat(stacks).to(device).contiguous(memory_format=torch.channels_last)
            feats = model.forward_stem(images, frozen).to(torch.float16).cpu()
            out.append(feats.view(len(batch), n_views, *feats.shape[1:]))
            if (start // 16) % 20 == 0:
                log.info("cached %d/%d items (%.0f s)", start + len(batch), len(items), time.time() - started)
    features = torch.cat(out)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        torch.save(features, tmp)
        tmp.replace(cache_file)
    return features


@torch.no_grad()
def tail_embeddings(
    model: WhaleNet, features: torch.Tensor, frozen: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings and species logits from cached frozen-stage features (clean views)."""
    model.eval()
    embeddings, logits = [], []
    for i in range(0, len(features), 128):
        raw = model.forward_tail(_as_input(features[i : i + 128], device), frozen)
        embeddings.append(F.normalize(raw, dim=1).cpu())
        logits.append(model.species_head(raw).cpu())
    return torch.cat(embeddings), torch.cat(logits)


def quick_retrieval_score(
    gallery: torch.Tensor, gallery_ids: list[str], queries: torch.Tensor, query_ids: list[str]
) -> dict[str, float]:
    """Top-1/top-5/MAP@5 of plain nearest-neighbour retrieval over known individuals."""
    sims = queries @ gallery.T
    known = {i for i in gallery_ids if i}
    truths, predictions = [], []
    for row, individual in zip(sims, query_ids, strict=True):
        if individual not in known:
            continue
        ranked: list[str] = []
        for j in torch.argsort(row, descending=True).tolist():
            if gallery_ids[j] and gallery_ids[j] not in ranked:
                ranked.append(gallery_ids[j])
            if len(ranked) == 5:
                break
        truths.append(ground_truth(individual, known))
        predictions.append(ranked)
    return {
        "n": len(truths),
        "top1": top_k_accuracy(truths, predictions, 1),
        "top5": top_k_accuracy(truths, predictions, 5),
        "map5": map_at_5(truths, predictions),
    }


def validation_scores(
    embeddings: torch.Tensor, logits: torch.Tensor, items: Sequence[TrainItem], species: Sequence[str]
) -> dict[str, float]:
    """On animals never trained on: species accuracy of the head, and leave-one-out retrieval among them."""
    truth = torch.tensor([species.index(i.species) for i in items])
    cetacean = (
        truth != species.index(NON_CETACEAN) if NON_CETACEAN in species else torch.ones(len(items), dtype=torch.bool)
    )
    scores: dict[str, float] = {"n": len(items)}
    if cetacean.any():
        masked = logits.clone()
        if NON_CETACEAN in species:
            masked[:, species.index(NON_CETACEAN)] = -torch.inf
        scores["species_accuracy"] = float((masked.argmax(1) == truth)[cetacean].float().mean())
    ids = [i.individual_id for i in items]
    sims = embeddings @ embeddings.T
    sims.fill_diagonal_(-2.0)  # leave one out: a photo is never its own match
    hits = [ids[int(sims[q].argmax())] == ids[q] for q in range(len(items)) if ids[q] and ids.count(ids[q]) > 1]
    scores["loo_top1"] = float(np.mean(hits)) if hits else float("nan")
    return scores


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _fingerprint(config: TrainConfig, model_config: ModelConfig, items: Sequence[TrainItem]) -> str:
    """What a resumed run and a feature cache must agree on (not: how long or where it runs)."""
    ignored = ("epochs", "out", "resume", "stop_after", "device", "workers")
    recipe = {k: v for k, v in asdict(config).items() if k not in ignored}
    payload = json.dumps([CACHE_FORMAT, recipe, asdict(model_config), [str(i) for i in items]], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class _ViewStream(torch.utils.data.Dataset):
    """Fresh field views every epoch, for training the whole backbone (GPU)."""

    def __init__(self, items: Sequence[TrainItem], model_config: ModelConfig, config: TrainConfig, epoch: int) -> None:
        self.items, self.model_config, self.config, self.epoch = items, model_config, config, epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        seed = (self.config.seed * 1_000_003 + self.epoch) * 1_000_003 + index
        return views_tensor(self.items[index], 1, self.model_config, self.config, seed, first_clean=False)[0], index


def train(config: TrainConfig, model_config: ModelConfig) -> dict[str, Any]:
    """Train, measure on the validation individuals, and write the checkpoint to ``config.out``."""
    seed_everything(config.seed)
    device = pick_device(config.device)
    frame = load_dataset(config.data_root, config.seed, config.split)
    train_rows = frame[frame["split"] == "train"].reset_index(drop=True)
    if config.limit:
        train_rows = train_rows.sample(n=min(config.limit, len(train_rows)), random_state=config.seed).reset_index(
            drop=True
        )
    val_rows = frame[frame["split"] == "val"].reset_index(drop=True)
    boxes, labelled = training_boxes(
        pd.concat([train_rows, val_rows]), config.decode_long_side, model_config.crop_to_animal
    )
    train_items = training_items(train_rows, boxes, labelled, config)
    val_items = [i for i in training_items(val_rows, boxes, labelled, config) if i.patch < 0]

    individuals = sorted({i.individual_id for i in train_items if i.individual_id})
    species = sorted(frame["species"].unique())
    ind_index = {name: i for i, name in enumerate(individuals)}
    sp_index = {name: i for i, name in enumerate(species)}
    individual_species = dict(train_rows[train_rows["individual_id"] != ""].groupby("individual_id")["species"].first())

    model = WhaleNet(model_config, len(individuals), len(species))
    load_imagenet_weights(model.backbone, model_config.backbone)
    counts = Counter(i.individual_id for i in train_items)
    if model_config.dynamic_margin:
        per_class = torch.tensor([counts[name] for name in individuals])
        model.arcface.margins.copy_(
            dynamic_margins(per_class, model_config.dynamic_margin_min, model_config.dynamic_margin_max)
        )
    model.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # ~2x faster on CPU

    frozen = config.frozen_stages
    fingerprint = _fingerprint(config, model_config, train_items)
    out = Path(config.out)
    cache_dir = out.parent / "cache"
    train_feats = val_feats = None
    if frozen > 0:
        log.info("caching %d views of %d training items on %s", config.views, len(train_items), device)
        train_feats = cache_stem_features(
            model, train_items, config.views, config, device, cache_dir / f"train-{fingerprint}.pt"
        )
        val_feats = cache_stem_features(model, val_items, 1, config, device, cache_dir / f"val-{fingerprint}.pt")

    ind_labels = torch.tensor([ind_index.get(i.individual_id, -1) for i in train_items])
    sp_labels = torch.tensor([sp_index[i.species] for i in train_items])
    sp_counts = torch.bincount(sp_labels, minlength=len(species)).float().clamp(min=1)
    sp_weights = sp_counts.pow(-config.species_balance)
    sp_weights = (sp_weights / (sp_weights * sp_counts).sum() * sp_counts.sum()).to(device)
    # Balanced drawing: a photo's chance is its species' weight (count ** -balance), so rare species recur.
    draw_weights = sp_counts.pow(-config.species_balance)[sp_labels]

    for parameter in model.parameters():
        parameter.requires_grad = False
    tail_modules: list[nn.Module] = [*model.backbone.blocks[frozen:], model.backbone.conv_head, model.backbone.bn2]
    if frozen == 0:
        tail_modules += [model.backbone.conv_stem, model.backbone.bn1]
    head_modules: list[nn.Module] = [model.pool, model.neck, model.arcface, model.species_head]
    tail_params = [p for m in tail_modules for p in m.parameters()]
    head_params = [p for m in head_modules for p in m.parameters()]
    for parameter in tail_params + head_params:
        parameter.requires_grad = True
    optimizer = torch.optim.AdamW(
        [{"params": tail_params, "lr": config.lr}, {"params": head_params, "lr": config.lr * config.head_lr_mult}],
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = math.ceil(len(train_items) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[config.lr, config.lr * config.head_lr_mult],
        total_steps=config.epochs * steps_per_epoch,
        pct_start=0.1,
    )
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, Any]] = []
    first_epoch = 0
    resume_file = out.with_suffix(".resume.pt")
    if config.resume and resume_file.exists():
        state = torch.load(resume_file, weights_only=False)  # our own file, written below
        if state.get("fingerprint") == fingerprint and state.get("epochs") == config.epochs:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
            history, first_epoch = state["history"], state["epoch"]
            log.info("resuming after epoch %d from %s", first_epoch, resume_file)
        else:
            log.warning("%s is from another recipe or length; starting afresh", resume_file)

    started = time.time()
    for epoch in range(first_epoch, config.epochs):
        model.train()
        if frozen > 0:
            for module in (model.backbone.conv_stem, model.backbone.bn1, *model.backbone.blocks[:frozen]):
                module.eval()
        order = torch.multinomial(draw_weights, len(train_items), replacement=True, generator=generator)
        total, n = 0.0, 0
        batches = _epoch_batches(order, train_feats, train_items, model_config, config, epoch, generator)
        for idx, inputs in batches:
            raw = (
                model.forward_tail(inputs.to(device), frozen) if frozen > 0 else _full_forward(model, inputs.to(device))
            )
            labels = ind_labels[idx].to(device)
            loss = torch.zeros((), device=device)
            if (labels >= 0).any():
                logits = model.arcface(raw, labels)
                loss = loss + F.cross_entropy(logits, labels, ignore_index=-1, label_smoothing=config.label_smoothing)
            sp_logits = model.species_head(raw)
            loss = loss + config.species_loss_weight * F.cross_entropy(
                sp_logits, sp_labels[idx].to(device), weight=sp_weights, label_smoothing=config.label_smoothing
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(idx)
            n += len(idx)
        entry: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": total / max(n, 1),
            "seconds": round(time.time() - started, 1),
        }
        if val_items and ((epoch + 1) % 4 == 0 or epoch + 1 == config.epochs):
            if val_feats is not None:
                embeddings, logits = tail_embeddings(model, val_feats[:, 0], frozen, device)
            else:
                embeddings, logits = _embed_items(model, val_items, config, device)
            entry["val"] = validation_scores(embeddings, logits, val_items, species)
        history.append(entry)
        log.info("epoch %s", entry)
        tmp = resume_file.with_suffix(".tmp")
        torch.save(
            {
                "fingerprint": fingerprint,
                "epochs": config.epochs,
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "history": history,
            },
            tmp,
        )
        tmp.replace(resume_file)  # atomic: a run killed while saving resumes from the epoch before
        if config.stop_after and epoch + 1 - first_epoch >= config.stop_after and epoch + 1 < config.epochs:
            log.info("stopping after epoch %d as asked; run the same command to continue", epoch + 1)
            return {"stopped_after_epoch": epoch + 1, "history": history, "resume_file": str(resume_file)}

    model.cpu().eval()
    meta = {
        "individuals": individuals,
        "individual_species": individual_species,
        "species": species,
        "train_config": asdict(config),
        "history": history,
        "command": " ".join([Path(sys.executable).name, "-m", "whales_identify", *sys.argv[1:]]),
        "git_commit": _git_commit(),
        "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": str(device),
        "train_images": int(sum(1 for i in train_items if i.patch < 0)),
        "train_background_patches": int(sum(1 for i in train_items if i.patch >= 0)),
    }
    save_checkpoint(model, meta, out)
    resume_file.unlink(missing_ok=True)
    return meta


def _full_forward(model: WhaleNet, images: torch.Tensor) -> torch.Tensor:
    return model.forward_tail(model.forward_stem(images.contiguous(memory_format=torch.channels_last), 0), 0)


def _epoch_batches(
    order: torch.Tensor,
    feats: torch.Tensor | None,
    items: Sequence[TrainItem],
    model_config: ModelConfig,
    config: TrainConfig,
    epoch: int,
    generator: torch.Generator,
):
    """(indices, network input) per batch: a random cached view (CPU), or fresh views (GPU)."""
    if feats is not None:
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            if len(idx) < 2:
                continue
            view = torch.randint(0, feats.shape[1], (len(idx),), generator=generator)
            yield idx, feats[idx, view].float().contiguous(memory_format=torch.channels_last)
        return
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(_ViewStream(items, model_config, config, epoch), order.tolist()),
        batch_size=config.batch_size,
        num_workers=config.workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
    for images, idx in loader:
        yield idx, images


@torch.no_grad()
def _embed_items(
    model: WhaleNet, items: Sequence[TrainItem], config: TrainConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    embeddings, logits = [], []
    for start in range(0, len(items), 64):
        batch = torch.stack(
            [views_tensor(item, 1, model.config, config, 0)[0] for item in items[start : start + 64]]
        ).to(device)
        raw = _full_forward(model, batch)
        embeddings.append(F.normalize(raw, dim=1).cpu())
        logits.append(model.species_head(raw).cpu())
    return torch.cat(embeddings), torch.cat(logits)
