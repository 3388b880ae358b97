"""Let ``timm`` import beside a CPU-only torch whose torchvision ops cannot load.

``timm`` imports ``torchvision`` unconditionally. With the CPU build of
``torch==2.13.0`` pip picks ``torchvision==0.28.0``, whose compiled extension is
built for CUDA and fails to load; torchvision's Python side then registers fake
kernels for ``torchvision::nms`` / ``torchvision::qnms`` and import fails with
"operator torchvision::nms does not exist". We never call those detection ops,
so when (and only when) the compiled ops are missing we declare their schemas,
which is all the fake-kernel registration needs. See README, "Why this guard".
"""

from __future__ import annotations

import contextlib

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: torch.library.Library | None = None


def _has_op(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True


def install() -> None:
    """Define the missing schemas once; a working torchvision is left untouched."""
    global _library
    if _library is not None:
        return
    try:
        import importlib.util

        spec = importlib.util.find_spec("torchvision")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return
    # Try loading torchvision's compiled ops the way torchvision does; if that
    # works the real schemas exist and there is nothing to do.
    with contextlib.suppress(Exception):  # any failure here means "ops missing"
        from torchvision import extension  # noqa: F401
    missing = [name for name in _SCHEMAS if not _has_op(name)]
    if not missing:
        return
    _library = torch.library.Library("torchvision", "FRAGMENT")
    for name in missing:
        _library.define(_SCHEMAS[name])


install()
