"""Enrolment: photos in, catalogue rows out, through the same model that identifies.

Everything slow (decoding, cropping, the forward pass) happens before the write
transaction, which then only inserts rows: the database lock is held for
milliseconds, and a ZIP is stored all or nothing.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import pandas as pd
from PIL import Image

from whales_identify.catalog.store import (
    Catalog,
    CatalogError,
    DuplicateIndividualError,
    Embedder,
    NewImage,
    UnknownIndividualError,
    checked_id,
    checked_species,
    crop_keypoints,
)
from whales_identify.errors import LabelsError, WhaleIdError
from whales_identify.inputs.archive import is_ignored, is_image_name, iter_photos, open_zip
from whales_identify.inputs.exif import read_metadata
from whales_identify.inputs.imaging import encode_jpeg
from whales_identify.inputs.text import decode_text, read_csv

CSV_FIELDS = ("image", "individual_id", "species")


@dataclass
class EnrolRow:
    """One file's outcome: ``added``, ``duplicate``, ``skipped`` or ``error``."""

    file: str
    status: str
    message: str = ""
    individual_id: str = ""
    image_id: int | None = None


@dataclass
class EnrolReport:
    rows: list[EnrolRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "labels.csv was read as Windows-1252"

    @property
    def ok(self) -> bool:
        return not any(r.status == "error" for r in self.rows)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.rows)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(r) for r in self.rows], columns=list(EnrolRow.__dataclass_fields__))

    def summary(self) -> str:
        counts = {s: self.count(s) for s in ("added", "duplicate", "skipped", "error")}
        text = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "nothing to do"
        return "; ".join([text, *self.notes])


class EnrolmentError(CatalogError):
    """A ZIP enrolment was refused; nothing was written. ``report`` says which files and why."""

    def __init__(self, message: str, report: EnrolReport) -> None:
        bad = [r for r in report.rows if r.status == "error"]
        listing = "; ".join(f"{r.file}: {r.message}" for r in bad[:10])
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        super().__init__(f"{message}: {listing}{more}")
        self.report = report


@dataclass
class PreparedPhoto:
    name: str
    sha256: str
    crop: bytes
    thumbnail: bytes
    metadata: Any
    keypoints: bytes | None = None  # the crop's, for the verification stage


def prepare_photo(catalog: Catalog, identifier: Embedder, name: str, data: bytes) -> PreparedPhoto:
    """Decode (InvalidImageError on a bad file), reduce to the stored crop, read EXIF."""
    cfg = catalog.config
    # Decoded to about twice the stored size (fast), then reduced with a good filter by encode_jpeg.
    image = identifier.prepare(data, long_side=2 * cfg.crop_long_side)
    crop = encode_jpeg(image, cfg.crop_long_side, cfg.crop_quality)
    thumb = encode_jpeg(image, cfg.thumbnail_size, cfg.thumbnail_quality, optimize=True)
    # The keypoints are found on the stored crop (what a re-description would see), not the original.
    return PreparedPhoto(name, hashlib.sha256(data).hexdigest(), crop, thumb, read_metadata(data), crop_keypoints(crop))


def embed_crops(catalog: Catalog, identifier: Embedder, crops: Sequence[bytes]) -> Iterator[Any]:
    """Embeddings of the stored crops (not the originals), so ``reembed`` reproduces them exactly."""
    size = catalog.config.embed_batch_size
    for start in range(0, len(crops), size):
        images = [Image.open(io.BytesIO(c)).convert("RGB") for c in crops[start : start + size]]
        for output in identifier.forward(images):
            yield output.embedding


def accepted_species(catalog: Catalog, identifier: Embedder) -> set[str]:
    """The model's species names and the bundled catalogue's: always accepted as a species."""
    names = set(getattr(identifier, "species_names", ()) or ())
    if catalog.base is not None:
        names |= set(catalog.base.species.tolist())
    return names


def checked_new_id(catalog: Catalog, individual_id: str) -> str:
    """An id that will be created must follow the rules; one already in the catalogue is taken as it is."""
    return individual_id if catalog.known(individual_id) else checked_id(individual_id)


def new_image(
    p: PreparedPhoto, embedding: Any, individual_id: str, species: str, version: str, new: bool, tags: str
) -> NewImage:
    meta = p.metadata
    return NewImage(
        individual_id=individual_id,
        species=species,
        sha256=p.sha256,
        thumbnail=p.thumbnail,
        crop=p.crop,
        embedding=embedding,
        model_version=version,
        new=new,
        source_name=p.name,
        taken_at=meta.taken_at,
        latitude=meta.latitude,
        longitude=meta.longitude,
        tags=tags,
        keypoints=p.keypoints,
    )


def enrol_photo(
    catalog: Catalog,
    identifier: Embedder,
    data: bytes,
    individual_id: str,
    species: str | None = None,
    source_name: str = "",
    actor: str | None = None,
    new: bool = False,
    tags: str = "",
) -> EnrolRow:
    """Add one photo as a new individual (``new=True``) or as a confirmed sighting of ``individual_id``.

    A photo already stored (same SHA-256) is reported as ``duplicate`` and not re-added.
    """
    individual_id = individual_id.strip()
    if not individual_id:
        raise CatalogError("an individual id is needed")
    checked_new_id(catalog, individual_id)
    if species and species.strip():
        checked_species(species.strip(), accepted_species(catalog, identifier))
    sha = hashlib.sha256(data).hexdigest()
    found = catalog.find_image(sha)
    if found:
        return EnrolRow(
            source_name, "duplicate", f"already in the catalogue as image {found[0]} of {found[1]}", found[1], found[0]
        )
    known = catalog.known(individual_id)
    if new and known:
        raise DuplicateIndividualError(f"individual {individual_id!r} already exists; confirm it instead")
    if not new and not known:
        raise UnknownIndividualError(f"no individual {individual_id!r} in the catalogue; add it as new")
    known_species = catalog.species_of(individual_id)
    species = (species or "").strip() or known_species
    if not species:
        raise CatalogError("a species is needed for a new individual")
    if known_species and species != known_species:
        raise CatalogError(f"{individual_id} is a {known_species} in the catalogue, not a {species}")
    prepared = prepare_photo(catalog, identifier, source_name, data)
    embedding = next(embed_crops(catalog, identifier, [prepared.crop]))
    record = new_image(prepared, embedding, individual_id, species, identifier.model_version, new, tags)
    image_id = catalog.add_images([record], actor)[0]
    if image_id is None:  # another process stored it in the meantime
        found = catalog.find_image(sha)
        return EnrolRow(
            source_name, "duplicate", "stored meanwhile by another session", individual_id, found[0] if found else None
        )
    return EnrolRow(source_name, "added", "new individual" if new else "confirmed", individual_id, image_id)


# --- ZIP (or folder) enrolment ---------------------------------------------------------------
def _read_csv_listing(source: str | Path | BinaryIO, max_bytes: int) -> tuple[str, list[dict[str, str]], str] | None:
    """The archive's one CSV (name, rows, a note on its encoding), or None when photos are in one folder
    per individual. Never more than ``max_bytes`` is read, whatever the ZIP's directory claims."""
    if isinstance(source, str | Path) and Path(source).is_dir():
        found = [p for p in Path(source).rglob("*.csv") if not is_ignored(p.relative_to(source).as_posix())]
        if not found:
            return None
        if len(found) > 1:
            raise LabelsError(f"the folder holds {len(found)} CSV files; keep one (image,individual_id,species)")
        rel = found[0].relative_to(source).as_posix()
        try:
            with found[0].open("rb") as handle:
                data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise LabelsError(f"cannot read {rel}: {exc.strerror or exc}") from exc
    else:
        with open_zip(source) as archive:
            members = [
                i
                for i in archive.infolist()
                if i.filename.lower().endswith(".csv") and not i.is_dir() and not is_ignored(i.filename)
            ]
            if not members:
                return None
            if len(members) > 1:
                raise LabelsError(f"the ZIP holds {len(members)} CSV files; keep one (image,individual_id,species)")
            rel = members[0].filename
            if members[0].file_size > max_bytes:
                raise LabelsError(f"{rel} is too large ({members[0].file_size:,} bytes; the limit is {max_bytes:,})")
            try:
                with archive.open(members[0]) as handle:
                    data = handle.read(max_bytes + 1)
            except Exception as exc:  # a damaged member: zipfile raises many kinds (see inputs.archive)
                raise LabelsError(f"cannot read {rel} from the ZIP ({type(exc).__name__}: {exc})") from exc
        if hasattr(source, "seek"):
            source.seek(0)
    if len(data) > max_bytes:
        raise LabelsError(f"{rel} is too large; the limit is {max_bytes:,} bytes")
    text, note = decode_text(data, rel)
    return rel, _parse_csv(text, rel), note


def _parse_csv(text: str, name: str) -> list[dict[str, str]]:
    table = read_csv(text, name)
    if "image" not in table.columns or "individual_id" not in table.columns:
        raise LabelsError(f"{name} needs the columns image,individual_id[,species]; it has {','.join(table.columns)}")
    rows = [{k: v.strip() for k, v in row.items()} for row in table.rows]
    return [r for r in rows if r.get("image")]


def _listing(
    catalog: Catalog, source: str | Path | BinaryIO, species: str | None
) -> tuple[dict[str, tuple[str, str]], str | None, str]:
    """What the archive says: {file: (individual id, species)}, the CSV's name (None in folder mode) and a
    note on its encoding ("" for UTF-8)."""
    found = _read_csv_listing(source, catalog.config.max_csv_bytes)
    if found is None:
        return {}, None, ""
    csv_name, rows, note = found
    prefix = str(PurePosixPath(csv_name).parent)
    listed: dict[str, tuple[str, str]] = {}
    for row in rows:
        image = row["image"].replace("\\", "/")
        image = image.removeprefix("./")
        if prefix not in ("", "."):
            image = f"{prefix}/{image}"
        listed[image] = (row.get("individual_id", ""), row.get("species", "") or (species or ""))
    return listed, csv_name, note


def enrol_zip(
    catalog: Catalog,
    identifier: Embedder,
    zip_source: str | Path | BinaryIO,
    actor: str | None = None,
    species: str | None = None,
    tags: str = "",
) -> EnrolReport:
    """Enrol a ZIP (or folder): a CSV ``image,individual_id,species`` or one folder per individual.

    All or nothing: any listed photo that is missing or unreadable, or a row without an id or
    species, raises ``EnrolmentError`` (with the per-file report) before anything is written.
    Ids already known are confirmed; others become new individuals.
    """
    report = EnrolReport()
    species = (species or "").strip() or None
    if species:
        checked_species(species, accepted_species(catalog, identifier))
    listed, csv_name, note = _listing(catalog, zip_source, species)
    if note:
        report.notes.append(note)
    prepared: list[tuple[PreparedPhoto, str, str]] = []
    seen: dict[str, str] = {}  # sha256 → file, for duplicates inside the archive
    batch_species: dict[str, str] = {}  # new individuals of this archive → species
    for entry in iter_photos(zip_source):
        if csv_name is not None:
            if entry.name == csv_name:
                continue
            if entry.name not in listed:
                report.rows.append(EnrolRow(entry.name, "skipped", f"not listed in {csv_name}"))
                continue
            individual_id, sp = listed.pop(entry.name)
        else:
            parts = PurePosixPath(entry.name).parts
            if not entry.ok:  # a photo that cannot be read fails the archive; other files are just skipped
                status = "error" if is_image_name(entry.name) else "skipped"
                report.rows.append(EnrolRow(entry.name, status, entry.skipped))
                continue
            if len(parts) < 2:
                report.rows.append(EnrolRow(entry.name, "error", "not inside a folder named after the individual"))
                continue
            individual_id, sp = parts[-2], species or ""
        _take(catalog, identifier, entry, individual_id.strip(), sp, (seen, batch_species), prepared, report)
    for missing in listed:
        report.rows.append(
            EnrolRow(missing, "error", f"listed in {csv_name} but not in the archive", listed[missing][0])
        )
    if not report.ok:
        raise EnrolmentError("nothing was enrolled", report)
    embeddings = list(embed_crops(catalog, identifier, [p.crop for p, _, _ in prepared]))
    new_ids = {i for _, i, _ in prepared if not catalog.known(i)}
    records = [
        new_image(p, e, i, sp, identifier.model_version, i in new_ids, tags)
        for (p, i, sp), e in zip(prepared, embeddings, strict=True)
    ]
    ids = catalog.add_images(records, actor)
    for (p, individual_id, _), image_id in zip(prepared, ids, strict=True):
        if image_id is None:
            report.rows.append(EnrolRow(p.name, "duplicate", "stored meanwhile by another session", individual_id))
        else:
            what = "new individual" if individual_id in new_ids else "confirmed"
            report.rows.append(EnrolRow(p.name, "added", what, individual_id, image_id))
    return report


def _take(
    catalog: Catalog,
    identifier: Embedder,
    entry: Any,
    individual_id: str,
    species: str,
    state: tuple[dict[str, str], dict[str, str]],
    prepared: list[tuple[PreparedPhoto, str, str]],
    report: EnrolReport,
) -> None:
    """Check and prepare one listed photo, adding an error/duplicate row to the report if needed."""
    if not entry.ok:
        report.rows.append(EnrolRow(entry.name, "error", entry.skipped, individual_id))
        return
    if not individual_id:
        report.rows.append(EnrolRow(entry.name, "error", "no individual id"))
        return
    try:
        checked_new_id(catalog, individual_id)
        if species:
            checked_species(species, accepted_species(catalog, identifier))
    except CatalogError as exc:
        report.rows.append(EnrolRow(entry.name, "error", str(exc), individual_id))
        return
    seen, batch_species = state
    species_before = catalog.species_of(individual_id) or batch_species.get(individual_id)
    species = species or species_before or ""
    if not species:
        report.rows.append(
            EnrolRow(entry.name, "error", f"no species for new individual {individual_id!r}", individual_id)
        )
        return
    if species_before and species != species_before:
        report.rows.append(
            EnrolRow(
                entry.name,
                "error",
                f"species {species} differs from the catalogue's {species_before} for {individual_id}",
                individual_id,
            )
        )
        return
    sha = hashlib.sha256(entry.data).hexdigest()
    found = catalog.find_image(sha)
    if found or sha in seen:
        where = f"image {found[0]} of {found[1]}" if found else seen[sha]
        report.rows.append(EnrolRow(entry.name, "duplicate", f"same photo as {where}", individual_id))
        return
    try:
        item = prepare_photo(catalog, identifier, entry.name, entry.data)
    except WhaleIdError as exc:
        report.rows.append(EnrolRow(entry.name, "error", str(exc), individual_id))
        return
    seen[sha] = entry.name
    batch_species.setdefault(individual_id, species)
    prepared.append((item, individual_id, species))
