"""Give back what Streamlit keeps for browser sessions that are gone (issue 14, item 7: server memory).

A closed tab's session is kept for ``server.disconnectedSessionTTL`` seconds so that a short network
blip can resume it. When that time is up, Streamlit 1.67 drops the session from its store *without
shutting it down*: the files that session uploaded (``UploadedFileManager``) and the images and
downloads it was shown (``MediaFileManager``) stay in memory for the server's life, a few MB for
every photo a user ever looked at. ``release_closed_sessions()`` frees them for every session id the
server no longer knows (active or resumable ones are kept), then asks glibc to return the freed heap to
the system. ``start()`` (called by ``app/streamlit_app.py`` on every run; cached, so once per server)
starts the one background thread that calls it every ``SWEEP_S`` seconds, so a server nobody is using
gives the memory back too.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import threading
import time
from typing import Any

import streamlit as st

log = logging.getLogger("whales_identify.app")
SWEEP_S = 10.0  # seconds between two sweeps


@functools.cache
def _libc() -> Any:
    """glibc, for ``malloc_trim`` and ``mallopt``; None elsewhere (musl, macOS): then nothing is tuned."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim, libc.mallopt  # noqa: B018 - both must exist
    except (OSError, AttributeError):
        return None
    return libc


def _malloc_trim() -> Any:
    libc = _libc()
    return libc.malloc_trim if libc is not None else None


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameters (malloc.h)
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 1 << 20


def tune_malloc() -> bool:
    """Large blocks (photos, masks, network tensors, over 1 MiB) straight from the system and back to it when
    freed, and at most two heaps: glibc otherwise raises its mmap threshold to 32 MB after the first large
    free and gives each script-run thread its own heap, so a freed photo stayed in the server's memory."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(libc.mallopt(M_ARENA_MAX, 2))


def _known_sessions(session_mgr: Any) -> set[str] | None:
    """Ids of the sessions Streamlit still has (connected, or disconnected but resumable); None if unreadable."""
    lock = getattr(session_mgr, "_storage_lock", None) or contextlib.nullcontext()
    try:
        with lock:
            return {info.session.id for info in session_mgr.list_sessions()}
    except RuntimeError:  # the store changed while it was read: try again at the next run
        return None


def release_sessions(runtime: Any, known: set[str]) -> int:
    """Free uploads and media files of every session id not in ``known``; the number of sessions freed."""
    uploads = runtime.uploaded_file_mgr
    media = runtime.media_file_mgr
    upload_sessions = set(getattr(uploads, "file_storage", {}).keys())
    with media._lock:
        media_sessions = set(media._files_by_session_and_coord.keys())
    gone = (upload_sessions | media_sessions) - known
    for session_id in gone:
        uploads.remove_session_files(session_id)
        media.clear_session_refs(session_id)
    if gone:
        media.remove_orphaned_files()
    return len(gone)


def release_closed_sessions() -> int:
    """Free what sessions that no longer exist left behind (0 outside a running server)."""
    from streamlit.runtime import Runtime

    if not Runtime.exists():
        return 0
    runtime = Runtime.instance()
    known = _known_sessions(runtime._session_mgr)
    if known is None:
        return 0
    freed = release_sessions(runtime, known)
    if freed:
        trim = _malloc_trim()
        if trim is not None:
            trim(0)
        log.info("freed the uploads and media files of %d closed browser sessions", freed)
    return freed


def _sweep_forever() -> None:
    while True:
        time.sleep(SWEEP_S)  # a housekeeping period, not a wait for a condition
        try:
            release_closed_sessions()
        except Exception:  # never let housekeeping take the server down; say so once per failure
            log.exception("releasing closed sessions failed")


@st.cache_resource(show_spinner=False)
def _sweeper() -> threading.Thread | None:
    from streamlit.runtime import Runtime

    if not Runtime.exists():  # AppTest and bare scripts: no server, nothing to sweep
        return None
    tune_malloc()
    thread = threading.Thread(target=_sweep_forever, name="whale-id-housekeeping", daemon=True)
    thread.start()
    return thread


def start() -> threading.Thread | None:
    """Start the sweeping thread once per server."""
    return _sweeper()
