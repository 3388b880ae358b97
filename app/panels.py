"""The parts of a page that show one result: cards, badges, the answer, the mask, the comparison.

They draw with Streamlit; what they show is computed in ``app/view_model.py`` and the charts
come from ``app/charts.py``.
"""

from __future__ import annotations

import html

import pandas as pd
import streamlit as st
from PIL import Image

from app.charts import positions_map, score_chart
from app.prior import LABEL
from app.state import PhotoResult, services
from app.view_model import actor_name, md_escape, percent, position_text, rejection_text, species_label, taken_text
from whales_identify.catalog.enrol import enrol_photo
from whales_identify.catalog.store import CatalogError
from whales_identify.inputs.exif import PhotoMetadata
from whales_identify.matching import rules
from whales_identify.matching.results import Identification
from whales_identify.model.mask import Box, overlay
from whales_identify.services import Services

CARD_STYLE = "font-size:1.55rem;font-weight:600;line-height:1.25;overflow-wrap:anywhere"


def card(label: str, value: str, note: str = "", key: str | None = None) -> None:
    """A bordered label/value card whose value wraps instead of being cut off (unlike st.metric).

    All three are plain text (ids, names, dates): shown literally, never as Markdown or HTML."""
    with st.container(border=True, key=key):
        st.caption(md_escape(label))
        st.markdown(
            f"<div style='{CARD_STYLE}'>{html.escape(value)}</div>",
            unsafe_allow_html=True,
        )
        if note:
            st.caption(md_escape(note))


def answer_header(result: Identification) -> None:
    """Species with probability, then the individual or the new-individual badge."""
    if result.rejected:
        st.warning(
            f"**No whale or dolphin found:** {md_escape(rejection_text(result))}. "
            "Use a photo in which a fin, fluke, head or flank is clearly visible and fills a good part of the frame."
        )
        return
    left, right = st.columns(2)
    with left:
        card(
            "Species",
            species_label(result.species),
            f"{percent(result.species_probability)} probability",
            key="card_species",
        )
    with right:
        if result.new_individual or not result.top5:
            card(
                "Individual",
                "New individual",
                f"{percent(result.new_individual_probability)} probability",
                key="card_individual",
            )
            st.badge("New individual", icon=":material/fiber_new:", color="orange")
        else:
            best = result.top5[0]
            card("Individual", best.individual_id, f"{percent(best.probability)} probability", key="card_individual")
            st.badge("Known individual", icon=":material/check_circle:", color="green")
    best = result.best
    if not result.new_individual and best is not None and best.species and best.species != result.species:
        st.caption(
            f"Note: the closest catalogue individual, {md_escape(best.individual_id)}, is catalogued as "
            f"{species_label(best.species).lower()}; the species above comes from the photo itself. Check both."
        )


def decision_note(result: Identification, catalogue_size: int, share: float) -> None:
    """How the answer was reached: the scores against the threshold that decided it (the fused scores'
    own when keypoints were checked), under the share of catalogued photos stated in the sidebar."""
    if catalogue_size == 0:
        st.info("The catalogue is empty, so every photo is a new individual.")
        return
    threshold = result.new_individual_threshold
    with st.expander("How the decision is made"):
        fused = ", plus the keypoint evidence of the right-whale candidates checked" if result.evidence else ""
        line = (
            f"When no individual scores above **{threshold:.2f}**, the answer is *new individual*; that line is "
            f"placed for photos of which **{share:.0%}** show catalogued animals (*{LABEL}*, in the "
            "sidebar: a higher share moves it down, a lower one up)."
            if threshold is not None
            else ""
        )
        best = result.best
        if result.new_individual and best is not None and rules.species_disagree(best.species, result.species):
            line += (
                f" The best-scoring individual is a {species_label(best.species)} while this photo looks like a "
                f"{species_label(result.species)}: an answer never names an animal of another species, so this "
                "is a new individual of the species answered."
            )
        st.markdown(
            "Each catalogue individual gets a **similarity score** (cosine between this photo's embedding and "
            f"the individual's closest photo, blended with its learned centre{fused}). Scores become "
            "probabilities together with a *new individual* option. "
            f"{line} All bars in the chart above come from that one distribution (the rest of the catalogue "
            "holds the remainder)."
        )
        if result.top5 and threshold is not None:
            st.altair_chart(score_chart(result, threshold), width="stretch")


def metadata_block(meta: PhotoMetadata, name: str = "") -> None:
    """The photo's EXIF date and GPS position, whole (cards wrap; st.metric cut them off), with an offline
    map of the position when it has one."""
    if meta.gps_note:  # an impossible position was dropped: say so rather than show no position silently
        st.caption(md_escape(meta.gps_note))
    if not meta.taken_at and meta.latitude is None:
        if not meta.gps_note:
            st.caption("No date or GPS position in this photo's EXIF data.")
        return
    left, right = st.columns([2, 3])
    with left:
        card("Taken", taken_text(meta), key="card_taken")
    with right:
        card("Position (GPS)", position_text(meta.latitude, meta.longitude), key="card_position")
    if meta.latitude is not None and meta.longitude is not None:
        frame = pd.DataFrame(
            {
                "lat": [meta.latitude],
                "lon": [meta.longitude],
                "file": [name],
                "individual": [""],
                "species": [""],
                "taken_at": [meta.taken_at],
            }
        )
        with st.container(key="identify_map"):
            st.altair_chart(positions_map(frame, height=240), width="stretch")


def mask_view(image: Image.Image, mask: Image.Image | None, box: Box | None, key: str, caption: str = "") -> None:
    """The photo with the mask overlay; opacity slider and box toggle (no recomputation)."""
    if mask is None:
        st.image(image, caption=md_escape(caption) if caption else None, width="stretch")
        return
    c1, c2 = st.columns([3, 1])
    opacity = c1.slider("Mask opacity", 0.0, 1.0, 0.4, 0.05, key=f"{key}_opacity")
    show_box = c2.toggle("Show box", value=True, key=f"{key}_box")
    shown = overlay(image, mask, opacity, box=box if show_box else None)
    st.image(shown, caption=md_escape(caption) if caption else None, width="stretch")


def save_photo(
    shared: Services,
    photo: PhotoResult,
    individual: str,
    species: str | None,
    actor: str,
    new: bool,
    tags: str = "",
) -> None:
    """Enrol the photo (the Identify page's save form, and "Same" in the comparison) and say what happened."""
    assert shared.catalog is not None
    try:
        with st.spinner("Saving…"):
            row = enrol_photo(
                shared.catalog,
                shared.identifier,
                photo.data,
                individual,
                species,
                source_name=photo.name,
                actor=actor_name(actor),
                new=new,
                tags=tags,
            )
    except CatalogError as exc:
        st.error(f"Not saved: {md_escape(exc)}")
        return
    services()  # the next identification searches the updated catalogue
    if row.status == "duplicate":
        st.info(f"Already saved: {md_escape(row.message)}.")
    else:
        st.success(
            f"Saved as image {row.image_id} of **{md_escape(row.individual_id)}** "
            f"({'new individual' if new else 'confirmed'}). "
            "Photos identified from now on are compared with the updated catalogue."
        )
