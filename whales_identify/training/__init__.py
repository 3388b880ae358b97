"""Data, training, tuning, bundling and evaluation: what makes and measures ``models/``.

``train`` and ``bundle`` import PyTorch; import them by path (``whales_identify.training.train``).
"""

from whales_identify.training.data import load_dataset, read_labels
from whales_identify.training.evaluate import evaluate
from whales_identify.training.metrics import average_precision_at_5, map_at_5, top_k_accuracy
from whales_identify.training.tune import tune

__all__ = ["average_precision_at_5", "evaluate", "load_dataset", "map_at_5", "read_labels", "top_k_accuracy", "tune"]
