"""What the comparison panel shows, computed without Streamlit: the picture and the words.

``compose`` puts the whole query photo (its animal box drawn) and one catalogue photo in one
picture, each at least ``min_side`` px on its long side (small photos are enlarged: the 224 px
right-whale heads), side by side or one above the other, optionally zoomed around the animal,
and draws the keypoints the verification stage matched as lines from one photo to the other.
The rest turns a candidate, its photos, its evidence and the recorded verdicts into what the page
says. Pure functions of PIL images, numpy arrays and the package's dataclasses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from app.view_model import percent
from whales_identify.catalog.photos import ComparisonPhoto
from whales_identify.catalog.store import REVIEW_LABELS
from whales_identify.matching.results import Candidate, Evidence, Identification

Box = tuple[int, int, int, int]
Size = tuple[int, int]

SIDE_BY_SIDE = "Side by side"
STACKED = "One above the other"
LAYOUTS = (SIDE_BY_SIDE, STACKED)
ZOOMS: dict[str, float] = {"Whole photos": 1.0, "1.5×": 1.5, "2×": 2.0, "3×": 3.0, "4×": 4.0}
MIN_SIDE = 512  # px: each photo's long side in the picture (ComparisonConfig.min_display_side)
MAX_SIDE = 1024  # px: never drawn larger than this (the full-screen view scales it up)
GAP = 24  # px between the two photos
BACKGROUND = (246, 250, 252)  # the page's background colour (.streamlit/config.toml)
BOX_COLOUR = (255, 196, 0)  # the animal's box, as on the mask view
# Keypoint lines: distinct colours that read on sea and skin
LINE_COLOURS = ((0, 229, 255), (255, 64, 129), (118, 255, 3), (255, 171, 0), (213, 0, 249), (255, 255, 255))
# What the page is assumed to give the picture (CSS px) when choosing the layout: the main column of a
# 1400 px wide window with the sidebar open, and about one screen of height.
PAGE_WIDTH = 940
PAGE_HEIGHT = 1000


@dataclass(frozen=True)
class Placement:
    """Where one photo's zoom window lies in the composed picture."""

    window: Box  # the part of the photo shown, in its own pixels
    offset: tuple[int, int]  # its top-left corner in the picture
    size: Size  # its size in the picture

    def map(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(points in picture pixels, which of them lie inside the window) for points in photo pixels."""
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        x1, y1, x2, y2 = self.window
        sx, sy = self.size[0] / (x2 - x1), self.size[1] / (y2 - y1)
        inside = (pts[:, 0] >= x1) & (pts[:, 0] <= x2) & (pts[:, 1] >= y1) & (pts[:, 1] <= y2)
        mapped = np.stack([(pts[:, 0] - x1) * sx + self.offset[0], (pts[:, 1] - y1) * sy + self.offset[1]], axis=1)
        return mapped, inside


@dataclass(frozen=True)
class Composition:
    """The composed picture and what went into it."""

    image: Image.Image
    query: Placement
    photo: Placement
    layout: str
    lines: int  # keypoint pairs drawn (both ends inside the zoom windows)


# --- geometry ------------------------------------------------------------------------------------------
def zoom_window(size: Size, centre_box: Box | None, zoom: float) -> Box:
    """The part of a photo of ``size`` shown at ``zoom``: 1/zoom of each side, centred on the box's centre
    (the photo's centre without one), moved inside the photo. Zoom 1 is the whole photo."""
    width, height = size
    zoom = max(1.0, float(zoom))
    if zoom == 1.0:
        return (0, 0, width, height)
    w, h = max(1, round(width / zoom)), max(1, round(height / zoom))
    if centre_box is not None:
        cx, cy = (centre_box[0] + centre_box[2]) / 2, (centre_box[1] + centre_box[3]) / 2
    else:
        cx, cy = width / 2, height / 2
    x1 = round(min(max(cx - w / 2, 0), width - w))
    y1 = round(min(max(cy - h / 2, 0), height - h))
    return (x1, y1, x1 + w, y1 + h)


def scale_points(points: np.ndarray, from_size: Size, to_size: Size) -> np.ndarray:
    """Points in pixels of a photo at ``from_size`` in pixels of the same photo at ``to_size``."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if not from_size or min(from_size) <= 0:
        return pts
    return pts * np.array([to_size[0] / from_size[0], to_size[1] / from_size[1]])


def points_box(points: np.ndarray) -> Box | None:
    """The box around some points (None without any): where the keypoints agree, to zoom on."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if not len(pts):
        return None
    return (
        int(np.floor(pts[:, 0].min())),
        int(np.floor(pts[:, 1].min())),
        int(np.ceil(pts[:, 0].max())),
        int(np.ceil(pts[:, 1].max())),
    )


def displayed_sides(query: Size, photo: Size, layout: str) -> tuple[float, float]:
    """Each photo's long side (CSS px) on a page of ``PAGE_WIDTH`` × ``PAGE_HEIGHT`` in ``layout``."""
    aq, ap = query[0] / query[1], photo[0] / photo[1]
    if layout == SIDE_BY_SIDE:
        height = min(PAGE_WIDTH / (aq + ap), PAGE_HEIGHT)
        return max(aq * height, height), max(ap * height, height)
    width: float = PAGE_WIDTH
    total = width / aq + width / ap
    if total > PAGE_HEIGHT:
        width *= PAGE_HEIGHT / total
    return max(width, width / aq), max(width, width / ap)


def auto_layout(query: Size, photo: Size) -> str:
    """The layout that shows the smaller of the two photos larger (side by side unless one above the
    other is clearly larger: wide photos such as flukes and fins), and one above the other whenever side
    by side would show a photo under ``MIN_SIDE`` (two square right-whale heads: 470 px each)."""
    side = min(displayed_sides(query, photo, SIDE_BY_SIDE))
    stacked = min(displayed_sides(query, photo, STACKED))
    return STACKED if stacked > 1.15 * side or side < MIN_SIDE else SIDE_BY_SIDE


def display_width(query: Size, photo: Size, layout: str) -> int | None:
    """The width (CSS px) to show the picture at, or None to fill the column: one above the other, the
    picture is narrowed so both photos fit in about one screen."""
    if layout == SIDE_BY_SIDE:
        return None
    aq, ap = query[0] / query[1], photo[0] / photo[1]
    total = PAGE_WIDTH / aq + PAGE_WIDTH / ap
    return None if total <= PAGE_HEIGHT else max(MIN_SIDE, int(PAGE_WIDTH * PAGE_HEIGHT / total))


def _target(sizes: Sequence[Size], along: int, min_side: int) -> int:
    """The common height (along=1) or width (along=0): at least ``min_side``, at most ``MAX_SIDE``, else
    the smaller photo's own (no photo is enlarged more than needed)."""
    return int(min(MAX_SIDE, max(min_side, min(s[along] for s in sizes))))


def compose(
    query: Image.Image,
    query_box: Box | None,
    photo: Image.Image,
    photo_box: Box | None = None,
    *,
    zoom: float = 1.0,
    layout: str = SIDE_BY_SIDE,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
    min_side: int = MIN_SIDE,
) -> Composition:
    """The query photo (box drawn) beside the catalogue photo, each long side >= ``min_side``.

    ``pairs``: matched keypoints (query points in pixels of ``query``, photo points in pixels of
    ``photo``), drawn as lines between the two photos where both ends are inside the zoom windows.
    Zoomed, each photo is cut to 1/zoom of its sides around its animal: the query's box; the
    catalogue photo's ``photo_box``, else where its matched keypoints lie, else its centre."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout is one of {LAYOUTS}")
    query_points = photo_points = np.zeros((0, 2))
    if pairs is not None:
        query_points = np.asarray(pairs[0], np.float64).reshape(-1, 2)
        photo_points = np.asarray(pairs[1], np.float64).reshape(-1, 2)
        count = min(len(query_points), len(photo_points))
        query_points, photo_points = query_points[:count], photo_points[:count]
    photo_centre = photo_box if photo_box is not None else points_box(photo_points)
    q_window = zoom_window(query.size, query_box, zoom)
    p_window = zoom_window(photo.size, photo_centre, zoom)
    q_crop, p_crop = query.crop(q_window), photo.crop(p_window)
    if layout == SIDE_BY_SIDE:
        height = _target([q_crop.size, p_crop.size], 1, min_side)
        q_size = (max(1, round(q_crop.width * height / q_crop.height)), height)
        p_size = (max(1, round(p_crop.width * height / p_crop.height)), height)
        # a photo much narrower than tall: its long side is the height, already >= min_side
        canvas_size = (q_size[0] + GAP + p_size[0], height)
        q_offset, p_offset = (0, 0), (q_size[0] + GAP, 0)
    else:
        width = _target([q_crop.size, p_crop.size], 0, min_side)
        q_size = (width, max(1, round(q_crop.height * width / q_crop.width)))
        p_size = (width, max(1, round(p_crop.height * width / p_crop.width)))
        canvas_size = (width, q_size[1] + GAP + p_size[1])
        q_offset, p_offset = (0, 0), (0, q_size[1] + GAP)
    canvas = Image.new("RGB", canvas_size, BACKGROUND)
    thickness = max(2, round(max(canvas_size) / 400))
    q_place, p_place = Placement(q_window, q_offset, q_size), Placement(p_window, p_offset, p_size)
    shown_query = q_crop.convert("RGB").resize(q_size, Image.Resampling.LANCZOS)
    if query_box is not None:
        # drawn on the query photo alone: the parts of the box outside the zoomed view are cut off with it
        corners, _ = q_place.map(np.array([[query_box[0], query_box[1]], [query_box[2], query_box[3]]]))
        (x1, y1), (x2, y2) = (corners - np.array(q_offset)).tolist()
        if x2 > x1 and y2 > y1:
            ImageDraw.Draw(shown_query).rectangle((x1, y1, x2, y2), outline=BOX_COLOUR, width=thickness)
    canvas.paste(shown_query, q_offset)
    canvas.paste(p_crop.convert("RGB").resize(p_size, Image.Resampling.LANCZOS), p_offset)
    draw = ImageDraw.Draw(canvas)
    lines = 0
    if len(query_points):
        q_mapped, q_in = q_place.map(query_points)
        p_mapped, p_in = p_place.map(photo_points)
        radius = thickness + 2
        for i in np.flatnonzero(q_in & p_in):
            colour = LINE_COLOURS[lines % len(LINE_COLOURS)]
            (ax, ay), (bx, by) = q_mapped[i].tolist(), p_mapped[i].tolist()
            draw.line((ax, ay, bx, by), fill=colour, width=max(1, thickness - 1))
            for x, y in ((ax, ay), (bx, by)):
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=colour, width=2)
            lines += 1
    return Composition(canvas, q_place, p_place, layout, lines)


def evidence_pairs(
    evidence: Evidence | None,
    photo: ComparisonPhoto,
    query_size: Size,
    result_size: Size | None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The evidence's matched points in pixels of the query photo shown (``query_size``) and of the stored
    catalogue photo, when the evidence is about this very photo; else None (no lines)."""
    if evidence is None or evidence.photo != photo.reference or not len(evidence.query_points):
        return None
    query_points = scale_points(evidence.query_points, result_size or query_size, query_size)
    photo_points = scale_points(evidence.photo_points, evidence.photo_size or photo.size, photo.size)
    return query_points, photo_points


# --- ordering and words --------------------------------------------------------------------------------
def order_photos(photos: Sequence[ComparisonPhoto], evidence: Evidence | None) -> list[ComparisonPhoto]:
    """The photo the keypoints matched first (it is the evidence), then the others in their order."""
    photos = list(photos)
    if evidence is None:
        return photos
    matched = [p for p in photos if p.reference == evidence.photo]
    return matched + [p for p in photos if p.reference != evidence.photo]


def candidate_label(rank: int, candidate: Candidate, evidence: Evidence | None = None) -> str:
    """'#1 whale_15434 · 72.4 %' (plain text: escape it before Markdown), with ' ✓' when verified."""
    tick = " ✓" if evidence is not None and evidence.verified else ""
    return f"#{rank} {candidate.individual_id} · {percent(candidate.probability)}{tick}"


def evidence_text(evidence: Evidence | None, photo: ComparisonPhoto | None, in_strip: bool = True) -> str:
    """What the keypoints say about this candidate ("" when verification did not check it); ``in_strip``:
    the photo they matched is among the photos offered."""
    if evidence is None:
        return ""
    if evidence.verified:
        text = f"verified ({evidence.inliers} points)"
    else:
        text = f"not verified: {evidence.inliers} keypoints agree, too few to confirm"
    if photo is not None and evidence.photo != photo.reference:
        text += " — on another of its photos (the first in the strip)" if in_strip else " — on a photo not shown here"
    return text


def photo_caption(index: int, photo: ComparisonPhoto) -> str:
    """A strip photo's caption (plain text)."""
    where = "your catalogue" if photo.source == "user" else "bundled"
    similarity = f" · similarity {photo.similarity:.2f}" if photo.similarity is not None else ""
    return f"{index} · {where}{similarity}"


def review_details(
    result: Identification,
    rank: int,
    candidate: Candidate,
    photo: ComparisonPhoto | None,
    model_version: str,
) -> dict[str, Any]:
    """What is recorded with a verdict: what the reviewer saw when deciding."""
    evidence = result.evidence_for(candidate.individual_id)
    details: dict[str, Any] = {
        "rank": rank,
        "probability": round(candidate.probability, 4),
        "score": round(candidate.score, 4),
        "answer": result.answer,
        "model_version": model_version,
        "compared_photo": photo.reference if photo is not None else "",
    }
    if evidence is not None:
        details["inliers"] = evidence.inliers
        details["verified"] = evidence.verified
    return details


def latest_verdict(reviews: pd.DataFrame, individual_id: str) -> dict[str, Any] | None:
    """The newest recorded verdict on this photo for one individual (``Catalog.reviews(sha256)``)."""
    if reviews is None or reviews.empty:
        return None
    mine = reviews[reviews["individual_id"] == individual_id]
    if mine.empty:
        return None
    return dict(mine.iloc[-1])


def verdict_text(verdict: dict[str, Any], earlier: int = 0) -> str:
    """'Same — recorded by tester at 2026-11-27T10:20:30Z' (plain text)."""
    label = REVIEW_LABELS.get(str(verdict.get("decision")), str(verdict.get("decision")))
    text = f"{label} — recorded by {verdict.get('actor', '')} at {verdict.get('at', '')}"
    if earlier:
        text += f" (replaces {earlier} earlier verdict{'s' if earlier != 1 else ''})"
    return text
