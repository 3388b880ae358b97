"""The one place that assembles the model, the bundled catalogue and the user's catalogue.

The CLI, the app and ``catalog add`` all start here, so they search the same
thing: the bundled catalogue that came with the checkpoint plus the user's own
photos (SQLite) layered over it, checked to come from the same model version.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from whales_identify.catalog.store import Catalog, default_path
from whales_identify.config import DEFAULT_CATALOGUE, DEFAULT_CHECKPOINT, DEFAULT_INFERENCE_CONFIG
from whales_identify.errors import WhaleIdError
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.identifier import Identifier

UserCatalog = Literal["off", "if_exists", "open"]
NO_CATALOGUE = ("", "none")  # a ``catalogue`` value meaning: start empty (everything is new)


@dataclass
class Services:
    """The shared model, the bundled catalogue it came with, and the user's catalogue over it.

    Thread-safe: app sessions share one instance; ``refresh`` swaps the searched
    gallery under a lock when the user's catalogue has changed.
    """

    identifier: Identifier
    bundled: Gallery
    catalog: Catalog | None = None
    catalog_error: str = ""  # why the user's catalogue could not be opened (the bundled one still works)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self, species: str | None = None) -> Gallery:
        """Search the bundled + user catalogue as it is now (optionally one species); returns that gallery."""
        if self.catalog is not None:
            current: Gallery = self.catalog.gallery(species=species)  # cached inside Catalog until it changes
        elif species:
            current = self.bundled.subset(self.bundled.species == species)
        else:
            current = self.bundled
        if current is not self.identifier.gallery:
            with self.lock:
                self.identifier.set_gallery(current)
        return current

    @property
    def stale_photos(self) -> int:
        """User photos embedded by another model version: left out of the search until re-embedded."""
        return int(getattr(self.identifier.gallery, "stale", 0))

    def close(self) -> None:
        if self.catalog is not None:
            self.catalog.close()


def load_services(
    checkpoint: Path | str = DEFAULT_CHECKPOINT,
    catalogue: Path | str | None = DEFAULT_CATALOGUE,
    inference_config: Path | str = DEFAULT_INFERENCE_CONFIG,
    *,
    db: Path | str | None = None,
    user_catalog: UserCatalog = "if_exists",
    keep_going: bool = False,
    actor: str | None = None,
    engine: str | None = None,
    species: str | None = None,
) -> Services:
    """Load the model and its catalogues.

    ``catalogue``: the bundled catalogue file (``None`` or "none": start empty).
    ``user_catalog``: ``off`` (bundled only), ``if_exists`` (the user's database when
    ``db`` is given or the default one exists: identifying never creates one) or ``open``
    (open or create it). ``keep_going``: a user catalogue that cannot be opened is
    reported in ``catalog_error`` instead of raised (the app still identifies).
    """
    bundled_file = None if catalogue is None or str(catalogue).strip().lower() in NO_CATALOGUE else catalogue
    identifier = Identifier.load(checkpoint, catalogue=bundled_file, inference_config=inference_config, engine=engine)
    services = Services(identifier, identifier.gallery)
    wanted = user_catalog == "open" or (user_catalog == "if_exists" and (db is not None or default_path().exists()))
    if wanted:
        try:
            services.catalog = Catalog(db, base=services.bundled, model_version=identifier.model_version, actor=actor)
            # the user's photos are verified too: their keypoints (described on demand when missing)
            sources = getattr(identifier, "keypoint_sources", None)
            if sources is not None:
                sources.append(services.catalog.keypoints)
        except WhaleIdError as exc:
            if not keep_going:
                raise
            services.catalog_error = str(exc)
    services.refresh(species)
    return services


def open_catalog(
    db: Path | str | None = None, catalogue: Path | str | None = DEFAULT_CATALOGUE, actor: str | None = None
) -> Catalog:
    """The user's catalogue over the bundled one, without loading the model (list, stats, export...)."""
    base = Gallery.load(catalogue) if catalogue is not None and Path(catalogue).exists() else None
    return Catalog(db, base, actor=actor)
