"""The sidebar's "Catalogued animals in your photos": how many of the user's photos show catalogued animals.

The package reads every answer under ``InferenceConfig.catalogued_share``: it moves the new-individual
threshold (``rules.decision_threshold``) and the stated probabilities (``rules.calibrated_probability``).
A population re-sighted year after year wants a high share (fewer catalogued whales answered "new"), a
survey of mostly unknown animals a low one. Here a user states theirs for this browser session; the
package does the rest (``Identifier.identify(..., config=...)``, ``identify_entries(..., config=...)``).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import streamlit as st

from whales_identify.config import InferenceConfig
from whales_identify.errors import ModelLoadError

SHARE_KEY = "catalogued_share"  # the widget's key: its value is the share stated in this session
LABEL = "Catalogued animals in your photos"
PRESETS: dict[float, str] = {  # short: the sidebar is narrow
    0.1: "10 % · mostly new animals",
    0.3: "30 %",
    0.5: "50 % · half and half",
    0.7: "70 %",
    0.9: "90 % · mostly re-sightings",
}
HELP = (
    "How many of your photos show animals already in the catalogue. It moves the line between naming a "
    "catalogued individual and answering *new individual*, and how sure each answer is said to be: a high "
    "share sends fewer catalogued animals to *new individual* but names more new ones as catalogued, a low "
    "share the other way round. What each share gave on held-out right whales: *About the model*, "
    "*Stating the share*."
)


@lru_cache(maxsize=4)
def default_share(inference_config: str) -> float:
    """The share the settings file states (0.5 when it cannot be read: the app then reports why elsewhere)."""
    try:
        return InferenceConfig.load(inference_config).catalogued_share
    except ModelLoadError:
        return InferenceConfig.catalogued_share


def label(share: float) -> str:
    """A share as the control shows it."""
    return PRESETS.get(share, f"{share:.0%} · the settings file's")


def share_control(default: float) -> float:
    """The sidebar control; returns the share stated (``default`` until the user picks another)."""
    options = sorted({*PRESETS, default})
    return float(
        st.selectbox(
            LABEL,
            options,
            index=options.index(default),  # later runs: the value picked, which the widget keeps
            format_func=label,
            key=SHARE_KEY,
            help=HELP,
        )
    )


def stated_share(default: float) -> float:
    """The share stated in this session (``default`` before the control is drawn)."""
    value = st.session_state.get(SHARE_KEY, default)
    return float(value) if isinstance(value, int | float) else default


def rules_under(config: InferenceConfig, share: float) -> InferenceConfig | None:
    """The identifier's rules under the stated share; None when it is the one they already assume."""
    return None if share == config.catalogued_share else replace(config, catalogued_share=share)
