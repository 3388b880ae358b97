"""Whale & dolphin photo-identification — the web app.

Run:  streamlit run app/streamlit_app.py
Pages live in app/views/ (not pages/: Streamlit runs a pages/ folder by itself, so a
deep link to /batch on a fresh server skipped this script and its session set-up);
all the work is done by the ``whales_identify`` package.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import ast_guard, housekeeping, prior, warmup
from app.state import app_config, init_session_state

ast_guard.install()  # before the warm-up thread starts: page scripts and numpy's headers are parsed at once
st.set_page_config(page_title="Whale & dolphin ID", page_icon="🐋", layout="wide")

VIEWS = Path(__file__).resolve().parent / "views"  # not pages/: Streamlit runs a pages/ folder by itself
init_session_state()  # every session key the pages use, with its default, before any page runs
warmup.start()  # the models load in a background thread while the first page is drawn (once per server)
housekeeping.start()  # frees what closed browser sessions left in Streamlit's memory (once per server)
navigation = st.navigation(
    [
        st.Page(VIEWS / "identify.py", title="Identify a photo", icon=":material/search:", default=True),
        st.Page(VIEWS / "batch.py", title="Batch", icon=":material/photo_library:"),
        st.Page(VIEWS / "catalogue.py", title="Catalogue", icon=":material/pets:"),
        st.Page(VIEWS / "about_model.py", title="About the model", icon=":material/info:"),
    ]
)
with st.sidebar:
    st.caption("Photo-identification of whales and dolphins. Runs entirely offline; photos never leave this server.")
    prior.share_control(prior.default_share(app_config().inference_config))  # read by Identify and Batch
navigation.run()
