"""whales_identify: photo-identification of whales and dolphins.

Which species, which known individual (top 5, with probabilities), or a new
individual not yet in the catalogue. Everything (the app, the CLI, the
benchmarks) goes through this package; it knows nothing of any UI.

    from whales_identify import Identifier
    result = Identifier.load().identify("photo.jpg")

The folders are the architecture (docs/ARCHITECTURE.md): ``inputs`` (untrusted
bytes → photos), ``model`` (the networks and how they run), ``matching`` (catalogue
search and the decision rules), ``catalog`` (the user's own catalogue),
``batch`` (many photos, locally or on Ray), ``training`` (data, training,
tuning, bundling, evaluation) and ``cli``; ``services`` assembles them.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Public name → module; imported on first use, so ``import whales_identify`` stays cheap.
_EXPORTS = {
    "Identifier": "whales_identify.matching.identifier",
    "Identification": "whales_identify.matching.results",
    "Candidate": "whales_identify.matching.results",
    "Gallery": "whales_identify.matching.gallery",
    "Catalog": "whales_identify.catalog.store",
    "Services": "whales_identify.services",
    "load_services": "whales_identify.services",
    "WhaleIdError": "whales_identify.errors",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'whales_identify' has no attribute {name!r}")


__all__ = [*_EXPORTS, "__version__"]
