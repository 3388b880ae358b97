"""CPU threading that spans libraries: OpenBLAS (numpy) beside ONNX Runtime.

numpy's OpenBLAS keeps its own threads, which spin after each call. In the
batch pipeline two workers already keep both cores busy, and those spinning
threads stole enough CPU to cut throughput from about 120 to under 40 photos/s
(measured on 2 cores, docs/SPEED.md). A large catalogue search, on the other
hand, is twice as fast on two BLAS threads, so the limit is held only while a
batch runs. OpenBLAS's thread count is process-wide, hence the reference count:
overlapping batches (two app sessions) restore it only when the last one ends.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

_lock = threading.Lock()
_holders = 0
_saved: list = []


@functools.cache
def _controller() -> ThreadpoolController:
    """Made at first use, once numpy, torch and onnxruntime have loaded their thread pools."""
    return ThreadpoolController()


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """numpy's BLAS on one thread for as long as any holder is inside."""
    global _holders
    with _lock:
        if _holders == 0:
            _saved.append(_controller().limit(limits=1, user_api="blas"))
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                _saved.pop().restore_original_limits()
