"""Who runs the network's forward pass: PyTorch (the reference) or ONNX Runtime (the fast path).

Both take a float32 batch (N, 3, H, W), already normalised, and give L2-normalised
embeddings and species logits. The ONNX file is exported from the checkpoint and
records that checkpoint's model version, so a stale export is never used with a
newer checkpoint. ONNX Runtime is already installed for the masks (rembg), and
on this 2-core CPU it runs the same network about three times faster than
PyTorch (see docs/SPEED.md); tests hold it to the PyTorch result.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from whales_identify.config import SpeedConfig
from whales_identify.errors import ModelLoadError
from whales_identify.model.checkpoint import model_version
from whales_identify.model.info import INFO_KEY, NetworkInfo

log = logging.getLogger(__name__)
INPUT_NAME = "images"
OUTPUT_NAMES = ("embeddings", "species_logits")
VERSION_KEY = "whales_identify_model_version"
__all__ = ["ENGINES", "INFO_KEY", "Engine", "OnnxEngine", "onnx_path_for", "open_network"]
ENGINES = ("auto", "onnx", "torch")


class Engine(Protocol):
    """A forward pass; safe to call from several threads at once."""

    name: str

    def run(self, batch: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]: ...


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
        metadata = first.get_modelmeta().custom_metadata_map
        self._version = metadata.get(VERSION_KEY, "")
        self._info_text = metadata.get(INFO_KEY, "")
        self._pool(self.speed.onnx_threads).put(first)

    def model_version(self) -> str:
        """The checkpoint version this file was exported from ("" when unstamped)."""
        return self._version

    def info(self) -> NetworkInfo | None:
        """Names and prototypes carried by the export (None for an export made before they were)."""
        return NetworkInfo.from_metadata(self._info_text, self._version) if self._info_text else None

    def _pool(self, threads: int) -> queue.SimpleQueue:
        with self._lock:
            return self._idle.setdefault(threads, queue.SimpleQueue())

    def _new_session(self, threads: int) -> Any:
        return self._ort.InferenceSession(
            str(self.path), session_options(self._ort, threads), providers=["CPUExecutionProvider"]
        )

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
            # One photo per run: the session's batch dimension is fixed to 1 (``session_options``).
            runs = [session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(row[None])}) for row in batch]
        finally:
            pool.put(session)
        if not runs:
            return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
        return np.concatenate([e for e, _ in runs]), np.concatenate([s for _, s in runs])


# The exports name their batch dimension so (model/torch_engine.py, training/localiser.py).
BATCH_DIMENSION = "batch"


def session_options(ort: Any, threads: int) -> Any:
    """ONNX Runtime settings for our networks, one photo per run.

    The batch dimension is fixed to 1: with every shape known, ONNX Runtime folds away the padding
    arithmetic of the TensorFlow-style 'same' convolutions (Shape, Gather, Ceil, Pad around each
    strided convolution) at load time. Measured on this 2-core CPU, one thread: the identification
    network 10.4 -> 8.3 ms a photo, the localiser 7.3 -> 5.2 ms, the same outputs; a batch of 8 was
    no faster per photo than 8 single runs (benchmarks/bench_batch.py, docs/SPEED.md)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle threads must not spin: the batch pipeline decodes photos on the other core meanwhile.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_free_dimension_override_by_name(BATCH_DIMENSION, 1)
    options.log_severity_level = 3
    return options


def onnx_path_for(checkpoint: Path | str) -> Path:
    """The export that sits beside a checkpoint: ``whale_id.pt`` → ``whale_id.onnx``."""
    return Path(checkpoint).with_suffix(".onnx")


def _torch_network(checkpoint: Path | str) -> tuple[Engine, NetworkInfo]:
    """The checkpoint on PyTorch (imports torch and timm: training, export and the reference only)."""
    from whales_identify.model.checkpoint import load_checkpoint, network_info
    from whales_identify.model.torch_engine import TorchEngine

    model, meta = load_checkpoint(checkpoint)
    return TorchEngine(model), network_info(model, meta)


def open_network(kind: str, checkpoint: Path | str, speed: SpeedConfig) -> tuple[Engine, NetworkInfo]:
    """The engine for ``checkpoint`` and the network's names and prototypes.

    ``auto``: ONNX Runtime when an export of this very checkpoint sits beside it
    (PyTorch is then never imported), else PyTorch with a warning; ``onnx``: that
    export or a clear error; ``torch``: the reference.
    """
    if kind not in ENGINES:
        raise ModelLoadError(f"unknown engine {kind!r}; choose one of {', '.join(ENGINES)}")
    version = model_version(checkpoint)  # also: a missing checkpoint is refused here
    if kind == "torch":
        return _torch_network(checkpoint)
    onnx_file = onnx_path_for(checkpoint)
    if not onnx_file.exists():
        if kind == "onnx":
            raise ModelLoadError(f"{onnx_file.name} not found; export it with `python -m whales_identify export-onnx`")
        return _torch_network(checkpoint)
    try:
        engine = OnnxEngine(onnx_file, speed)
        exported_from = engine.model_version()
        if exported_from != version:
            raise ModelLoadError(
                f"{onnx_file.name} was exported from model version {exported_from or 'unknown'}, "
                f"but the checkpoint is {version}; re-export it with `python -m whales_identify export-onnx`"
            )
        info = engine.info()
        if info is None:
            raise ModelLoadError(
                f"{onnx_file.name} carries no names or prototypes (an older export); "
                "re-export it with `python -m whales_identify export-onnx`"
            )
    except ModelLoadError as exc:
        if kind == "onnx":
            raise
        log.warning("%s; using PyTorch meanwhile", exc)
        return _torch_network(checkpoint)
    return engine, info
