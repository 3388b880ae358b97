"""Page 4: the model card, the loaded model and how to use another checkpoint."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import panels
from app import view_model as vm
from app.guard import run_guarded
from app.state import app_config, get_identifier

SUMMARY = """
**What it does.** You give it a photo of a dorsal fin, a tail fluke, a head or a flank. It tells you
which species it most likely shows, and compares the animal with every photo in the catalogue: the five
known individuals that look most alike, each with a probability, or *new individual* when none is close
enough. Everything runs on this computer; photos never leave it.

**How to use the answer.** Treat the top 5 as a **shortlist to check by eye**, not a verdict: look at
your photo beside each candidate's catalogue photo (*Compare with the catalogue*) and confirm the match
yourself before saving it. The species is usually right; the exact individual much less often, and least
for species with few catalogue photos. A low probability means *look carefully*, not *wrong*.

**What it cannot do.** It only knows the individuals in the catalogue: an animal never photographed
before can only be *new individual*. Blurred, distant or back-lit photos, and photos where the animal
fills little of the frame, give weaker answers. A photo with no whale or dolphin is refused.

**How well it works** is measured on photos it never saw while learning: see the model card below
(the numbers, how they were measured, and what would improve them).
"""


def body() -> None:
    st.title("About the model")
    st.subheader("In short, for biologists")
    st.markdown(SUMMARY)
    st.subheader("The model in detail")
    config = app_config()
    identifier = get_identifier()
    c = identifier.config
    cols = st.columns(4)
    species = len(vm.cetacean_species(identifier.species_names))
    for col, (label, value) in zip(
        cols,
        [
            ("Model version", identifier.model_version or "—"),
            ("Species", str(species)),
            ("Catalogue individuals", f"{len(identifier.gallery.individuals):,}"),
            ("Catalogue photos", f"{len(identifier.gallery):,}"),
        ],
        strict=True,
    ):
        with col:
            panels.card(label, value)

    with st.expander("Decision rules in use (models/inference.yaml)"):
        st.dataframe(
            vm.decision_rules(c),
            hide_index=True,
            width="stretch",
        )
        known = vm.cetacean_species(identifier.species_names)
        st.caption("Species the model knows: " + ", ".join(vm.species_label(s) for s in known))

    card = Path(config.model_card)
    if card.is_file():
        for kind, text, image in vm.document_parts(card.read_text(encoding="utf-8"), card.parent):
            if kind == "markdown":
                st.markdown(text)
            elif image is not None:
                st.image(str(image), caption=text, width="stretch")
            else:
                st.caption(f"({text}: the figure is not installed)")
    else:
        st.info(f"The model card ({card.name}) is not installed next to the model.")

    st.subheader("Use your own checkpoint")
    st.markdown(
        f"""
The app reads three files, by default from `models/`:
`whale_id.pt` (the network), `catalogue.npz` (the known individuals) and `inference.yaml` (the tuned rules).
Point it at others with environment variables before starting it:

```bash
python -m whales_identify train --data-root /path/to/data --out runs/my_model.pt
python -m whales_identify bundle --checkpoint runs/my_model.pt --models-dir my_models/
WHALE_ID_CHECKPOINT=my_models/whale_id.pt \\
WHALE_ID_CATALOGUE=my_models/catalogue.npz \\
WHALE_ID_INFERENCE_CONFIG=my_models/inference.yaml \\
streamlit run app/streamlit_app.py
```
`WHALE_ID_CATALOGUE=none` starts with an empty catalogue (every photo is then a new individual).
Now in use: `{Path(config.checkpoint).name}` · `{Path(config.catalogue).name}` · `{Path(config.inference_config).name}`.
"""
    )


run_guarded(body)
