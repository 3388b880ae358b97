"""Review a batch on the Batch page: step through its photos, give each answer a verdict (Same,
Different with a correction, Cannot tell), then save the verdicts to the catalogue in one transaction.

What is reviewed and in which order is computed by the pure functions at the top (tested without a
page); the verdicts live in the batch's ``BatchState`` (``decisions``, ``saved``), so they survive
reruns and visits to other pages; saving is ``whales_identify.catalog.review.save_reviewed``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pandas as pd
import streamlit as st

from app import charts, panels
from app import view_model as vm
from app.state import BatchState, services
from whales_identify.batch.local import BatchRow
from whales_identify.catalog.review import (
    CANNOT_TELL,
    DIFFERENT,
    SAME,
    ReviewDecision,
    ReviewSaveError,
    save_reviewed,
)
from whales_identify.catalog.store import REVIEW_LABELS, CatalogError
from whales_identify.config import NEW_INDIVIDUAL
from whales_identify.inputs.text import InvalidTextError, validate_individual_id

LOW_FIRST = "Lowest probability first"
ORDERS = ("Batch order", LOW_FIRST)
KEYS = {"previous": "Left", "next": "Right", SAME: "1", DIFFERENT: "2", CANNOT_TELL: "3", "skip": "S"}
KEYS_TEXT = "Keys: **←** / **→** previous / next · **1** Same · **2** Different · **3** Cannot tell · **S** skip"
TOP5_THUMB = 120


# --- pure: what is reviewed, in which order ----------------------------------------------------------------
def reviewable(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with an answer to judge: identified photos (errors, skipped files and rejected photos have none)."""
    return frame[(frame["outcome"] == "ok") & ~frame["rejected"].astype(bool)]


def review_queue(frame: pd.DataFrame, done: Iterable[str], unreviewed_only: bool, order: str) -> list[str]:
    """The files to step through: the filtered table's reviewable rows, the ones without a verdict only
    when asked, the least sure answers first when asked (ties in batch order)."""
    rows = reviewable(frame)
    if unreviewed_only:
        rows = rows[~rows["file"].isin(set(done))]
    if order == LOW_FIRST:
        rows = rows.sort_values("probability", kind="stable", na_position="first")
    return rows["file"].tolist()


def step(queue: list[str], current: str | None, offset: int) -> str | None:
    """The file ``offset`` places from ``current`` in ``queue`` (kept at the ends); the first when absent."""
    if not queue:
        return None
    if current not in queue:
        return queue[0]
    index = min(max(queue.index(current) + offset, 0), len(queue) - 1)
    return queue[index]


def verdict_text(decision: ReviewDecision | None) -> str:
    """'Same: whale_15434', 'Different: is NEW-7 (new individual)', 'Cannot tell'; '' without a verdict."""
    if decision is None:
        return ""
    label = REVIEW_LABELS[decision.decision]
    if decision.decision == CANNOT_TELL:
        return label
    if decision.decision == SAME:
        who = decision.individual_id
        return f"{label}: {who} (new individual)" if decision.new else f"{label}: {who}"
    if not decision.individual_id:
        return f"{label} from {decision.answer} (who it is not known)"
    return f"{label}: is {decision.individual_id}" + (" (new individual)" if decision.new else "")


def new_ids(decisions: dict[str, ReviewDecision], but: str = "") -> dict[str, str]:
    """New individuals named by this review's verdicts (id -> species), except the verdict on ``but``."""
    return {d.individual_id: d.species for f, d in decisions.items() if d.new and f != but}


def review_column(batch: BatchState, files: Iterable[str]) -> list[str]:
    """The table's "Review" cell for each file: the verdict's short label, with ✓ once saved."""
    cells = []
    for file in files:
        decision = batch.decisions.get(file)
        text = REVIEW_LABELS[decision.decision] if decision else ""
        cells.append(f"{text} ✓" if text and file in batch.saved else text)
    return cells


def make_decision(
    row: BatchRow, sha256: str, decision: str, individual_id: str = "", new: bool = False, species: str = ""
) -> ReviewDecision:
    """The verdict on a row's answer (``individual_id``: who the photo is, when the reviewer says so)."""
    result = row.result
    answer = row.individual_id
    about = ""
    if answer == NEW_INDIVIDUAL and not individual_id and result is not None and result.top5:
        about = result.top5[0].individual_id  # nothing stored: the verdict is about the closest candidate
    if decision == SAME and answer != NEW_INDIVIDUAL:
        individual_id = answer
    return ReviewDecision(
        file=row.file,
        sha256=sha256,
        decision=decision,
        answer=answer,
        individual_id=individual_id,
        new=new,
        species=species,
        about=about,
        probability=row.probability,
    )


# --- the page ----------------------------------------------------------------------------------------------
def _go(batch: BatchState, file: str | None) -> None:
    batch.review_at = file
    batch.fixing = None


def _decide(batch: BatchState, decision: ReviewDecision, queue: list[str]) -> None:
    batch.decisions[decision.file] = decision
    _go(batch, step(queue, decision.file, 1))


def _clear(batch: BatchState, file: str, queue: list[str]) -> None:
    batch.decisions.pop(file, None)
    _go(batch, step(queue, file, 1))


def _press(batch: BatchState, row: BatchRow, verdict: str, queue: list[str]) -> None:
    """Same on a catalogue answer and Cannot tell are complete; Different (and Same on a new-individual
    answer, which needs its id and species) open the correction panel."""
    if verdict == DIFFERENT or (verdict == SAME and row.individual_id == NEW_INDIVIDUAL):
        batch.fixing = verdict
        return
    _decide(batch, make_decision(row, batch.sha256.get(row.file, ""), verdict), queue)


def _progress(batch: BatchState, frame: pd.DataFrame) -> None:
    files = reviewable(frame)["file"].tolist()
    reviewed = sum(1 for f in files if f in batch.decisions)
    saved = sum(1 for f in files if f in batch.saved)
    st.progress(
        reviewed / max(len(files), 1),
        text=f"**{reviewed} of {vm.plural(len(files), 'photo')} reviewed** · {vm.plural(saved, 'verdict')} saved",
    )


def _photo_and_answer(batch: BatchState, row: BatchRow) -> None:
    result = row.result
    assert result is not None  # reviewable rows are identified photos
    left, right = st.columns([1.4, 1], gap="large")
    with left:
        preview = batch.previews.get(row.file)
        if preview:
            st.image(preview, caption=vm.md_escape(row.file), width="stretch")
        else:
            st.info("No preview of this photo.")
    with right:
        panels.answer_header(result)
        best = result.best
        if best is not None:
            thumb = services().identifier.gallery.thumbnails.get(best.individual_id)
            title = "Best match" if not result.new_individual else "Closest catalogue individual"
            if thumb:
                st.image(
                    thumb,
                    caption=vm.md_escape(f"{title}: {best.individual_id} in the catalogue"),
                    width=256,
                )
            else:
                st.caption(f"{title}: {vm.md_escape(best.individual_id)} (no catalogue photo stored)")


def _candidates(row: BatchRow) -> None:
    """The top-5 chart and each candidate's catalogue photo (to choose a correction by eye)."""
    result = row.result
    assert result is not None
    st.altair_chart(charts.top5_chart(result), width="stretch")
    thumbs = services().identifier.gallery.thumbnails
    if result.top5:
        cols = st.columns(len(result.top5))
        for col, (rank, c) in zip(cols, enumerate(result.top5, start=1), strict=True):
            caption = vm.md_escape(f"#{rank} {vm.short_id(c.individual_id)} · {vm.percent(c.probability)}")
            if thumbs.get(c.individual_id):
                col.image(thumbs[c.individual_id], caption=caption, width=TOP5_THUMB)
            else:
                col.caption(caption)


def _buttons(batch: BatchState, row: BatchRow, queue: list[str]) -> None:
    locked = row.file in batch.saved
    index = queue.index(row.file)
    cols = st.columns([1, 1, 1, 1, 1, 1])
    cols[0].button(
        "Previous",
        icon=":material/arrow_back:",
        key="review_previous",
        shortcut=KEYS["previous"],
        disabled=index == 0,
        on_click=_go,
        args=(batch, step(queue, row.file, -1)),
        width="stretch",
    )
    for col, verdict, icon in zip(
        cols[1:4],
        (SAME, DIFFERENT, CANNOT_TELL),
        (":material/check_circle:", ":material/cancel:", ":material/help:"),
        strict=True,
    ):
        col.button(
            REVIEW_LABELS[verdict],
            icon=icon,
            key=f"review_{verdict}",
            shortcut=KEYS[verdict],
            type="primary" if verdict == SAME else "secondary",
            disabled=locked,
            on_click=_press,
            args=(batch, row, verdict, queue),
            width="stretch",
        )
    cols[4].button(
        "Skip",
        icon=":material/redo:",
        key="review_skip",
        shortcut=KEYS["skip"],
        disabled=locked,
        help="Leave this photo without a verdict (a verdict given before is taken back) and go on.",
        on_click=_clear,
        args=(batch, row.file, queue),
        width="stretch",
    )
    cols[5].button(
        "Next",
        icon=":material/arrow_forward:",
        key="review_next",
        shortcut=KEYS["next"],
        disabled=index == len(queue) - 1,
        on_click=_go,
        args=(batch, step(queue, row.file, 1)),
        width="stretch",
    )
    st.caption(KEYS_TEXT)


def _known_or_pending(batch: BatchState, file: str, individual_id: str) -> bool:
    catalog = services().catalog
    known = catalog.known(individual_id) if catalog is not None else individual_id in services().bundled.individuals
    return known or individual_id in new_ids(batch.decisions, but=file)


WHO_LABELS = {
    "typed": "Another catalogue individual (type its id)",
    "new": "A new individual (not in the catalogue)",
    "unknown": "Not known: record Different only",
}


def _who_options(row: BatchRow) -> list[str]:
    """The corrections offered for a Different: the other candidates, an id typed in, a new individual
    (only when the answer was a catalogue individual) and "not known"."""
    answer, result = row.individual_id, row.result
    options = [c.individual_id for c in (result.top5 if result else []) if c.individual_id != answer]
    if answer == NEW_INDIVIDUAL:
        return [*options, "typed"]
    return [*options, "typed", "new", "unknown"]


def _choice(batch: BatchState, row: BatchRow, index: int) -> tuple[str, bool, str, str]:
    """(individual id, new?, species, what is wrong) from the correction panel's widgets, read from the
    session state: the Record button's callback reads them too, so a value typed just before the click counts."""
    state = st.session_state
    who = "new" if batch.fixing == SAME else state.get(f"review_who_{index}")
    if who == "typed":
        individual = str(state.get(f"review_typed_{index}") or "").strip()
        if not individual:
            return "", False, "", "Type the individual's id."
        if not _known_or_pending(batch, row.file, individual):
            why = f"No individual {individual} in the catalogue; choose a new individual to add it."
            return individual, False, "", why
        return individual, False, "", ""
    if who == "new":
        individual = str(state.get(f"review_new_{index}") or "").strip()
        species = str(state.get(f"review_sp_{index}") or "")
        return individual, True, species, _new_id_problem(batch, row.file, individual)
    if who in (None, "unknown"):
        return "", False, "", ""
    return str(who), False, "", ""


def _record(batch: BatchState, row: BatchRow, index: int, queue: list[str]) -> None:
    individual, new, species, problem = _choice(batch, row, index)
    if problem:  # shown by the panel, which stays open
        return
    verdict = SAME if batch.fixing == SAME else DIFFERENT
    _decide(batch, make_decision(row, batch.sha256.get(row.file, ""), verdict, individual, new, species), queue)


def _correction(batch: BatchState, row: BatchRow, index: int, queue: list[str]) -> None:
    """Who the photo is: another candidate, an id typed in, a new individual, or not known."""
    result = row.result
    assert result is not None
    answer = row.individual_id
    with st.container(border=True, key="review_correction"):
        if batch.fixing == SAME:  # Same on a new-individual answer: name the new individual
            st.markdown("**Same: a new individual.** Give it an id and a species.")
            who = "new"
        else:
            what = answer if answer != NEW_INDIVIDUAL else "a new individual"
            st.markdown(f"**Different from {vm.md_escape(what)}.** Who is it?")
            probability = {c.individual_id: c.probability for c in result.top5}
            who = st.radio(
                "This photo shows",
                _who_options(row),
                format_func=lambda o: WHO_LABELS.get(o) or f"{vm.md_escape(o)} ({vm.percent(probability.get(o))})",
                key=f"review_who_{index}",
            )
        if who == "typed":
            st.text_input("Catalogue id", key=f"review_typed_{index}", placeholder="e.g. BND-0421")
        elif who == "new":
            c1, c2 = st.columns(2)
            c1.text_input("New individual id", key=f"review_new_{index}", placeholder="e.g. HW-2024-017")
            names = vm.cetacean_species(services().identifier.species_names)
            predicted = result.species if result.species in names else names[0]
            c2.selectbox(
                "Species", names, index=names.index(predicted), format_func=vm.species_label, key=f"review_sp_{index}"
            )
        _, _, _, problem = _choice(batch, row, index)
        if problem:
            st.caption(vm.md_escape(problem))
        c1, c2 = st.columns([2, 1])
        c1.button(
            "Record this verdict",
            icon=":material/done:",
            type="primary",
            key="review_record",
            shortcut="Enter",
            disabled=bool(problem),
            on_click=_record,
            args=(batch, row, index, queue),
        )
        c2.button("Cancel", key="review_cancel", shortcut="Esc", on_click=_go, args=(batch, row.file))


def _new_id_problem(batch: BatchState, file: str, individual: str) -> str:
    if not individual:
        return "Give the new individual an id."
    try:
        validate_individual_id(individual)
    except InvalidTextError as exc:
        return str(exc)
    if _known_or_pending(batch, file, individual):
        return f"{individual} is already named: choose another catalogue individual and type it."
    return ""


Photos = Callable[[], Iterable[tuple[str, bytes | None]]]


def _save_now(batch: BatchState, photos: Photos, uploads_match: bool) -> None:
    """The Save button's callback: it runs before the page is drawn, so the page then shows what was saved.
    Its outcome stays in ``batch.review_note`` (kind, Markdown) until the next save."""
    pending = [d for f, d in batch.decisions.items() if f not in batch.saved]
    shared = services()
    if shared.catalog is None or not pending:
        return
    if any(d.stores_photo for d in pending) and not uploads_match:
        batch.review_note = (
            "error",
            "**Nothing was saved:** the photos are read again from the uploaded files, which are no longer there "
            "(leaving the page clears the upload). Upload the same ZIP or photos again, then press Save; "
            "your verdicts are kept.",
        )
        return
    actor = vm.actor_name(str(st.session_state.get("review_actor", "")))
    try:
        report = save_reviewed(shared.catalog, shared.identifier, pending, photos(), actor)
    except ReviewSaveError as exc:
        listing = "\n".join(f"- {vm.md_escape(f)}: {vm.md_escape(why)}" for f, why in exc.problems[:12])
        batch.review_note = ("error", f"**Nothing was saved.**\n\n{listing}")
        return
    except CatalogError as exc:
        batch.review_note = ("error", f"**Nothing was saved:** {vm.md_escape(exc)}")
        return
    stored = {p.file: p for p in report.photos}
    for decision in pending:
        photo = stored.get(decision.file)
        batch.saved[decision.file] = (
            f"photo {photo.image_id} of {photo.individual_id}"
            if photo and photo.image_id
            else ("already in the catalogue" if photo else "verdict recorded")
        )
    services()  # identifications from now on search the updated catalogue
    batch.review_note = ("success", f"Saved: {vm.md_escape(report.summary())}.")


def _save(batch: BatchState, photos: Photos, uploads_match: bool) -> None:
    pending = [d for f, d in batch.decisions.items() if f not in batch.saved]
    shared = services()
    st.markdown("**Save to the catalogue**")
    if shared.catalog is None:
        st.warning(f"The user catalogue is unavailable ({vm.md_escape(shared.catalog_error)}); nothing can be saved.")
        return
    storing = sum(1 for d in pending if d.stores_photo)
    c1, c2 = st.columns([1, 2], vertical_alignment="bottom")
    if "review_actor" not in st.session_state:
        st.session_state["review_actor"] = st.session_state["actor"]
    actor = c1.text_input(
        "Your name (audit log)",
        placeholder=vm.ANONYMOUS,
        key="review_actor",
        help=f"Left blank, the audit log records “{vm.ANONYMOUS}”.",
    )
    st.session_state["actor"] = actor
    label = f"Save {vm.plural(len(pending), 'verdict')} ({vm.plural(storing, 'photo')} to store)"
    c2.button(
        label,
        type="primary",
        icon=":material/save:",
        key="review_save",
        disabled=not pending,
        on_click=_save_now,
        args=(batch, photos, uploads_match),
    )
    st.caption(
        "One transaction: every verdict gets a review row, every stored photo an audit-log entry; "
        "if anything cannot be saved, nothing is."
    )
    kind, text = batch.review_note
    if kind == "success":
        st.success(text)
    elif kind == "error":
        st.error(text)


def review_section(
    batch: BatchState,
    frame: pd.DataFrame,
    shown: pd.DataFrame,
    photos: Callable[[], Iterable[tuple[str, bytes | None]]],
    uploads_match: bool,
) -> None:
    """The review mode of the Batch page: progress over the whole batch, the photos the filters let through."""
    _progress(batch, frame)
    c1, c2 = st.columns(2)
    # another list starts at its top
    unreviewed_only = c1.toggle(
        "Only photos without a verdict", key="review_unreviewed", on_change=_go, args=(batch, None)
    )
    order = (
        c2.segmented_control("Order", ORDERS, default=ORDERS[0], key="review_order", on_change=_go, args=(batch, None))
        or ORDERS[0]
    )
    done = set(batch.decisions) | set(batch.saved)
    queue = review_queue(shown, done, unreviewed_only, order)
    if batch.review_at not in queue and batch.review_at in batch.decisions and unreviewed_only:
        batch.review_at = None
    current = step(queue, batch.review_at, 0)
    if current is None:
        st.info("No photo to review here: change the filters, or show the photos that already have a verdict.")
    else:
        batch.review_at = current
        index = int(shown.loc[shown["file"] == current, "row"].iloc[0])
        row = batch.rows[index]
        st.markdown(f"**Photo {queue.index(current) + 1} of {len(queue)}** · {vm.md_escape(current)}")
        verdict = verdict_text(batch.decisions.get(current))
        if current in batch.saved:
            st.success(f"Saved ({vm.md_escape(verdict)}): {vm.md_escape(batch.saved[current])}.")
        elif verdict:
            st.info(f"Your verdict: {vm.md_escape(verdict)} (not saved yet)")
        _photo_and_answer(batch, row)
        _buttons(batch, row, queue)
        if batch.fixing and current not in batch.saved:
            _correction(batch, row, index, queue)
        _candidates(row)
    _save(batch, photos, uploads_match)
