"""What serving needs from a trained network besides its forward pass.

The species and individual names, the ArcFace class centres (one prototype per
training individual) and the training metadata. They travel inside the ONNX
export, so the fast path answers without importing PyTorch; a checkpoint gives
the same record through ``checkpoint.network_info``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from whales_identify.config import ModelConfig
from whales_identify.errors import ModelLoadError

INFO_KEY = "whales_identify_network_info"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class NetworkInfo:
    """Names, prototypes and provenance of one trained network (one model version)."""

    config: ModelConfig
    species: tuple[str, ...]
    individuals: tuple[str, ...]
    prototypes: np.ndarray = field(repr=False)  # (individuals, sub-centres, dim), L2-normalised, float32
    model_version: str = ""
    meta: dict[str, Any] = field(default_factory=dict, repr=False)  # training config, history, date, ...

    def to_metadata(self) -> str:
        """One JSON string (prototypes as base64 float32) for the ONNX file's metadata."""
        prototypes = np.ascontiguousarray(self.prototypes, dtype="<f4")
        return json.dumps(
            {
                "format_version": FORMAT_VERSION,
                "model_config": asdict(self.config),
                "species": list(self.species),
                "individuals": list(self.individuals),
                "prototypes_shape": list(prototypes.shape),
                "prototypes": base64.b64encode(prototypes.tobytes()).decode("ascii"),
                "meta": {k: v for k, v in self.meta.items() if k != "model_version"},
            }
        )

    @classmethod
    def from_metadata(cls, text: str, model_version: str) -> NetworkInfo:
        """Rebuild from ``to_metadata``'s string; ModelLoadError when it is not one."""
        try:
            data = json.loads(text)
            if data.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format {data.get('format_version')!r}, expected {FORMAT_VERSION}")
            shape = tuple(int(n) for n in data["prototypes_shape"])
            prototypes = np.frombuffer(base64.b64decode(data["prototypes"]), dtype="<f4").reshape(shape)
            species = tuple(str(s) for s in data["species"])
            individuals = tuple(str(i) for i in data["individuals"])
            if len(shape) != 3 or shape[0] != len(individuals):
                raise ValueError("prototypes do not match the individuals")
            meta = dict(data.get("meta") or {})
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"the network's metadata is unreadable: {exc}") from exc
        meta["model_version"] = model_version
        return cls(
            ModelConfig.from_dict(data["model_config"]),
            species,
            individuals,
            np.array(prototypes, dtype=np.float32),
            model_version,
            meta,
        )
