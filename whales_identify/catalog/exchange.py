"""Export and import of the user's catalogue as one portable ZIP.

Layout: ``manifest.json`` (format, schema and model versions, counts, SHA-256 of
every other member), ``individuals.csv``, ``images.csv``, ``audit_log.csv``
(provenance, not replayed), ``thumbnails/<id>.jpg``, ``crops/<id>.jpg`` and
``embeddings/<n>.npy`` (one float32 matrix per model version, since models may
differ in dimension). Text cells are written through ``csv_safe`` (a spreadsheet
never runs them) in a way the import undoes exactly (manifest ``"cells"``).

An export is untrusted input (anyone can recompute its checksums), so import
checks everything before it writes anything, and refuses the whole file on the
first problem, naming the file and line:

* the ZIP's directory: member count, names, sizes and compression ratios against
  ``ExchangeLimits`` (and ``CatalogConfig.max_import_bytes`` in total), before any member is read;
* each member is streamed, never past the size the directory declares, and its SHA-256 checked;
* every row: ids and species (``inputs/text.py``), image ids, hashes, model versions,
  coordinates, text lengths; every embeddings file used by some row, its .npy header (read before its
  data) declaring exactly the rows images.csv uses it for, in float32 of the catalogue's dimension;
  every embedding finite and unit length; every thumbnail and crop decoded by the same decoder as uploads.

Then one transaction writes the rows (photos are read again, and checked again, one at a time),
so memory holds the tables and the embeddings the rows use (never more than their rows × dimension,
whatever an embeddings file declares) but never all the photos.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import stat
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np
from PIL import Image

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
from whales_identify.config import ExchangeLimits
from whales_identify.errors import InvalidArchiveError, InvalidImageError, LabelsError
from whales_identify.inputs.archive import ZIP_ERRORS, open_zip
from whales_identify.inputs.imaging import decode_image
from whales_identify.inputs.text import (
    InvalidTextError,
    csv_safe,
    read_csv,
    shown,
    validate_individual_id,
    validate_model_version,
    validate_species,
)

MANIFEST = "manifest.json"
TABLES = ("individuals.csv", "images.csv", "audit_log.csv")
EXPORT_IMAGE_COLUMNS = (*IMAGE_COLUMNS, "embedding_file", "embedding_row")
CELLS = "csv_safe"  # manifest "cells": text cells starting with ' = + - @ tab CR carry one extra leading '
_PHOTO = re.compile(r"(thumbnails|crops)/([1-9][0-9]{0,18})\.jpg")
_EMBEDDINGS = re.compile(r"embeddings/(0|[1-9][0-9]{0,5})\.npy")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_IMAGE_ID = re.compile(r"[1-9][0-9]{0,18}")
_ROW = re.compile(r"0|[1-9][0-9]{0,9}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # any control character but tab, LF, CR
_CHUNK = 1024 * 1024
_MAX_TIMESTAMP_CHARS = 64


class CatalogImportError(CatalogError):
    """The file is not an intact, valid catalogue export; nothing was imported."""


@dataclass
class ImportSummary:
    individuals_created: int
    images_added: int
    duplicates: int


def _refused(message: str) -> CatalogImportError:
    return CatalogImportError(f"{message}; nothing imported")


def _sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


# --- export --------------------------------------------------------------------------------------------
def _encode_cell(text: str) -> str:
    """``csv_safe``, made reversible: a cell that already starts with ' gets one more."""
    return "'" + text if text.startswith("'") or csv_safe(text) != text else text


def _decode_cell(text: str) -> str:
    return text[1:] if text.startswith("'") else text


def _csv_bytes(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: _encode_cell("" if row[k] is None else repr(row[k]) if isinstance(row[k], float) else str(row[k]))
                for k in columns
            }
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
        "cells": CELLS,
        "checksums": {name: _sha(data) for name, data in sorted(members.items())},
    }
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
        for name, data in sorted(members.items()):
            # photos are already compressed: store them, deflate the rest
            kind = zipfile.ZIP_STORED if name.endswith(".jpg") else zipfile.ZIP_DEFLATED
            archive.writestr(name, data, compress_type=kind)
    return manifest


# --- import: the ZIP ------------------------------------------------------------------------------------
@contextmanager
def _open_export(source: str | Path | BinaryIO) -> Iterator[zipfile.ZipFile]:
    try:
        archive = open_zip(source)
    except InvalidArchiveError as exc:
        raise _refused(f"not a catalogue export: {exc}") from exc
    with archive:
        yield archive


def _kind(name: str) -> str | None:
    """What a member is by its name (None: nothing an export holds)."""
    if name == MANIFEST:
        return "manifest"
    if name in TABLES:
        return "table"
    if _PHOTO.fullmatch(name):
        return "photo"
    if _EMBEDDINGS.fullmatch(name):
        return "embeddings"
    return None


def _check_directory(archive: zipfile.ZipFile, limits: ExchangeLimits, max_total: int) -> dict[str, zipfile.ZipInfo]:
    """The members by name, after checking the whole directory: nothing is read yet."""
    try:
        infos = [i for i in archive.infolist() if not i.filename.endswith("/")]
    except ZIP_ERRORS as exc:  # pragma: no cover - infolist() is read when the ZIP is opened
        raise _refused(f"the export's directory is damaged ({exc})") from exc
    if len(infos) > limits.max_members:
        raise _refused(f"the export holds {len(infos):,} files; the limit is {limits.max_members:,}")
    caps = {
        "manifest": limits.max_manifest_bytes,
        "table": limits.max_table_bytes,
        "photo": limits.max_image_bytes,
        "embeddings": limits.max_embeddings_bytes,
    }
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        kind = _kind(name)
        if kind is None:
            raise _refused(f"the export holds {shown(name)}, which no catalogue export has")
        if name in members:
            raise _refused(f"the export holds {name} twice")
        if info.flag_bits & 0x1:
            raise _refused(f"{name} is encrypted")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise _refused(f"{name} is a symbolic link")
        if info.file_size > caps[kind]:
            raise _refused(f"{name} is {info.file_size:,} bytes; the limit for a {kind} file is {caps[kind]:,}")
        if info.file_size > _CHUNK and info.file_size > limits.max_compression_ratio * max(info.compress_size, 1):
            ratio = info.file_size / max(info.compress_size, 1)
            raise _refused(
                f"{name} expands {ratio:,.0f}-fold (a ZIP bomb?); the limit is {limits.max_compression_ratio:.0f}"
            )
        members[name] = info
    total = sum(i.file_size for i in infos)
    if total > max_total:
        raise _refused(f"the export expands to {total / 1e9:.1f} GB; the import limit is {max_total / 1e9:.1f} GB")
    packed = sum(i.compress_size for i in infos)
    if total > 10 * _CHUNK and total > limits.max_compression_ratio * max(packed, 1):
        raise _refused("the export is compressed suspiciously well (a ZIP bomb?)")
    return members


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, checksum: str | None) -> bytearray:
    """A member's bytes: exactly the size its directory entry declares (already checked against the
    limits), never more, and matching ``checksum`` (None: the manifest, which has none of its own)."""
    name, size = info.filename, info.file_size
    data = bytearray(size)
    try:
        with archive.open(info) as handle:
            done = 0
            while done < size:
                chunk = handle.read(min(_CHUNK, size - done))
                if not chunk:
                    raise _refused(f"{name} is shorter than the export's directory says: damaged")
                data[done : done + len(chunk)] = chunk
                done += len(chunk)
            if handle.read(1):  # pragma: no cover - zipfile stops at the declared size itself
                raise _refused(f"{name} is longer than the export's directory says: damaged")
    except CatalogImportError:
        raise
    except ZIP_ERRORS as exc:
        raise _refused(f"{name} cannot be read from the export ({exc}): damaged") from exc
    if checksum is not None and _sha(data) != checksum:
        raise _refused(f"checksum mismatch for {name}: the export is damaged")
    return data


# --- import: checking the contents --------------------------------------------------------------------------
@dataclass
class _Image:
    """One images.csv row, checked: everything but the photos' bytes."""

    line: int
    id: int
    individual_id: str
    sha256: str
    model_version: str
    source_name: str
    taken_at: str
    latitude: float | None
    longitude: float | None
    tags: str
    added_at: str
    embedding_file: str
    embedding_row: int


@dataclass
class _Export:
    individuals: list[dict[str, str]]
    images: list[_Image]
    matrices: dict[str, np.ndarray]
    checksums: dict[str, str]


def _check_manifest(manifest: Any, catalog: Catalog, names: set[str]) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != catalog.config.export_format:
        raise _refused("not a catalogue export: the manifest is from another program")
    if manifest.get("format_version") != catalog.config.export_format_version:
        raise _refused(f"export format version {shown(str(manifest.get('format_version')))} is not supported")
    schema = manifest.get("schema_version")
    if not isinstance(schema, int) or isinstance(schema, bool) or schema > SCHEMA_VERSION:
        raise _refused(
            f"the export's schema version {shown(str(schema))} is newer than this program's "
            f"({SCHEMA_VERSION}): update it"
        )
    checksums, versions, counts = manifest.get("checksums"), manifest.get("model_versions"), manifest.get("counts")
    if not isinstance(checksums, dict) or not isinstance(versions, dict):
        raise _refused("the manifest lacks checksums or model versions")
    for name, digest in checksums.items():
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise _refused(f"the manifest's checksum for {shown(str(name))} is not a SHA-256")
    for name, version in versions.items():
        if not _EMBEDDINGS.fullmatch(str(name)):
            raise _refused(f"the manifest names {shown(str(name))} as an embeddings file")
        try:
            validate_model_version(version)
        except InvalidTextError as exc:
            raise _refused(f"manifest.json, {name}: {exc}") from exc
    if not isinstance(counts, dict) or not all(
        isinstance(counts.get(k), int) and not isinstance(counts.get(k), bool) and counts[k] >= 0
        for k in ("individuals", "images")
    ):
        raise _refused("the manifest's counts are not whole numbers")
    if manifest.get("cells", CELLS) != CELLS:
        raise _refused(f"the manifest's cell encoding {shown(str(manifest.get('cells')))} is not known")
    listed = set(checksums)
    extra, missing = names - listed - {MANIFEST}, listed - names
    if extra or missing or MANIFEST in listed or not set(TABLES) <= names:
        raise _refused(
            f"the export's contents do not match its manifest (unlisted: {sorted(extra)[:3]}, "
            f"missing: {sorted(missing | (set(TABLES) - names))[:3]})"
        )


def _table(
    data: bytearray, name: str, columns: tuple[str, ...], decode: bool, limits: ExchangeLimits
) -> tuple[list[dict[str, str]], list[int]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refused(f"{name} is not UTF-8 text (byte {exc.start:,})") from exc
    try:
        table = read_csv(text, name, limits.max_text_chars)
    except LabelsError as exc:
        raise _refused(str(exc)) from exc
    if tuple(table.columns) != columns:
        raise _refused(f"{name} has unexpected columns ({shown(','.join(table.columns), 80)})")
    rows = table.rows
    if decode:
        rows = [{k: _decode_cell(v) for k, v in row.items()} for row in rows]
    return rows, table.lines


def _one_line(value: str, what: str, max_chars: int) -> str:
    if len(value) > max_chars:
        raise ValueError(f"{what} has {len(value):,} characters; the limit is {max_chars:,}")
    if _CONTROL.search(value) or "\n" in value or "\r" in value:
        raise ValueError(f"{what} {shown(value)} contains control characters")
    return value


def _coordinate(text: str, what: str, bound: float) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {shown(text)} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} {shown(text)} is not a finite number")
    if not -bound <= value <= bound:
        raise ValueError(f"{what} {shown(text)} is outside −{bound:g}…{bound:g}")
    return value


def _check_individuals(
    rows: list[dict[str, str]], lines: list[int], species_known: set[str], limits: ExchangeLimits
) -> None:
    seen: set[str] = set()
    for row, line in zip(rows, lines, strict=True):
        try:
            validate_individual_id(row["id"])
            if row["id"] in seen:
                raise ValueError(f"individual {row['id']!r} appears twice")
            seen.add(row["id"])
            validate_species(row["species"], species_known)
            _one_line(row["name"], "the name", limits.max_text_chars)
            _one_line(row["created_at"], "created_at", _MAX_TIMESTAMP_CHARS)
            if _CONTROL.search(row["notes"]):
                raise ValueError("the notes contain control characters")
        except (InvalidTextError, ValueError) as exc:
            raise _refused(f"individuals.csv line {line}: {exc}") from exc


def _check_images(
    rows: list[dict[str, str]],
    lines: list[int],
    individuals: set[str],
    versions: dict[str, str],
    checksums: dict[str, str],
    limits: ExchangeLimits,
) -> list[_Image]:
    images: list[_Image] = []
    seen: set[int] = set()
    for row, line in zip(rows, lines, strict=True):
        where = f"images.csv line {line}"
        try:
            if not _IMAGE_ID.fullmatch(row["id"]) or int(row["id"]) >= 2**63:
                raise ValueError(f"image id {shown(row['id'])} is not a whole number from 1")
            image_id = int(row["id"])
            where += f" (image {image_id})"
            if image_id in seen:
                raise ValueError("the image id appears twice")
            seen.add(image_id)
            if row["individual_id"] not in individuals:
                raise ValueError(f"individual {shown(row['individual_id'])} is not in individuals.csv")
            if not _SHA256.fullmatch(row["sha256"]):
                raise ValueError(f"sha256 {shown(row['sha256'])} is not a SHA-256")
            version = validate_model_version(row["model_version"])
            file = row["embedding_file"]
            if file not in versions:
                raise ValueError(f"embedding_file {shown(file)} is not in the manifest")
            if versions[file] != version:
                raise ValueError(f"model version {version!r} differs from the manifest's {versions[file]!r} for {file}")
            if not _ROW.fullmatch(row["embedding_row"]):
                raise ValueError(f"embedding_row {shown(row['embedding_row'])} is not a whole number")
            for photo in (f"thumbnails/{image_id}.jpg", f"crops/{image_id}.jpg"):
                if photo not in checksums:
                    raise ValueError(f"{photo} is missing from the export")
            images.append(
                _Image(
                    line=line,
                    id=image_id,
                    individual_id=row["individual_id"],
                    sha256=row["sha256"],
                    model_version=version,
                    source_name=_one_line(row["source_name"], "source_name", limits.max_text_chars),
                    taken_at=_one_line(row["taken_at"], "taken_at", _MAX_TIMESTAMP_CHARS),
                    latitude=_coordinate(row["latitude"], "latitude", 90),
                    longitude=_coordinate(row["longitude"], "longitude", 180),
                    tags=_one_line(row["tags"], "tags", limits.max_text_chars),
                    added_at=_one_line(row["added_at"], "added_at", _MAX_TIMESTAMP_CHARS),
                    embedding_file=file,
                    embedding_row=int(row["embedding_row"]),
                )
            )
        except (InvalidTextError, ValueError) as exc:
            raise _refused(f"{where}: {exc}") from exc
    referenced = {f"{kind}/{i.id}.jpg" for i in images for kind in ("thumbnails", "crops")}
    for name in checksums:
        if _PHOTO.fullmatch(name) and name not in referenced:
            raise _refused(f"{name} belongs to no row of images.csv")
    return images


_NPY_HEADER_BYTES = 64 * 1024  # the most of an embeddings file read before its header is checked


class _Stream:
    """A member read front to back, hashed as it goes, never past ``limit`` (at most its declared size)."""

    def __init__(self, handle: IO[bytes], info: zipfile.ZipInfo) -> None:
        self.handle, self.name, self.size = handle, info.filename, info.file_size
        self.limit = self.size
        self.done = 0
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        left = self.limit - self.done
        chunk = self.handle.read(left if n < 0 else min(n, left)) if left > 0 else b""
        self.done += len(chunk)
        self.digest.update(chunk)
        return chunk

    def read_into(self, target: memoryview) -> None:
        at = 0
        while at < len(target):
            chunk = self.read(min(_CHUNK, len(target) - at))
            if not chunk:
                raise _refused(f"{self.name} is shorter than the export's directory says: damaged")
            target[at : at + len(chunk)] = chunk
            at += len(chunk)


def _matrix(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    checksum: str,
    rows: int,
    version: str,
    dim: int | None,
    limits: ExchangeLimits,
) -> np.ndarray:
    """An embeddings file of model ``version`` as a ``rows`` × ``dim`` float32 matrix (``dim`` None: a version
    this catalogue has no rows of, any dimension up to the limit). No pickles.

    Its .npy header is read from the stream and checked (shape against the rows images.csv needs, dtype,
    and the member's declared size against that shape) before any of its data is read: memory follows
    the catalogue's real rows, never what the file claims."""
    name = info.filename
    try:
        with archive.open(info) as handle:
            stream = _Stream(handle, info)
            stream.limit = min(info.file_size, _NPY_HEADER_BYTES)
            try:
                major, _ = np.lib.format.read_magic(stream)
                if major not in (1, 2):
                    raise ValueError(f"version {major} is not a .npy version this program reads")
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(stream)
            except (ValueError, TypeError, SyntaxError, EOFError) as exc:
                raise _refused(f"{name} is not a .npy matrix ({exc})") from exc
            if dtype != np.dtype("<f4") or fortran or len(shape) != 2:
                raise _refused(f"{name} is not a 2-D float32 matrix (it holds {dtype}, shape {shape})")
            if shape[0] != rows:
                raise _refused(
                    f"{name} declares {shape[0]:,} embeddings but images.csv uses it for {rows:,}: "
                    "an export holds exactly the rows its images use"
                )
            if dim is not None and shape[1] != dim:
                raise _refused(
                    f"{name} (model {version}) holds {shape[1]}-d embeddings but this catalogue's "
                    f"{version} embeddings are {dim}-d"
                )
            if not 1 <= shape[1] <= limits.max_embedding_dim:
                raise _refused(f"{name} holds {shape[1]:,}-d embeddings; the limit is {limits.max_embedding_dim:,}")
            data_bytes = rows * shape[1] * 4
            if info.file_size != stream.done + data_bytes:
                raise _refused(
                    f"{name}: its header says {shape} ({data_bytes:,} bytes of data) but the export's directory "
                    f"says it holds {info.file_size - stream.done:,}"
                )
            matrix = np.empty(shape, dtype="<f4")
            stream.limit = info.file_size
            stream.read_into(matrix.data.cast("B"))
    except CatalogImportError:
        raise
    except ZIP_ERRORS as exc:
        raise _refused(f"{name} cannot be read from the export ({exc}): damaged") from exc
    if stream.digest.hexdigest() != checksum:
        raise _refused(f"checksum mismatch for {name}: the export is damaged")
    return matrix


def _read_matrices(
    archive: zipfile.ZipFile,
    members: dict[str, zipfile.ZipInfo],
    images: list[_Image],
    versions: dict[str, str],
    checksums: dict[str, str],
    catalog: Catalog,
    limits: ExchangeLimits,
) -> dict[str, np.ndarray]:
    """Every embeddings file the images use, one at a time, each checked from its header first; a file no
    image uses is refused unread (it could only cost memory)."""
    rows: dict[str, int] = defaultdict(int)
    for image in images:
        rows[image.embedding_file] += 1
    for file in sorted(versions):
        if file not in rows:
            raise _refused(f"{file} belongs to no row of images.csv")
        if file not in members or file not in checksums:
            raise _refused(f"{file} is named in the manifest but missing from the export")
    for image in images:
        if image.embedding_row >= rows[image.embedding_file]:
            raise _refused(
                f"images.csv line {image.line} (image {image.id}): embedding_row {image.embedding_row} is past "
                f"the end of {image.embedding_file}, which images.csv uses for {rows[image.embedding_file]} rows"
            )
    dims = _expected_dims(catalog)
    matrices: dict[str, np.ndarray] = {}
    for file in sorted(rows):
        version = versions[file]
        expected = dims.get(version)
        matrices[file] = _matrix(archive, members[file], checksums[file], rows[file], version, expected, limits)
        dims.setdefault(version, int(matrices[file].shape[1]))  # two files of one new version: one dimension
    return matrices


def _expected_dims(catalog: Catalog) -> dict[str, int]:
    """{model version: embedding dimension} this catalogue already holds (bundled and user rows)."""
    dims: dict[str, int] = {}
    base = catalog.base
    if base is not None and len(base):
        dims[base.model_version or catalog.model_version] = int(base.embeddings.shape[1])
    for version, size in catalog.query(
        "SELECT model_version, max(length(embedding)) FROM images GROUP BY model_version"
    ):
        dims.setdefault(str(version), int(size) // 4)
    return dims


def _check_embeddings(images: list[_Image], matrices: dict[str, np.ndarray], limits: ExchangeLimits) -> None:
    for image in images:
        where = f"images.csv line {image.line} (image {image.id})"
        vector = matrices[image.embedding_file][image.embedding_row].astype(np.float64)
        if not np.isfinite(vector).all():
            raise _refused(f"{where}: its embedding ({image.embedding_file} row {image.embedding_row}) is not finite")
        norm = float(np.linalg.norm(vector))
        if abs(norm - 1) > limits.norm_tolerance:
            raise _refused(
                f"{where}: its embedding ({image.embedding_file} row {image.embedding_row}) has norm {norm:.4g}; "
                f"embeddings are unit length (±{limits.norm_tolerance:g}), and a longer one would win every search"
            )


def _check_photo(data: bytearray, name: str, where: str, limits: ExchangeLimits) -> None:
    """Through the upload decoder; and not larger than a stored photo can be (re-embedding decodes crops whole)."""
    try:
        decode_image(bytes(data))
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except InvalidImageError as exc:
        raise _refused(f"{where}: {name} is not a usable image ({exc})") from exc
    except Exception as exc:  # Pillow on hostile bytes; decode_image has already accepted them
        raise _refused(f"{where}: {name} is not a usable image ({type(exc).__name__})") from exc
    if max(width, height) > limits.max_image_side:
        raise _refused(f"{where}: {name} is {width}×{height} px; stored photos are at most {limits.max_image_side} px")


def _validate(
    archive: zipfile.ZipFile, catalog: Catalog, limits: ExchangeLimits
) -> tuple[_Export, dict[str, zipfile.ZipInfo]]:
    members = _check_directory(archive, limits, catalog.config.max_import_bytes)
    if MANIFEST not in members:
        raise _refused(f"not a catalogue export: no {MANIFEST} in the ZIP")
    raw = _read(archive, members[MANIFEST], None)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _refused(f"{MANIFEST} is not valid JSON ({exc})") from exc
    _check_manifest(manifest, catalog, set(members))
    checksums: dict[str, str] = manifest["checksums"]
    versions: dict[str, str] = manifest["model_versions"]
    decode = manifest.get("cells") == CELLS
    tables = {name: _read(archive, members[name], checksums[name]) for name in ("individuals.csv", "images.csv")}
    _read(archive, members["audit_log.csv"], checksums["audit_log.csv"])  # provenance: checked, not replayed
    individuals, individual_lines = _table(
        tables["individuals.csv"], "individuals.csv", INDIVIDUAL_COLUMNS, decode, limits
    )
    rows, image_lines = _table(tables["images.csv"], "images.csv", EXPORT_IMAGE_COLUMNS, decode, limits)
    del tables
    counts = manifest["counts"]
    if counts["individuals"] != len(individuals) or counts["images"] != len(rows):
        raise _refused(
            f"the export's row counts ({len(individuals)} individuals, {len(rows)} images) do not match "
            f"its manifest's counts ({counts['individuals']}, {counts['images']})"
        )
    species_known = set(catalog.base.species.tolist()) if catalog.base is not None else set()
    _check_individuals(individuals, individual_lines, species_known, limits)
    images = _check_images(rows, image_lines, {r["id"] for r in individuals}, versions, checksums, limits)
    del rows
    for name in checksums:
        if _EMBEDDINGS.fullmatch(name) and name not in versions:
            raise _refused(f"{name} is not named in the manifest's model versions")
    matrices = _read_matrices(archive, members, images, versions, checksums, catalog, limits)
    _check_embeddings(images, matrices, limits)
    for image in images:  # one photo in memory at a time
        where = f"images.csv line {image.line} (image {image.id})"
        for kind in ("thumbnails", "crops"):
            name = f"{kind}/{image.id}.jpg"
            _check_photo(_read(archive, members[name], checksums[name]), name, where, limits)
    return _Export(individuals, images, matrices, checksums), members


def import_catalog(
    catalog: Catalog,
    source: str | Path | BinaryIO,
    actor: str | None = None,
    limits: ExchangeLimits | None = None,
) -> ImportSummary:
    """Add an export's individuals and photos to ``catalog`` in one transaction.

    Everything is checked first (see the module's docstring); any problem refuses the whole file
    with ``CatalogImportError`` and the catalogue is not touched. Photos already present (same
    SHA-256) are skipped; an individual present with another species refuses the whole import.
    Image ids and timestamps are kept where free.
    """
    limits = limits or ExchangeLimits()
    actor = actor or catalog.actor
    with _open_export(source) as archive:
        export, members = _validate(archive, catalog, limits)
        created = added = duplicates = 0
        per_individual: dict[str, int] = defaultdict(int)
        with catalog.transaction() as conn:
            for ind in export.individuals:
                existing = conn.execute("SELECT species FROM individuals WHERE id = ?", (ind["id"],)).fetchone()
                known = existing[0] if existing else catalog.species_of(ind["id"])
                if known is not None and known != ind["species"]:
                    raise _refused(f"individual {ind['id']} is {ind['species']} in the export but {known} here")
                if existing is None:
                    conn.execute(
                        f"INSERT INTO individuals ({', '.join(INDIVIDUAL_COLUMNS)}) VALUES (?, ?, ?, ?, ?)",
                        [ind[c] for c in INDIVIDUAL_COLUMNS],
                    )
                    per_individual[ind["id"]] += 0  # audited even if all its photos are already here
                    created += 1
            species = {r["id"]: r["species"] for r in export.individuals}
            for image in export.images:
                if conn.execute("SELECT 1 FROM images WHERE sha256 = ?", (image.sha256,)).fetchone():
                    duplicates += 1
                    continue
                # read again (and checked again against the manifest): the photos were not kept in memory
                thumb, crop = (f"{kind}/{image.id}.jpg" for kind in ("thumbnails", "crops"))
                record = NewImage(
                    individual_id=image.individual_id,
                    species=species[image.individual_id],
                    sha256=image.sha256,
                    thumbnail=bytes(_read(archive, members[thumb], export.checksums[thumb])),
                    crop=bytes(_read(archive, members[crop], export.checksums[crop])),
                    embedding=export.matrices[image.embedding_file][image.embedding_row],
                    model_version=image.model_version,
                    source_name=image.source_name,
                    taken_at=image.taken_at,
                    latitude=image.latitude,
                    longitude=image.longitude,
                    tags=image.tags,
                )
                free = conn.execute("SELECT 1 FROM images WHERE id = ?", (image.id,)).fetchone() is None
                catalog.insert_image(conn, record, image.id if free else None, image.added_at)
                per_individual[image.individual_id] += 1
                added += 1
            for individual_id, n in sorted(per_individual.items()):
                catalog.audit(conn, "imported", individual_id, {"images": n}, actor)
    if added:  # keypoints are derived data, not carried: described from the imported crops, as at enrolment
        catalog.backfill_keypoints()
    return ImportSummary(created, added, duplicates)
