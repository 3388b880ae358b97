"""Export and import of the user's catalogue as one portable ZIP.

Layout: ``manifest.json`` (format, schema and model versions, counts, SHA-256 of
every other member), ``individuals.csv``, ``images.csv``, ``audit_log.csv``
(provenance, not replayed), ``thumbnails/<id>.jpg``, ``crops/<id>.jpg`` and
``embeddings/<n>.npy`` (one float32 matrix per model version, since models may
differ in dimension). Import validates everything first, then writes in one
transaction: a corrupt or foreign file leaves the catalogue untouched.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from whales_identify.catalog.store import (
    AUDIT_COLUMNS,
    IMAGE_COLUMNS,
    INDIVIDUAL_COLUMNS,
    SCHEMA_VERSION,
    Catalog,
    CatalogError,
    NewImage,
    now,
)

MANIFEST = "manifest.json"
EXPORT_IMAGE_COLUMNS = (*IMAGE_COLUMNS, "embedding_file", "embedding_row")


class CatalogImportError(CatalogError):
    """The file is not an intact catalogue export (not a ZIP, foreign manifest, checksum mismatch)."""


@dataclass
class ImportSummary:
    individuals_created: int
    images_added: int
    duplicates: int


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _csv_bytes(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: ("" if row[k] is None else repr(row[k]) if isinstance(row[k], float) else row[k]) for k in columns}
        )
    return buffer.getvalue().encode("utf-8")


def _npy_bytes(matrix: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, matrix, allow_pickle=False)
    return buffer.getvalue()


def export_catalog(catalog: Catalog, destination: str | Path | BinaryIO) -> dict[str, Any]:
    """Write the user's layer (not the bundled catalogue) to a ZIP; returns the manifest."""

    def table(columns: tuple[str, ...], name: str) -> list[dict[str, Any]]:
        return [dict(r) for r in catalog.query(f"SELECT {', '.join(columns)} FROM {name} ORDER BY id")]

    with catalog.snapshot():  # one consistent state even while another process enrols
        individuals = table(INDIVIDUAL_COLUMNS, "individuals")
        rows = table((*IMAGE_COLUMNS, "thumbnail", "crop", "embedding"), "images")
        audit = table(AUDIT_COLUMNS, "audit_log")
    versions = sorted({r["model_version"] for r in rows})
    members: dict[str, bytes] = {}
    matrices: dict[str, list[bytes]] = defaultdict(list)
    for row in rows:
        number = versions.index(row["model_version"])
        row["embedding_file"] = f"embeddings/{number}.npy"
        row["embedding_row"] = len(matrices[row["embedding_file"]])
        matrices[row["embedding_file"]].append(row.pop("embedding"))
        members[f"thumbnails/{row['id']}.jpg"] = row.pop("thumbnail")
        members[f"crops/{row['id']}.jpg"] = row.pop("crop")
    for name, blobs in matrices.items():
        dim = len(blobs[0]) // 4
        members[name] = _npy_bytes(np.frombuffer(b"".join(blobs), np.float32).reshape(len(blobs), dim))
    members["individuals.csv"] = _csv_bytes(INDIVIDUAL_COLUMNS, individuals)
    members["images.csv"] = _csv_bytes(EXPORT_IMAGE_COLUMNS, rows)
    members["audit_log.csv"] = _csv_bytes(AUDIT_COLUMNS, audit)
    manifest = {
        "format": catalog.config.export_format,
        "format_version": catalog.config.export_format_version,
        "schema_version": SCHEMA_VERSION,
        "exported_at": now(),
        "model_versions": {f"embeddings/{i}.npy": v for i, v in enumerate(versions)},
        "model_version": catalog.model_version,
        "counts": {"individuals": len(individuals), "images": len(rows), "audit_log": len(audit)},
        "checksums": {name: _sha(data) for name, data in sorted(members.items())},
    }
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
        for name, data in sorted(members.items()):
            # photos are already compressed: store them, deflate the rest
            kind = zipfile.ZIP_STORED if name.endswith(".jpg") else zipfile.ZIP_DEFLATED
            archive.writestr(name, data, compress_type=kind)
    return manifest


def _read_all(source: str | Path | BinaryIO, catalog: Catalog) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Every member, checked against the manifest's checksums; nothing unlisted or missing."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CatalogImportError(f"not a catalogue export: this is not a ZIP file ({exc})") from exc
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if sum(i.file_size for i in infos) > catalog.config.max_import_bytes:
            raise CatalogImportError("the export is larger than the import limit")
        names = {i.filename for i in infos}
        if MANIFEST not in names:
            raise CatalogImportError(f"not a catalogue export: no {MANIFEST} in the ZIP")
        try:
            manifest = json.loads(archive.read(MANIFEST))
            _check_manifest(manifest, catalog)
            expected = dict(manifest["checksums"])
            extra, missing = names - set(expected) - {MANIFEST}, set(expected) - names
            if extra or missing:
                raise CatalogImportError(
                    f"the export's contents do not match its manifest (unlisted: {sorted(extra)[:3]}, "
                    f"missing: {sorted(missing)[:3]})"
                )
            members = {name: archive.read(name) for name in expected}
        except (zipfile.BadZipFile, OSError, ValueError, KeyError, TypeError, EOFError) as exc:
            raise CatalogImportError(f"the export is damaged: {exc}") from exc
    bad = [name for name, data in members.items() if _sha(data) != expected[name]]
    if bad:
        raise CatalogImportError(f"checksum mismatch in {len(bad)} file(s) of the export, e.g. {bad[0]}: damaged")
    return manifest, members


def _check_manifest(manifest: Any, catalog: Catalog) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != catalog.config.export_format:
        raise CatalogImportError("not a catalogue export: the manifest is from another program")
    if manifest.get("format_version") != catalog.config.export_format_version:
        raise CatalogImportError(f"export format version {manifest.get('format_version')} is not supported")
    if not isinstance(manifest.get("schema_version"), int) or manifest["schema_version"] > SCHEMA_VERSION:
        raise CatalogImportError(
            f"the export's schema version {manifest.get('schema_version')} is newer than "
            f"this program's ({SCHEMA_VERSION}): update it"
        )
    if not isinstance(manifest.get("checksums"), dict) or not isinstance(manifest.get("model_versions"), dict):
        raise CatalogImportError("the manifest lacks checksums or model versions")


def _rows(data: bytes, columns: tuple[str, ...], name: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
    if tuple(reader.fieldnames or ()) != columns:
        raise CatalogImportError(f"{name} has unexpected columns")
    return list(reader)


def _float(text: str) -> float | None:
    return float(text) if text else None


def read_export(
    source: str | Path | BinaryIO, catalog: Catalog
) -> tuple[list[dict[str, str]], list[NewImage], list[dict[str, Any]]]:
    """Validate fully and decode: (individual rows, images, image rows) — or CatalogImportError."""
    manifest, members = _read_all(source, catalog)
    individuals = _rows(members.get("individuals.csv", b""), INDIVIDUAL_COLUMNS, "individuals.csv")
    rows = _rows(members.get("images.csv", b""), EXPORT_IMAGE_COLUMNS, "images.csv")
    counts = manifest.get("counts", {})
    if counts.get("individuals") != len(individuals) or counts.get("images") != len(rows):
        raise CatalogImportError("the export's row counts do not match its manifest")
    species = {r["id"]: r["species"] for r in individuals}
    matrices: dict[str, np.ndarray] = {}
    images: list[NewImage] = []
    try:
        for name in manifest["model_versions"]:
            matrix = np.load(io.BytesIO(members[name]), allow_pickle=False)
            if matrix.dtype != np.float32 or matrix.ndim != 2 or not np.isfinite(matrix).all():
                raise CatalogImportError(f"{name} is not a finite float32 matrix")
            matrices[name] = matrix
        for row in rows:
            file = row["embedding_file"]
            if manifest["model_versions"].get(file) != row["model_version"] or row["individual_id"] not in species:
                raise CatalogImportError(f"image {row['id']} does not match the export's tables")
            images.append(
                NewImage(
                    individual_id=row["individual_id"],
                    species=species[row["individual_id"]],
                    sha256=row["sha256"],
                    thumbnail=members[f"thumbnails/{row['id']}.jpg"],
                    crop=members[f"crops/{row['id']}.jpg"],
                    embedding=matrices[file][int(row["embedding_row"])],
                    model_version=row["model_version"],
                    source_name=row["source_name"],
                    taken_at=row["taken_at"],
                    latitude=_float(row["latitude"]),
                    longitude=_float(row["longitude"]),
                    tags=row["tags"],
                )
            )
    except (KeyError, ValueError, IndexError, OSError) as exc:
        raise CatalogImportError(f"the export is inconsistent: {exc}") from exc
    return individuals, images, rows


def import_catalog(catalog: Catalog, source: str | Path | BinaryIO, actor: str | None = None) -> ImportSummary:
    """Add an export's individuals and photos to ``catalog`` in one transaction.

    Photos already present (same SHA-256) are skipped; an individual present with another
    species refuses the whole import. Image ids and timestamps are kept where free.
    """
    individuals, images, rows = read_export(source, catalog)
    actor = actor or catalog.actor
    created = added = duplicates = 0
    per_individual: dict[str, int] = defaultdict(int)
    with catalog.transaction() as conn:
        for ind in individuals:
            existing = conn.execute("SELECT species FROM individuals WHERE id = ?", (ind["id"],)).fetchone()
            known = existing[0] if existing else catalog.species_of(ind["id"])
            if known is not None and known != ind["species"]:
                raise CatalogImportError(
                    f"individual {ind['id']} is {ind['species']} in the export but {known} here; nothing imported"
                )
            if existing is None:
                conn.execute(
                    f"INSERT INTO individuals ({', '.join(INDIVIDUAL_COLUMNS)}) VALUES (?, ?, ?, ?, ?)",
                    [ind[c] for c in INDIVIDUAL_COLUMNS],
                )
                per_individual[ind["id"]] += 0  # audited even if all its photos are already here
                created += 1
        for image, row in zip(images, rows, strict=True):
            if conn.execute("SELECT 1 FROM images WHERE sha256 = ?", (image.sha256,)).fetchone():
                duplicates += 1
                continue
            free = conn.execute("SELECT 1 FROM images WHERE id = ?", (int(row["id"]),)).fetchone() is None
            catalog.insert_image(conn, image, int(row["id"]) if free else None, row["added_at"])
            per_individual[image.individual_id] += 1
            added += 1
        for individual_id, n in sorted(per_individual.items()):
            catalog.audit(conn, "imported", individual_id, {"images": n}, actor)
    return ImportSummary(created, added, duplicates)
