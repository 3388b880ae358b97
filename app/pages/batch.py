"""Page 2: identify a ZIP or many photos at once."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import PurePosixPath

import pandas as pd
import streamlit as st

from app import components as ui
from app.state import app_config, get_identifier, get_masker
from whales_identify.batch.local import BatchRow, identify_entries, write_csv
from whales_identify.errors import WhaleIdError
from whales_identify.inputs.archive import ArchiveEntry, check_zip, iter_photos, open_zip
from whales_identify.inputs.imaging import decode_image

UPLOAD_TYPES = ["zip", "jpg", "jpeg", "png", "webp", "tif", "tiff"]


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{max(seconds, 0):.1f} s"
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _plan(files) -> tuple[list, list[BatchRow], int]:
    """Sources to read, rows for whole files refused up front, and the number of photos expected."""
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
        if name.lower().endswith(".zip"):
            try:
                with open_zip(io.BytesIO(item.getvalue())) as archive:
                    members = check_zip(archive)
            except WhaleIdError as exc:
                refused.append(BatchRow(name, "error", str(exc)))
                continue
            total += sum(
                1
                for m in members
                if not any(p == "__MACOSX" or p.startswith(".") for p in PurePosixPath(m.filename).parts)
            )
            sources.append(("zip", name if prefix else "", item))
        else:
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
    return sources, refused, total


def _entries(sources, stash: dict[str, bytes]) -> Iterator[ArchiveEntry]:
    """Every photo of every source; bytes are stashed until their row arrives (for the previews)."""
    for kind, name, item in sources:
        entries = [ArchiveEntry(name, item.getvalue())] if kind == "photo" else _zip_entries(name, item)
        for entry in entries:
            if entry.data is not None:
                stash[entry.name] = entry.data
            yield entry


def _zip_entries(prefix: str, item) -> Iterator[ArchiveEntry]:
    try:
        for entry in iter_photos(io.BytesIO(item.getvalue())):
            yield ArchiveEntry(f"{prefix}/{entry.name}" if prefix else entry.name, entry.data, entry.skipped)
    except WhaleIdError as exc:
        yield ArchiveEntry(item.name, None, str(exc))


def _preview(data: bytes | None) -> tuple[bytes | None, str | None]:
    if not data:
        return None, None
    config = app_config()
    try:
        image = decode_image(data)
    except WhaleIdError:
        return None, None
    preview = ui.jpeg_bytes(image, config.preview_long_side)
    return preview, ui.data_url(ui.jpeg_bytes(image, config.thumbnail_px, quality=70))


def _run(files) -> dict:
    identifier = get_identifier()
    sources, rows, total = _plan(files)
    previews: dict[str, bytes] = {}
    thumbs: dict[str, str] = {}
    stash: dict[str, bytes] = {}
    total = max(total, 1)
    bar = st.progress(0.0, text=f"0 / {total} photos")
    start = time.perf_counter()

    def on_row(row: BatchRow) -> None:
        rows.append(row)
        preview, thumb = _preview(stash.pop(row.file, None))
        if preview:
            previews[row.file], thumbs[row.file] = preview, thumb
        done = len(rows)
        elapsed = time.perf_counter() - start
        left = elapsed / done * max(total - done, 0)
        bar.progress(
            min(done / total, 1.0),
            text=f"{done} / {total} photos · {_duration(elapsed)} elapsed · about {_duration(left)} left",
        )

    for _ in identify_entries(identifier, _entries(sources, stash), on_row=on_row):
        pass
    seconds = time.perf_counter() - start
    bar.progress(1.0, text=f"Done: {len(rows)} files in {_duration(seconds)}")
    return {"rows": rows, "previews": previews, "thumbs": thumbs, "seconds": seconds}


def _status(row: BatchRow) -> str:
    """One readable cell: ok, or what went wrong with this file."""
    if row.status == "ok":
        if row.rejected and row.result is not None:
            return f"rejected — {row.result.rejection_reason}"
        return "ok"
    return f"{row.status.upper()} — {row.error}"


def _frame(batch: dict) -> pd.DataFrame:
    records = []
    for index, row in enumerate(batch["rows"]):
        ok = row.status == "ok"
        records.append(
            {
                "row": index,
                "thumbnail": batch["thumbs"].get(row.file),
                "file": row.file,
                "species": ui.species_label(row.species) if ok else "",
                "individual": ("New individual" if row.new_individual else row.individual_id)
                if ok and not row.rejected
                else ("—" if ok else ""),
                "probability": row.probability,
                "new_individual": bool(row.new_individual) if ok else None,
                "taken_at": row.taken_at,
                "lat": row.latitude,
                "lon": row.longitude,
                "status": _status(row),
                "outcome": row.status,
                "answer_kind": "New individual" if row.new_individual else "Known individual",
                "species_label": ui.species_label(row.species) if ok else "",
            }
        )
    return pd.DataFrame(records)


def _filters(frame: pd.DataFrame) -> pd.DataFrame:
    ok = frame[frame["outcome"] == "ok"]
    c1, c2, c3 = st.columns([3, 2, 1])
    species = c1.multiselect("Species", sorted(ok["species"].unique()), key="batch_species", placeholder="All species")
    minimum = c2.slider("Minimum probability", 0.0, 1.0, 0.0, 0.05, key="batch_min_p")
    new_only = c3.toggle("New only", help="Only photos of new individuals", key="batch_new_only")
    shown = frame
    if species:
        shown = shown[shown["species"].isin(species)]
    if minimum > 0:
        shown = shown[shown["probability"].fillna(-1) >= minimum]
    if new_only:
        shown = shown[shown["new_individual"].fillna(False).astype(bool)]
    return shown


def _table(shown: pd.DataFrame):
    return st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        key="batch_table",
        on_select="rerun",
        selection_mode="single-row",
        placeholder="",
        row_height=44,
        column_order=[
            "thumbnail",
            "file",
            "species",
            "individual",
            "probability",
            "status",
            "new_individual",
            "taken_at",
            "lat",
            "lon",
        ],
        column_config={
            "thumbnail": st.column_config.ImageColumn("Photo", width="small"),
            "file": st.column_config.TextColumn("File", width="medium"),
            "species": st.column_config.TextColumn("Species"),
            "individual": st.column_config.TextColumn("Individual"),
            "probability": st.column_config.ProgressColumn(
                "Probability", min_value=0.0, max_value=1.0, format="percent"
            ),
            "new_individual": st.column_config.CheckboxColumn("New", width="small"),
            "taken_at": st.column_config.TextColumn("Date", width="medium"),
            "lat": st.column_config.NumberColumn("Lat", format="%.4f", width="small"),
            "lon": st.column_config.NumberColumn("Lon", format="%.4f", width="small"),
            "status": st.column_config.TextColumn("Status / error", width="medium"),
        },
    )


def _detail(batch: dict, row: BatchRow) -> None:
    st.subheader(row.file)
    if row.status != "ok" or row.result is None:
        st.error(f"**{row.status.capitalize()}:** {row.error}")
        return
    left, right = st.columns([1.1, 1], gap="large")
    preview = batch["previews"].get(row.file)
    with left:
        if preview:
            masks = st.session_state.setdefault("batch_masks", {})
            if row.file not in masks:
                from PIL import Image

                image = Image.open(io.BytesIO(preview)).convert("RGB")
                try:
                    masks[row.file] = (image, get_masker().mask(image))
                except WhaleIdError as exc:
                    masks[row.file] = (image, None)
                    st.caption(f"Animal mask unavailable: {exc}")
            image, mask = masks[row.file]
            ui.mask_view(image, mask and mask.mask, mask and mask.box, key="batch_detail")
    with right:
        ui.answer_header(row.result)
        if not row.result.rejected:
            st.altair_chart(ui.top5_chart(row.result), width="stretch")
            st.caption(ui.CHART_KEY)


def _summary(batch: dict, frame: pd.DataFrame) -> None:
    ok = frame[frame["outcome"] == "ok"]
    cols = st.columns(5)
    cols[0].metric("Files", len(frame), border=True)
    cols[1].metric("Known individuals", int((ok["new_individual"] == False).sum()), border=True)  # noqa: E712
    cols[2].metric("New individuals", int((ok["new_individual"] == True).sum()), border=True)  # noqa: E712
    cols[3].metric("Errors / skipped", int((frame["outcome"].isin(["error", "skipped"])).sum()), border=True)
    per = batch["seconds"] / max(len(ok), 1)
    cols[4].metric(
        "Time", _duration(batch["seconds"]), f"{per:.2f} s per photo", delta_color="off", delta_arrow="off", border=True
    )


def body() -> None:
    st.title("Batch identification")
    config = app_config()
    st.caption(
        f"A ZIP of photos (up to {config.max_batch_upload_mb} MB) or many photos at once. "
        "Every file gets a row; a file that cannot be read gets its reason."
    )
    files = st.file_uploader(
        "Upload a ZIP or photos",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        key="batch_upload",
        max_upload_size=config.max_batch_upload_mb,
    )
    state = st.session_state
    if files:
        signature = tuple((f.name, f.size, getattr(f, "file_id", "")) for f in files)
        batch = state.get("batch")
        if batch is None or batch.get("signature") != signature:
            n = len(files)
            label = f"Identify {n} file{'s' if n > 1 else ''}"
            if st.button(label, type="primary", icon=":material/play_arrow:", key="batch_start"):
                batch = _run(files)
                batch["signature"] = signature
                state["batch"] = batch
                state.pop("batch_masks", None)
            else:
                if batch is not None:
                    st.caption(
                        "New files selected: press the button to identify them (the table below is the previous batch)."
                    )
    batch = state.get("batch")
    if not batch:
        if not files:
            st.info(
                "Upload a ZIP of photos (folders inside are fine) or select several photos, then press **Identify**. "
                "You will get a table you can filter, charts, a map when the photos carry GPS positions, and a CSV."
            )
        return
    frame = _frame(batch)
    _summary(batch, frame)

    st.subheader("Results")
    shown = _filters(frame)
    event = _table(shown)
    csv_buffer = io.StringIO()
    write_csv(batch["rows"], csv_buffer)
    st.download_button(
        "Download all results (CSV)",
        csv_buffer.getvalue(),
        file_name="whale_id_results.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
    )

    selected = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    files_shown = shown["file"].tolist()
    if selected and selected[0] < len(files_shown):
        picked = files_shown[selected[0]]
        if state.get("_batch_table_pick") != picked:
            state["_batch_table_pick"] = picked
            state["batch_pick"] = picked
    if files_shown:
        if state.get("batch_pick") not in files_shown:
            ok_shown = shown.loc[shown["outcome"] == "ok", "file"].tolist()
            state["batch_pick"] = (ok_shown or files_shown)[0]
        st.selectbox("Look closer at", files_shown, key="batch_pick", help="Or click a row of the table.")
        row = batch["rows"][int(shown.loc[shown["file"] == state["batch_pick"], "row"].iloc[0])]
        _detail(batch, row)
    else:
        st.info("No rows match these filters.")

    ok = frame[frame["outcome"] == "ok"]
    if len(ok):
        st.subheader("Summary")
        c1, c2 = st.columns(2)
        with c1:
            st.markdown("**Photos per species**")
            st.altair_chart(ui.species_counts_chart(ok), width="stretch")
        with c2:
            st.markdown("**Confidence**")
            st.altair_chart(ui.confidence_histogram(ok.dropna(subset=["probability"])), width="stretch")
        located = frame.dropna(subset=["lat", "lon"])
        if len(located):
            st.markdown(f"**Where** ({len(located)} photo{'s' if len(located) > 1 else ''} with GPS)")
            st.map(located[["lat", "lon"]], zoom=4, color="#e8910c", size=2000)
            st.caption("The background map needs an internet connection; the positions are plotted without it.")


ui.run_guarded(body)
