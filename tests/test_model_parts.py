"""Unit tests of the network's parts: GeM, ArcFace, dynamic margins, pretrained load."""

from __future__ import annotations

import math

import pytest
import torch

from whales_identify.config import ModelConfig
from whales_identify.model.network import ArcFace, GeM, WhaleNet, dynamic_margins
from whales_identify.training.pretrained import PretrainedWeightsUnavailable, load_imagenet_weights


def test_gem_with_p1_is_average_pooling() -> None:
    x = torch.rand(2, 3, 5, 7) + 0.1
    gem = GeM(p=1.0)
    assert torch.allclose(gem(x), x.mean(dim=(2, 3)), atol=1e-6)


def test_gem_with_large_p_approaches_max_pooling() -> None:
    x = torch.rand(2, 4, 6, 6) + 0.1
    pooled = GeM(p=60.0)(x)
    # with 36 positions, mean^(1/p) is within 36^(-1/60) ≈ 0.94 of the max
    assert torch.allclose(pooled, x.amax(dim=(2, 3)), rtol=0.07)
    assert (pooled > x.mean(dim=(2, 3))).all()


def test_gem_p_is_learned() -> None:
    gem = GeM(p=3.0)
    gem(torch.rand(1, 2, 3, 3)).sum().backward()
    assert gem.p.grad is not None and gem.p.grad.abs().item() > 0


def test_arcface_adds_margin_to_target_only() -> None:
    head = ArcFace(4, n_classes=3, scale=10.0, margin=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3, 4))
    emb = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    logits = head(emb, torch.tensor([0]))
    cos = 1 / math.sqrt(2)
    assert logits[0, 0].item() == pytest.approx(10 * math.cos(math.acos(cos) + 0.5), abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(10 * cos, abs=1e-4)
    assert logits[0, 2].item() == pytest.approx(0.0, abs=1e-4)


def test_arcface_ignores_unlabelled_rows() -> None:
    head = ArcFace(4, n_classes=3, scale=10.0, margin=0.5)
    emb = torch.randn(2, 4)
    logits = head(emb, torch.tensor([-1, -1]))
    assert torch.allclose(logits, head.cosine(emb) * 10, atol=1e-5)


def test_subcenter_cosine_is_best_subcentre() -> None:
    head = ArcFace(2, n_classes=1, scale=1.0, margin=0.1, subcenters=2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert head.cosine(torch.tensor([[0.0, 2.0]])).item() == pytest.approx(1.0)
    assert head.prototypes().shape == (1, 2, 2)


def test_dynamic_margins_larger_for_rare_individuals() -> None:
    margins = dynamic_margins(torch.tensor([1, 4, 50]), 0.2, 0.45)
    assert margins[0].item() == pytest.approx(0.45)
    assert margins[2].item() == pytest.approx(0.2)
    assert margins[0] > margins[1] > margins[2]


def test_imagenet_weights_load_strictly_and_change_the_backbone() -> None:
    model = WhaleNet(ModelConfig(), n_individuals=3, n_species=2)
    before = model.backbone.conv_stem.weight.clone()
    load_imagenet_weights(model.backbone, "tf_efficientnet_lite0")
    assert not torch.equal(before, model.backbone.conv_stem.weight)


def test_unknown_backbone_has_no_packaged_weights() -> None:
    with pytest.raises(PretrainedWeightsUnavailable):
        load_imagenet_weights(torch.nn.Linear(1, 1), "resnet50")


def test_embeddings_are_unit_length() -> None:
    model = WhaleNet(ModelConfig(), n_individuals=3, n_species=2).eval()
    with torch.no_grad():
        embeddings, species = model(torch.randn(2, 3, 224, 224))
    assert embeddings.shape == (2, 512) and species.shape == (2, 2)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(2), atol=1e-5)
