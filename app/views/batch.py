"""Page 2: identify a ZIP or many photos at once."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator

import pandas as pd
import streamlit as st

from app import charts, panels, prior
from app import view_model as vm
from app.guard import run_guarded
from app.review import review_column, review_section
from app.state import (
    STOP_KEY,
    STOPPED_BY_USER,
    BatchState,
    app_config,
    batch_mask,
    batch_state,
    get_identifier,
    set_batch_state,
    why_batch_ended,
)
from whales_identify.batch.local import BatchRow, identify_entries, write_csv
from whales_identify.errors import WhaleIdError
from whales_identify.inputs.archive import ArchiveEntry, is_image_name, iter_photos, list_zip, open_zip

VIEWS = ("Table, charts and map", "Review the answers")  # the results, or the review mode (app/review.py)
REVIEW = VIEWS[1]


def _count_photos(files) -> int:
    """Photos the uploads hold (a ZIP's directory is read, no photo): for the button and the progress."""
    count = 0
    for item in files:
        if is_image_name(item.name):
            count += 1
            continue
        try:
            with open_zip(io.BytesIO(item.getvalue())) as archive:
                count += sum(1 for *_, skip in list_zip(archive) if not skip)
        except WhaleIdError:
            continue
    return count


def _plan(files) -> tuple[list, list[BatchRow], int]:
    """Sources to read, rows for whole files refused up front, and the number of rows expected."""
    config = app_config()
    limit = config.max_batch_upload_mb * 1024 * 1024
    sources, refused, total = [], [], 0
    prefix = len(files) > 1
    for item in files:
        name = item.name
        if item.size > limit:
            refused.append(
                BatchRow(
                    name, "error", f"{item.size / 1e6:.0f} MB is over the {config.max_batch_upload_mb} MB upload limit"
                )
            )
            continue
        if is_image_name(name):
            if item.size > config.max_photo_mb * 1024 * 1024:
                refused.append(
                    BatchRow(
                        name,
                        "error",
                        f"{item.size / 1e6:.0f} MB is over the {config.max_photo_mb} MB limit for one photo",
                    )
                )
                continue
            total += 1
            sources.append(("photo", name, item))
        else:  # a ZIP: its rows are the package's (hidden files and __MACOSX/ get none)
            try:
                with open_zip(io.BytesIO(item.getvalue())) as archive:
                    total += sum(1 for _ in list_zip(archive))
            except WhaleIdError as exc:
                refused.append(BatchRow(name, "error", str(exc)))
                continue
            sources.append(("zip", name if prefix else "", item))
    return sources, refused, total


def _entries(sources, stash: dict[str, bytes]) -> Iterator[ArchiveEntry]:
    """Every photo of every source; bytes are stashed until their row arrives (for the previews)."""
    for kind, name, item in sources:
        entries = [ArchiveEntry(name, item.getvalue())] if kind == "photo" else _zip_entries(name, item)
        for entry in entries:
            if entry.data is not None:
                stash[entry.name] = entry.data
            yield entry


def _uploaded_photos(files) -> Iterator[tuple[str, bytes | None]]:
    """Every photo of the uploads again, named as the batch named them (to save reviewed photos)."""
    sources, _, _ = _plan(files)
    for kind, name, item in sources:
        entries = [ArchiveEntry(name, item.getvalue())] if kind == "photo" else _zip_entries(name, item)
        for entry in entries:
            yield entry.name, entry.data


def _zip_entries(prefix: str, item) -> Iterator[ArchiveEntry]:
    try:
        for entry in iter_photos(io.BytesIO(item.getvalue())):
            yield ArchiveEntry(f"{prefix}/{entry.name}" if prefix else entry.name, entry.data, entry.skipped)
    except WhaleIdError as exc:
        yield ArchiveEntry(item.name, None, str(exc))


def _run(files, signature: tuple[tuple[str, int, str], ...], verify: bool = False) -> BatchState:
    """Identify the uploads, row by row, into a BatchState kept in the session from the first row on:
    leaving the page, reloading or pressing Stop ends the run (Streamlit interrupts the script at its
    next call) and what was done so far stays, with what happened."""
    config = app_config()
    identifier = get_identifier()
    sources, rows, total = _plan(files)
    batch = BatchState(signature=signature, rows=rows, refused=len(rows), photos=_count_photos(files))
    batch.catalogued_share = prior.stated_share(identifier.config.catalogued_share)
    batch.files = total + len(rows)
    set_batch_state(batch)  # partial results survive whatever ends this run
    stash: dict[str, bytes] = {}
    total = max(total, 1)
    bar = st.progress(0.0, text=f"0 / {vm.plural(total, 'file')}")
    stop_slot = st.empty()  # the Stop button, there while the batch runs
    stop_slot.button(
        "Stop",
        icon=":material/stop_circle:",
        key=STOP_KEY,
        help="Stop after the photo being identified; the results so far are kept.",
    )
    start = time.perf_counter()

    def on_row(row: BatchRow) -> None:
        rows.append(row)
        batch.seconds = time.perf_counter() - start
        data = stash.pop(row.file, None)
        if data is not None and row.status == "ok":  # its digest: the reviewed photo is found again to save it
            batch.sha256[row.file] = hashlib.sha256(data).hexdigest()
        preview, thumb = vm.preview_and_thumbnail(data, config.preview_long_side, config.thumbnail_px)
        if preview and thumb:
            batch.previews[row.file], batch.thumbnails[row.file] = preview, thumb
        done = len(rows) - batch.refused
        elapsed = time.perf_counter() - start
        left = elapsed / max(done, 1) * max(total - done, 0)
        bar.progress(  # where Streamlit raises when the user pressed Stop or left the page
            min(done / total, 1.0),
            text=f"{done} / {total} files · {vm.duration(elapsed)} elapsed · about {vm.duration(left)} left",
        )

    rules = prior.rules_under(identifier.config, batch.catalogued_share)
    stream = identify_entries(identifier, _entries(sources, stash), on_row=on_row, verify=verify, config=rules)
    try:
        for _ in stream:
            pass
    except BaseException as exc:  # StopException / RerunException (Stop, another page, reload), or a real error
        batch.stopped = why_batch_ended(exc)  # the next run also says Stop when it sees the button pressed
        raise
    finally:
        stream.close()  # the package drops its queued work and gives numpy its threads back
        batch.seconds = time.perf_counter() - start
    batch.finished = True
    stop_slot.empty()
    bar.progress(1.0, text=f"Done: {vm.plural(len(rows), 'file')} in {vm.duration(batch.seconds)}")
    return batch


def _outcome(batch: BatchState) -> None:
    """What happened to a batch that did not finish: how far it got, and that its rows are kept."""
    if batch.finished or not batch.stopped:
        return
    st.warning(
        f"**Stopped after {batch.photos_done} of {vm.plural(batch.photos, 'photo')}** ({batch.stopped}). "
        "The results so far are below; press **Identify** to run the whole batch again."
    )


def _filters(frame: pd.DataFrame) -> pd.DataFrame:
    ok = frame[frame["outcome"] == "ok"]
    c1, c2, c3 = st.columns([3, 2, 1])
    species = c1.multiselect("Species", sorted(ok["species"].unique()), key="batch_species", placeholder="All species")
    minimum = c2.slider("Minimum probability", 0.0, 1.0, 0.0, 0.05, key="batch_min_p")
    new_only = c3.toggle("New only", help="Only photos of new individuals", key="batch_new_only")
    return vm.filter_batch(frame, species, minimum, new_only)


# Widths fit a 1400 px screen with the sidebar open (about 940 px of grid, the selection column
# included): no horizontal scrolling (tests/e2e). Long cells are cut; the detail below shows them whole.
TABLE_COLUMNS = {
    "thumbnail": st.column_config.ImageColumn("Photo", width=44),
    "file": st.column_config.TextColumn("File", width=128),
    "species": st.column_config.TextColumn("Species", width=120),
    "individual": st.column_config.TextColumn("Individual", width=108),
    "probability": st.column_config.ProgressColumn(
        "Prob.", min_value=0.0, max_value=1.0, format="percent", width=74, help="Probability of the answer"
    ),
    "new_individual": st.column_config.CheckboxColumn("New", width=42, help="A new individual"),
    "status": st.column_config.TextColumn("Status", width=78, help="ok, rejected (no whale or dolphin), or the error"),
    "review": st.column_config.TextColumn("Review", width=62, help="Your verdict (✓ saved to the catalogue)"),
    "taken_at": st.column_config.TextColumn("Date", width=132, help="When the photo was taken (EXIF)"),
    "gps": st.column_config.TextColumn(
        "GPS",
        width=114,
        help="Latitude, longitude (EXIF), to about 100 m; the map's tooltips have five decimals. "
        "'dropped' means the EXIF held an impossible position (the CSV's gps_note says why)",
    ),
}


def _table(batch: BatchState, shown: pd.DataFrame):
    shown = shown.assign(
        gps=[
            vm.gps_cell(lat, lon, note)
            for lat, lon, note in zip(shown["lat"], shown["lon"], shown["gps_note"], strict=True)
        ],
        review=review_column(batch, shown["file"]),
        status=shown["status"].map(lambda text: text.replace(" — ", ": ", 1)),
    )
    return st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        key="batch_table",
        on_select="rerun",
        selection_mode="single-row",
        placeholder="",
        row_height=40,
        column_order=list(TABLE_COLUMNS),
        column_config=TABLE_COLUMNS,
    )


def _detail(batch: BatchState, row: BatchRow) -> None:
    st.subheader(vm.md_escape(row.file))
    if row.status != "ok" or row.result is None:
        st.error(f"**{row.status.capitalize()}:** {vm.md_escape(row.error)}")
        return
    left, right = st.columns([1.1, 1], gap="large")
    with left:
        masked = batch_mask(batch, row.file)
        if masked is not None:
            image, mask, mask_error = masked
            if mask_error:
                st.caption(f"Animal mask unavailable: {vm.md_escape(mask_error)}")
            box = row.result.box_for(image.size) or (mask and mask.box)  # the localiser's, else the mask's
            panels.mask_view(image, mask and mask.mask, box, key="batch_detail")
    with right:
        panels.answer_header(row.result)
        if not row.result.rejected:
            st.altair_chart(charts.top5_chart(row.result), width="stretch")
            st.caption(charts.CHART_KEY)


def _summary(batch: BatchState, frame: pd.DataFrame) -> None:
    counts = vm.batch_counts(frame)
    cols = st.columns(6)
    cols[0].metric("Files", counts["files"], border=True)
    cols[1].metric("Known individuals", counts["known"], border=True)
    cols[2].metric("New individuals", counts["new"], border=True)
    cols[3].metric("Rejected", counts["rejected"], help="Photos showing no whale or dolphin", border=True)
    cols[4].metric("Errors / skipped", counts["failed"], border=True)
    per = batch.seconds / max(counts["ok"], 1)
    cols[5].metric(
        "Time", vm.duration(batch.seconds), f"{per:.2f} s per photo", delta_color="off", delta_arrow="off", border=True
    )
    stated = prior.stated_share(batch.catalogued_share)
    again = "" if stated == batch.catalogued_share else " The sidebar now says otherwise: **Identify** applies it."
    st.caption(
        f"Answered for photos of which {batch.catalogued_share:.0%} show catalogued animals "
        f"(*{prior.LABEL}*, in the sidebar).{again}"
    )


def _look_closer(batch: BatchState, shown: pd.DataFrame, event) -> None:
    """The row picked in the table or the "Look closer at" box, in detail."""
    state = st.session_state
    selected = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    files_shown = shown["file"].tolist()
    if selected and selected[0] < len(files_shown):
        picked = files_shown[selected[0]]
        if batch.table_pick != picked:  # a new click in the table moves the box once
            batch.table_pick = picked
            state["batch_pick"] = picked
    if not files_shown:
        st.info("No rows match these filters.")
        return
    if state.get("batch_pick") not in files_shown:
        ok_shown = shown.loc[shown["outcome"] == "ok", "file"].tolist()
        state["batch_pick"] = (ok_shown or files_shown)[0]
    st.selectbox("Look closer at", files_shown, key="batch_pick", help="Or click a row of the table.")
    row = batch.rows[int(shown.loc[shown["file"] == state["batch_pick"], "row"].iloc[0])]
    _detail(batch, row)


def body() -> None:
    st.title("Batch identification")
    config = app_config()
    st.caption(
        f"A ZIP of photos (up to {config.max_batch_upload_mb} MB) or many photos at once. "
        "Every file gets a row; a file that cannot be read gets its reason."
    )
    files = st.file_uploader(
        "Upload a ZIP or photos",
        type=vm.batch_types(),
        accept_multiple_files=True,
        key="batch_upload",
        max_upload_size=config.max_batch_upload_mb,
    )
    batch = batch_state()
    if batch is not None and not batch.finished and st.session_state.get(STOP_KEY):
        batch.stopped = STOPPED_BY_USER  # this run was caused by the Stop button, which ended the batch
    if files:
        signature = tuple((f.name, f.size, getattr(f, "file_id", "")) for f in files)
        other_share = batch is not None and batch.catalogued_share != prior.stated_share(batch.catalogued_share)
        if batch is None or batch.signature != signature or not batch.finished or other_share:
            photos = _count_photos(files)
            label = f"Identify {vm.plural(photos, 'photo')}" if photos else f"Identify {vm.plural(len(files), 'file')}"
            verify = st.checkbox(
                "Verify right-whale matches by their callosity pattern",
                key="batch_verify",
                help="Checks each right whale's best candidates keypoint by keypoint (about 40 ms more a photo: "
                "the batch runs at less than half its speed). Answers the keypoints confirm are marked verified.",
            )
            if st.button(label, type="primary", icon=":material/play_arrow:", key="batch_start"):
                batch = _run(files, signature, verify)
            elif batch is not None and batch.signature != signature:
                st.caption(
                    "New files selected: press the button to identify them (the table below is the previous batch)."
                )
    if batch is None:
        if not files:
            st.info(
                "Upload a ZIP of photos (folders inside are fine) or select several photos, then press **Identify**. "
                "You will get a table you can filter, charts, a map when the photos carry GPS positions, and a CSV."
            )
        return
    _outcome(batch)
    frame = vm.batch_frame(batch.rows, batch.thumbnails)
    _summary(batch, frame)

    st.subheader("Results")
    shown = _filters(frame)
    view = st.segmented_control(
        "Show",
        VIEWS,
        default=VIEWS[0],
        key="batch_view",
        label_visibility="collapsed",
        help="Review: step through the photos and confirm or correct each answer, then save them to the catalogue.",
    )
    if view == REVIEW:
        same_files = [(n, s) for n, s, _ in batch.signature] == [(f.name, f.size) for f in files or []]
        review_section(batch, frame, shown, lambda: _uploaded_photos(files or []), uploads_match=same_files)
        return
    _results(batch, frame, shown)


def _results(batch: BatchState, frame: pd.DataFrame, shown: pd.DataFrame) -> None:
    """The filtered table, its detail, the CSV, and charts and map of the same rows."""
    event = _table(batch, shown)
    csv_buffer = io.StringIO()
    write_csv(batch.rows, csv_buffer)
    st.download_button(
        "Download all results (CSV)",
        csv_buffer.getvalue(),
        file_name="whale_id_results.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
    )
    _look_closer(batch, shown, event)

    ok = shown[shown["outcome"] == "ok"]
    located = shown.dropna(subset=["lat", "lon"])
    if len(ok) or len(located):
        st.subheader("Summary")
        if len(shown) < len(frame):
            st.caption(f"Charts and map show the {vm.plural(len(shown), 'row')} the filters let through.")
    if len(ok):
        c1, c2 = st.columns(2)
        with c1:
            st.markdown("**Photos per species**")
            st.altair_chart(charts.species_counts_chart(ok), width="stretch")
        with c2:
            st.markdown("**Confidence**")
            st.altair_chart(charts.confidence_histogram(ok.dropna(subset=["probability"])), width="stretch")
    if len(located):
        st.markdown(f"**Where** ({vm.plural(len(located), 'photo')} with GPS)")
        with st.container(key="batch_map"):
            st.altair_chart(charts.positions_map(located), width="stretch")
        st.caption("Coastlines: Natural Earth 1:110m, drawn offline. Hover a point for its file, individual and date.")


run_guarded(body)
