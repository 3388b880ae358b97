"""Batch identification on Ray: the rows of ``batch.run_batch``, for archives too big for one machine.

The driver lists the work without reading any photo (``archive.list_zip`` / ``list_folder``: the same
safety rules as the single-machine path), writes the skipped entries itself, and hands the readable
ones to Ray Data. ``IdentifyActor`` loads the model once per worker, reads its photos' bytes itself
(so photos never travel through the driver or the object store) and runs ``batch.identify_entries``:
the very code of the local engine, so both engines give the same rows. Results are appended to a CSV
as they arrive; a rerun resumes from it instead of starting again.

Ray is an optional extra (``requirements-scale.txt``): it is imported only inside functions, so this
module imports, and the app installs, without it.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import socket
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from whales_identify.batch.local import CSV_COLUMNS, BatchRow, identify_entries
from whales_identify.config import (
    ENV_PREFIX,
    SUMMARY_NAMED_FILES,
    ArchiveLimits,
    InferenceConfig,
    ScaleSettings,
    SpeedConfig,
)
from whales_identify.errors import WhaleIdError
from whales_identify.inputs.archive import (
    LIMITS,
    ArchiveEntry,
    ReadBudget,
    check_zip,
    folder_skip_reason,
    list_folder,
    list_zip,
    open_zip,
    read_folder_file,
    read_zip_member,
    zip_entry_names,
    zip_skip_reason,
)
from whales_identify.inputs.text import csv_safe, csv_unsafe

if TYPE_CHECKING:  # pragma: no cover
    from whales_identify.matching.gallery import Gallery
    from whales_identify.matching.identifier import Identifier

INSTALL_HINT = "install the scale extra: pip install -r requirements-scale.txt"
STATUSES = ("ok", "error", "skipped")
# Environment variables that steer identification (e.g. WHALE_ID_ENGINE): forwarded to the workers,
# so a cluster node decides like the driver's machine would.
FORWARDED_ENV_PREFIX = ENV_PREFIX
NO_MEMBER = -1  # the ``member`` of a folder item (only ZIP members have an index)


SETTINGS = ScaleSettings()


class ScaleError(WhaleIdError):
    """Ray is missing, the cluster cannot be reached, or a Ray job failed."""


# --- planning (driver) ---------------------------------------------------------------------------
@dataclass
class WorkPlan:
    """What a run has to do: the source, the rows known without a model, the photos to identify."""

    source: str  # absolute path of the ZIP or folder (workers open it themselves)
    kind: Literal["zip", "folder"]
    skipped: list[BatchRow] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)  # {"file": name, "member": index}

    def without(self, done: set[str]) -> WorkPlan:
        """The plan minus the files already in the results (resume)."""
        return WorkPlan(
            self.source,
            self.kind,
            [row for row in self.skipped if row.file not in done],
            [item for item in self.items if item["file"] not in done],
        )


def plan_work(source: str | Path, limits: ArchiveLimits = LIMITS) -> WorkPlan:
    """List a ZIP's members or a folder's files, judged by ``archive``'s rules; no photo is read."""
    path = Path(source).resolve()
    if path.is_dir():
        plan = WorkPlan(str(path), "folder")
        for _, name, reason in list_folder(path, limits):
            _plan_one(plan, name, NO_MEMBER, reason)
        return plan
    plan = WorkPlan(str(path), "zip")
    with open_zip(path) as archive:
        for index, _, name, reason in list_zip(archive, limits):
            _plan_one(plan, name, index, reason)
    return plan


def _plan_one(plan: WorkPlan, name: str, member: int, reason: str | None) -> None:
    if reason is None:
        plan.items.append({"file": name, "member": member})
    else:
        plan.skipped.append(BatchRow(name, "skipped", reason))


# --- the worker ------------------------------------------------------------------------------------
class SourceReader:
    """Reads a planned item's bytes on a worker, re-checking it (the source may have changed since)."""

    def __init__(self, source: str, kind: str, limits: ArchiveLimits = LIMITS) -> None:
        self.root = Path(source)
        self.limits = limits
        self._archive: zipfile.ZipFile | None = None
        self._members: list[zipfile.ZipInfo] = []
        self._names: list[str] = []
        # What this worker has read of the ZIP, against the archive's total limit (a directory can lie).
        self._budget = ReadBudget(limits)
        if kind == "zip":
            self._archive = open_zip(self.root)
            self._members = check_zip(self._archive, limits)
            self._names = zip_entry_names(self._members)

    def read(self, name: str, member: int) -> ArchiveEntry:
        if self._archive is None:
            path = self.root / name
            try:
                reason = folder_skip_reason(path, name, self.limits)
            except OSError as exc:
                return ArchiveEntry(name, None, f"cannot be read ({exc.strerror or exc})")
            return ArchiveEntry(name, None, reason) if reason else read_folder_file(path, name, self.limits)
        if not 0 <= member < len(self._members) or self._names[member] != name:
            return ArchiveEntry(name, None, "the ZIP changed after it was listed; skipped", member)
        info = self._members[member]
        reason = zip_skip_reason(info, self.limits) or (self._budget.reason() if self._budget.spent else None)
        if reason:
            return ArchiveEntry(name, None, reason, member)
        return self._budget.take(read_zip_member(self._archive, info, self.limits, name, member))


class IdentifyActor:
    """One per Ray worker: loads the model once, then identifies batch after batch.

    ``gallery`` is the driver's catalogue (bundled + the user's, species filter applied), usually as an
    ``ObjectRef``, so every worker searches exactly what the local engine would.
    """

    def __init__(
        self,
        source: str,
        kind: str,
        checkpoint: str,
        inference_config: InferenceConfig,
        gallery: Any,
        model_version: str,
        model_batch_size: int | None,
        threads: int = 1,
        limits: ArchiveLimits = LIMITS,
    ) -> None:
        import ray

        from whales_identify.matching.identifier import Identifier

        if isinstance(gallery, ray.ObjectRef):
            gallery = ray.get(gallery)
        # Ray gives this worker ``threads`` cores: the model runs there, one photo after another.
        speed = SpeedConfig.from_env()
        speed.batch_workers = 1
        speed.onnx_threads = speed.single_photo_threads = threads
        self.identifier = Identifier.load(checkpoint, gallery, inference_config, speed=speed)
        if model_version and self.identifier.model_version != model_version:
            raise ScaleError(
                f"{checkpoint} on this worker is model version {self.identifier.model_version}, "
                f"the driver's is {model_version}: install the same model on every node"
            )
        self.reader = SourceReader(source, kind, limits)
        self.model_batch_size = model_batch_size

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        pairs = zip(batch["file"], batch["member"], strict=True)
        entries = (self.reader.read(str(name), int(member)) for name, member in pairs)
        rows = identify_entries(self.identifier, entries, batch_size=self.model_batch_size)
        return to_columns(rows)


def csv_cells(row: BatchRow) -> dict[str, str]:
    """A row as the text ``csv.DictWriter`` would write (None → empty), so both engines' files match;
    every cell through ``csv_safe``, as ``batch.local.write_csv`` does (file names and ids come from users)."""
    record = row.to_record()
    return {column: "" if record[column] is None else str(csv_safe(str(record[column]))) for column in CSV_COLUMNS}


def to_columns(rows: Iterable[BatchRow]) -> dict[str, list[str]]:
    """Rows as string columns: one Arrow type per column, whatever a batch holds (no all-null columns)."""
    columns: dict[str, list[str]] = {column: [] for column in CSV_COLUMNS}
    for row in rows:
        for column, value in csv_cells(row).items():
            columns[column].append(value)
    return columns


# --- the results file (driver) -----------------------------------------------------------------------
class ResultsFile:
    """The output CSV, appended to as results arrive; on open, the rows already there are kept (resume).

    A crash can leave a half-written last line: it is dropped (that file is simply done again).
    """

    def __init__(self, path: str | Path, restart: bool = False, settings: ScaleSettings = SETTINGS) -> None:
        self.path = Path(path)
        self.settings = settings
        self.previous: Counter[str] = Counter()  # status → rows kept from an earlier run
        self.done: set[str] = set()
        self.counts: Counter[str] = Counter()  # status → rows written by this run
        # The first few files that failed or were skipped (this run's and the earlier run's): (file, reason).
        self.problems: dict[str, list[tuple[str, str]]] = {"error": [], "skipped": []}
        if not restart:
            self._load_previous()
        self._fresh = restart or (not self.done and not self._has_header())
        # Opened at the first write, not here: a run that fails before any result (Ray cannot start)
        # leaves an earlier table as it was, even with --restart.
        self._handle: IO[str] | None = None
        self._last_sync = time.monotonic()

    def _writer(self) -> csv.DictWriter:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("w" if self._fresh else "a", newline="")
            self._dict_writer = csv.DictWriter(self._handle, fieldnames=CSV_COLUMNS)
            if self._fresh:
                self._dict_writer.writeheader()
                self._handle.flush()
        return self._dict_writer

    def _has_header(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def _load_previous(self) -> None:
        if not self._has_header():
            return
        with self.path.open(newline="") as handle:
            text_ends_cleanly = _ends_with_newline(self.path)
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or tuple(header) != CSV_COLUMNS:
                raise ScaleError(
                    f"{self.path} exists but is not a results table of this version (other columns); "
                    "choose another --csv, or pass --restart to overwrite it"
                )
            complete: list[list[str]] = []
            damaged = last_complete = False
            for record in reader:
                last_complete = len(record) == len(CSV_COLUMNS) and record[1] in STATUSES
                if last_complete:
                    complete.append(record)
                else:
                    damaged = True
        if last_complete and not text_ends_cleanly:  # cut short by a crash, in its last cell
            complete.pop()
            damaged = True
        if damaged:
            self._rewrite(complete)
        # The cells went through ``csv_safe`` (``=x.jpg`` is stored as ``'=x.jpg``): the file names are read
        # back with ``csv_unsafe``. A cell ``'=x.jpg`` may also be a name written as it is (csv_safe leaves a
        # leading ' alone): both readings count as done, or that file would be done and written again.
        self.done = {name for record in complete for name in (record[0], csv_unsafe(record[0]))}
        self.previous = Counter(record[1] for record in complete)
        for record in complete:
            self._note(csv_unsafe(record[0]), record[1], csv_unsafe(record[2]))

    def _note(self, file: str, status: str, error: str) -> None:
        named = self.problems.get(status)
        if named is not None and len(named) < SUMMARY_NAMED_FILES:
            named.append((file, error))

    def _rewrite(self, records: list[list[str]]) -> None:
        """Replace the file by its complete rows (atomically: a crash now leaves the old file)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(records)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def write(self, records: Iterable[dict[str, Any]]) -> int:
        """Append rows (CSV-ready cells), flush them; fsync now and then."""
        count = 0
        writer = self._writer()
        assert self._handle is not None  # opened by _writer
        for record in records:
            writer.writerow(record)
            self.counts[record["status"]] += 1
            self._note(record["file"], record["status"], record["error"])
            count += 1
        self._handle.flush()
        if time.monotonic() - self._last_sync >= self.settings.fsync_every_s:
            os.fsync(self._handle.fileno())
            self._last_sync = time.monotonic()
        return count

    def close(self) -> None:
        if self._handle is None:
            if self._fresh and not self.path.exists():
                self._writer()  # a run with nothing to do still leaves a (header-only) table
            else:
                return
        assert self._handle is not None  # opened by _writer
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


# --- Ray ------------------------------------------------------------------------------------------
def import_ray() -> Any:
    """Ray, or a ScaleError that says how to install it. Usage statistics are off (no network)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
        import ray.data  # the ``data`` extra (pyarrow, pandas)
    except ImportError as exc:
        raise ScaleError(f"--engine ray needs Ray ({exc}); {INSTALL_HINT}") from exc
    return ray


def start_ray(address: str | None, settings: ScaleSettings = SETTINGS) -> bool:
    """Connect to ``address`` or start a local instance; True when this call started it (so we stop it).

    A process that already holds a Ray session (a notebook, a test) keeps it when no address is given, or
    when ``address`` is that same cluster; any other address is refused (``ScaleError``): Ray connects a
    process to one cluster only, and silently running on the wrong one would be worse than stopping.
    """
    ray = import_ray()
    if ray.is_initialized():
        if address is not None:
            _check_same_cluster(ray, address)
        return False
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    if address is None:
        # "local": a private instance, even where RAY_ADDRESS names a cluster; --address opts in.
        options.update(address="local", object_store_memory=settings.local_object_store_bytes)
        # Ray protects a new local instance with a token only this user can read, and warns that it
        # does on every start; the protection is wanted, the warning is noise. (Setting RAY_AUTH_MODE
        # here instead would be too late: Ray reads it at import, and the driver then lacks the token.)
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    else:
        _check_reachable(address, settings)
        options.update(address=address)
    try:
        ray.init(**options)
    except Exception as exc:  # ConnectionError, ValueError, RuntimeError…: Ray's are not one family
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ScaleError(f"cannot start or reach {where}: {_one_line(exc)}") from exc
    return True


def _check_same_cluster(ray: Any, address: str) -> None:
    """Refuse ``address`` unless it names the cluster this process is already connected to."""
    current = _current_cluster(ray)
    wanted = _canonical_address(address)
    if current is not None and wanted is not None and wanted == _canonical_address(current):
        return
    where = f"the Ray cluster at {current}" if current else "a Ray session"
    names = f" ({wanted})" if wanted and wanted != address else ""
    raise ScaleError(
        f"this process is already connected to {where}, so it cannot connect to --address {address}{names}: "
        "Ray joins a process to one cluster only. Run the batch in a process of its own (the command line "
        "does), or leave out --address to use the session that is already open"
    )


def _current_cluster(ray: Any) -> str | None:
    try:
        address = ray.get_runtime_context().gcs_address
    except Exception:  # a Ray Client session, or a Ray without it
        return None
    return str(address) if address else None


def _canonical_address(address: str) -> str | None:
    """``host:port`` of a Ray address as Ray itself resolves it ('auto', RAY_ADDRESS, localhost → this
    node's IP); None when it cannot be resolved (e.g. a ``ray://`` client address)."""
    if address.startswith("ray://"):
        return None
    try:
        from ray._private.services import canonicalize_bootstrap_address

        resolved = canonicalize_bootstrap_address(address)
    except Exception:  # not a Ray address, or 'auto' with no cluster running: never the same cluster
        return None
    return str(resolved) if resolved else None


def _check_reachable(address: str, settings: ScaleSettings) -> None:
    """Fail fast on a ``host:port`` nobody answers at: ``ray.init`` would retry for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():  # "auto", "local", …: Ray resolves those itself, quickly
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=settings.connect_timeout_s).close()
    except OSError as exc:
        raise ScaleError(
            f"nothing answers at {address} ({exc.strerror or exc}): is the cluster up? "
            "`ray start --head` prints the address to give"
        ) from exc


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _quiet_ray_data(ray: Any, verbose: bool) -> None:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = verbose
    context.print_on_execution_start = verbose
    if not verbose:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # It would warn that progress bars are off: we print our own progress line.
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


@dataclass
class RayBatchSummary:
    """What a run did: rows by status (this run and resumed), for the CLI's summary line."""

    written: Counter[str]
    resumed: Counter[str]
    workers: int
    problems: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # the first few failed/skipped files

    @property
    def total(self) -> Counter[str]:
        return self.written + self.resumed


def run_ray_batch(
    identifier: Identifier,
    source: str | Path | WorkPlan,
    out_csv: str | Path,
    *,
    checkpoint: str | Path,
    address: str | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    restart: bool = False,
    verbose: bool = False,
    limits: ArchiveLimits = LIMITS,
    settings: ScaleSettings = SETTINGS,
) -> RayBatchSummary:
    """Identify every photo of ``source`` on Ray, appending rows to ``out_csv`` (resumed unless ``restart``).

    ``source`` is a ZIP or folder path, or its ``plan_work`` (so a caller can fail fast before loading a model).

    ``identifier`` is the driver's: its gallery, rules and model version are what the workers use
    (each loads ``checkpoint`` itself, which on a cluster must exist on every node).
    """
    if workers is not None and workers < 1:
        raise ScaleError("--workers must be at least 1")
    plan = source if isinstance(source, WorkPlan) else plan_work(source, limits)  # a bad ZIP fails here
    results = ResultsFile(out_csv, restart=restart, settings=settings)
    started = False
    try:
        todo = plan.without(results.done)
        if results.done:
            print(f"resuming: {results.previous.total():,} file(s) already in {results.path}", file=sys.stderr)
        if todo.items:  # Ray first: a wrong address changes nothing in the results
            started = start_ray(address, settings)
        results.write(csv_cells(row) for row in todo.skipped)
        used = 0
        if todo.items:
            checkpoint = str(Path(checkpoint).resolve())
            used = _run_on_ray(identifier, todo, results, checkpoint, workers, batch_size, verbose, limits, settings)
        return RayBatchSummary(results.counts, results.previous, used, results.problems)
    finally:
        results.close()
        if started:
            import_ray().shutdown()


def _run_on_ray(
    identifier: Identifier,
    plan: WorkPlan,
    results: ResultsFile,
    checkpoint: str,
    workers: int | None,
    batch_size: int | None,
    verbose: bool,
    limits: ArchiveLimits,
    settings: ScaleSettings,
) -> int:
    ray = import_ray()
    _quiet_ray_data(ray, verbose)
    rows_per_task = settings.photos_per_task
    if workers is None:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        workers = max(1, int(cpus // settings.cpus_per_worker))
    workers = min(workers, math.ceil(len(plan.items) / rows_per_task))
    gallery: Gallery = identifier.gallery
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX)}
    remote_args: dict[str, Any] = {"runtime_env": {"env_vars": env}} if env else {}
    dataset = ray.data.from_items(plan.items, override_num_blocks=math.ceil(len(plan.items) / rows_per_task))
    identified = dataset.map_batches(
        IdentifyActor,
        batch_size=rows_per_task,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=settings.cpus_per_worker,
        fn_constructor_kwargs={
            "source": plan.source,
            "kind": plan.kind,
            "checkpoint": checkpoint,
            "inference_config": identifier.config,
            "gallery": ray.put(gallery),
            "model_version": identifier.model_version,
            "model_batch_size": batch_size,
            "threads": settings.cpus_per_worker,
            "limits": limits,
        },
        **remote_args,
    )
    total = len(plan.items)
    done = 0
    last_report = time.monotonic()
    try:
        for table in _result_blocks(identified):
            done += results.write(table.to_pylist())
            if time.monotonic() - last_report >= settings.progress_every_s:
                print(f"{done:,} / {total:,} photos identified", file=sys.stderr)
                last_report = time.monotonic()
    except ray.exceptions.RayError as exc:
        raise ScaleError(
            f"the Ray job failed after {done:,} photo(s) ({_worker_error(exc)}); "
            f"the rows written so far are kept in {results.path}: rerun the same command to resume"
        ) from exc
    return workers


def _result_blocks(dataset: Any) -> Iterator[Any]:
    """Result blocks as Ray produces them (no re-batching: every finished task is written at once)."""
    yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0)


def _worker_error(exc: BaseException) -> str:
    """The worker's own error, e.g. ``ModelLoadError: model checkpoint not found: …`` on a node.

    Ray's task and actor errors end with that line, after the worker's traceback.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
