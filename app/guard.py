"""The page guard: any error in a page body becomes a friendly message, never a stack trace."""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Callable

import streamlit as st

from app.view_model import md_escape
from whales_identify.errors import ModelLoadError, WhaleIdError

log = logging.getLogger("whales_identify.app")


def run_guarded(body: Callable[[], None]) -> None:
    """Run a page body; any error becomes a friendly message, never a stack trace."""
    try:
        body()
    except ModelLoadError as exc:
        st.error(
            f"**The model could not be loaded:** {md_escape(exc)}\n\n"
            "Check that `models/whale_id.pt`, `models/catalogue.npz` and `models/inference.yaml` exist "
            "(see *About the model* for using your own checkpoint), then reload the page."
        )
    except WhaleIdError as exc:
        st.error(md_escape(exc))  # messages quote file names and ids: shown literally
    except Exception as exc:
        ref = uuid.uuid4().hex[:8]
        log.error("unexpected error [%s]: %s\n%s", ref, exc, traceback.format_exc())
        st.error(
            f"Something went wrong on this page ({type(exc).__name__}, reference `{ref}`). "
            "Try again, or with another photo; if it keeps happening, reload the page and report the "
            "reference shown here together with the server log."
        )
