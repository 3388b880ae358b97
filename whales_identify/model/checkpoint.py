"""Checkpoints that carry everything needed to rebuild and use the model.

PyTorch is imported only inside the functions that read or write weights: the
serving path needs just ``model_version`` (a hash of the file).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whales_identify.config import ModelConfig
from whales_identify.errors import ModelLoadError
from whales_identify.model.info import NetworkInfo

if TYPE_CHECKING:
    from whales_identify.model.network import WhaleNet

FORMAT_VERSION = 1
_CHECKPOINT_HINT = (
    "Use the checkpoint that came with the project (models/whale_id.pt) or one written by "
    "`python -m whales_identify train`."
)


def save_checkpoint(model: WhaleNet, meta: dict[str, Any], path: Path) -> None:
    """Weights in float16 (half the size, same retrieval results to ~1e-3) plus metadata."""
    import torch

    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"format_version": FORMAT_VERSION, "model_config": asdict(model.config), "state_dict": state, "meta": meta},
        path,
    )


def model_version(path: Path | str) -> str:
    """A short content hash: catalogue embeddings and exports record which model made them."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model checkpoint not found: {path}")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def load_checkpoint(path: Path | str) -> tuple[WhaleNet, dict[str, Any]]:
    """Rebuild the model in eval mode on the CPU; a clear error for a bad file."""
    import torch

    from whales_identify.model.network import WhaleNet

    path = Path(path)
    version = model_version(path)
    try:
        with warnings.catch_warnings():  # (torch warns about pickle protocols on foreign files)
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # ``from None``: torch's own message suggests loading with weights_only=False, which would run
        # whatever code the file holds. Never pass that on.
        raise ModelLoadError(
            f"{path.name} is not a readable whales_identify checkpoint ({type(exc).__name__}): it is damaged, "
            f"cut short or another kind of file. {_CHECKPOINT_HINT}"
        ) from None
    if not isinstance(blob, dict) or blob.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(
            f"{path.name} is not a whales_identify checkpoint of format {FORMAT_VERSION}. {_CHECKPOINT_HINT}"
        )
    try:
        meta = blob["meta"]
        config = ModelConfig.from_dict(blob["model_config"])
        model = WhaleNet(config, len(meta["individuals"]), len(meta["species"]))
        state = {k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        missing = f"no {exc}" if isinstance(exc, KeyError) else type(exc).__name__
        raise ModelLoadError(
            f"{path.name} is an incomplete whales_identify checkpoint ({missing}). {_CHECKPOINT_HINT}"
        ) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path.name} does not match the model architecture: {exc}") from exc
    meta["model_version"] = version
    return model.eval(), meta


def network_info(model: WhaleNet, meta: dict[str, Any]) -> NetworkInfo:
    """The serving record of a loaded checkpoint (what an ONNX export carries too)."""
    return NetworkInfo(
        config=model.config,
        species=tuple(str(s) for s in meta["species"]),
        individuals=tuple(str(i) for i in meta["individuals"]),
        prototypes=model.arcface.prototypes().detach().float().numpy().copy(),
        model_version=str(meta.get("model_version", "")),
        meta=meta,
    )
