"""Who runs the network's forward pass: PyTorch (the reference) or ONNX Runtime (the fast path).

Both take a float32 batch (N, 3, H, W), already normalised, and give L2-normalised
embeddings and species logits. The ONNX file is exported from the checkpoint and
records that checkpoint's model version, so a stale export is never used with a
newer checkpoint. ONNX Runtime is already installed for the masks (rembg), and
on this 2-core CPU it runs the same network about three times faster than
PyTorch (see docs/SPEED.md); tests hold it to the PyTorch result.
"""

from __future__ import annotations

import copy
import logging
import os
import queue
import threading
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .config import SpeedConfig
from .errors import ModelLoadError
from .model import WhaleNet

log = logging.getLogger(__name__)
INPUT_NAME = "images"
OUTPUT_NAMES = ("embeddings", "species_logits")
VERSION_KEY = "whales_identify_model_version"
ENGINES = ("auto", "onnx", "torch")


class Engine(Protocol):
    """A forward pass; safe to call from several threads at once."""

    name: str

    def run(self, batch: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]: ...


class TorchEngine:
    """The PyTorch model itself: the reference every other engine is tested against."""

    name = "torch"

    def __init__(self, model: WhaleNet) -> None:
        self.model = model.eval().to(memory_format=torch.channels_last)
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


class OnnxEngine:
    """The exported network run by ONNX Runtime.

    Sessions are pooled by thread count and each serves one run at a time:
    several runs sharing one session made its memory arena grow by some 450 MB
    over a 500-photo batch, while one session per concurrent run stays small
    (docs/SPEED.md). A single photo uses ``SpeedConfig.onnx_threads`` (lowest
    latency); the batch pipeline runs single-threaded sessions side by side
    (highest throughput on few cores). The pool only grows to the concurrency
    actually seen: two for a batch on this machine, one more per app session
    identifying at the same instant.
    """

    name = "onnx"

    def __init__(self, path: Path | str, speed: SpeedConfig | None = None) -> None:
        import onnxruntime as ort  # local: only this engine needs it

        self.path = Path(path)
        self.speed = speed or SpeedConfig()
        self._ort = ort
        self._idle: dict[int, queue.SimpleQueue] = {}
        self._lock = threading.Lock()
        try:
            first = self._new_session(self.speed.onnx_threads)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ModelLoadError(f"{self.path.name} is not a readable ONNX model: {exc}") from exc
        self._version = first.get_modelmeta().custom_metadata_map.get(VERSION_KEY, "")
        self._pool(self.speed.onnx_threads).put(first)

    def model_version(self) -> str:
        """The checkpoint version this file was exported from ("" when unstamped)."""
        return self._version

    def _pool(self, threads: int) -> queue.SimpleQueue:
        with self._lock:
            return self._idle.setdefault(threads, queue.SimpleQueue())

    def _new_session(self, threads: int):
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle threads must not spin: the batch pipeline decodes photos on the other core meanwhile.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        return self._ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def run(self, batch: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        pool = self._pool(threads or self.speed.onnx_threads)
        try:
            session = pool.get_nowait()
        except queue.Empty:
            try:
                session = self._new_session(threads or self.speed.onnx_threads)
            except Exception as exc:  # e.g. out of memory: onnxruntime's own exception types
                raise ModelLoadError(f"cannot start another ONNX Runtime session: {exc}") from exc
        try:
            embeddings, logits = session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(batch)})
        finally:
            pool.put(session)
        return embeddings, logits


def export_onnx(model: WhaleNet, path: Path | str, model_version: str) -> Path:
    """Write the forward pass (embeddings, species logits) as ONNX, stamped with the model version.

    Needs the ``onnx`` package (export only; running needs just onnxruntime).
    """
    import onnx  # local: only export needs it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = model.config.image_size
    example = torch.zeros(1, 3, size, size)
    model = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)  # the caller's stays as it is
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
        entry = proto.metadata_props.add()
        entry.key, entry.value = VERSION_KEY, model_version
        onnx.save(proto, str(done))
        os.replace(done, path)  # atomic: an interrupted export never leaves a half-written model
    finally:
        tmp.unlink(missing_ok=True)
        done.unlink(missing_ok=True)
    return path


def onnx_path_for(checkpoint: Path | str) -> Path:
    """The export that sits beside a checkpoint: ``whale_id.pt`` → ``whale_id.onnx``."""
    return Path(checkpoint).with_suffix(".onnx")


def choose_engine(
    kind: str, model: WhaleNet, model_version: str, onnx_file: Path | str, speed: SpeedConfig
) -> Engine:
    """``auto``: ONNX Runtime when an export of this very checkpoint sits beside it, else PyTorch."""
    if kind not in ENGINES:
        raise ModelLoadError(f"unknown engine {kind!r}; choose one of {', '.join(ENGINES)}")
    if kind == "torch":
        return TorchEngine(model)
    onnx_file = Path(onnx_file)
    if not onnx_file.exists():
        if kind == "onnx":
            raise ModelLoadError(
                f"{onnx_file.name} not found; export it with `python -m whales_identify export-onnx`"
            )
        return TorchEngine(model)
    try:
        engine = OnnxEngine(onnx_file, speed)
    except ModelLoadError as exc:
        if kind == "onnx":
            raise
        log.warning("%s; using PyTorch meanwhile (re-export with `python -m whales_identify export-onnx`)", exc)
        return TorchEngine(model)
    exported_from = engine.model_version()
    if exported_from != model_version:
        message = (
            f"{onnx_file.name} was exported from model version {exported_from or 'unknown'}, "
            f"but the checkpoint is {model_version}; re-export it with `python -m whales_identify export-onnx`"
        )
        if kind == "onnx":
            raise ModelLoadError(message)
        log.warning("%s; using PyTorch meanwhile", message)
        return TorchEngine(model)
    return engine
