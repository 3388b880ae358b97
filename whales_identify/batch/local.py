"""Batch identification: a ZIP or folder in, one row per file out.

Rows are produced as a stream (bounded memory for thousands of photos) and a
bad file becomes a row with its error; the rest are processed.
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from whales_identify.config import InferenceConfig
from whales_identify.errors import WhaleIdError
from whales_identify.inputs.archive import ArchiveEntry, iter_photos
from whales_identify.inputs.exif import read_metadata
from whales_identify.inputs.text import csv_safe
from whales_identify.matching.identifier import Identifier
from whales_identify.matching.results import Identification

CSV_COLUMNS = (
    "file",
    "status",
    "error",
    "species",
    "species_probability",
    "individual_id",
    "probability",
    "new_individual",
    "rejected",
    "verified",
    "inliers",
    "top5",
    "taken_at",
    "latitude",
    "longitude",
    "gps_note",
)


@dataclass
class BatchRow:
    """One file's outcome. ``status`` is ``ok``, ``skipped`` or ``error``."""

    file: str
    status: str
    error: str = ""
    species: str = ""
    species_probability: float | None = None
    individual_id: str = ""
    probability: float | None = None
    new_individual: bool | None = None
    rejected: bool | None = None
    verified: bool | None = None  # the top answer is confirmed by keypoints (None: not an answer)
    inliers: int | None = None  # keypoint inliers of the top answer (None: verification did not check it)
    top5: str = ""  # "id:prob; id:prob; ..."
    taken_at: str = ""
    latitude: float | None = None
    longitude: float | None = None
    gps_note: str = ""  # why the EXIF's GPS position was dropped (impossible values); empty when fine or absent
    result: Identification | None = field(default=None, repr=False, compare=False)

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record.pop("result")
        return record


def row_for(name: str, outcome: Identification | WhaleIdError, metadata_source: bytes | None) -> BatchRow:
    meta = read_metadata(metadata_source) if metadata_source else None
    extra: dict[str, Any] = (
        {"taken_at": meta.taken_at, "latitude": meta.latitude, "longitude": meta.longitude, "gps_note": meta.gps_note}
        if meta
        else {}
    )
    if isinstance(outcome, WhaleIdError):
        return BatchRow(name, "error", str(outcome), **extra)
    best = outcome.best
    evidence = outcome.evidence_for(best.individual_id) if best is not None else None
    return BatchRow(
        file=name,
        status="ok",
        species=outcome.species,
        species_probability=round(outcome.species_probability, 4),
        individual_id=outcome.answer,
        probability=round(outcome.answer_probability, 4),
        new_individual=outcome.new_individual,
        rejected=outcome.rejected,
        verified=outcome.verified,
        inliers=evidence.inliers if evidence is not None else None,
        top5="; ".join(f"{c.individual_id}:{c.probability:.3f}" for c in outcome.top5),
        result=outcome,
        **extra,
    )


def identify_entries(
    identifier: Identifier,
    entries: Iterable[ArchiveEntry],
    batch_size: int | None = None,
    on_row: Callable[[BatchRow], None] | None = None,
    verify: bool = False,
    config: InferenceConfig | None = None,
) -> Iterator[BatchRow]:
    """Identify every readable photo; skipped entries and bad photos become rows too. ``verify``: the
    keypoint verification stage for each photo (``Identifier.identify_many``; slower, off by default).
    ``config``: other rules for this batch (e.g. a stated ``catalogued_share``; default the tuned ones).

    Each outcome is matched with its photo's bytes (for the date and GPS) by position, never by name:
    ``identify_many`` answers in input order, and two entries may carry the same name (a caller's own
    entries; ``iter_zip`` names a repeated member ``a [member N].jpg``, but nothing here relies on it).
    """
    waiting: deque[tuple[str, bytes]] = deque()  # the photos handed on and not yet answered, in order

    def photos() -> Iterator[tuple[str, bytes]]:
        for entry in entries:
            if entry.data is None:
                skipped.append(BatchRow(entry.name, "skipped", entry.skipped))
                continue
            waiting.append((entry.name, entry.data))
            yield entry.name, entry.data

    skipped: list[BatchRow] = []
    for name, outcome in identifier.identify_many(photos(), batch_size=batch_size, verify=verify, config=config):
        while skipped:
            row = skipped.pop(0)
            _emit(row, on_row)
            yield row
        sent, data = waiting.popleft()
        if sent != name:  # identify_many broke its input-order promise: never pair a photo with another's data
            raise RuntimeError(f"batch outcome for {name!r} arrived in place of {sent!r}")
        row = row_for(name, outcome, data)
        _emit(row, on_row)
        yield row
    for row in skipped:
        _emit(row, on_row)
        yield row


def _emit(row: BatchRow, on_row: Callable[[BatchRow], None] | None) -> None:
    if on_row is not None:
        on_row(row)


def run_batch(
    identifier: Identifier, source: str | Path | BinaryIO, batch_size: int | None = None, verify: bool = False
) -> Iterator[BatchRow]:
    """Identify a ZIP (path or file object) or a folder of photos (``batch_size``: photos per
    forward pass; default ``SpeedConfig.batch_chunk``; ``verify``: the keypoint verification stage)."""
    return identify_entries(identifier, iter_photos(source), batch_size=batch_size, verify=verify)


def write_csv(rows: Iterable[BatchRow], handle) -> int:
    """Rows as CSV; every cell through ``csv_safe`` (file names and ids come from users' files)."""
    writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow({key: csv_safe(value) for key, value in row.to_record().items()})
        count += 1
    return count
