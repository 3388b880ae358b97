"""Rendering helpers shared by the pages: charts, badges, the result panel, the error guard."""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import traceback
import uuid
from collections.abc import Callable

import altair as alt
import pandas as pd
import streamlit as st
from PIL import Image

from whales_identify.config import NON_CETACEAN
from whales_identify.errors import ModelLoadError, WhaleIdError
from whales_identify.inputs.exif import PhotoMetadata
from whales_identify.matching.results import Identification
from whales_identify.model.mask import crop_to_box, overlay

log = logging.getLogger("whales_identify.app")

OCEAN = "#0b6e99"
OCEAN_LIGHT = "#9cc9dd"
AMBER = "#e8910c"
AMBER_LIGHT = "#f6cf94"
NEW_LABEL = "New individual (not in catalogue)"
ROLE_COLOURS = {
    "Answer: Catalogue individual": OCEAN,
    "Catalogue individual": OCEAN_LIGHT,
    "Answer: New individual": AMBER,
    "New individual": AMBER_LIGHT,
}
CHART_KEY = (
    "Strong colour: the answer. Blue: catalogue individuals; amber: *not in the catalogue* (a new individual). "
    "All bars share one probability distribution."
)


# --- guards ------------------------------------------------------------------------------
def run_guarded(body: Callable[[], None]) -> None:
    """Run a page body; any error becomes a friendly message, never a stack trace."""
    try:
        body()
    except ModelLoadError as exc:
        st.error(
            f"**The model could not be loaded:** {exc}\n\n"
            "Check that `models/whale_id.pt`, `models/catalogue.npz` and `models/inference.yaml` exist "
            "(see *About the model* for using your own checkpoint), then reload the page."
        )
    except WhaleIdError as exc:
        st.error(f"{exc}")
    except Exception as exc:
        ref = uuid.uuid4().hex[:8]
        log.error("unexpected error [%s]: %s\n%s", ref, exc, traceback.format_exc())
        st.error(
            f"Something went wrong on this page ({type(exc).__name__}, reference `{ref}`). "
            "Try again, or with another photo; if it keeps happening, reload the page and report the "
            "reference shown here together with the server log."
        )


# --- formatting ----------------------------------------------------------------------------
def species_label(name: str) -> str:
    if name == NON_CETACEAN:
        return "Not a whale or dolphin"
    return name.replace("_", " ").capitalize() if name else "—"


def percent(p: float | None) -> str:
    return "—" if p is None else f"{100 * p:.1f} %"


def jpeg_bytes(image: Image.Image, long_side: int, quality: int = 82) -> bytes:
    copy = image.convert("RGB")
    copy.thumbnail((long_side, long_side))
    buffer = io.BytesIO()
    copy.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def data_url(jpeg: bytes | None) -> str | None:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii") if jpeg else None


# --- charts ----------------------------------------------------------------------------------
def top5_frame(result: Identification) -> pd.DataFrame:
    """The candidates and the new-individual outcome, all from one probability distribution."""
    answer = result.answer
    rows = [
        {
            "label": f"#{rank} {c.individual_id}",
            "individual": c.individual_id,
            "probability": c.probability,
            "score": c.score,
            "kind": "Catalogue individual",
            "answer": c.individual_id == answer,
        }
        for rank, c in enumerate(result.top5, start=1)
    ]
    rows.append(
        {
            "label": NEW_LABEL,
            "individual": "new_individual",
            "probability": result.new_individual_probability,
            "score": None,
            "kind": "New individual",
            "answer": answer == "new_individual",
        }
    )
    frame = pd.DataFrame(rows)
    frame["shown"] = frame["probability"].map(lambda p: f"{100 * p:.1f} %")
    frame["role"] = frame.apply(lambda r: ("Answer: " if r["answer"] else "") + r["kind"], axis=1)
    return frame


def top5_chart(result: Identification, height: int = 230) -> alt.Chart:
    """Horizontal bars: the answer in deep blue, other candidates light blue, 'new individual' amber."""
    frame = top5_frame(result)
    order = frame.sort_values("probability", ascending=False)["label"].tolist()
    colours = alt.Scale(domain=list(ROLE_COLOURS), range=list(ROLE_COLOURS.values()))
    base = alt.Chart(frame).encode(
        y=alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=260)),
        x=alt.X(
            "probability:Q",
            title="Probability",
            scale=alt.Scale(domain=[0, 1.12]),
            axis=alt.Axis(format="%", values=[0, 0.25, 0.5, 0.75, 1.0]),
        ),
    )
    bars = base.mark_bar(cornerRadiusEnd=3).encode(
        color=alt.Color("role:N", scale=colours, legend=None),
        tooltip=[
            alt.Tooltip("individual:N", title="Individual"),
            alt.Tooltip("probability:Q", title="Probability", format=".1%"),
            alt.Tooltip("score:Q", title="Similarity score", format=".3f"),
        ],
    )
    text = base.mark_text(align="left", dx=4, color="#0d2a3a").encode(text="shown:N")
    return (bars + text).properties(height=height)


def score_chart(result: Identification, threshold: float, height: int = 200) -> alt.Chart:
    """Similarity score of each candidate with the tuned new-individual threshold as a rule."""
    frame = top5_frame(result)
    frame = frame[frame["kind"] == "Catalogue individual"]
    bars = (
        alt.Chart(frame)
        .mark_bar(color=OCEAN_LIGHT, cornerRadiusEnd=3)
        .encode(
            y=alt.Y("label:N", sort=None, title=None, axis=alt.Axis(labelLimit=260)),
            x=alt.X(
                "score:Q",
                title="Similarity score (cosine)",
                scale=alt.Scale(domain=[min(0.0, frame["score"].min() if len(frame) else 0), 1]),
            ),
            tooltip=[alt.Tooltip("individual:N"), alt.Tooltip("score:Q", format=".3f")],
        )
    )
    rule_frame = pd.DataFrame({"threshold": [threshold], "text": [f"new-individual threshold {threshold:.2f}"]})
    rule = alt.Chart(rule_frame).mark_rule(color=AMBER, strokeDash=[6, 3], size=2).encode(x="threshold:Q")
    label = (
        alt.Chart(rule_frame)
        .mark_text(color=AMBER, align="left", dx=4, dy=-6, baseline="bottom")
        .encode(x="threshold:Q", y=alt.value(0), text="text:N")
    )
    return (bars + rule + label).properties(height=height)


def species_counts_chart(frame: pd.DataFrame) -> alt.Chart:
    counts = frame.groupby("species_label").size().reset_index(name="photos")
    return (
        alt.Chart(counts)
        .mark_bar(color=OCEAN, cornerRadiusEnd=3)
        .encode(
            y=alt.Y("species_label:N", sort="-x", title=None, axis=alt.Axis(labelLimit=220, labelOverlap=False)),
            x=alt.X("photos:Q", title="Photos", axis=alt.Axis(tickMinStep=1)),
            tooltip=["species_label:N", "photos:Q"],
        )
        .properties(height=max(140, 36 * len(counts)))
    )


def confidence_histogram(frame: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(frame)
        .mark_bar(color=OCEAN_LIGHT)
        .encode(
            x=alt.X(
                "probability:Q",
                bin=alt.Bin(extent=[0, 1], step=0.1),
                title="Probability of the answer",
                axis=alt.Axis(format="%", values=[0, 0.2, 0.4, 0.6, 0.8, 1.0]),
            ),
            y=alt.Y("count():Q", title="Photos"),
            color=alt.Color(
                "answer_kind:N",
                title=None,
                legend=alt.Legend(orient="bottom"),
                scale=alt.Scale(domain=["Known individual", "New individual"], range=[OCEAN, AMBER]),
            ),
        )
        .properties(height=220)
    )


# --- the result panel ------------------------------------------------------------------------------
COMPARE_WIDTH = 320  # px: catalogue thumbnails are small; larger only blurs them
CARD_STYLE = "font-size:1.55rem;font-weight:600;line-height:1.25;overflow-wrap:anywhere"


def card(label: str, value: str, note: str = "", key: str | None = None) -> None:
    """A bordered label/value card whose value wraps instead of being cut off (unlike st.metric)."""
    with st.container(border=True, key=key):
        st.caption(label)
        st.markdown(
            f"<div style='{CARD_STYLE}'>{html.escape(value)}</div>",
            unsafe_allow_html=True,
        )
        if note:
            st.caption(note)


def answer_header(result: Identification) -> None:
    """Species with probability, then the individual or the new-individual badge."""
    if result.rejected:
        st.warning(
            f"**No whale or dolphin found.** The model says {result.rejection_reason}. "
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
            f"Note: the closest catalogue individual, {best.individual_id}, is catalogued as "
            f"{species_label(best.species).lower()}; the species above comes from the photo itself. Check both."
        )


def decision_note(result: Identification, threshold: float, catalogue_size: int) -> None:
    if catalogue_size == 0:
        st.info("The catalogue is empty, so every photo is a new individual.")
        return
    with st.expander("How the decision is made"):
        st.markdown(
            "Each catalogue individual gets a **similarity score** (cosine between this photo's embedding and "
            "the individual's closest photo, blended with its learned centre). Scores become probabilities "
            f"together with a *new individual* option whose score is the tuned threshold **{threshold:.2f}**: "
            "when no individual scores above it, the answer is *new individual*. All bars in the chart above "
            "come from that one distribution (the rest of the catalogue holds the remainder)."
        )
        if result.top5:
            st.altair_chart(score_chart(result, threshold), width="stretch")


def side_by_side(image: Image.Image, box, result: Identification, thumbnails: dict[str, bytes], key: str) -> None:
    """For each candidate, this photo (cropped to the animal) beside the catalogue's photo of it."""
    if not result.top5:
        return
    st.subheader("Compare with the catalogue")
    query = crop_to_box(image, box)
    tabs = st.tabs([f"#{i} {c.individual_id}" for i, c in enumerate(result.top5, start=1)])
    for tab, candidate in zip(tabs, result.top5, strict=True):
        with tab:
            left, right = st.columns(2)
            left.image(query, caption="This photo", width=COMPARE_WIDTH)
            thumb = thumbnails.get(candidate.individual_id)
            if thumb:
                right.image(thumb, caption=f"{candidate.individual_id} in the catalogue", width=COMPARE_WIDTH)
            else:
                right.info("No catalogue photo stored for this individual.")
            st.caption(
                f"{species_label(candidate.species)} · probability {percent(candidate.probability)} · "
                f"similarity score {candidate.score:.3f}"
            )


def metadata_block(meta: PhotoMetadata) -> None:
    if not meta.taken_at and meta.latitude is None:
        st.caption("No date or GPS position in this photo's EXIF data.")
        return
    cols = st.columns(3)
    cols[0].metric("Taken", meta.taken_at or "—")
    if meta.latitude is not None and meta.longitude is not None:
        cols[1].metric("Latitude", f"{meta.latitude:.5f}")
        cols[2].metric("Longitude", f"{meta.longitude:.5f}")
        st.map(pd.DataFrame({"lat": [meta.latitude], "lon": [meta.longitude]}), zoom=6, height=260)


def result_json(name: str, result: Identification, meta: PhotoMetadata, model_version: str) -> str:
    payload = {"file": name, "model_version": model_version, **result.to_dict()}
    payload["exif"] = {"taken_at": meta.taken_at, "latitude": meta.latitude, "longitude": meta.longitude}
    return json.dumps(payload, indent=2)


def mask_view(image: Image.Image, mask, box, key: str, caption: str = "") -> None:
    """The photo with the mask overlay; opacity slider and box toggle (no recomputation)."""
    if mask is None:
        st.image(image, caption=caption or None, width="stretch")
        return
    c1, c2 = st.columns([3, 1])
    opacity = c1.slider("Mask opacity", 0.0, 1.0, 0.4, 0.05, key=f"{key}_opacity")
    show_box = c2.toggle("Show box", value=True, key=f"{key}_box")
    shown = overlay(image, mask, opacity, box=box if show_box else None)
    st.image(shown, caption=caption or None, width="stretch")
