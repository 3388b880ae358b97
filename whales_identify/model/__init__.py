"""The networks and how they run: preprocessing, the ONNX Runtime engine, checkpoints, the mask.

Serving needs only what is re-exported here (numpy, Pillow, ONNX Runtime). The PyTorch
side (``network``, ``torch_engine``) is imported by path, for training, export and the
reference engine, so importing this package never loads torch or timm.
"""

from whales_identify.model.checkpoint import load_checkpoint, model_version, network_info
from whales_identify.model.engines import Engine, OnnxEngine, onnx_path_for, open_network
from whales_identify.model.info import NetworkInfo
from whales_identify.model.mask import AnimalMask, Masker
from whales_identify.model.preprocess import to_array
from whales_identify.model.threads import single_threaded_blas

__all__ = [
    "AnimalMask",
    "Engine",
    "Masker",
    "NetworkInfo",
    "OnnxEngine",
    "load_checkpoint",
    "model_version",
    "network_info",
    "onnx_path_for",
    "open_network",
    "single_threaded_blas",
    "to_array",
]
