"""Page 3: the catalogue — browse individuals, add photos from a ZIP, audit log, export/import."""

from __future__ import annotations

import io

import streamlit as st

from app import panels
from app import view_model as vm
from app.guard import run_guarded
from app.state import services
from whales_identify.catalog.enrol import EnrolmentError, enrol_zip
from whales_identify.catalog.exchange import export_catalog, import_catalog


def _browse(shared) -> None:
    catalog = shared.catalog
    frame = catalog.individuals()
    if frame.empty:
        st.info(
            "The catalogue is empty. Identify a photo and save it as a new individual (page *Identify a photo*), "
            "or add a ZIP of photos in the *Add photos* tab."
        )
        return
    thumbs = shared.identifier.gallery.thumbnails
    c1, c2, c3 = st.columns([2, 2, 1])
    species = c1.multiselect(
        "Species",
        sorted(frame["species"].unique()),
        format_func=vm.species_label,
        placeholder="All species",
        key="cat_species",
    )
    text = c2.text_input("Search id or name", key="cat_search")
    origin = c3.selectbox("Origin", ["all", "bundled", "user"], key="cat_origin")
    shown = vm.filter_individuals(frame, species, text, origin)
    shown = shown.assign(
        thumbnail=shown["id"].map(lambda i: vm.data_url(thumbs.get(i))),
        species_name=shown["species"].map(vm.species_label),
    )
    st.caption(f"{len(shown):,} of {vm.plural(len(frame), 'individual')}")
    st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        placeholder="",
        height=min(460, 40 + 45 * len(shown)),
        row_height=44,
        column_order=["thumbnail", "id", "species_name", "name", "n_photos", "last_seen", "origin"],
        column_config={
            "thumbnail": st.column_config.ImageColumn("Photo", width="small"),
            "id": st.column_config.TextColumn("Individual"),
            "species_name": st.column_config.TextColumn("Species"),
            "name": st.column_config.TextColumn("Name"),
            "n_photos": st.column_config.NumberColumn("Photos"),
            "last_seen": st.column_config.TextColumn("Last seen / added"),
            "origin": st.column_config.TextColumn("Origin", help="bundled: shipped with the model; user: added here"),
        },
    )
    st.download_button(
        "Individuals (CSV)",
        vm.csv_text(shown[["id", "species", "name", "n_photos", "last_seen", "origin"]]),
        file_name="whale_catalogue_individuals.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
    )
    if shown.empty:
        return
    picked = st.selectbox("Look at an individual", shown["id"].tolist(), key="cat_pick")
    row = frame[frame["id"] == picked].iloc[0]
    left, right = st.columns([1, 3])
    with left:
        if thumbs.get(picked):
            st.image(thumbs[picked], caption=vm.md_escape(picked), width="stretch")
        panels.card(
            "Species", vm.species_label(row["species"]), f"{vm.plural(int(row['n_photos']), 'photo')} · {row['origin']}"
        )
    with right:
        own = catalog.recent_photos(picked, limit=12)
        if own:
            st.markdown("**Photos added here** (newest first)")
            cols = st.columns(4)
            for i, image in enumerate(own):
                cols[i % 4].image(
                    image["thumbnail"],
                    caption=vm.md_escape(
                        f"#{image['id']} {image['source_name'] or ''} {image['taken_at'] or image['added_at'][:10]}"
                    ),
                    width="stretch",
                )
        elif row["origin"] == "bundled":
            st.caption("Shipped with the model; its photos are represented by their embeddings and one thumbnail.")
        log = catalog.audit_log(picked)
        if len(log):
            st.markdown("**History**")
            st.dataframe(
                vm.readable_log(log),
                hide_index=True,
                width="stretch",
                column_order=["at", "action", "actor", "details"],
            )


def _add_zip(shared) -> None:
    st.markdown(
        "A ZIP with **one folder per individual** (the folder name is the id), or with a CSV listing "
        "`image,individual_id,species`. Known ids are confirmed, other ids become new individuals. "
        "All or nothing: if any listed photo is unreadable, nothing is saved and every problem is listed."
    )
    identifier = shared.identifier
    species_names = vm.cetacean_species(identifier.species_names)
    with st.form("cat_enrol", border=True):
        upload = st.file_uploader("ZIP of photos", type=["zip"], key="cat_zip")
        species = st.selectbox(
            "Species of new individuals (when the ZIP does not say)",
            ["—", *species_names],
            format_func=lambda s: s if s == "—" else vm.species_label(s),
        )
        actor = st.text_input(
            "Your name (audit log)",
            value=st.session_state["actor"],
            placeholder=vm.ANONYMOUS,
            help=f"Left blank, the audit log records “{vm.ANONYMOUS}”.",
        )
        submitted = st.form_submit_button("Add to catalogue", type="primary", icon=":material/upload:")
    if not submitted:
        return
    if upload is None:
        st.error("Choose a ZIP first.")
        return
    st.session_state["actor"] = actor
    try:
        with st.spinner(f"Adding {vm.md_escape(upload.name)}…"):
            report = enrol_zip(
                shared.catalog,
                identifier,
                io.BytesIO(upload.getvalue()),
                actor=vm.actor_name(actor),
                species=None if species == "—" else species,
            )
    except EnrolmentError as exc:
        st.error(f"Nothing was added. {vm.md_escape(exc)}")
        if any(row.message.startswith("no species for new individual") for row in exc.report.rows):
            st.info(
                "**To add new individuals, say their species:** choose it in *Species of new individuals* "
                "above, or add a `species` column to the ZIP's CSV (`image,individual_id,species`, "
                "e.g. `humpback_whale`)."
            )
        st.dataframe(exc.report.to_frame(), hide_index=True, width="stretch")
        return
    services()
    st.success(f"{vm.md_escape(upload.name)}: {vm.md_escape(report.summary())}.")
    st.dataframe(report.to_frame(), hide_index=True, width="stretch")


def _audit(shared) -> None:
    log = shared.catalog.audit_log()
    if log.empty:
        st.info("No changes yet. Every addition, confirmation, import or removal will be listed here.")
        return
    log = vm.readable_log(log)
    st.dataframe(
        log, hide_index=True, width="stretch", column_order=["at", "action", "individual_id", "actor", "details"]
    )
    st.download_button(
        "Audit log (CSV)",
        vm.csv_text(log[["at", "action", "individual_id", "actor", "details"]]),
        file_name="audit_log.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
    )


def _exchange(shared) -> None:
    left, right = st.columns(2, gap="large")
    with left:
        st.markdown("**Export** the photos and individuals added here (not the bundled catalogue) as one ZIP.")
        if st.button("Prepare export", icon=":material/archive:"):
            buffer = io.BytesIO()
            manifest = export_catalog(shared.catalog, buffer)
            st.session_state["cat_export"] = (buffer.getvalue(), manifest["counts"])
        if st.session_state["cat_export"] is not None:
            data, counts = st.session_state["cat_export"]
            st.download_button(
                f"Download export ({vm.plural(counts['individuals'], 'individual')}, "
                f"{vm.plural(counts['images'], 'photo')})",
                data,
                file_name="whale_catalogue_export.zip",
                mime="application/zip",
                icon=":material/download:",
                on_click="ignore",
            )
    with right:
        st.markdown("**Import** an export made by this app (photos already present are skipped).")
        with st.form("cat_import", border=False):
            upload = st.file_uploader("Catalogue export (ZIP)", type=["zip"], key="cat_import_zip")
            submitted = st.form_submit_button("Import", icon=":material/download_for_offline:")
        if submitted:
            if upload is None:
                st.error("Choose an export ZIP first.")
            else:
                summary = import_catalog(
                    shared.catalog, io.BytesIO(upload.getvalue()), actor=vm.actor_name(st.session_state["actor"])
                )
                services()
                st.success(
                    f"Imported: {vm.plural(summary.individuals_created, 'new individual')}, "
                    f"{vm.plural(summary.images_added, 'photo')} ({summary.duplicates:,} already present)."
                )


def body() -> None:
    st.title("Catalogue")
    shared = services()
    if shared.catalog is None:
        st.error(
            f"The user catalogue cannot be opened: {vm.md_escape(shared.catalog_error)}. "
            "Identification still uses the bundled catalogue."
        )
        return
    stats = shared.catalog.stats(shared.identifier.model_version)
    gallery = shared.identifier.gallery
    cols = st.columns(4)
    cols[0].metric("Individuals", f"{len(gallery.individuals):,}", border=True)
    cols[1].metric("Photos searched", f"{len(gallery):,}", border=True)
    cols[2].metric(
        "Added here",
        f"{stats['individuals']:,}",
        vm.plural(stats["images"], "photo"),
        delta_color="off",
        delta_arrow="off",
        border=True,
    )
    cols[3].metric("Species", len({*gallery.individual_species.values()}), border=True)
    stale = getattr(gallery, "stale", 0) + getattr(gallery, "stale_base", 0)
    if stale:
        st.warning(
            f"{vm.plural(stale, 'photo')} {'was' if stale == 1 else 'were'} embedded by another model version; "
            "left out of searches until re-embedded with the current model (`Catalog.reembed`)."
        )
    tabs = st.tabs(["Individuals", "Add photos (ZIP)", "Audit log", "Export / import"])
    with tabs[0]:
        _browse(shared)
    with tabs[1]:
        _add_zip(shared)
    with tabs[2]:
        _audit(shared)
    with tabs[3]:
        _exchange(shared)


run_guarded(body)
