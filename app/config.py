"""The web app's settings: one dataclass, overridable with WHALE_ID_* environment variables.

The package's own settings (model, limits, catalogue) stay in ``whales_identify.config``;
these are what only the app needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from whales_identify.config import (
    DEFAULT_CATALOGUE,
    DEFAULT_CHECKPOINT,
    DEFAULT_INFERENCE_CONFIG,
    MODELS_DIR,
    REPO_DIR,
    ImageLimits,
    env,
)


@dataclass
class AppConfig:
    """Paths (``WHALE_ID_CHECKPOINT``, ``_CATALOGUE``, ``_INFERENCE_CONFIG``, ``_EXAMPLES_DIR``) and page limits."""

    checkpoint: str = str(DEFAULT_CHECKPOINT)
    catalogue: str = str(DEFAULT_CATALOGUE)  # "none": an empty catalogue (everything is new)
    inference_config: str = str(DEFAULT_INFERENCE_CONFIG)
    model_card: str = str(MODELS_DIR / "MODEL_CARD.md")
    examples_dir: str = str(REPO_DIR / "tests" / "data")
    # One photo: the decoder's own limit (ImageLimits.max_file_bytes), in MiB.
    max_photo_mb: int = ImageLimits.max_file_bytes // (1024 * 1024)
    # A batch upload (a ZIP or several photos), each file; also server.maxUploadSize in .streamlit/config.toml.
    max_batch_upload_mb: int = 500
    preview_long_side: int = 384  # photos kept per batch row for the detail view
    thumbnail_px: int = 96
    results_kept: int = 4  # single-photo results remembered per browser session

    @classmethod
    def from_env(cls) -> AppConfig:
        config = cls()
        for name in ("checkpoint", "catalogue", "inference_config", "examples_dir"):
            value = env(name)
            if value:
                setattr(config, name, value)
        return config
