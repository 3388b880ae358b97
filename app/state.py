"""Shared, cached state: the model is loaded once per server, results once per photo.

Everything heavy lives in ``whales_identify``; this module only decides what
is cached where (``st.cache_resource`` for models, ``st.session_state`` for a
browser session's results) so a rerun (a slider moved) never recomputes.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import streamlit as st
from PIL import Image

from app.config import AppConfig
from whales_identify.catalog.store import default_path
from whales_identify.errors import WhaleIdError
from whales_identify.inputs.archive import is_image_name
from whales_identify.inputs.exif import PhotoMetadata, read_metadata
from whales_identify.matching.identifier import Identifier
from whales_identify.matching.results import Identification
from whales_identify.model.mask import AnimalMask, Masker
from whales_identify.services import Services, load_services

log = logging.getLogger("whales_identify.app")


def app_config() -> AppConfig:
    return AppConfig.from_env()


@st.cache_resource(show_spinner="Loading the identification model…")
def _load_services(checkpoint: str, catalogue: str, inference_config: str, catalog_path: str) -> Services:
    # catalog_path is part of the cache key: another user catalogue is another set of services.
    return load_services(checkpoint, catalogue, inference_config, db=catalog_path, user_catalog="open", keep_going=True)


def services() -> Services:
    """The shared services, searching the bundled + user catalogue as it is now (ModelLoadError if missing)."""
    config = app_config()
    shared = _load_services(config.checkpoint, config.catalogue, config.inference_config, str(default_path()))
    shared.refresh()
    return shared


def get_identifier() -> Identifier:
    return services().identifier


@st.cache_resource(show_spinner=False)
def get_masker() -> Masker:
    return Masker()


def digest(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


@dataclass
class PhotoResult:
    """Everything the Identify page shows for one photo, computed once."""

    name: str
    key: str
    data: bytes
    image: Image.Image | None = None  # upright RGB, as the model saw it (before its resize)
    result: Identification | None = None
    mask: AnimalMask | None = None
    mask_error: str = ""
    metadata: PhotoMetadata = field(default_factory=PhotoMetadata)
    error: str = ""
    seconds: float = 0.0


def analyse_photo(identifier: Identifier, name: str, data: bytes) -> PhotoResult:
    """Identify one photo and mask it; errors become ``.error`` (the package's message)."""
    out = PhotoResult(name=name, key=digest(data), data=data, metadata=read_metadata(data))
    start = time.perf_counter()
    try:
        out.image = identifier.prepare(data)  # display size: the mask and the overlay
        out.result = identifier.identify(data)  # decodes again, straight to the network's size
    except WhaleIdError as exc:
        out.error = str(exc)
        return out
    try:
        out.mask = get_masker().mask(out.image)
        out.result = replace(out.result, box=out.mask.box)
    except WhaleIdError as exc:
        out.mask_error = str(exc)
    except Exception as exc:
        log.exception("mask failed for %s", name)
        out.mask_error = f"the animal mask could not be computed ({type(exc).__name__})"
    out.seconds = time.perf_counter() - start
    return out


def photo_result(name: str, data: bytes) -> PhotoResult:
    """The result for these bytes, from this session's memory when already computed."""
    store: OrderedDict[str, PhotoResult] = st.session_state.setdefault("photo_results", OrderedDict())
    key = digest(data)
    if key in store:
        store.move_to_end(key)
        return store[key]
    identifier = get_identifier()
    with st.spinner(f"Identifying {name}…"):
        result = analyse_photo(identifier, name, data)
    store[key] = result
    while len(store) > app_config().results_kept:
        store.popitem(last=False)
    return result


def examples() -> list[tuple[str, Path]]:
    """Sample photos for "Try an example": (label, path), from tests/data/samples.csv when present."""
    folder = Path(app_config().examples_dir)
    if not folder.is_dir():
        return []
    table = folder / "samples.csv"
    found: list[tuple[str, Path]] = []
    if table.is_file():
        try:
            frame = pd.read_csv(table, dtype=str, keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError):
            frame = pd.DataFrame()
        for row in frame.to_dict("records"):
            path = folder / str(row.get("image", ""))
            if path.is_file():
                species = str(row.get("species", "")).replace("_", " ")
                who = str(row.get("individual_id", "")) or "unknown individual"
                label = f"{species.capitalize()} · {who}"
                if any(label == seen for seen, _ in found):
                    label = f"{label} ({path.name})"
                found.append((label, path))
    if not found:
        found = [(p.name, p) for p in sorted(folder.iterdir()) if is_image_name(p.name)]
    return found
