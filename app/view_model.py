"""What the pages show, computed: labels, formatting, data URLs and tables. No Streamlit here.

Everything in this module is a pure function of its arguments (results, rows, frames), so it
can be tested without a page; ``app/charts.py`` and ``app/panels.py`` draw what it computes.
"""

from __future__ import annotations

import base64
import json

import pandas as pd

from whales_identify.batch.local import BatchRow
from whales_identify.config import IMAGE_SUFFIXES, NEW_INDIVIDUAL, InferenceConfig, is_cetacean
from whales_identify.errors import WhaleIdError
from whales_identify.inputs.exif import PhotoMetadata
from whales_identify.inputs.imaging import decode_image, encode_jpeg
from whales_identify.matching.results import Identification

NEW_LABEL = "New individual (not in catalogue)"


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
def species_label(name: str) -> str:
    if not is_cetacean(name):
        return "Not a whale or dolphin"
    return name.replace("_", " ").capitalize() if name else "—"


def cetacean_species(names: list[str]) -> list[str]:
    """The species a user can choose (the negative class is not one)."""
    return [name for name in names if is_cetacean(name)]


def percent(p: float | None) -> str:
    return "—" if p is None else f"{100 * p:.1f} %"


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
    payload["exif"] = {"taken_at": meta.taken_at, "latitude": meta.latitude, "longitude": meta.longitude}
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
            "label": f"#{rank} {c.individual_id}",
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
    frame["shown"] = frame["probability"].map(lambda p: f"{100 * p:.1f} %")
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
            return f"rejected — {row.result.rejection_reason}"
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
                "probability": row.probability,
                "new_individual": bool(row.new_individual) if ok else None,
                "taken_at": row.taken_at,
                "lat": row.latitude,
                "lon": row.longitude,
                "status": row_status(row),
                "outcome": row.status,
                "answer_kind": "New individual" if row.new_individual else "Known individual",
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
    """Files, known and new individuals, errors or skipped files, and photos identified."""
    ok = frame[frame["outcome"] == "ok"]
    return {
        "files": len(frame),
        "known": int((ok["new_individual"] == False).sum()),  # noqa: E712 - a column, not a bool
        "new": int((ok["new_individual"] == True).sum()),  # noqa: E712
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
