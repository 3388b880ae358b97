"""Page 1: identify one photo."""

from __future__ import annotations

import streamlit as st

from app import charts, panels, prior, warmup
from app import view_model as vm
from app.comparison import comparison_panel
from app.guard import run_guarded
from app.state import PhotoResult, app_config, examples, get_identifier, photo_result, services


def _choose_photo() -> tuple[str, bytes] | None:
    """The photo to show: the latest of upload, camera shot or example (kept across reruns)."""
    config = app_config()
    state = st.session_state
    # Streamlit forgets a page's widgets when another page runs: the uploader's key is missing exactly
    # when the user comes back from another page (it is there, None, when they cleared it here).
    returning = "identify_upload" not in state
    uploaded = st.file_uploader(
        "Upload a photo of a whale or dolphin",
        type=vm.photo_types(),
        key="identify_upload",
        max_upload_size=config.max_photo_mb,
        help=f"{vm.formats_text()}, up to {config.max_photo_mb} MB. Fins, flukes and flanks work best.",
    )
    cols = st.columns([2, 3, 2])
    use_camera = cols[0].toggle("Use the camera", key="identify_use_camera")
    choices = examples()
    if choices:
        labels = [label for label, _ in choices]
        picked = cols[1].selectbox("Example photo", labels, key="identify_example", label_visibility="collapsed")
        if cols[2].button("Try an example", icon=":material/photo_library:", width="stretch"):
            path = dict(choices)[picked]
            state["identify_active"] = ("example", path.name, path.read_bytes())
    else:
        cols[1].caption("No example photos are installed (tests/data).")
    shot = st.camera_input("Take a photo", key="identify_camera") if use_camera else None

    for source, item in (("upload", uploaded), ("camera", shot)):
        seen_key = f"identify_seen_{source}"
        if item is None:
            if state[seen_key] is not None:
                state[seen_key] = None
                active = state["identify_active"]
                # Emptied by the user (the x of the uploader, the camera turned off): forget the photo.
                # Emptied because the page was left and Streamlit dropped the widget: keep showing it.
                if active and active[0] == source and not returning:
                    state["identify_active"] = None
            continue
        ident = getattr(item, "file_id", None) or f"{item.name}:{item.size}"
        if state[seen_key] != ident:
            state[seen_key] = ident
            if item.size > config.max_photo_mb * 1024 * 1024:
                st.error(
                    f"{vm.md_escape(item.name)} is {item.size / 1e6:.0f} MB; the limit is {config.max_photo_mb} MB."
                )
                state["identify_active"] = None
                continue
            state["identify_active"] = (source, item.name or "camera.jpg", item.getvalue())
    active = state["identify_active"]
    if active and active[0] == "upload" and uploaded is None:
        st.caption(
            f"Showing {vm.md_escape(active[1])}, uploaded earlier in this session; upload another photo to replace it."
        )
    return (active[1], active[2]) if active else None


def body() -> None:
    st.title("Identify a whale or dolphin")
    st.caption("Species, the five most likely known individuals, or a new individual — from one photo.")
    warmup.status_line()  # while the models load after the server starts
    chosen = _choose_photo()
    if chosen is None:
        st.info(
            "Upload a photo, take one with the camera, or press **Try an example**. "
            "Photos of a dorsal fin, a tail fluke or the head work best; "
            "the animal should fill a good part of the frame."
        )
        return
    name, data = chosen
    identifier = get_identifier()
    photo = photo_result(identifier, name, data)
    if photo.error:
        st.error(f"**{vm.md_escape(name)} could not be identified:** {vm.md_escape(photo.error)}")
        return
    result = photo.result
    st.divider()
    left, right = st.columns([1.1, 1], gap="large")
    with left:
        panels.mask_view(
            photo.image,
            photo.mask and photo.mask.mask,
            result.box_for(photo.image.size),
            key=f"id_{photo.key[:12]}",
            caption=name,
        )
        if photo.mask_error:
            st.caption(f"Animal mask unavailable: {vm.md_escape(photo.mask_error)}")
        elif photo.mask is not None and photo.mask.box is None:
            st.caption("The mask found no clear animal outline in this photo.")
    with right:
        panels.answer_header(result)
        if not result.rejected:
            st.markdown("**Top 5 candidates and *new individual***")
            st.altair_chart(charts.top5_chart(result), width="stretch")
            st.caption(charts.CHART_KEY)
            share = prior.stated_share(identifier.config.catalogued_share)
            panels.decision_note(result, len(identifier.gallery), share)
        else:
            with st.expander("Show the closest catalogue matches anyway"):
                st.altair_chart(charts.top5_chart(result), width="stretch")
        st.markdown("**When and where**")
        panels.metadata_block(photo.metadata, name)
        d1, d2 = st.columns(2)
        d1.download_button(
            "Result (JSON)",
            vm.result_json(name, result, photo.metadata, identifier.model_version),
            file_name=f"{vm.stem(name)}_result.json",
            mime="application/json",
            icon=":material/download:",
            width="stretch",
            on_click="ignore",
        )
        if photo.mask is not None:
            d2.download_button(
                "Mask (PNG)",
                photo.mask.png(),
                file_name=f"{vm.stem(name)}_mask.png",
                mime="image/png",
                icon=":material/download:",
                width="stretch",
                on_click="ignore",
            )
        st.caption(f"Computed in {photo.seconds:.1f} s · model {identifier.model_version or 'unversioned'}")
    if not result.rejected:
        comparison_panel(photo)
        _save_form(photo)


def _save_form(photo: PhotoResult) -> None:
    """Confirm the match or add the photo as a new individual, in the user's catalogue."""
    shared = services()
    st.subheader("Save to the catalogue")
    if shared.catalog is None:
        st.warning(f"The user catalogue is unavailable ({vm.md_escape(shared.catalog_error)}); photos cannot be saved.")
        return
    result = photo.result
    identifier = shared.identifier
    best = result.best
    options = ["Confirm the best match", "Another catalogue individual", "A new individual"]
    default = 2 if (result.new_individual or best is None) else 0
    with st.form(f"save_{photo.key[:12]}", border=True):
        how = st.radio("This photo shows", options, index=default, horizontal=True, key=f"save_how_{photo.key[:12]}")
        c1, c2, c3 = st.columns(3)
        other = c1.selectbox(
            "Catalogue individual",
            [c.individual_id for c in result.top5] or ["—"],
            help="Used with *Another catalogue individual*. The five candidates; type any known id below instead.",
        )
        typed = c1.text_input("…or any known id", placeholder="e.g. BND-0421")
        new_id = c2.text_input(
            "New individual id", placeholder="e.g. HW-2024-017", help="Used with *A new individual*."
        )
        species_names = vm.cetacean_species(identifier.species_names)
        predicted = result.species if result.species in species_names else species_names[0]
        species = c2.selectbox(
            "Species", species_names, index=species_names.index(predicted), format_func=vm.species_label
        )
        actor = c3.text_input(
            "Your name (audit log)",
            value=st.session_state["actor"],
            placeholder=vm.ANONYMOUS,
            help=f"Left blank, the audit log records “{vm.ANONYMOUS}”.",
        )
        tags = c3.text_input("Tags (comma-separated)", placeholder="survey-2024, north")
        submitted = st.form_submit_button("Save to catalogue", type="primary", icon=":material/save:")
    if not submitted:
        st.caption(
            f"The catalogue is stored in {vm.md_escape(shared.catalog.path)}; every change is written to its audit log."
        )
        return
    st.session_state["actor"] = actor
    if how == options[0]:
        if best is None:
            st.error("There is no catalogue match to confirm; add the photo as a new individual instead.")
            return
        individual, new, sp = best.individual_id, False, None
    elif how == options[1]:
        individual, new, sp = (typed.strip() or other), False, None
    else:
        individual, new, sp = new_id.strip(), True, species
    if not individual or individual == "—":
        st.error("Enter the individual's id.")
        return
    panels.save_photo(shared, photo, individual, sp, actor, new, tags)


run_guarded(body)
