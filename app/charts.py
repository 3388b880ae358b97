"""The app's charts (Altair), drawn from the tables in ``app/view_model.py``."""

from __future__ import annotations

import altair as alt
import pandas as pd

from app.view_model import short_id, top5_frame
from app.world import box_corners, land, view_box
from whales_identify.matching.results import Identification

OCEAN = "#0b6e99"
OCEAN_LIGHT = "#9cc9dd"
AMBER = "#e8910c"
AMBER_LIGHT = "#f6cf94"
GREY = "#8a9ba5"
SEA = "#dcecf3"
LAND = "#efe9dc"
COAST = "#a9a08c"
MAP_LABELS_UP_TO = 30  # more positions than this: tooltips only, labels would pile up
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


def top5_chart(result: Identification, height: int = 230) -> alt.Chart:
    """Horizontal bars: the answer in deep blue, other candidates light blue, 'new individual' amber."""
    frame = top5_frame(result)
    order = frame.sort_values("probability", ascending=False)["label"].tolist()
    colours = alt.Scale(domain=list(ROLE_COLOURS), range=list(ROLE_COLOURS.values()))
    base = alt.Chart(frame).encode(
        # Labels are short ids (view_model.short_id): a UUID never squeezes the bars; the tooltip has it whole.
        y=alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=200)),
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
    """Score of each candidate (fused with keypoint evidence when it was checked) with the new-individual
    threshold that decided the answer as a rule."""
    frame = top5_frame(result)
    frame = frame[frame["kind"] == "Catalogue individual"]
    # Cosines lie in [-1, 1]; keypoint evidence adds up to VerifyConfig.weight on top: never cut a bar off.
    low = min(0.0, float(frame["score"].min()) if len(frame) else 0.0)
    high = max(1.0, float(frame["score"].max()) if len(frame) else 1.0, threshold)
    bars = (
        alt.Chart(frame)
        .mark_bar(color=OCEAN_LIGHT, cornerRadiusEnd=3)
        .encode(
            y=alt.Y("label:N", sort=None, title=None, axis=alt.Axis(labelLimit=200)),
            x=alt.X(
                "score:Q",
                title="Score (cosine + keypoint evidence)" if result.evidence else "Similarity score (cosine)",
                scale=alt.Scale(domain=[low, high]),
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
    """Photos per species, from ``view_model.batch_frame``'s rows."""
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
    """How sure the answers are, known and new individuals and rejected photos (the probability that they
    show no whale or dolphin) stacked apart, from ``view_model.batch_frame``'s rows."""
    return (
        alt.Chart(frame[["file", "probability", "answer_kind"]])  # only what is drawn travels to the browser
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
                scale=alt.Scale(
                    domain=["Known individual", "New individual", "Not a whale or dolphin"], range=[OCEAN, AMBER, GREY]
                ),
            ),
        )
        .properties(height=220)
    )


def positions_map(frame: pd.DataFrame, height: int = 420) -> alt.LayerChart:
    """The photos' GPS positions on an offline world outline (``whales_identify.world``), framed to the
    positions (one point: the region around it; points oceans apart: all of them), each labelled."""
    columns = [c for c in ("file", "individual", "species", "taken_at", "lat", "lon") if c in frame.columns]
    located = frame.dropna(subset=["lat", "lon"])[columns].copy()  # only what is drawn travels to the browser
    located["place"] = located["file"].map(lambda f: short_id(str(f).rsplit("/", 1)[-1], 24))
    box = view_box(located["lat"].tolist(), located["lon"].tolist())
    fit = {"type": "Feature", "geometry": box_corners(box), "properties": {}}
    sea = alt.Chart(alt.sphere()).mark_geoshape(fill=SEA, stroke=None, clip=True)
    coast = alt.Chart(alt.Data(values=land(), format=alt.DataFormat(property="features", type="json"))).mark_geoshape(
        fill=LAND, stroke=COAST, strokeWidth=0.7, clip=True
    )
    base = alt.Chart(located).encode(longitude="lon:Q", latitude="lat:Q")
    points = base.mark_circle(size=90, color=AMBER, stroke="#7a4a06", strokeWidth=1, opacity=0.95, clip=True).encode(
        tooltip=[
            alt.Tooltip("file:N", title="File"),
            alt.Tooltip("individual:N", title="Individual"),
            alt.Tooltip("species:N", title="Species"),
            alt.Tooltip("taken_at:N", title="Taken"),
            alt.Tooltip("lat:Q", title="Latitude", format=".5f"),
            alt.Tooltip("lon:Q", title="Longitude", format=".5f"),
        ]
    )
    layers: list[alt.Chart] = [sea, coast, points]
    if len(located) <= MAP_LABELS_UP_TO:
        layers.append(
            base.mark_text(align="left", dx=7, dy=-6, fontSize=11, color="#0d2a3a", clip=True).encode(text="place:N")
        )
    return alt.layer(*layers).properties(height=height, width="container").project(type="equirectangular", fit=fit)
