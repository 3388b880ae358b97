"""The identification network: timm backbone → GeM → embedding neck → heads.

The embedding (L2-normalised) is what inference uses: retrieval against the
catalogue. The ArcFace head shapes that space during training and its class
centres double as one prototype per training individual at inference.
"""

from __future__ import annotations

import math
from typing import Any

# Must run before timm is imported (see _torchvision_guard's docstring).
from whales_identify.model import _torchvision_guard  # noqa: F401  isort: skip
import timm
import torch
import torch.nn.functional as F
from torch import nn

from whales_identify.config import ModelConfig


class GeM(nn.Module):
    """Generalised-mean pooling: between average (p=1) and max (p→∞) pooling,
    with p learned; it favours the few strong activations of distinctive marks."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1))
        return pooled.pow(1.0 / self.p)


class ArcFace(nn.Module):
    """Sub-center ArcFace with an optional margin per class.

    Logits are ``s * cos(theta + m)`` for the target class and ``s * cos(theta)``
    otherwise; with ``k`` sub-centres a class's cosine is its best sub-centre's,
    which tolerates a few mislabelled or very different photos.
    """

    def __init__(self, in_features: int, n_classes: int, scale: float, margin: float, subcenters: int = 1) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.subcenters = subcenters
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(n_classes * subcenters, in_features))
        nn.init.xavier_uniform_(self.weight)
        self.margins: torch.Tensor
        self.register_buffer("margins", torch.full((n_classes,), float(margin)))

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine to each class (best sub-centre), shape (batch, n_classes)."""
        cos = F.linear(F.normalize(embeddings), F.normalize(self.weight))
        if self.subcenters > 1:
            cos = cos.view(-1, self.n_classes, self.subcenters).amax(dim=2)
        return cos

    def prototypes(self) -> torch.Tensor:
        """Normalised class centres, shape (n_classes, subcenters, dim)."""
        return F.normalize(self.weight, dim=1).view(self.n_classes, self.subcenters, -1)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(embeddings).clamp(-1 + 1e-7, 1 - 1e-7)
        valid = labels >= 0
        safe = labels.clamp(min=0)
        m = self.margins[safe]
        target_cos = cos.gather(1, safe[:, None]).squeeze(1)
        theta = torch.acos(target_cos)
        # Past pi - m, cos(theta + m) stops decreasing; use the usual linear fallback.
        with_margin = torch.where(theta + m < math.pi, torch.cos(theta + m), target_cos - m * torch.sin(m))
        one_hot = F.one_hot(safe, self.n_classes).bool() & valid[:, None]
        logits = torch.where(one_hot, with_margin[:, None].expand_as(cos), cos)
        return logits * self.scale


def dynamic_margins(counts: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Margins that grow as an individual's photo count shrinks (n^-1/4 scaling),
    mapped linearly into [low, high]."""
    raw = counts.float().clamp(min=1).pow(-0.25)
    span = (raw.max() - raw.min()).clamp(min=1e-6)
    return low + (high - low) * (raw - raw.min()) / span


class WhaleNet(nn.Module):
    """Backbone + GeM + BN neck, with an individual (ArcFace) and a species head."""

    def __init__(self, config: ModelConfig, n_individuals: int, n_species: int) -> None:
        super().__init__()
        self.config = config
        # Any: timm's stages are reached by name below (blocks, conv_head, bn2).
        backbone: Any = timm.create_model(config.backbone, pretrained=False, num_classes=0, global_pool="")
        self.backbone = backbone
        self.pool = GeM(config.gem_p)
        self.neck = nn.Sequential(
            nn.Linear(backbone.num_features, config.embedding_dim, bias=False),
            nn.BatchNorm1d(config.embedding_dim),
        )
        self.arcface = ArcFace(
            config.embedding_dim, n_individuals, config.arcface_scale, config.arcface_margin, config.arcface_subcenters
        )
        self.species_head = nn.Linear(config.embedding_dim, n_species)

    # The backbone is split in two so training can cache the frozen first part.
    def forward_stem(self, images: torch.Tensor, frozen_stages: int) -> torch.Tensor:
        b = self.backbone
        x = b.bn1(b.conv_stem(images))
        for block in b.blocks[:frozen_stages]:
            x = block(x)
        return x

    def forward_tail(self, features: torch.Tensor, frozen_stages: int) -> torch.Tensor:
        """From the frozen stages' output to the raw (un-normalised) embedding."""
        b = self.backbone
        x = features
        for block in b.blocks[frozen_stages:]:
            x = block(x)
        x = b.bn2(b.conv_head(x))
        return self.neck(self.pool(x))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings, shape (batch, embedding_dim)."""
        return F.normalize(self.forward_tail(self.forward_stem(images, 0), 0), dim=1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and species logits: everything inference needs in one pass."""
        raw = self.forward_tail(self.forward_stem(images, 0), 0)
        return F.normalize(raw, dim=1), self.species_head(raw)
