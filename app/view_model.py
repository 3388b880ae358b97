"""What the pages show, computed: labels, formatting, data URLs and tables. No Streamlit here.

Everything in this module is a pure function of its arguments (results, rows, frames), so it
can be tested without a page; ``app/charts.py`` and ``app/panels.py`` draw what it computes.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pandas as pd

from whales_identify.batch.local import BatchRow
from whales_identify.config import IMAGE_SUFFIXES, NEW_INDIVIDUAL, NON_CETACEAN, InferenceConfig, is_cetacean
from whales_identify.errors import WhaleIdError
from whales_identify.inputs.exif import PhotoMetadata
from whales_identify.inputs.imaging import decode_image, encode_jpeg
from whales_identify.inputs.text import csv_safe
from whales_identify.matching.results import Identification

NEW_LABEL = "New individual (not in catalogue)"
ANONYMOUS = "anonymous (app)"  # the audit log's actor when the name field is left blank
ID_LABEL_CHARS = 18  # chart and tab labels: longer ids (UUIDs) are shortened, the full id in the tooltip


# --- untrusted text on a page ---------------------------------------------------------------------
# Streamlit renders st.markdown, captions, alerts, labels, tabs and image captions as Markdown (plus
# :emoji: shortcodes, :material/icons:, :color[directives], $LaTeX$ and GFM's bare-URL and e-mail links).
# Every id, name, file name, EXIF text and error message that quotes them goes through md_escape first,
# so it shows literally.
_MD_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:&=^\"'/%@,;?])")
_WWW = re.compile(r"(?i)(www)(?=\.)")
WORD_JOINER = "\u2060"  # invisible and not a word character: breaks a pattern without showing anything


def md_escape(text: object) -> str:
    """``text`` as literal Markdown: every ASCII punctuation backslash-escaped (CommonMark shows it as
    itself: no links, images, emphasis, HTML, lists or headings) and line breaks made spaces. What
    Streamlit matches after unescaping (``:shortcodes:``, bare ``http://``, ``www.`` and ``a@b.c``
    links) is broken by an invisible word joiner after each ``:``, before each ``@`` and after ``www``."""
    flat = " ".join(str(text).splitlines())
    flat = flat.replace(":", ":" + WORD_JOINER).replace("@", WORD_JOINER + "@")
    flat = _WWW.sub(lambda m: m.group(1) + WORD_JOINER, flat)
    return _MD_PUNCTUATION.sub(r"\\\1", flat)


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """'1 photo', '2 photos', '1,024 individuals' (``plural_form`` for irregular words)."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count:,} {word}"


def actor_name(typed: str) -> str:
    """The audit log's actor: what the user typed, else ``ANONYMOUS`` (never the server's OS user)."""
    return typed.strip() or ANONYMOUS


def short_id(individual_id: str, limit: int = ID_LABEL_CHARS) -> str:
    """A long id shortened in the middle for a label ('16d659a0-e…1b2722fbf5b6'); short ids unchanged."""
    if len(individual_id) <= limit:
        return individual_id
    head = (limit - 1) // 2
    return f"{individual_id[:head]}…{individual_id[-(limit - 1 - head) :]}"


def csv_text(frame: pd.DataFrame) -> str:
    """A table as a CSV to download, every cell through the package's ``csv_safe`` (formula injection)."""
    return frame.map(csv_safe).to_csv(index=False)


# --- accepted uploads ---------------------------------------------------------------------------
def photo_types() -> list[str]:
    """The photo types an uploader accepts: the package's image suffixes, without their dots."""
    return [suffix.lstrip(".") for suffix in IMAGE_SUFFIXES]


def batch_types() -> list[str]:
    """A batch upload: a ZIP, or any photo type."""
    return ["zip", *photo_types()]


def formats_text() -> str:
    """'JPEG, PNG, …' for help texts, from the same list (spelling variants such as JPG/JPEG once)."""
    names = {"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "tiff": "TIFF", "webp": "WebP"}
    return ", ".join(dict.fromkeys(names.get(t, t.upper()) for t in photo_types()))


# --- formatting ---------------------------------------------------------------------------------
# Words of species names that are proper nouns or possessives, as a field guide spells them.
SPECIES_WORDS = {
    "atlantic": "Atlantic",
    "pacific": "Pacific",
    "indian": "Indian",
    "arctic": "Arctic",
    "antarctic": "Antarctic",
    "mediterranean": "Mediterranean",
    "amazon": "Amazon",
    "irrawaddy": "Irrawaddy",
    "ganges": "Ganges",
    "chilean": "Chilean",
    "brydes": "Bryde's",
    "commersons": "Commerson's",
    "cuviers": "Cuvier's",
    "rissos": "Risso's",
    "frasers": "Fraser's",
    "dalls": "Dall's",
    "hectors": "Hector's",
    "heavisides": "Heaviside's",
    "peales": "Peale's",
    "blainvilles": "Blainville's",
    "sowerbys": "Sowerby's",
    "omuras": "Omura's",
    "rices": "Rice's",
    "trues": "True's",
    "gervais": "Gervais'",
    "hubbs": "Hubbs'",
    "stejnegers": "Stejneger's",
    "bairds": "Baird's",
    "longmans": "Longman's",
}
_COMPOUND = re.compile(r"^(long|short|melon|white|rough|bottle|spade|strap|pygmy)$")
_SECOND = re.compile(r"^(finned|headed|sided|beaked|toothed|nosed|backed|bellied|bill)$")


def species_label(name: str) -> str:
    """'north_atlantic_right_whale' → 'North Atlantic right whale'; 'long_finned_pilot_whale' →
    'Long-finned pilot whale'; 'brydes_whale' → "Bryde's whale"; the negative class as a phrase."""
    if not is_cetacean(name):
        return "Not a whale or dolphin"
    if not name:
        return "—"
    words: list[str] = []
    for word in name.split("_"):
        if words and _SECOND.match(word) and _COMPOUND.match(words[-1].lower()):
            words[-1] = f"{words[-1]}-{word}"
        else:
            words.append(SPECIES_WORDS.get(word, word))
    text = " ".join(words)
    return text[0].upper() + text[1:]


def cetacean_species(names: list[str]) -> list[str]:
    """The species a user can choose (the negative class is not one)."""
    return [name for name in names if is_cetacean(name)]


def percent(p: float | None) -> str:
    """A probability as a percentage with one decimal; never a bare 100.0 % or 0.0 % (rounding would
    claim a certainty the model does not have)."""
    if p is None:
        return "—"
    if p >= 0.9995:
        return "> 99.9 %"
    if 0 < p < 0.0005:
        return "< 0.1 %"
    return f"{100 * p:.1f} %"


def not_cetacean_probability(result: Identification) -> float | None:
    """For a rejected photo, the probability that it shows no whale or dolphin (the rejection's own number)."""
    if not result.rejected:
        return None
    if result.species == NON_CETACEAN:
        return result.species_probability
    return result.species_probabilities.get(NON_CETACEAN)


def rejection_text(result: Identification) -> str:
    """Why a photo was rejected, with the same quantity and format as the results table."""
    p = not_cetacean_probability(result)
    if p is None:
        return result.rejection_reason or "this does not look like a whale or dolphin"
    return f"{percent(p)} probability that it shows no whale or dolphin"


def answer_probability(row: BatchRow) -> float | None:
    """The probability of a row's answer: the individual's (or new individual's), or for a rejected
    photo the probability that it shows no whale or dolphin (never a leftover candidate's)."""
    if row.status == "ok" and row.rejected and row.result is not None:
        return not_cetacean_probability(row.result)
    return row.probability


def taken_text(meta: PhotoMetadata) -> str:
    return meta.taken_at or "—"


def position_text(latitude: float | None, longitude: float | None) -> str:
    """'20.80512° N, 156.33127° W' (whole, five decimals: about a metre); '—' without a position."""
    if latitude is None or longitude is None:
        return "—"
    north = "N" if latitude >= 0 else "S"
    east = "E" if longitude >= 0 else "W"
    return f"{abs(latitude):.5f}° {north}, {abs(longitude):.5f}° {east}"


def gps_cell(latitude: float | None, longitude: float | None, note: str = "") -> str:
    """The batch table's GPS cell: '48.500, -123.167' (short enough for the column); 'dropped (invalid)' when
    the EXIF held an impossible position (``note`` says why); empty without one."""
    if note:
        return "dropped (invalid)"
    if latitude is None or longitude is None or pd.isna(latitude) or pd.isna(longitude):
        return ""
    return f"{latitude:.3f}, {longitude:.3f}"


def duration(seconds: float) -> str:
    if seconds < 10:
        return f"{max(seconds, 0):.1f} s"
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def data_url(jpeg: bytes | None) -> str | None:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii") if jpeg else None


def preview_and_thumbnail(data: bytes | None, long_side: int, thumbnail_px: int) -> tuple[bytes | None, str | None]:
    """A JPEG preview of a photo and a small thumbnail as a data URL; (None, None) for unreadable bytes."""
    if not data:
        return None, None
    try:
        image = decode_image(data)
    except WhaleIdError:
        return None, None
    preview = encode_jpeg(image, long_side, quality=82)
    return preview, data_url(encode_jpeg(image, thumbnail_px, quality=70))


def result_json(name: str, result: Identification, meta: PhotoMetadata, model_version: str) -> str:
    payload = {"file": name, "model_version": model_version, **result.to_dict()}
    payload["exif"] = {
        "taken_at": meta.taken_at,
        "latitude": meta.latitude,
        "longitude": meta.longitude,
        "gps_note": meta.gps_note,
    }
    return json.dumps(payload, indent=2)


def stem(name: str) -> str:
    """A file name without its last extension (for download names)."""
    return name.rsplit(".", 1)[0]


# --- one result ---------------------------------------------------------------------------------
def top5_frame(result: Identification) -> pd.DataFrame:
    """The candidates and the new-individual outcome, all from one probability distribution."""
    answer = result.answer
    rows = [
        {
            "label": f"#{rank} {short_id(c.individual_id)}",
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
            "individual": NEW_INDIVIDUAL,
            "probability": result.new_individual_probability,
            "score": None,
            "kind": "New individual",
            "answer": answer == NEW_INDIVIDUAL,
        }
    )
    frame = pd.DataFrame(rows)
    frame["shown"] = frame["probability"].map(percent)
    frame["role"] = frame.apply(lambda r: ("Answer: " if r["answer"] else "") + r["kind"], axis=1)
    return frame


def decision_rules(config: InferenceConfig) -> pd.DataFrame:
    """The tuned decision rules (models/inference.yaml) as a two-column table."""
    return pd.DataFrame(
        [
            ("New-individual threshold (similarity score)", config.new_individual_threshold),
            ("Probability temperature", config.temperature),
            ("Weight of the learned individual centres", config.prototype_weight),
            ("Weight of the catalogue vote in the species", config.species_knn_weight),
            ("Catalogue photos voting on the species", config.species_knn_k),
            ("Reject when P(not a cetacean) exceeds", config.reject_threshold),
            ("Tuned on", config.tuned_on or "—"),
        ],
        columns=["Rule", "Value"],
    ).astype({"Value": str})


# --- a batch ------------------------------------------------------------------------------------
def row_status(row: BatchRow) -> str:
    """One readable cell: ok, or what went wrong with this file."""
    if row.status == "ok":
        if row.rejected and row.result is not None:
            return f"rejected — {rejection_text(row.result)}"
        return "ok"
    return f"{row.status.upper()} — {row.error}"


def batch_frame(rows: list[BatchRow], thumbnails: dict[str, str]) -> pd.DataFrame:
    """The results table: one record per row, in order (``row`` is the index into ``rows``)."""
    records = []
    for index, row in enumerate(rows):
        ok = row.status == "ok"
        records.append(
            {
                "row": index,
                "thumbnail": thumbnails.get(row.file),
                "file": row.file,
                "species": species_label(row.species) if ok else "",
                "individual": ("New individual" if row.new_individual else row.individual_id)
                if ok and not row.rejected
                else ("—" if ok else ""),
                "probability": answer_probability(row),
                "new_individual": bool(row.new_individual) if ok else None,
                "rejected": bool(row.rejected) if ok else False,
                "taken_at": row.taken_at,
                "lat": row.latitude,
                "lon": row.longitude,
                "gps_note": row.gps_note,
                "status": row_status(row),
                "outcome": row.status,
                "answer_kind": "Not a whale or dolphin"
                if row.rejected
                else ("New individual" if row.new_individual else "Known individual"),
                "species_label": species_label(row.species) if ok else "",
            }
        )
    return pd.DataFrame(records)


def filter_batch(frame: pd.DataFrame, species: list[str], minimum: float, new_only: bool) -> pd.DataFrame:
    """The rows the filters let through (species labels, minimum probability, new individuals only)."""
    shown = frame
    if species:
        shown = shown[shown["species"].isin(species)]
    if minimum > 0:
        shown = shown[shown["probability"].fillna(-1) >= minimum]
    if new_only:
        shown = shown[shown["new_individual"].fillna(False).astype(bool)]
    return shown


def batch_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Files, known and new individuals, photos rejected (no whale or dolphin), errors or skipped files,
    and photos identified."""
    ok = frame[frame["outcome"] == "ok"]
    kept = ok[~ok["rejected"]]
    return {
        "files": len(frame),
        "known": int((kept["new_individual"] == False).sum()),  # noqa: E712 - a column, not a bool
        "new": int((kept["new_individual"] == True).sum()),  # noqa: E712
        "rejected": int(ok["rejected"].sum()),
        "failed": int(frame["outcome"].isin(["error", "skipped"]).sum()),
        "ok": len(ok),
    }


# --- the catalogue ------------------------------------------------------------------------------
def filter_individuals(frame: pd.DataFrame, species: list[str], text: str, origin: str) -> pd.DataFrame:
    """Catalogue individuals by species, id/name substring and origin ("all", "bundled" or "user")."""
    shown = frame
    if species:
        shown = shown[shown["species"].isin(species)]
    if text:
        needle = text.strip().lower()
        shown = shown[
            shown["id"].str.lower().str.contains(needle, regex=False)
            | shown["name"].fillna("").str.lower().str.contains(needle, regex=False)
        ]
    if origin != "all":
        shown = shown[shown["origin"] == origin]
    return shown


def readable_log(log: pd.DataFrame) -> pd.DataFrame:
    """The audit log newest first, with the details as "key: value" text."""
    return log.iloc[::-1].assign(
        details=lambda f: f["details"].map(lambda d: ", ".join(f"{k}: {v}" for k, v in d.items()))
    )


MARKDOWN_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)\s*$")


def document_parts(text: str, folder: Path) -> list[tuple[str, str, Path | None]]:
    """A Markdown document (our own model card) cut into ("markdown", text, None) and
    ("image", caption, path) parts: Streamlit cannot load a relative image link, so its
    local images are shown with st.image instead; a missing file stays a plain caption."""
    parts: list[tuple[str, str, Path | None]] = []
    buffer: list[str] = []
    for line in text.splitlines():
        found = MARKDOWN_IMAGE.match(line.strip())
        if found and "://" not in found["src"]:
            if buffer:
                parts.append(("markdown", "\n".join(buffer), None))
                buffer = []
            path = (folder / found["src"]).resolve()
            parts.append(("image", found["alt"], path if path.is_file() else None))
        else:
            buffer.append(line)
    if buffer:
        parts.append(("markdown", "\n".join(buffer), None))
    return parts
