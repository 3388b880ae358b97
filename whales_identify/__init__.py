"""whales_identify: photo-identification of whales and dolphins.

Which species, which known individual (top 5, with probabilities), or a new
individual not yet in the catalogue. Everything (the app, the CLI, the
benchmarks) goes through this package; it knows nothing of any UI.

    from whales_identify import Identifier
    result = Identifier.load().identify("photo.jpg")
"""

# Must run before anything imports timm (see _torchvision_guard's docstring).
from . import _torchvision_guard  # noqa: F401  isort: skip

__version__ = "0.1.0"


def __getattr__(name: str):
    """Lazy exports, so importing the package for a light helper stays cheap."""
    if name == "Identifier":
        from .identify import Identifier

        return Identifier
    if name in ("Identification", "Candidate"):
        from . import results

        return getattr(results, name)
    raise AttributeError(name)


__all__ = ["Candidate", "Identification", "Identifier", "__version__"]
