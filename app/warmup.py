"""Load the models in the background when the server's first page is opened (issue 14, item 5).

The first photo of a server used to pay for loading the identification model and for the mask
network's first run (its memory plan: 0.3 s idle, 2.5 s on a loaded 2-core machine). ``start()``
(called by ``app/streamlit_app.py`` on every run; it starts one thread per server) does that work
while the user is still choosing a photo; ``status_line()`` tells the Identify page's user what is
happening until it is done. A photo uploaded meanwhile waits for the same cached loads
(Streamlit computes a ``cache_resource`` value once, and other callers wait for it); it never loads twice.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import streamlit as st

log = logging.getLogger("whales_identify.app")
THREAD_NAME = "whale-id-warm-up"


class _QuietWarmUpThread(logging.Filter):
    """Streamlit warns once that a thread of its own has no script context; this thread needs none
    (the loads it runs draw nothing), so that one warning, for this thread only, is left out of the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.args and record.args[0] == THREAD_NAME and "ScriptRunContext" in str(record.msg))


@dataclass
class WarmUp:
    """One per server: what the background thread is doing, and how it ended."""

    step: str = "starting"
    done: bool = False
    error: str = ""
    seconds: float = 0.0
    thread: threading.Thread | None = field(default=None, repr=False)


def _run(warm: WarmUp) -> None:
    from app import state  # imported here: app.state imports this module's callers

    start = time.perf_counter()
    try:
        warm.step = "loading the identification model and the catalogue"
        state.services()
        warm.step = "loading the animal-mask model"
        state.get_masker().warm_up()
    except Exception as exc:  # the pages report load errors themselves, with their own message
        log.warning("background warm-up failed: %s", exc)
        warm.error = str(exc)
    finally:
        warm.seconds = time.perf_counter() - start
        warm.done = True


@st.cache_resource(show_spinner=False)
def _warm_up() -> WarmUp:
    warm = WarmUp()
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(_QuietWarmUpThread())
    warm.thread = threading.Thread(target=_run, args=(warm,), name=THREAD_NAME, daemon=True)
    warm.thread.start()
    return warm


def start() -> WarmUp | None:
    """Start the background load once per server (later calls return the same record); None without a
    server (AppTest, bare scripts), where the pages load what they need themselves as before."""
    from streamlit.runtime import Runtime

    return _warm_up() if Runtime.exists() else None


def status_line() -> None:
    """A caption on the Identify page while the models are still loading; nothing once they are ready."""
    warm = start()
    if warm is not None and not warm.done:
        st.caption(
            f":material/hourglass_top: Getting ready: {warm.step} (once after the server starts, a few seconds). "
            "You can upload a photo now; it is identified as soon as this is done."
        )
