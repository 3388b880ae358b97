"""The user's own catalogue of individuals: one SQLite file layered over the bundled one.

Why SQLite: one file the user can copy, transactions so an interrupted
enrolment leaves nothing half-written, WAL + ``BEGIN IMMEDIATE`` so two
processes (the app and a CLI job) can enrol at once without losing rows.
Every change writes its audit row in the same transaction. Embeddings record
the model that made them: rows from another model are *stale* and are kept
out of galleries (never mixed into another embedding space) until
``reembed`` recomputes them from the stored crops.
"""

from __future__ import annotations

import getpass
import io
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np
import pandas as pd
from PIL import Image

from whales_identify.config import LEGACY_HOME_ENV, CatalogConfig, VerifyConfig
from whales_identify.errors import WhaleIdError
from whales_identify.inputs.text import InvalidTextError, validate_individual_id, validate_species
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.verify import record as keypoint_record

ACTIONS = ("enrolled", "confirmed", "renamed", "merged", "removed", "imported", "reembedded")
# A reviewer's verdict on "this photo shows that individual" (the photo-ID vocabulary).
REVIEW_DECISIONS = ("same", "different", "cannot_tell")
REVIEW_LABELS = {"same": "Same", "different": "Different", "cannot_tell": "Cannot tell"}
BBox = tuple[float, float, float, float]  # (min_lat, min_lon, max_lat, max_lon)


class CatalogError(WhaleIdError):
    """The user's catalogue refused an operation (unknown id, conflict, newer schema)."""


class UnknownIndividualError(CatalogError):
    """The individual is neither in the user's catalogue nor in the bundled one."""


class DuplicateIndividualError(CatalogError):
    """ "Add as new" named an id that already exists."""


class StaleModelError(CatalogError):
    """Embeddings from several models and no way to tell which one is current."""


class ReadOnlyCatalogError(CatalogError):
    """A change was asked of a catalogue that can only be read (the file or its folder is read-only)."""


class InvalidValueError(CatalogError, InvalidTextError):
    """An individual id or a species that does not follow the rules of ``inputs/text.py``."""


def checked_id(text: str) -> str:
    """``validate_individual_id`` as a ``CatalogError`` (what callers of the catalogue catch)."""
    try:
        return validate_individual_id(text)
    except InvalidTextError as exc:
        raise InvalidValueError(str(exc)) from exc


def checked_species(text: str, known: Iterable[str] = ()) -> str:
    """``validate_species`` as a ``CatalogError``."""
    try:
        return validate_species(text, known)
    except InvalidTextError as exc:
        raise InvalidValueError(str(exc)) from exc


class Embedder(Protocol):
    """What the catalogue needs from an ``Identifier`` (so DB logic is testable without a model)."""

    @property
    def model_version(self) -> str: ...

    def prepare(self, source: Any, long_side: int | None = None) -> Image.Image: ...

    def forward(self, images: list[Image.Image]) -> list[Any]: ...


@dataclass
class NewImage:
    """One photo ready to store: everything computed before the write transaction starts."""

    individual_id: str
    species: str
    sha256: str
    thumbnail: bytes
    crop: bytes
    embedding: np.ndarray
    model_version: str
    new: bool = False  # True: the individual must not exist yet (before this batch)
    source_name: str = ""
    taken_at: str = ""
    latitude: float | None = None
    longitude: float | None = None
    tags: str = ""
    keypoints: bytes | None = None  # the crop's keypoint record (matching/verify.py); None: computed later


def crop_keypoints(crop: bytes, cfg: VerifyConfig | None = None) -> bytes:
    """The keypoint record of a stored crop, described as a query photo is (``describe`` resizes it)."""
    from whales_identify.inputs.imaging import decode_image  # the guarded decoder: crops may come from imports

    return keypoint_record(decode_image(crop), cfg or VerifyConfig())


def user_image_id(name: str) -> int | None:
    """The image id in a user row's gallery name (``user/<image id>/<file name>``); None for bundled names."""
    parts = name.split("/", 2)
    if len(parts) < 2 or parts[0] != "user" or not parts[1].isdigit():
        return None
    return int(parts[1])


@dataclass(frozen=True)
class Review:
    """A reviewer's verdict on one photo against one catalogued individual (``REVIEW_DECISIONS``)."""

    photo_sha256: str  # the reviewed photo's SHA-256 (hex), whether or not it is stored
    individual_id: str  # the candidate that was compared
    decision: str  # "same", "different" or "cannot_tell"
    photo_name: str = ""  # the file name it came with (data, shown as plain text)
    details: dict[str, Any] = field(default_factory=dict)  # e.g. rank, probability, inliers, model version


@dataclass
class CatalogGallery(Gallery):
    """A ``Gallery`` that also says how many rows were left out for being from another model."""

    stale: int = 0  # user rows excluded (embedded by another model)
    stale_base: int = 0  # bundled rows excluded (the bundled catalogue is from another model)


# --- schema ------------------------------------------------------------------------------
_SCHEMA_V1 = f"""
CREATE TABLE individuals (
    id TEXT PRIMARY KEY,
    species TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    notes TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE TABLE images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    individual_id TEXT NOT NULL REFERENCES individuals(id) ON UPDATE CASCADE ON DELETE CASCADE,
    sha256 TEXT NOT NULL UNIQUE,
    thumbnail BLOB NOT NULL,
    crop BLOB NOT NULL,
    embedding BLOB NOT NULL,
    model_version TEXT NOT NULL,
    source_name TEXT NOT NULL DEFAULT '',
    taken_at TEXT NOT NULL DEFAULT '',
    latitude REAL,
    longitude REAL,
    tags TEXT NOT NULL DEFAULT '',
    added_at TEXT NOT NULL
);
CREATE INDEX images_individual ON images(individual_id);
CREATE INDEX images_model_version ON images(model_version);
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ({", ".join(repr(a) for a in ACTIONS)})),
    individual_id TEXT NOT NULL DEFAULT '',
    details TEXT NOT NULL DEFAULT '{{}}',
    actor TEXT NOT NULL
);
CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL);
"""


# Version 2: each photo's keypoints for the verification stage (matching/verify.py; NULL until computed),
# and the reviewers' Same / Different / Cannot tell verdicts, one row per decision.
_SCHEMA_V2 = f"""
ALTER TABLE images ADD COLUMN keypoints BLOB;
CREATE TABLE reviews (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    photo_sha256 TEXT NOT NULL,
    photo_name TEXT NOT NULL DEFAULT '',
    individual_id TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ({", ".join(repr(d) for d in REVIEW_DECISIONS)})),
    details TEXT NOT NULL DEFAULT '{{}}',
    actor TEXT NOT NULL
);
CREATE INDEX reviews_photo ON reviews(photo_sha256);
"""


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # statement by statement: executescript() would COMMIT the migration's transaction
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _create_v1(conn: sqlite3.Connection) -> None:
    _run_script(conn, _SCHEMA_V1)


def _upgrade_v2(conn: sqlite3.Connection) -> None:
    _run_script(conn, _SCHEMA_V2)


# Migration hook: MIGRATIONS[n] upgrades a version n-1 database to version n (inside one transaction).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _create_v1, 2: _upgrade_v2}
SCHEMA_VERSION = max(MIGRATIONS)
_KIND_ORDER = {"trigger": 0, "view": 1, "table": 2, "index": 3}


def _schema_objects(conn: sqlite3.Connection) -> dict[tuple[str, str], str]:
    """{(type, name): its SQL with whitespace collapsed} for every object of the main database."""
    rows = conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
    return {
        (str(kind), str(name)): " ".join(str(sql or "").split())
        for kind, name, sql in rows
        if not str(name).startswith("sqlite_stat")  # ANALYZE's statistics: harmless, made by sqlite itself
    }


@cache
def expected_schema(version: int) -> dict[tuple[str, str], str]:
    """The objects a catalogue of schema ``version`` holds: what this program's migrations create."""
    conn = sqlite3.connect(":memory:")
    try:
        for step in range(1, version + 1):
            MIGRATIONS[step](conn)
        return _schema_objects(conn)
    finally:
        conn.close()


def schema_problems(conn: sqlite3.Connection, version: int) -> list[str]:
    """What differs from ``expected_schema(version)``: extra triggers, views, tables, indexes first."""
    expected, actual = expected_schema(version), _schema_objects(conn)

    def article(kind: str) -> str:
        return "an" if kind[0] in "aeiou" else "a"

    extra = sorted(actual.keys() - expected.keys(), key=lambda k: (_KIND_ORDER.get(k[0], 9), k[1]))
    problems = [f"{article(kind)} {kind} {name!r} that a catalogue does not have" for kind, name in extra]
    problems += [f"no {kind} {name!r}" for kind, name in sorted(expected.keys() - actual.keys())]
    problems += [
        f"the {kind} {name!r} differs from this program's schema"
        for kind, name in sorted(expected.keys() & actual.keys())
        if expected[(kind, name)] != actual[(kind, name)]
    ]
    if not problems:
        recorded = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        if recorded != version:
            problems.append(f"its schema_version table says {recorded} but the file says version {version}")
    return problems


def _read_only_error(exc: sqlite3.Error) -> bool:
    """sqlite's answer when the file, its folder or its WAL/shared-memory files cannot be written."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    text = str(exc).lower()
    return name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")) or "readonly" in text or "unable to open" in text


IMAGE_COLUMNS = (
    "id",
    "individual_id",
    "sha256",
    "model_version",
    "source_name",
    "taken_at",
    "latitude",
    "longitude",
    "tags",
    "added_at",
)
INDIVIDUAL_COLUMNS = ("id", "species", "name", "notes", "created_at")
AUDIT_COLUMNS = ("id", "at", "action", "individual_id", "details", "actor")


def now() -> str:
    """UTC timestamp, ISO 8601 to the second: sortable as text."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        return "unknown"


def default_path(config: CatalogConfig | None = None) -> Path:
    """``$WHALE_ID_HOME/catalog.sqlite3``, else the user's data folder (created)."""
    config = config or CatalogConfig()
    home = os.environ.get(config.home_env) or os.environ.get(LEGACY_HOME_ENV) or config.default_home
    folder = Path(home).expanduser()
    _make_folder(folder)
    return folder / config.file_name


def _make_folder(folder: Path) -> None:
    """Create the catalogue's folder if needed (an existing one is left alone: it may be read-only)."""
    if folder.is_dir():
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CatalogError(f"cannot create the catalogue folder {folder}: {exc.strerror or exc}") from exc


def normalise_tags(tags: str | Sequence[str] | None) -> str:
    """Comma-separated, trimmed, unique, sorted: so a tag filter is one LIKE."""
    if not tags:
        return ""
    items = tags.split(",") if isinstance(tags, str) else list(tags)
    return ",".join(sorted({t.strip() for t in items if t.strip()}))


def embedding_blob(embedding: np.ndarray) -> bytes:
    return np.ascontiguousarray(embedding, dtype=np.float32).tobytes()


class Catalog:
    """The user's catalogue. ``base`` (the bundled ``Gallery``) is read-only; user rows layer on top.

    ``model_version`` is the running model's version (default: the base's); user rows from
    another model are stale. One connection per instance, guarded by a lock (threads may share it);
    processes each open their own instance.
    """

    def __init__(
        self,
        path: Path | str | None = None,
        base: Gallery | None = None,
        *,
        model_version: str | None = None,
        actor: str | None = None,
        config: CatalogConfig | None = None,
    ) -> None:
        self.config = config or CatalogConfig()
        self.path = Path(path) if path is not None else default_path(self.config)
        _make_folder(self.path.parent)
        self.base = base
        self.model_version = model_version if model_version is not None else (base.model_version if base else "")
        self.actor = actor or default_actor()
        self._lock = threading.RLock()
        self._writes = 0
        self._cache: dict[tuple, Any] = {}
        self._base_ids = set(base.individuals.tolist()) if base is not None else set()
        self._base_species = set(base.species.tolist()) if base is not None else set()
        # Why the catalogue can only be read ("" when it can be written): see ``_connect``.
        self.read_only_reason = ""
        self._conn = self._connect()
        try:
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    @property
    def read_only(self) -> bool:
        """True when the file or its folder cannot be written: searching works, changes raise
        ``ReadOnlyCatalogError``."""
        return bool(self.read_only_reason)

    # --- connection and transactions ---------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """Read-write when the file and its folder can be written, else read-only (``read_only_reason`` says why)."""
        if self.path.is_dir():
            raise CatalogError(f"cannot open the catalogue {self.path}: it is a folder, not a file")
        reason = self._why_not_writable()
        if not reason:
            try:
                return self._connect_read_write()
            except sqlite3.OperationalError as exc:
                if not (_read_only_error(exc) and self.path.exists()):
                    raise CatalogError(f"cannot open the catalogue {self.path}: {exc}") from exc
                reason = f"sqlite could not write it: {exc}"
        return self._connect_read_only(reason)

    def _why_not_writable(self) -> str:
        folder = self.path.parent
        if not self.path.exists():
            if not os.access(folder, os.W_OK | os.X_OK):
                raise CatalogError(f"cannot create the catalogue {self.path}: the folder {folder} is read-only")
            return ""
        if not os.access(self.path, os.W_OK):
            return "the file is read-only"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"its folder {folder} is read-only"
        return ""

    def _settings(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(self.config.busy_timeout_ms)}")
        conn.execute("PRAGMA trusted_schema = OFF")  # SQL in the file may not call functions with side effects

    def _connect_read_write(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.config.busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot open the catalogue {self.path}: {exc}") from exc
        try:
            self._settings(conn)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            # Before the first write (switching to WAL writes the file's header): another program's database
            # is refused exactly as it was found, in its own journal mode, with no -wal or -shm beside it.
            self._check_is_ours(conn)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; a commit survives a crash of the app
        except CatalogError:
            conn.close()
            raise
        except sqlite3.OperationalError as exc:
            conn.close()
            if _read_only_error(exc):
                raise  # opened read-only by ``_connect``
            raise CatalogError(f"{self.path} is not a catalogue database: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise CatalogError(f"{self.path} is not a catalogue database: {exc}") from exc
        if str(mode).lower() != "wal":
            conn.close()
            raise CatalogError(f"{self.path}: cannot use WAL mode (journal mode {mode}); is it on a network drive?")
        return conn

    def _connect_read_only(self, reason: str) -> sqlite3.Connection:
        """``mode=ro``; where sqlite cannot make the WAL's shared-memory file beside it (a read-only folder), the
        file is opened as immutable, which is only right when no WAL file holds changes not yet merged into it."""
        uri = self.path.resolve().as_uri() + "?mode=ro"
        wal = self.path.with_name(self.path.name + "-wal")
        for attempt in (uri, uri + "&immutable=1"):
            try:
                conn = sqlite3.connect(
                    attempt,
                    uri=True,
                    timeout=self.config.busy_timeout_ms / 1000,
                    isolation_level=None,
                    check_same_thread=False,
                )
            except sqlite3.Error as exc:
                raise CatalogError(f"cannot open the catalogue {self.path} ({reason}): {exc}") from exc
            try:
                self._settings(conn)
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError as exc:
                conn.close()
                pending = wal.exists() and wal.stat().st_size > 0
                if _read_only_error(exc) and attempt == uri and not pending:
                    continue
                hint = " and its -wal file holds changes not yet saved into it" if pending else ""
                raise CatalogError(
                    f"cannot read the catalogue {self.path}: {reason}{hint} ({exc}); "
                    "open it once where it can be written, or copy the folder somewhere writable"
                ) from exc
            except sqlite3.DatabaseError as exc:
                conn.close()
                raise CatalogError(f"{self.path} is not a catalogue database: {exc}") from exc
            self.read_only_reason = reason
            return conn
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE``: take the write lock up front so concurrent writers wait, not fail.

        All or nothing: on any error the transaction is rolled back (once: sqlite may already have done it,
        e.g. on a full disk) and a database error becomes one ``CatalogError`` that says what happened.
        """
        with self._lock:
            if self.read_only:
                raise ReadOnlyCatalogError(self._read_only_message())
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self.database_error(exc) from exc
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise self.database_error(exc) from exc
                raise
            finally:
                self._writes += 1
                self._cache.clear()

    def _rollback(self) -> None:
        if not self._conn.in_transaction:  # sqlite rolled it back itself (a full disk, an I/O error)
            return
        # the transaction is gone either way; the first error is the one to report
        with suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")

    def _read_only_message(self) -> str:
        return (
            f"the catalogue {self.path} is read-only ({self.read_only_reason or 'sqlite refused to write it'}): "
            "nothing was changed; identifying and browsing work, but adding or changing needs a writable copy "
            "(copy it to a folder you can write to and pass --db, or set WHALE_ID_HOME)"
        )

    def database_error(self, exc: sqlite3.Error, writing: bool = True) -> CatalogError:
        """One readable ``CatalogError`` for what sqlite raised (a full disk, a read-only file, a lock held
        too long)."""
        name = str(getattr(exc, "sqlite_errorname", "") or "")
        text = str(exc)
        outcome = "nothing was written and the catalogue is as it was" if writing else "nothing was changed"
        if name.startswith("SQLITE_FULL") or "disk is full" in text:
            return CatalogError(
                f"the disk holding {self.path} is full (or the catalogue reached its size limit): {outcome}; "
                "free some space and try again"
            )
        if name.startswith("SQLITE_READONLY") or "readonly" in text:
            if not self.read_only_reason:
                self.read_only_reason = f"sqlite could not write it: {text}"
            return ReadOnlyCatalogError(self._read_only_message())
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
            return CatalogError(
                f"the catalogue {self.path} is busy: another program held it for more than "
                f"{self.config.busy_timeout_ms / 1000:.0f} s; {outcome}; try again"
            )
        if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text:
            return CatalogError(f"the catalogue {self.path} is damaged ({text}); {outcome}")
        if name.startswith("SQLITE_IOERR") or "disk I/O" in text:
            return CatalogError(f"a disk error while using the catalogue {self.path} ({text}); {outcome}")
        return CatalogError(f"the catalogue {self.path} failed ({text}); {outcome}")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: several queries see one consistent state while others write (WAL)."""
        with self._lock:
            if self._conn.in_transaction:  # already inside one (e.g. a write): reuse it
                yield
                return
            self._conn.execute("BEGIN")
            try:
                yield
            finally:
                self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        """Check the file is a catalogue made by this program (before anything in it can run), then upgrade it."""
        with self._lock:
            version = self._check_is_ours(self._conn)
            if version == SCHEMA_VERSION:
                return
            if self.read_only:
                raise ReadOnlyCatalogError(
                    f"the catalogue {self.path} needs "
                    + ("creating" if version == 0 else f"upgrading from schema version {version}")
                    + f" but is read-only ({self.read_only_reason})"
                )
            with self.transaction() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    MIGRATIONS[step](conn)
                    conn.execute("INSERT INTO schema_version VALUES (?, ?)", (step, now()))
                    conn.execute(f"PRAGMA user_version = {step}")
            self._check_schema(self._conn, SCHEMA_VERSION)

    def _check_is_ours(self, conn: sqlite3.Connection) -> int:
        """The file's schema version, after refusing a file this program did not make (reads only: run
        before anything is written to it, WAL mode included)."""
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise CatalogError(
                f"{self.path} has schema version {version}; this program knows up to {SCHEMA_VERSION}: update it"
            )
        if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise CatalogError(
                f"{self.path} is another program's SQLite database, not a catalogue; it was left unchanged"
            )
        if version:
            self._check_schema(conn, version)
        return version

    def _check_schema(self, conn: sqlite3.Connection, version: int) -> None:
        """Refuse a file whose tables, indexes, triggers or views are not exactly what ``version`` creates:
        a trigger would run on our next write, a view or a changed table would feed us other data."""
        problems = schema_problems(conn, version)
        if problems:
            more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
            raise CatalogError(
                f"{self.path} is not a catalogue database made by this program: it has "
                + "; ".join(problems[:4])
                + more
                + ". It was refused without running or changing anything in it."
            )

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _state(self) -> tuple[int, int]:
        """Changes by this instance and (``data_version``) by other processes: the cache key."""
        with self._lock:
            return self._writes, int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                cursor = self._conn.execute(sql, params)
                cursor.row_factory = sqlite3.Row
                return cursor.fetchall()
            except sqlite3.Error as exc:
                raise self.database_error(exc, writing=self._conn.in_transaction) from exc

    @staticmethod
    def audit(conn: sqlite3.Connection, action: str, individual_id: str, details: dict[str, Any], actor: str) -> None:
        """One audit row; call inside the transaction that makes the change."""
        conn.execute(
            "INSERT INTO audit_log (at, action, individual_id, details, actor) VALUES (?, ?, ?, ?, ?)",
            (now(), action, individual_id, json.dumps(details, sort_keys=True), actor),
        )

    # --- lookups --------------------------------------------------------------------------
    def in_base(self, individual_id: str) -> bool:
        return individual_id in self._base_ids

    def individual(self, individual_id: str) -> dict[str, Any] | None:
        """The user's row for an individual (None if only bundled or unknown)."""
        rows = self.query("SELECT * FROM individuals WHERE id = ?", (individual_id,))
        return dict(rows[0]) if rows else None

    def known(self, individual_id: str) -> bool:
        return self.in_base(individual_id) or self.individual(individual_id) is not None

    def species_of(self, individual_id: str) -> str | None:
        """Species from the user's row, else from the bundled catalogue."""
        row = self.individual(individual_id)
        if row:
            return str(row["species"])
        if self.base is not None and individual_id in self._base_ids:
            return self.base.individual_species[individual_id]
        return None

    def find_image(self, sha256: str) -> tuple[int, str] | None:
        """(image id, individual id) of a photo already stored, by content hash."""
        rows = self.query("SELECT id, individual_id FROM images WHERE sha256 = ?", (sha256,))
        return (int(rows[0]["id"]), str(rows[0]["individual_id"])) if rows else None

    # --- writes ------------------------------------------------------------------------------
    def add_images(
        self, images: Sequence[NewImage], actor: str | None = None, reviews: Sequence[Review] = ()
    ) -> list[int | None]:
        """Store photos in ONE transaction (all or nothing); a photo already stored gives None.

        Id rules are checked inside the transaction, so two processes cannot both
        "add as new" the same id: ``new`` ids must not exist before this batch; the others
        must exist in the user's catalogue or the bundled one. ``reviews`` (the verdicts behind
        these photos, e.g. a reviewed batch) are recorded in the same transaction.
        """
        actor = actor or self.actor
        ids: list[int | None] = []
        with self.transaction() as conn:
            self._insert_reviews(conn, reviews, actor, {img.individual_id for img in images if img.new})
            existing = {img.individual_id for img in images if self._exists(conn, img.individual_id)}
            created: set[str] = set()
            for img in images:
                self._check_rule(img, existing, created)
                if conn.execute("SELECT 1 FROM images WHERE sha256 = ?", (img.sha256,)).fetchone():
                    ids.append(None)
                    continue
                if img.individual_id not in existing and img.individual_id not in created:
                    if not self.in_base(img.individual_id):  # a new id: it must follow the rules
                        checked_id(img.individual_id)
                        checked_species(img.species, self._base_species)
                    conn.execute(
                        "INSERT OR IGNORE INTO individuals (id, species, created_at) VALUES (?, ?, ?)",
                        (img.individual_id, img.species, now()),
                    )
                    created.add(img.individual_id)
                ids.append(self.insert_image(conn, img))
                details = {
                    "image_id": ids[-1],
                    "sha256": img.sha256,
                    "source_name": img.source_name,
                    "model_version": img.model_version,
                }
                self.audit(conn, "enrolled" if img.new else "confirmed", img.individual_id, details, actor)
        return ids

    def record_reviews(self, reviews: Sequence[Review], actor: str | None = None) -> int:
        """Record verdicts without storing photos (e.g. "Different", "Cannot tell"), in one transaction."""
        with self.transaction() as conn:
            self._insert_reviews(conn, reviews, actor or self.actor)
        return len(reviews)

    def _insert_reviews(
        self, conn: sqlite3.Connection, reviews: Sequence[Review], actor: str, created: Iterable[str] = ()
    ) -> None:
        """Validate every verdict (unknown decision, malformed digest, unknown individual: CatalogError)
        before writing any; ``created`` are ids this same transaction adds."""
        created = set(created)
        for review in reviews:
            if review.decision not in REVIEW_DECISIONS:
                raise InvalidValueError(f"a review decision is one of {', '.join(REVIEW_DECISIONS)}")
            digest = review.photo_sha256.lower()
            if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
                raise InvalidValueError("a reviewed photo is named by its SHA-256 (64 hexadecimal digits)")
            known = review.individual_id in created or self.in_base(review.individual_id)
            if not known and not self._exists(conn, review.individual_id):
                raise UnknownIndividualError(f"no individual {review.individual_id!r} in the catalogue to review")
        for review in reviews:
            conn.execute(
                "INSERT INTO reviews (at, photo_sha256, photo_name, individual_id, decision, details, actor)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    now(),
                    review.photo_sha256.lower(),
                    review.photo_name,
                    review.individual_id,
                    review.decision,
                    json.dumps(review.details, sort_keys=True, default=str),
                    actor,
                ),
            )

    def _exists(self, conn: sqlite3.Connection, individual_id: str) -> bool:
        return conn.execute("SELECT 1 FROM individuals WHERE id = ?", (individual_id,)).fetchone() is not None

    def _check_rule(self, img: NewImage, existing: set[str], created: set[str]) -> None:
        if img.new and (img.individual_id in existing or self.in_base(img.individual_id)):
            raise DuplicateIndividualError(f"individual {img.individual_id!r} already exists; confirm it instead")
        if not img.new and img.individual_id not in (existing | created) and not self.in_base(img.individual_id):
            raise UnknownIndividualError(f"no individual {img.individual_id!r} in the catalogue; add it as new")

    @staticmethod
    def insert_image(
        conn: sqlite3.Connection, img: NewImage, image_id: int | None = None, added_at: str | None = None
    ) -> int:
        cursor = conn.execute(
            "INSERT INTO images (id, individual_id, sha256, thumbnail, crop, embedding, model_version, source_name,"
            " taken_at, latitude, longitude, tags, added_at, keypoints)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                image_id,
                img.individual_id,
                img.sha256,
                img.thumbnail,
                img.crop,
                embedding_blob(img.embedding),
                img.model_version,
                img.source_name,
                img.taken_at,
                img.latitude,
                img.longitude,
                normalise_tags(img.tags),
                added_at or now(),
                img.keypoints,
            ),
        )
        assert cursor.lastrowid is not None  # an INSERT always sets it
        return cursor.lastrowid

    def _user_individual(self, conn: sqlite3.Connection, individual_id: str) -> None:
        if not self._exists(conn, individual_id):
            bundled = self.in_base(individual_id)
            where = "only in the bundled catalogue (read-only)" if bundled else "not in the catalogue"
            raise UnknownIndividualError(f"individual {individual_id!r} is {where}")

    def rename(
        self,
        individual_id: str,
        new_id: str | None = None,
        *,
        name: str | None = None,
        notes: str | None = None,
        actor: str | None = None,
    ) -> None:
        """Change a user individual's id (its photos follow) and/or its display name and notes."""
        new_id = checked_id(new_id.strip()) if new_id else None
        with self.transaction() as conn:
            self._user_individual(conn, individual_id)
            details: dict[str, Any] = {}
            if new_id and new_id != individual_id:
                if self.in_base(individual_id):
                    raise CatalogError(f"{individual_id!r} is a bundled id and cannot be renamed; set a name instead")
                if self._exists(conn, new_id) or self.in_base(new_id):
                    raise DuplicateIndividualError(f"individual {new_id!r} already exists; merge instead")
                conn.execute("UPDATE individuals SET id = ? WHERE id = ?", (new_id, individual_id))
                details.update(old_id=individual_id, new_id=new_id)
            target = new_id or individual_id
            if name is not None:
                conn.execute("UPDATE individuals SET name = ? WHERE id = ?", (name, target))
                details["name"] = name
            if notes is not None:
                conn.execute("UPDATE individuals SET notes = ? WHERE id = ?", (notes, target))
                details["notes"] = notes
            self.audit(conn, "renamed", target, details, actor or self.actor)

    def merge(self, source_id: str, target_id: str, actor: str | None = None) -> int:
        """Move every photo of ``source_id`` to ``target_id`` and delete the source; returns photos moved."""
        if source_id == target_id:
            raise CatalogError("cannot merge an individual into itself")
        with self.transaction() as conn:
            self._user_individual(conn, source_id)
            if not self._exists(conn, target_id):
                if not self.in_base(target_id):
                    raise UnknownIndividualError(f"no individual {target_id!r} to merge into")
                species = self.base.individual_species[target_id] if self.base is not None else ""
                conn.execute(
                    "INSERT INTO individuals (id, species, created_at) VALUES (?, ?, ?)", (target_id, species, now())
                )
            moved = conn.execute(
                "UPDATE images SET individual_id = ? WHERE individual_id = ?", (target_id, source_id)
            ).rowcount
            conn.execute("DELETE FROM individuals WHERE id = ?", (source_id,))
            self.audit(
                conn, "merged", target_id, {"from": source_id, "into": target_id, "images": moved}, actor or self.actor
            )
        return moved

    def remove_individual(self, individual_id: str, actor: str | None = None) -> int:
        """Delete a user individual and its photos; returns photos deleted (bundled rows stay)."""
        with self.transaction() as conn:
            self._user_individual(conn, individual_id)
            n = conn.execute("DELETE FROM images WHERE individual_id = ?", (individual_id,)).rowcount
            conn.execute("DELETE FROM individuals WHERE id = ?", (individual_id,))
            self.audit(conn, "removed", individual_id, {"images": n}, actor or self.actor)
        return n

    def remove_image(self, image_id: int, actor: str | None = None) -> None:
        """Delete one photo (its individual stays, even with no photos left)."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT individual_id, sha256, source_name FROM images WHERE id = ?", (image_id,)
            ).fetchone()
            if row is None:
                raise CatalogError(f"no image with id {image_id}")
            conn.execute("DELETE FROM images WHERE id = ?", (image_id,))
            self.audit(
                conn,
                "removed",
                row[0],
                {"image_id": image_id, "sha256": row[1], "source_name": row[2]},
                actor or self.actor,
            )

    # --- model versions -------------------------------------------------------------------------
    def current_version(self, model_version: str | None = None) -> str:
        """The version rows must carry to be used: given, else the catalogue's, else the only one stored."""
        version = model_version if model_version is not None else self.model_version
        if version:
            return version
        stored = [r[0] for r in self.query("SELECT DISTINCT model_version FROM images")]
        if len(stored) > 1:
            raise StaleModelError(
                f"the catalogue holds embeddings of {len(stored)} models ({', '.join(stored)}); "
                "say which model is running (model_version) or re-embed"
            )
        return stored[0] if stored else ""

    def stale_count(self, model_version: str | None = None) -> int:
        """User photos embedded by a model other than ``model_version`` (default: the catalogue's)."""
        version = self.current_version(model_version)
        return int(self.query("SELECT count(*) FROM images WHERE model_version != ?", (version,))[0][0])

    def reembed(self, identifier: Embedder, actor: str | None = None) -> int:
        """Recompute stale embeddings from the stored crops with ``identifier``'s model; returns rows updated.

        Each batch is its own transaction, so a long run can be interrupted and resumed.
        """
        version = identifier.model_version
        rows = self.query("SELECT id, individual_id FROM images WHERE model_version != ? ORDER BY id", (version,))
        batch = self.config.embed_batch_size
        done = 0
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            crops = self.query(
                f"SELECT id, crop FROM images WHERE id IN ({', '.join('?' * len(chunk))}) ORDER BY id",
                [r["id"] for r in chunk],
            )
            images = [Image.open(io.BytesIO(r["crop"])).convert("RGB") for r in crops]
            outputs = identifier.forward(images)
            with self.transaction() as conn:
                for row, output in zip(crops, outputs, strict=True):
                    done += conn.execute(
                        "UPDATE images SET embedding = ?, model_version = ? WHERE id = ?",
                        (embedding_blob(output.embedding), version, row["id"]),
                    ).rowcount
                owners = sorted({r["individual_id"] for r in chunk})
                self.audit(
                    conn,
                    "reembedded",
                    "",
                    {"images": len(crops), "model_version": version, "individuals": owners},
                    actor or self.actor,
                )
        self.backfill_keypoints()
        return done

    # --- keypoints (the verification stage) -------------------------------------------------------
    def _store_keypoints(self, computed: dict[int, bytes]) -> None:
        """Save computed records where the row still has none (a read-only catalogue keeps them in memory)."""
        if not computed or self.read_only:
            return
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE images SET keypoints = ? WHERE id = ? AND keypoints IS NULL",
                [(blob, image_id) for image_id, blob in computed.items()],
            )

    def _describe_rows(self, rows: Sequence[Any]) -> dict[int, bytes]:
        computed = {}
        for row in rows:
            try:
                computed[int(row[0])] = crop_keypoints(bytes(row[1]))
            except WhaleIdError:  # an unreadable crop: no keypoints (it is still searched by embedding)
                continue
        return computed

    def keypoints(self, names: Sequence[str], fill: bool = True) -> dict[str, bytes]:
        """Keypoint records of these user photos (gallery names ``user/<id>/...``; other names are skipped).
        ``fill``: rows without one yet (enrolled before schema 2, imported) are described from their crop
        now and saved: the cheap on-demand backfill, a few photos per query at most."""
        wanted = {i: n for n in names if (i := user_image_id(n)) is not None}
        if not wanted:
            return {}
        found: dict[str, bytes] = {}
        missing = []
        ids = list(wanted)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self.query(f"SELECT id, keypoints FROM images WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
            for row in rows:
                if row["keypoints"] is not None:
                    found[wanted[int(row["id"])]] = bytes(row["keypoints"])
                else:
                    missing.append(int(row["id"]))
        if fill and missing:
            crops = self.query(f"SELECT id, crop FROM images WHERE id IN ({', '.join('?' * len(missing))})", missing)
            computed = self._describe_rows([(r["id"], r["crop"]) for r in crops])
            with suppress(CatalogError):  # busy or read-only: used now, saved another time
                self._store_keypoints(computed)
            found.update({wanted[i]: blob for i, blob in computed.items()})
        return found

    def missing_keypoints(self) -> int:
        """User photos without keypoints yet."""
        return int(self.query("SELECT count(*) FROM images WHERE keypoints IS NULL")[0][0])

    def backfill_keypoints(self, batch: int = 64) -> int:
        """Describe every stored photo that has no keypoints yet (from its crop); returns rows filled.
        Each batch is its own transaction: interrupted, it resumes where it stopped."""
        if self.read_only:
            return 0
        done = 0
        last = -1
        while True:
            rows = self.query(
                "SELECT id, crop FROM images WHERE keypoints IS NULL AND id > ? ORDER BY id LIMIT ?", (last, batch)
            )
            if not rows:
                return done
            last = int(rows[-1]["id"])
            computed = self._describe_rows([(r["id"], r["crop"]) for r in rows])
            self._store_keypoints(computed)
            done += len(computed)

    # --- the matcher's view -----------------------------------------------------------------------
    def gallery(
        self,
        species: str | None = None,
        tag: str | None = None,
        bbox: BBox | None = None,
        model_version: str | None = None,
    ) -> CatalogGallery:
        """Bundled + user rows for the running model; ``stale``/``stale_base`` count rows left out.

        ``species`` filters both layers; ``tag`` and ``bbox`` (min_lat, min_lon, max_lat, max_lon)
        select user photos only (bundled rows carry neither tags nor positions, so they drop out).
        """
        key = ("gallery", self._state(), species, tag, bbox, model_version)
        if key not in self._cache:
            with self.snapshot():
                self._cache[key] = self._build_gallery(species, tag, bbox, model_version)
        return self._cache[key]

    def _build_gallery(
        self, species: str | None, tag: str | None, bbox: BBox | None, model_version: str | None
    ) -> CatalogGallery:
        version = self.current_version(model_version)
        where: list[str] = ["1"]
        params: list[Any] = []
        if species:
            where.append("ind.species = ?")
            params.append(species)
        if tag:
            where.append("(',' || img.tags || ',') LIKE ?")
            params.append(f"%,{tag.strip()},%")
        if bbox:
            where.append("img.latitude BETWEEN ? AND ? AND img.longitude BETWEEN ? AND ?")
            params += [bbox[0], bbox[2], bbox[1], bbox[3]]
        joined = " FROM images img JOIN individuals ind ON ind.id = img.individual_id WHERE " + " AND ".join(where)
        stale = int(self.query("SELECT count(*)" + joined + " AND img.model_version != ?", [*params, version])[0][0])
        with self._lock:  # plain tuples: ~2x faster than sqlite3.Row over 100k rows
            fresh = self._conn.execute(
                "SELECT img.id, img.individual_id, ind.species, img.source_name, img.embedding"
                + joined
                + " AND img.model_version = ? ORDER BY img.id",
                [*params, version],
            ).fetchall()
        parts: list[Gallery] = []
        stale_base = 0
        if self.base is not None and not tag and not bbox:
            base = self.base
            if species:
                base = base.subset(base.species == species)
            if base.model_version and version and base.model_version != version:
                stale_base = len(base)
            else:
                parts.append(base)
        dim = parts[0].embeddings.shape[1] if parts else len(fresh[0][4]) // 4 if fresh else self._base_dim()
        user = np.empty((len(fresh), dim), np.float32)
        for i, row in enumerate(fresh):
            if len(row[4]) != 4 * dim:
                raise StaleModelError(
                    f"image {row[0]} has a {len(row[4]) // 4}-d embedding but the gallery is {dim}-d: "
                    "the bundled catalogue and your photos come from different models; re-embed"
                )
            user[i] = np.frombuffer(row[4], np.float32)
        embeddings = np.concatenate([p.embeddings for p in parts] + [user])
        ids = np.concatenate([p.individual_ids for p in parts] + [np.array([r[1] for r in fresh], str)])
        spp = np.concatenate([p.species for p in parts] + [np.array([r[2] for r in fresh], str)])
        names = np.concatenate([p.image_names for p in parts] + [np.array([f"user/{r[0]}/{r[3]}" for r in fresh], str)])
        thumbs = dict(self.base.thumbnails) if self.base is not None else {}
        thumbs.update({k: v for k, v in self._first_thumbnails().items() if k not in thumbs})
        return CatalogGallery(embeddings, ids, spp, names, thumbs, version, stale=stale, stale_base=stale_base)

    def _base_dim(self) -> int:
        return self.base.embeddings.shape[1] if self.base is not None else 0

    def _first_thumbnails(self) -> dict[str, bytes]:
        rows = self.query(
            "SELECT individual_id, thumbnail FROM images"
            " WHERE id IN (SELECT min(id) FROM images GROUP BY individual_id)"
        )
        return {r["individual_id"]: bytes(r["thumbnail"]) for r in rows}

    # --- reports ---------------------------------------------------------------------------------
    def stats(self, model_version: str | None = None) -> dict[str, Any]:
        """Counts for the user's layer (and the bundled one), per species, and stale photos."""
        per_species = self.query(
            "SELECT ind.species, count(DISTINCT ind.id) AS individuals, count(img.id) AS images"
            " FROM individuals ind LEFT JOIN images img ON img.individual_id = ind.id GROUP BY ind.species"
        )
        totals = self.query("SELECT (SELECT count(*) FROM individuals), (SELECT count(*) FROM images)")[0]
        try:
            stale: int | None = self.stale_count(model_version)
        except StaleModelError:
            stale = None
        return {
            "individuals": int(totals[0]),
            "images": int(totals[1]),
            "per_species": {
                r["species"]: {"individuals": r["individuals"], "images": r["images"]} for r in per_species
            },
            "stale": stale,
            "bundled_individuals": len(self._base_ids),
            "bundled_images": len(self.base) if self.base is not None else 0,
            "schema_version": self.schema_version,
            "path": str(self.path),
            "read_only": self.read_only,
        }

    def individuals(self, include_bundled: bool = True) -> pd.DataFrame:
        """One row per individual: id, species, name, n_photos, last_seen, origin (bundled/user)."""
        rows = self.query(
            "SELECT ind.id, ind.species, ind.name, count(img.id) AS n_photos,"
            " max(CASE WHEN img.taken_at != '' THEN img.taken_at ELSE img.added_at END) AS last_seen"
            " FROM individuals ind LEFT JOIN images img ON img.individual_id = ind.id GROUP BY ind.id ORDER BY ind.id"
        )
        records = {r["id"]: dict(r) for r in rows}
        for record in records.values():
            record["origin"] = "bundled" if self.in_base(record["id"]) else "user"
        if include_bundled and self.base is not None:
            names, counts = np.unique(self.base.individual_ids[self.base.individual_ids != ""], return_counts=True)
            for name, count in zip(names.tolist(), counts.tolist(), strict=True):
                record = records.setdefault(
                    name,
                    {
                        "id": name,
                        "species": self.base.individual_species[name],
                        "name": "",
                        "n_photos": 0,
                        "last_seen": None,
                        "origin": "bundled",
                    },
                )
                record["n_photos"] += count
        columns = ["id", "species", "name", "n_photos", "last_seen", "origin"]
        frame = pd.DataFrame([records[k] for k in sorted(records)], columns=columns)
        return frame.astype({"n_photos": "int64"})

    def images(self, individual_id: str | None = None) -> pd.DataFrame:
        """The user's photos (without blobs)."""
        sql = f"SELECT {', '.join(IMAGE_COLUMNS)} FROM images"
        rows = self.query(
            sql + (" WHERE individual_id = ?" if individual_id else "") + " ORDER BY id",
            (individual_id,) if individual_id else (),
        )
        return pd.DataFrame([dict(r) for r in rows], columns=list(IMAGE_COLUMNS))

    def recent_photos(self, individual_id: str, limit: int = 12) -> list[dict[str, Any]]:
        """The user's newest photos of one individual with their thumbnails (JPEG bytes), newest first."""
        rows = self.query(
            "SELECT id, thumbnail, source_name, taken_at, added_at FROM images"
            " WHERE individual_id = ? ORDER BY id DESC LIMIT ?",
            (individual_id, int(limit)),
        )
        return [{**dict(r), "thumbnail": bytes(r["thumbnail"])} for r in rows]

    def audit_log(self, individual_id: str | None = None) -> pd.DataFrame:
        """Who did what when, oldest first; ``details`` parsed from JSON."""
        sql = f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_log"
        rows = self.query(
            sql + (" WHERE individual_id = ?" if individual_id else "") + " ORDER BY id",
            (individual_id,) if individual_id else (),
        )
        frame = pd.DataFrame([dict(r) for r in rows], columns=list(AUDIT_COLUMNS))
        frame["details"] = frame["details"].map(json.loads)
        return frame

    def reviews(self, photo_sha256: str | None = None) -> pd.DataFrame:
        """Recorded verdicts, oldest first (all, or one photo's); ``details`` parsed from JSON."""
        columns = ("id", "at", "photo_sha256", "photo_name", "individual_id", "decision", "details", "actor")
        rows = self.query(
            f"SELECT {', '.join(columns)} FROM reviews"
            + (" WHERE photo_sha256 = ?" if photo_sha256 else "")
            + " ORDER BY id",
            (photo_sha256.lower(),) if photo_sha256 else (),
        )
        frame = pd.DataFrame([dict(r) for r in rows], columns=list(columns))
        frame["details"] = frame["details"].map(json.loads)
        return frame
