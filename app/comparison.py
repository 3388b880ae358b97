"""The comparison panel of the Identify page: the query photo beside a candidate's catalogue photos,
zoom, the verification stage's matched keypoints, and the reviewer's Same / Different / Cannot tell.

Drawing is Streamlit; the picture and the words come from ``app/comparison_model.py``; the photos
from ``whales_identify.catalog.photos``; verdicts go to ``Catalog.record_reviews`` and "Same" can
add the photo to the catalogue through ``panels.save_photo`` (the Identify page's save path).
"""

from __future__ import annotations

import hashlib
import logging

import streamlit as st

from app import comparison_model as cm
from app import panels
from app.state import PhotoResult, services
from app.view_model import actor_name, md_escape, percent, species_label
from whales_identify.catalog.photos import ComparisonPhoto, ComparisonPhotos
from whales_identify.catalog.store import REVIEW_DECISIONS, REVIEW_LABELS, CatalogError, Review
from whales_identify.config import ComparisonConfig
from whales_identify.errors import WhaleIdError
from whales_identify.inputs.imaging import encode_jpeg
from whales_identify.matching.results import Candidate, Evidence, Identification
from whales_identify.services import Services

log = logging.getLogger("whales_identify.app")

STRIP_HEIGHT = 96  # px: the strip's thumbnails
STRIP_QUALITY = 85  # their JPEG quality
STRIP_MAX = 8  # photos in the strip
DECISION_ICONS = {"same": ":material/check_circle:", "different": ":material/cancel:", "cannot_tell": ":material/help:"}


@st.cache_resource(show_spinner=False)
def _photo_store(asset: str, catalog_path: str, services_id: int, _shared: Services) -> ComparisonPhotos:
    """One photo store per server and services (the user catalogue's path is part of the key)."""
    return ComparisonPhotos(asset, catalog=_shared.catalog, bundled=_shared.bundled)


def photo_store(shared: Services) -> ComparisonPhotos:
    path = str(shared.catalog.path) if shared.catalog is not None else ""
    return _photo_store(ComparisonConfig().asset, path, id(shared), shared)


@st.cache_data(show_spinner=False, max_entries=256)
def _thumbnail(asset: str, catalog_path: str, reference: str, _store: ComparisonPhotos) -> bytes:
    """A strip thumbnail (JPEG), made once per photo."""
    return encode_jpeg(_store.image(reference), (STRIP_HEIGHT * 3, STRIP_HEIGHT), quality=STRIP_QUALITY)


def _sha256(photo: PhotoResult) -> str:
    return hashlib.sha256(photo.data).hexdigest()


def comparison_panel(photo: PhotoResult) -> None:
    """The whole panel for one identified photo (nothing when it has no candidate)."""
    result = photo.result
    if result is None or photo.image is None or not result.top5:
        return
    shared = services()
    store = photo_store(shared)
    tag = photo.key[:12]
    st.subheader("Compare with the catalogue")
    st.caption(
        "Your whole photo beside the candidate's catalogue photo that is most like it; pick another candidate, "
        "another of its photos, or zoom on the animal. The full-screen button of the picture enlarges it."
    )
    ranks = list(range(len(result.top5)))
    labels = [cm.candidate_label(i + 1, c, result.evidence_for(c.individual_id)) for i, c in enumerate(result.top5)]
    picked = st.segmented_control(
        "Candidate",
        ranks,
        format_func=lambda i: md_escape(labels[i]),
        default=0,
        key=f"cmp_candidate_{tag}",
    )
    index = 0 if picked is None else int(picked)
    candidate = result.top5[index]
    evidence = result.evidence_for(candidate.individual_id)
    photos = cm.order_photos(store.photos(candidate.individual_id, result.embedding), evidence)[:STRIP_MAX]
    if not photos:
        _no_photos(candidate, store, shared)
        _review(photo, result, index + 1, candidate, None, shared)
        return
    chosen = _strip(photos, store, tag, candidate.individual_id)
    shown = photos[chosen]
    in_strip = evidence is not None and any(p.reference == evidence.photo for p in photos)
    _picture(photo, result, shown, evidence, store, tag, in_strip)
    st.caption(
        md_escape(
            f"{species_label(candidate.species)} · probability {percent(candidate.probability)} · "
            f"similarity score {candidate.score:.3f} · catalogue photo {shown.name}"
        )
    )
    _review(photo, result, index + 1, candidate, shown, shared)


def _no_photos(candidate: Candidate, store: ComparisonPhotos, shared: Services) -> None:
    thumb = shared.bundled.thumbnails.get(candidate.individual_id)
    why = f" ({store.missing_reason})" if store.missing_reason else ""
    st.info(md_escape(f"No comparison photo of {candidate.individual_id} is stored{why}."))
    if thumb:
        st.image(thumb, caption=md_escape(f"{candidate.individual_id}: catalogue thumbnail only"), width=128)


def _strip(photos: list[ComparisonPhoto], store: ComparisonPhotos, tag: str, individual: str) -> int:
    """The candidate's photos as a strip of thumbnails; returns the position of the one to compare."""
    asset, catalog_path = str(store.asset), str(store.catalog.path) if store.catalog is not None else ""
    thumbs, captions = [], []
    for i, item in enumerate(photos, start=1):
        try:
            thumbs.append(_thumbnail(asset, catalog_path, item.reference, store))
            captions.append(md_escape(cm.photo_caption(i, item)))
        except WhaleIdError as exc:
            log.warning("comparison photo %s unreadable: %s", item.reference, exc)
    if thumbs:
        with st.container(key=f"cmp_strip_{tag}"):
            st.image(thumbs, caption=captions)
    choice = st.segmented_control(
        f"Catalogue photo of {md_escape(individual)} ({len(photos)})",
        list(range(len(photos))),
        format_func=lambda i: str(i + 1),
        default=0,
        key=f"cmp_photo_{tag}_{hashlib.sha1(individual.encode(), usedforsecurity=False).hexdigest()[:8]}",
        help="The photos of this individual, the most similar to yours first (the keypoints' photo first "
        "when the verification stage matched one).",
    )
    return 0 if choice is None or int(choice) >= len(photos) else int(choice)


def _picture(
    photo: PhotoResult,
    result: Identification,
    shown: ComparisonPhoto,
    evidence: Evidence | None,
    store: ComparisonPhotos,
    tag: str,
    in_strip: bool,
) -> None:
    assert photo.image is not None
    query_size = photo.image.size
    c1, c2 = st.columns([3, 2])
    zoom_label = c1.segmented_control(
        "Zoom on the animal",
        list(cm.ZOOMS),
        default="Whole photos",
        key=f"cmp_zoom_{tag}",
        help="Crops both photos around the animal (the box on yours; the labelled box, or the matched "
        "keypoints, on the catalogue's).",
    )
    zoom = cm.ZOOMS.get(zoom_label or "Whole photos", 1.0)
    try:
        catalogue_image = store.image(shown.reference)
    except WhaleIdError as exc:
        st.warning(md_escape(f"This catalogue photo cannot be shown: {exc}"))
        return
    query_box = result.box_for(query_size)
    query_window = cm.zoom_window(query_size, query_box, zoom)
    photo_window = cm.zoom_window(catalogue_image.size, shown.box, zoom)
    automatic = cm.auto_layout(_window_size(query_window), _window_size(photo_window))
    layout = c2.segmented_control("Layout", list(cm.LAYOUTS), default=automatic, key=f"cmp_layout_{tag}_{automatic}")
    layout = layout or automatic
    pairs = cm.evidence_pairs(evidence, shown, query_size, result.photo_size)
    composition = cm.compose(photo.image, query_box, catalogue_image, shown.box, zoom=zoom, layout=layout, pairs=pairs)
    width = cm.display_width(composition.query.size, composition.photo.size, layout)
    with st.container(key="cmp_picture"):
        st.image(
            composition.image,
            caption=md_escape(
                f"{'Top' if layout == cm.STACKED else 'Left'}: your photo ({photo.name}) · "
                f"{'bottom' if layout == cm.STACKED else 'right'}: {shown.individual_id} in the catalogue "
                f"({shown.name})"
            ),
            width=width if width is not None else "stretch",
        )
    note = cm.evidence_text(evidence, shown, in_strip)
    if evidence is not None and evidence.verified:
        st.badge(md_escape(note), icon=":material/verified:", color="green")
    elif note:
        st.caption(md_escape(note))
    if pairs is not None and composition.lines < len(pairs[0]):
        st.caption(f"{composition.lines} of {len(pairs[0])} matched points are inside the zoomed view.")


def _window_size(window: tuple[int, int, int, int]) -> tuple[int, int]:
    return (max(1, window[2] - window[0]), max(1, window[3] - window[1]))


def _review(
    photo: PhotoResult,
    result: Identification,
    rank: int,
    candidate: Candidate,
    shown: ComparisonPhoto | None,
    shared: Services,
) -> None:
    """Same / Different / Cannot tell for this candidate, the verdict recorded, and "Same" → add the photo."""
    individual = candidate.individual_id
    st.markdown(f"**Does this photo show {md_escape(individual)}?**")
    catalog = shared.catalog
    if catalog is None:
        why = shared.catalog_error or "not opened"
        st.warning(md_escape(f"Verdicts cannot be recorded: the user catalogue is unavailable ({why})."))
        return
    sha = _sha256(photo)
    reviewer = st.text_input(
        "Reviewer (audit log)",
        value=st.session_state["actor"],
        placeholder="anonymous (app)",
        help="Recorded with each verdict; the same name as the save form below.",
    )
    disabled = catalog.read_only
    if disabled:
        st.caption(md_escape(f"The catalogue is read-only ({catalog.read_only_reason}): verdicts cannot be recorded."))
    columns = st.columns(len(REVIEW_DECISIONS))
    clicked = None
    for column, decision in zip(columns, REVIEW_DECISIONS, strict=True):
        if column.button(
            REVIEW_LABELS[decision],
            key=f"cmp_review_{photo.key[:12]}_{rank}_{decision}",
            icon=DECISION_ICONS[decision],
            width="stretch",
            disabled=disabled,  # all three look alike: the page does not suggest an answer
        ):
            clicked = decision
    if clicked is not None:
        st.session_state["actor"] = reviewer
        details = cm.review_details(result, rank, candidate, shown, shared.identifier.model_version)
        try:
            catalog.record_reviews([Review(sha, individual, clicked, photo.name, details)], actor=actor_name(reviewer))
        except CatalogError as exc:
            st.error(f"Verdict not recorded: {md_escape(exc)}")
            return
    reviews = catalog.reviews(sha)
    verdict = cm.latest_verdict(reviews, individual)
    if verdict is None:
        st.caption("No verdict recorded for this photo and this individual yet.")
        return
    earlier = int((reviews["individual_id"] == individual).sum()) - 1
    with st.container(key="cmp_verdict"):
        st.success(md_escape(f"Verdict: {cm.verdict_text(verdict, earlier)}"), icon=DECISION_ICONS[verdict["decision"]])
    if verdict["decision"] == "same":
        _offer_to_add(photo, individual, reviewer, shared)


def _offer_to_add(photo: PhotoResult, individual: str, reviewer: str, shared: Services) -> None:
    """After "Same": add the photo to that individual's catalogue photos (the save form's enrol path)."""
    catalog = shared.catalog
    assert catalog is not None
    stored = catalog.find_image(hashlib.sha256(photo.data).hexdigest())
    if stored is not None:
        st.caption(md_escape(f"This photo is in the catalogue: image {stored[0]} of {stored[1]}."))
        return
    if not st.button(
        f"Add this photo to {md_escape(individual)} in the catalogue",
        key=f"cmp_add_{photo.key[:12]}",
        icon=":material/add_photo_alternate:",
        disabled=catalog.read_only,
    ):
        return
    panels.save_photo(shared, photo, individual, None, reviewer, new=False)
