"""The PyTorch side of the network: the reference engine and the ONNX export.

Imported only for training, export and ``WHALE_ID_ENGINE=torch``: the serving
path runs the ONNX export and never loads PyTorch or timm.
"""

from __future__ import annotations

import copy
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from whales_identify.model.engines import INFO_KEY, INPUT_NAME, OUTPUT_NAMES, VERSION_KEY
from whales_identify.model.info import NetworkInfo
from whales_identify.model.network import WhaleNet


class TorchEngine:
    """The PyTorch model itself: the reference every other engine is tested against."""

    name = "torch"

    def __init__(self, model: WhaleNet) -> None:
        self.model = model.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._lock = threading.Lock()  # torch's thread count is process-wide: one forward at a time

    @torch.inference_mode()
    def run(self, batch: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        tensor = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
        with self._lock:
            before = torch.get_num_threads()
            if threads:
                torch.set_num_threads(min(before, threads))
            try:
                embeddings, logits = self.model(tensor)
            finally:
                torch.set_num_threads(before)
        return embeddings.numpy(), logits.numpy()


def export_onnx(model: WhaleNet, path: Path | str, info: NetworkInfo) -> Path:
    """Write the forward pass (embeddings, species logits) as ONNX, stamped with the model version
    and carrying ``info`` (names, prototypes), so serving needs nothing else from the checkpoint.

    Needs the ``onnx`` package (export only; running needs just onnxruntime).
    """
    import onnx  # local: only export needs it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = model.config.image_size
    example = torch.zeros(1, 3, size, size)
    # The caller's model stays as it is.
    model = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    tmp = path.with_suffix(".tmp.onnx")
    done = path.with_suffix(".new.onnx")
    # The TorchScript exporter: the newer torch.export one needs the onnxscript package as well.
    # Deprecated, but it exports this plain CNN exactly (outputs within 5e-7 of PyTorch, tested).
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAMES[0]: {0: "batch"}, OUTPUT_NAMES[1]: {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        proto = onnx.load(str(tmp))
        for key, value in ((VERSION_KEY, info.model_version), (INFO_KEY, info.to_metadata())):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(done))
        os.replace(done, path)  # atomic: an interrupted export never leaves a half-written model
    finally:
        tmp.unlink(missing_ok=True)
        done.unlink(missing_ok=True)
    return path
