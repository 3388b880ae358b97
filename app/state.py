"""Shared, cached state: the model is loaded once per server, results once per photo.

Everything heavy lives in ``whales_identify``; this module only decides what
is cached where (``st.cache_resource`` for models, ``st.session_state`` for a
browser session's results) so a rerun (a slider moved) never recomputes.
Every session key the app owns is listed, with its default, in ``SESSION_DEFAULTS``
and set by ``init_session_state`` (called by ``app/streamlit_app.py`` before any page).
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from PIL import Image
from streamlit.runtime.scriptrunner import get_script_run_ctx
from streamlit.runtime.scriptrunner_utils.exceptions import StopException

from app import prior
from app.config import AppConfig
from app.view_model import md_escape, species_label
from whales_identify.batch.local import BatchRow
from whales_identify.catalog.review import ReviewDecision
from whales_identify.catalog.store import default_path
from whales_identify.config import InferenceConfig
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
class BatchState:
    """One batch on the Batch page: computed once when *Identify* is pressed, kept across reruns."""

    signature: tuple[tuple[str, int, str], ...]  # the uploads (name, size, file id) it was computed from
    rows: list[BatchRow] = field(default_factory=list)  # one per file, in the order they finished
    previews: dict[str, bytes] = field(default_factory=dict)  # file -> JPEG for the detail view
    thumbnails: dict[str, str] = field(default_factory=dict)  # file -> data URL for the table
    seconds: float = 0.0
    # file -> (preview, its mask or None, why there is none): computed when a row is first looked at
    masks: dict[str, tuple[Image.Image, AnimalMask | None, str]] = field(default_factory=dict)
    table_pick: str | None = None  # the file last clicked in the table (the "Look closer at" box follows it)
    photos: int = 0  # photos the uploads hold (files to read, skipped members not counted)
    files: int = 0  # rows expected in all: photos, skipped members and files refused up front
    finished: bool = False  # every row arrived
    stopped: str = ""  # why it ended early ("you pressed Stop", "the page was left or reloaded")
    refused: int = 0  # files refused before reading (too large, damaged ZIP): rows, but not photos
    catalogued_share: float = 0.5  # the share of catalogued photos stated when it ran (app/prior.py)
    # Review (app/review.py): each photo's SHA-256 (its bytes are read again from the uploads to save it),
    # the reviewer's verdicts, those already saved (file -> what was saved), the photo on screen.
    sha256: dict[str, str] = field(default_factory=dict)
    decisions: dict[str, ReviewDecision] = field(default_factory=dict)
    saved: dict[str, str] = field(default_factory=dict)
    review_at: str | None = None
    fixing: str | None = None  # the verdict whose correction panel is open ("different", or "same" on a new answer)
    review_note: tuple[str, str] = ("", "")  # the last save's outcome: ("success" or "error", Markdown)

    @property
    def photos_done(self) -> int:
        """Photos identified so far (rows of photos read, ok or failed; not skipped members)."""
        return sum(1 for row in self.rows if row.status != "skipped") - self.refused


STOP_KEY = "batch_stop"  # the Batch page's Stop button (widget key)
STOPPED_BY_USER = "you pressed Stop"


def _stop_in(states: object) -> bool:
    """Whether a rerun request's widget states carry the Stop button's click (its id ends with its key)."""
    return any(
        widget.id.endswith(f"-{STOP_KEY}") and widget.WhichOneof("value") == "trigger_value" and widget.trigger_value
        for widget in getattr(states, "widgets", ())
    )


def why_batch_ended(exc: BaseException) -> str:
    """What ended a running batch, read from the exception Streamlit raised into it: the rerun request
    itself says whether Stop was clicked (reading the button in the next run alone missed a click that
    came while another request was pending), and which page it is for."""
    rerun = getattr(exc, "rerun_data", None)
    if rerun is None:
        if isinstance(exc, StopException):
            return "the page was left or reloaded before the end"
        return "an error ended it; the message is shown on the page"
    if _stop_in(rerun.widget_states) or _stop_in(rerun.replay_trigger_states):
        return STOPPED_BY_USER
    current = get_script_run_ctx()
    if rerun.page_script_hash and current is not None and rerun.page_script_hash != current.page_script_hash:
        return "another page was opened before the end"
    return "another control on the page was used before the end"


# --- session state ---------------------------------------------------------------------------------
# Every key the app itself keeps in st.session_state, and how to make its default. Widget keys
# (``key=`` of an uploader, slider, selectbox...) belong to their widgets and are not listed.
SESSION_DEFAULTS: dict[str, Callable[[], Any]] = {
    "photo_results": OrderedDict,  # Identify: "digest:share" -> PhotoResult, newest last, at most results_kept
    "identify_active": lambda: None,  # Identify: (source, name, bytes) of the photo shown
    "identify_seen_upload": lambda: None,  # Identify: file id of the upload last taken in
    "identify_seen_camera": lambda: None,  # Identify: file id of the camera shot last taken in
    "batch": lambda: None,  # Batch: the BatchState of the last batch run
    "cat_export": lambda: None,  # Catalogue: (ZIP bytes, counts) of the last export prepared
    "actor": str,  # Identify and Catalogue: the user's name for the audit log
}


def init_session_state() -> None:
    """Give every app-owned session key its default (once per browser session; later runs keep the values)."""
    for key, make in SESSION_DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = make()


def batch_state() -> BatchState | None:
    """This session's last batch, if one was run."""
    return st.session_state["batch"]


def set_batch_state(batch: BatchState) -> None:
    st.session_state["batch"] = batch


def batch_mask(batch: BatchState, file: str) -> tuple[Image.Image, AnimalMask | None, str] | None:
    """A row's preview with its animal mask, computed the first time the row is looked at; None without a preview."""
    if file not in batch.masks:
        preview = batch.previews.get(file)
        if not preview:
            return None
        image = Image.open(io.BytesIO(preview)).convert("RGB")
        try:
            batch.masks[file] = (image, get_masker().mask(image), "")
        except WhaleIdError as exc:
            batch.masks[file] = (image, None, str(exc))
    return batch.masks[file]


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


def analyse_photo(identifier: Identifier, name: str, data: bytes, config: InferenceConfig | None = None) -> PhotoResult:
    """Identify one photo and mask it; errors become ``.error`` (the package's message). ``config``: the
    rules under the share the user stated (``app/prior.py``); None: the tuned ones."""
    out = PhotoResult(name=name, key=digest(data), data=data, metadata=read_metadata(data))
    start = time.perf_counter()
    try:
        out.image = identifier.prepare(data)  # display size: the mask and the overlay
        out.result = identifier.identify(data, config=config)  # decodes again, straight to the network's size
    except WhaleIdError as exc:
        out.error = str(exc)
        return out
    try:
        out.mask = get_masker().mask(out.image)
        if out.result.box is None:  # no localiser box (none found, or a whole-photo model): the mask's
            out.result = replace(out.result, box=out.mask.box, photo_size=out.image.size)
    except WhaleIdError as exc:
        out.mask_error = str(exc)
    except Exception as exc:
        log.exception("mask failed for %s", name)
        out.mask_error = f"the animal mask could not be computed ({type(exc).__name__})"
    out.seconds = time.perf_counter() - start
    return out


def photo_result(identifier: Identifier, name: str, data: bytes) -> PhotoResult:
    """The result for these bytes under the share stated in the sidebar, from this session's memory when
    already computed (another share is another answer: computed once too)."""
    store: OrderedDict[str, PhotoResult] = st.session_state["photo_results"]
    share = prior.stated_share(identifier.config.catalogued_share)
    key = f"{digest(data)}:{share}"
    if key in store:
        store.move_to_end(key)
        return store[key]
    with st.spinner(f"Identifying {md_escape(name)}…"):
        result = analyse_photo(identifier, name, data, config=prior.rules_under(identifier.config, share))
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
                who = str(row.get("individual_id", "")) or "unknown individual"
                label = f"{species_label(str(row.get('species', '')))} · {who}"
                if any(label == seen for seen, _ in found):
                    label = f"{label} ({path.name})"
                found.append((label, path))
    if not found:
        found = [(p.name, p) for p in sorted(folder.iterdir()) if is_image_name(p.name)]
    return found
