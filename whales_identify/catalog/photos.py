"""Comparison photos of one individual: what a reviewer looks at beside a new photo.

Two sources, one list: the bundled catalogue's photos (``models/comparison_photos.zip``, built by
``training/comparison.py``; referenced by their catalogue image name) and the photos a user
enrolled (the stored ``crop`` JPEG of ``Catalog``, referenced as ``"user:<image id>"``). Given the
query's embedding, the photos come most similar first (cosine, the same embeddings the search
used), so the first photo is the one that made the match; without one, the bundled photos in
their representative order, then the user's newest first.

Cheap in memory: opening reads only the ZIP's directory and its small index; a photo's bytes are
read when it is asked for. Thread-safe (app sessions share one instance).
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from whales_identify.catalog.store import Catalog
from whales_identify.config import ComparisonConfig
from whales_identify.errors import WhaleIdError
from whales_identify.matching.gallery import Gallery

USER_PREFIX = "user:"
BUNDLED = "bundled"
USER = "user"
INDEX_NAME = "index.json"
FORMAT = "whales_identify-comparison-photos"
# A user photo's size is read from the JPEG header: the first bytes of the blob hold it (no EXIF is stored).
_HEADER_BYTES = 65_536
Box = tuple[int, int, int, int]


class ComparisonPhotoError(WhaleIdError):
    """A comparison photo could not be read (unknown reference, damaged asset)."""


@dataclass(frozen=True)
class ComparisonPhoto:
    """One photo of an individual to compare with (the bytes are read by ``ComparisonPhotos.read``)."""

    reference: str  # a bundled image name, or "user:<image id>"
    individual_id: str
    source: str  # BUNDLED or USER
    size: tuple[int, int]  # (width, height) of the stored JPEG
    similarity: float | None = None  # cosine to the query's embedding, when one was given and comparable
    rank: int = 0  # bundled: representative rank within the individual (0 = most typical); user: newest first
    box: Box | None = None  # the animal, in pixels of the stored photo, where the labels give it
    name: str = ""  # what to call it on a page: the file's name (plain text, from data)

    @property
    def long_side(self) -> int:
        return max(self.size)


def user_reference(image_id: int) -> str:
    return f"{USER_PREFIX}{int(image_id)}"


def _user_id(reference: str) -> int | None:
    if not reference.startswith(USER_PREFIX):
        return None
    digits = reference[len(USER_PREFIX) :]
    return int(digits) if digits.isdigit() and len(digits) <= 18 else None


class ComparisonPhotos:
    """The comparison photos of every individual: bundled (``asset``) and the user's (``catalog``).

    ``bundled``: the bundled ``Gallery`` whose embeddings rank the bundled photos against a query
    (rows matched by image name). A missing asset is not an error: ``missing_reason`` says why there
    are no bundled photos, and the user's photos still come.
    """

    def __init__(
        self,
        asset: Path | str | None = None,
        catalog: Catalog | None = None,
        bundled: Gallery | None = None,
        config: ComparisonConfig | None = None,
    ) -> None:
        self.config = config or ComparisonConfig()
        self.asset = Path(asset if asset is not None else self.config.asset)
        self.catalog = catalog
        self.bundled = bundled
        self.missing_reason = ""
        self._lock = threading.Lock()
        self._zip: zipfile.ZipFile | None = None
        self._index: dict[str, list[ComparisonPhoto]] | None = None
        self._rows: dict[str, int] | None = None  # bundled image name -> its row in ``bundled``

    # --- the bundled asset --------------------------------------------------------------------------
    def _open(self) -> dict[str, list[ComparisonPhoto]]:
        """The asset's index by individual (opened once, on first use)."""
        with self._lock:
            if self._index is not None:
                return self._index
            self._index = {}
            if not self.asset.is_file():
                self.missing_reason = f"no comparison photos at {self.asset}"
                return self._index
            try:
                archive = zipfile.ZipFile(self.asset)
                manifest = json.loads(archive.read(INDEX_NAME))
                if manifest.get("format") != FORMAT:
                    raise ValueError(f"format {manifest.get('format')!r}")
                for entry in manifest["photos"]:
                    photo = _bundled_photo(entry)
                    self._index.setdefault(photo.individual_id, []).append(photo)
            except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
                self._index = {}
                self.missing_reason = f"{self.asset.name} is not a readable comparison-photo file ({exc})"
                return self._index
            for photos in self._index.values():
                photos.sort(key=lambda p: p.rank)
            self._zip = archive
            return self._index

    def _bundled_rows(self) -> dict[str, int]:
        if self._rows is None:
            names = self.bundled.image_names.tolist() if self.bundled is not None else []
            self._rows = {str(name): row for row, name in enumerate(names)}
        return self._rows

    def bundled_count(self) -> int:
        """Bundled photos in the asset (0 when it is missing)."""
        return sum(len(v) for v in self._open().values())

    # --- listing -----------------------------------------------------------------------------------------
    def photos(self, individual_id: str, query: np.ndarray | None = None) -> list[ComparisonPhoto]:
        """The individual's comparison photos, most similar to ``query`` first when it is given."""
        bundled = list(self._open().get(individual_id, []))
        user = self._user_photos(individual_id, query)
        if query is None or not len(query):
            return bundled + user
        vector = np.asarray(query, np.float32).ravel()
        norm = float(np.linalg.norm(vector))
        if norm > 0:
            vector = vector / norm
        rows = self._bundled_rows()
        scored = []
        for photo in bundled:
            row = rows.get(photo.reference)
            similarity = None
            if row is not None and self.bundled is not None and self.bundled.embeddings.shape[1] == len(vector):
                similarity = float(self.bundled.embeddings[row] @ vector)
            scored.append(replace(photo, similarity=similarity))
        everything = scored + user
        # most similar first; photos that cannot be compared keep their order, after the others
        return sorted(everything, key=lambda p: (p.similarity is None, -(p.similarity or 0.0)))

    def _user_photos(self, individual_id: str, query: np.ndarray | None) -> list[ComparisonPhoto]:
        if self.catalog is None:
            return []
        rows = self.catalog.query(
            "SELECT id, source_name, substr(crop, 1, ?) AS head, embedding, model_version FROM images"
            " WHERE individual_id = ? ORDER BY id DESC",
            (_HEADER_BYTES, individual_id),
        )
        vector = None
        if query is not None and len(query):
            vector = np.asarray(query, np.float32).ravel()
            vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        found = []
        for order, row in enumerate(rows):
            try:
                with Image.open(io.BytesIO(bytes(row["head"]))) as header:
                    size = header.size
            except (OSError, ValueError):
                continue  # not a readable JPEG: nothing to show
            similarity = None
            blob = bytes(row["embedding"])
            current = not self.catalog.model_version or row["model_version"] == self.catalog.model_version
            if vector is not None and current and len(blob) == 4 * len(vector):
                stored = np.frombuffer(blob, np.float32)
                similarity = float(stored @ vector / max(float(np.linalg.norm(stored)), 1e-12))
            found.append(
                ComparisonPhoto(
                    reference=user_reference(row["id"]),
                    individual_id=individual_id,
                    source=USER,
                    size=(int(size[0]), int(size[1])),
                    similarity=similarity,
                    rank=order,
                    name=str(row["source_name"] or f"image {row['id']}"),
                )
            )
        return found

    # --- bytes -------------------------------------------------------------------------------------------
    def read(self, reference: str) -> bytes:
        """The JPEG bytes of one photo (ComparisonPhotoError when there is no such photo)."""
        image_id = _user_id(reference)
        if reference.startswith(USER_PREFIX):
            if image_id is None or self.catalog is None:
                raise ComparisonPhotoError(f"no user photo {reference!r}")
            rows = self.catalog.query("SELECT crop FROM images WHERE id = ?", (image_id,))
            if not rows:
                raise ComparisonPhotoError(f"no user photo {reference!r} (removed?)")
            return bytes(rows[0]["crop"])
        self._open()
        with self._lock:
            if self._zip is None:
                raise ComparisonPhotoError(self.missing_reason or "no comparison photos")
            try:
                return self._zip.read(reference)
            except KeyError:
                raise ComparisonPhotoError(f"no comparison photo {reference!r}") from None
            except (OSError, zipfile.BadZipFile) as exc:
                raise ComparisonPhotoError(f"the comparison photo {reference!r} is damaged ({exc})") from exc

    def image(self, reference: str) -> Image.Image:
        """One photo decoded to RGB."""
        try:
            with Image.open(io.BytesIO(self.read(reference))) as opened:
                return opened.convert("RGB")
        except (OSError, ValueError) as exc:
            raise ComparisonPhotoError(f"the comparison photo {reference!r} cannot be decoded ({exc})") from exc

    def close(self) -> None:
        with self._lock:
            if self._zip is not None:
                self._zip.close()
            self._zip, self._index = None, None


def _bundled_photo(entry: dict[str, Any]) -> ComparisonPhoto:
    box = entry.get("box")
    name = str(entry["image"])
    return ComparisonPhoto(
        reference=name,
        individual_id=str(entry["individual_id"]),
        source=BUNDLED,
        size=(int(entry["width"]), int(entry["height"])),
        rank=int(entry.get("rank", 0)),
        box=tuple(int(v) for v in box) if box and len(box) == 4 else None,  # type: ignore[arg-type]
        name=name.rsplit("/", 1)[-1],
    )
