"""``batch --engine ray`` on a real local Ray instance: the same table as the local engine, resumable.

CI installs requirements-scale.txt, so these tests never skip. Ray starts once for the module (about
5 s); each run then starts its model workers, which is most of the time here.
"""

from __future__ import annotations

import csv
import selectors
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from whales_identify.batch.local import CSV_COLUMNS, BatchRow
from whales_identify.batch.on_ray import (
    ResultsFile,
    ScaleError,
    ScaleSettings,
    csv_cells,
    import_ray,
    plan_work,
    run_ray_batch,
    start_ray,
)
from whales_identify.cli.main import main
from whales_identify.config import DEFAULT_CHECKPOINT

REPO = Path(__file__).parent.parent
TOLERANCE = 1e-3  # probabilities: batches of another size can move the last float bits
EXACT = ("file", "status", "error", "species", "individual_id", "new_individual", "rejected")
PROBABILITIES = ("species_probability", "probability")
BATCH = ["--batch-size", "2"]  # photos per forward pass, on both engines


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance (2 CPUs) for the whole module; the CLI reuses it and leaves it running."""
    ray = import_ray()  # as the CLI does: usage statistics off
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=128 * 1024**2,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photo_zip(tmp_path_factory, samples) -> Path:
    """The sample photos plus everything a real archive holds that is not a photo to identify."""
    path = tmp_path_factory.mktemp("ray_zip") / "photos.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for row in samples.itertuples():
            archive.write(row.path, f"trip/{row.image}")
        archive.write(samples.iloc[0]["path"], "trip/day2/nested_copy.jpg")  # a nested folder
        archive.writestr("trip/corrupt.jpg", b"\xff\xd8\xff\xe0 truncated")
        archive.writestr("trip/readme.txt", "notes")
        archive.writestr("../evil.jpg", b"\xff\xd8\xff")
        archive.writestr("__MACOSX/trip/._a.jpg", b"x")  # ignored: no row at all
        archive.writestr("trip/.DS_Store", b"x")
    return path


def _read(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        rows = list(reader)
    by_file = {row["file"]: row for row in rows}
    assert len(by_file) == len(rows), "a file appears twice"
    return by_file


def _assert_same_table(expected: dict[str, dict[str, str]], actual: dict[str, dict[str, str]]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, want in expected.items():
        got = actual[name]
        for column in EXACT:
            assert got[column] == want[column], (name, column)
        for column in PROBABILITIES:
            assert (got[column] == "") == (want[column] == ""), (name, column)
            if want[column]:
                assert float(got[column]) == pytest.approx(float(want[column]), abs=TOLERANCE), (name, column)
        want_top = [item.split(":") for item in want["top5"].split("; ") if item]
        got_top = [item.split(":") for item in got["top5"].split("; ") if item]
        assert [i for i, _ in got_top] == [i for i, _ in want_top], name
        for (_, p_got), (_, p_want) in zip(got_top, want_top, strict=True):
            assert float(p_got) == pytest.approx(float(p_want), abs=TOLERANCE), name


@pytest.fixture(scope="module")
def local_table(photo_zip, tmp_path_factory) -> dict[str, dict[str, str]]:
    out = tmp_path_factory.mktemp("local") / "local.csv"
    assert main(["batch", str(photo_zip), "--csv", str(out), *BATCH]) == 0
    return _read(out)


@pytest.fixture(scope="module")
def ray_csv(ray_instance, identifier, photo_zip, tmp_path_factory) -> Path:
    """Tasks of two photos over two workers: results from several tasks and actors are merged."""
    out = tmp_path_factory.mktemp("ray") / "ray.csv"
    summary = run_ray_batch(
        identifier,
        photo_zip,
        out,
        checkpoint=DEFAULT_CHECKPOINT,
        workers=2,
        batch_size=2,
        settings=ScaleSettings(photos_per_task=2),
    )
    assert summary.workers == 2
    assert sum(summary.written.values()) == len(_read(out))
    return out


def test_ray_engine_gives_the_local_engine_table(ray_csv, local_table, samples) -> None:
    table = _read(ray_csv)
    _assert_same_table(local_table, table)
    # and the table is the one a biologist expects, not merely the same mistakes twice
    assert table["trip/corrupt.jpg"]["status"] == "error" and table["trip/corrupt.jpg"]["error"]
    assert table["trip/readme.txt"]["status"] == "skipped"
    assert table["../evil.jpg"]["status"] == "skipped" and "unsafe" in table["../evil.jpg"]["error"]
    assert not any("__MACOSX" in name or ".DS_Store" in name for name in table)
    assert (
        table["trip/day2/nested_copy.jpg"]["individual_id"]
        == table[f"trip/{samples.iloc[0]['image']}"]["individual_id"]
    )
    for row in samples.itertuples():
        assert table[f"trip/{row.image}"]["status"] == "ok"


def test_a_folder_gives_the_same_table_on_both_engines(ray_instance, samples, tmp_path) -> None:
    folder = tmp_path / "photos"
    for i, row in enumerate(samples.head(3).itertuples()):
        (folder / f"day{i}").mkdir(parents=True)
        (folder / f"day{i}" / row.image).write_bytes(Path(row.path).read_bytes())
    (folder / "notes.txt").write_text("notes")
    (folder / ".hidden.jpg").write_bytes(b"x")
    local, on_ray = tmp_path / "local.csv", tmp_path / "ray.csv"
    assert main(["batch", str(folder), "--csv", str(local)]) == 0
    assert main(["batch", str(folder), "--engine", "ray", "--csv", str(on_ray)]) == 0
    table = _read(on_ray)
    _assert_same_table(_read(local), table)
    assert len(table) == 4 and table["notes.txt"]["status"] == "skipped"


def test_a_rerun_resumes_an_interrupted_run(ray_instance, ray_csv, photo_zip, tmp_path, capsys) -> None:
    with ray_csv.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    kept = [list(row) for row in rows[:4]]
    # Mark a kept row: had the rerun identified that file again, the marker would be gone or doubled.
    marked_file = kept[-1][0]
    kept[-1][CSV_COLUMNS.index("error")] = "MARKER"
    # An interrupted run: a few complete rows, then a line cut off mid-write (no newline).
    partial = tmp_path / "results.csv"
    with partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(kept)
        handle.write(",".join(rows[5])[:40])
    capsys.readouterr()

    assert main(["batch", str(photo_zip), "--engine", "ray", "--csv", str(partial), *BATCH]) == 0
    err = capsys.readouterr().err
    assert "resuming: 4 file(s)" in err
    assert f"(4 from the earlier run, {len(rows) - 4} now)" in err

    expected = _read(ray_csv)
    resumed = _read(partial)  # also: no file twice, so the cut-off file was done again, once
    assert resumed[marked_file]["error"] == "MARKER"  # kept, not done again
    resumed[marked_file]["error"] = expected[marked_file]["error"]
    _assert_same_table(expected, resumed)


def test_a_finished_run_is_not_redone_and_restart_redoes_it(ray_instance, ray_csv, photo_zip, tmp_path, capsys) -> None:
    out = tmp_path / "done.csv"
    out.write_bytes(ray_csv.read_bytes())
    capsys.readouterr()
    assert main(["batch", str(photo_zip), "--engine", "ray", "--csv", str(out)]) == 0
    assert out.read_bytes() == ray_csv.read_bytes()  # nothing to do: Ray was not even needed
    assert "0 now" in capsys.readouterr().err

    out.write_text("name,answer\na.jpg,42\n")  # not our table: never silently appended to
    assert main(["batch", str(photo_zip), "--engine", "ray", "--csv", str(out)]) == 2
    assert "--restart" in capsys.readouterr().err
    assert out.read_text() == "name,answer\na.jpg,42\n"
    assert main(["batch", str(photo_zip), "--engine", "ray", "--csv", str(out), "--restart", *BATCH]) == 0
    _assert_same_table(_read(ray_csv), _read(out))


def test_cli_refuses_what_it_cannot_do_with_a_clear_message(photo_zip, tmp_path, capsys) -> None:
    not_a_zip = tmp_path / "photos.zip"
    not_a_zip.write_text("these are not photos")
    out = tmp_path / "out.csv"
    assert main(["batch", str(not_a_zip), "--engine", "ray", "--csv", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a ZIP" in err and "Traceback" not in err
    assert not out.exists()

    assert main(["batch", str(photo_zip), "--engine", "ray"]) == 2  # nowhere to write as it goes
    assert "--csv" in capsys.readouterr().err
    assert main(["batch", str(photo_zip), "--workers", "2", "--csv", str(out)]) == 2  # a Ray option, locally
    assert "--engine ray" in capsys.readouterr().err


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own: in this one, the module's Ray instance is up and would be used."""
    command = [sys.executable, "-m", "whales_identify", "batch", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def test_cli_starts_and_stops_its_own_local_instance(local_table, samples, tmp_path) -> None:
    small = tmp_path / "small.zip"
    name = f"trip/{samples.iloc[1]['image']}"
    with zipfile.ZipFile(small, "w") as archive:
        archive.write(samples.iloc[1]["path"], name)
        archive.writestr("trip/readme.txt", "notes")
    out = tmp_path / "out.csv"
    done = _cli(str(small), "--engine", "ray", "--csv", str(out))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "1 identified, 0 failed, 1 skipped" in done.stderr
    table = _read(out)
    _assert_same_table({k: local_table[k] for k in (name, "trip/readme.txt")}, table)


def test_cli_says_when_no_cluster_answers_and_keeps_the_earlier_table(photo_zip, ray_csv, tmp_path) -> None:
    out = tmp_path / "out.csv"
    out.write_bytes(ray_csv.read_bytes())  # an earlier run's results, which --restart would replace
    done = _cli(str(photo_zip), "--engine", "ray", "--restart", "--csv", str(out), "--address", "127.0.0.1:1")
    assert done.returncode == 2
    assert "error: nothing answers at 127.0.0.1:1" in done.stderr and "Traceback" not in done.stderr
    assert out.read_bytes() == ray_csv.read_bytes()  # a run that never started changes nothing


def test_the_plan_applies_the_archive_rules_without_reading_photos(photo_zip) -> None:
    plan = plan_work(photo_zip)
    assert plan.kind == "zip"
    skipped = {row.file: row.error for row in plan.skipped}
    assert set(skipped) == {"trip/readme.txt", "../evil.jpg"}
    assert "trip/corrupt.jpg" in {item["file"] for item in plan.items}  # only a model finds it is corrupt


def test_results_file_drops_a_line_cut_off_by_a_crash(tmp_path) -> None:
    path = tmp_path / "r.csv"
    good = ["a.jpg", "skipped", "x", *[""] * (len(CSV_COLUMNS) - 3)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        writer.writerow(good)
        handle.write("b.jpg,ok,,humpback_wh")  # the crash
    results = ResultsFile(path)
    results.close()
    assert results.done == {"a.jpg"}
    assert _read(path) == {"a.jpg": dict(zip(CSV_COLUMNS, good, strict=True))}


def test_a_resume_recognises_file_names_the_table_neutralised(tmp_path) -> None:
    """Cells go through ``csv_safe`` (``=x.jpg`` is stored as ``'=x.jpg``): the finished set was built from
    the stored cells, so such files were identified again and written twice on every resume."""
    names = ["=x.jpg", "+1 fin.jpg", "@home.jpg", "-dorsal.jpg", "'=quoted.jpg", "'plain.jpg", "plain.jpg"]
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in [*names, "=notes.txt"]:
            zf.writestr(name, b"not read by the plan")
    plan = plan_work(archive)
    assert {item["file"] for item in plan.items} == set(names) and [r.file for r in plan.skipped] == ["=notes.txt"]
    path = tmp_path / "results.csv"
    first = ResultsFile(path)
    first.write(csv_cells(BatchRow(name, "error", "-corrupt")) for name in names)
    first.write(csv_cells(row) for row in plan.skipped)
    first.close()
    with path.open(newline="") as handle:
        stored = [record[0] for record in csv.reader(handle)][1:]
    assert "'=x.jpg" in stored and "=x.jpg" not in stored  # neutralised on disk

    resumed = ResultsFile(path)
    resumed.close()
    todo = plan.without(resumed.done)
    assert todo.items == [] and todo.skipped == []  # nothing is done twice
    assert resumed.previous.total() == len(names) + 1
    assert resumed.problems["error"][0] == ("=x.jpg", "-corrupt")  # the summary names the real file


def test_without_ray_the_module_imports_and_the_cli_says_how_to_install_it(
    photo_zip, tmp_path, monkeypatch, capsys
) -> None:
    blocked = "import sys; sys.modules['ray'] = None; import whales_identify.batch.on_ray, whales_identify.cli.main"
    assert subprocess.run([sys.executable, "-c", blocked], cwd=REPO, check=False).returncode == 0
    monkeypatch.setitem(sys.modules, "ray", None)  # ``import ray`` now fails as if it were not installed
    assert main(["batch", str(photo_zip), "--engine", "ray", "--csv", str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err
    assert "pip install -r requirements-scale.txt" in err and "Traceback" not in err


def test_a_worker_that_cannot_load_the_model_fails_the_run_clearly(
    ray_instance, identifier, photo_zip, tmp_path
) -> None:
    # e.g. a cluster node without the model files: the driver's own model loaded fine
    out = tmp_path / "out.csv"
    with pytest.raises(ScaleError, match=r"ModelLoadError: model checkpoint not found: .*rerun the same command"):
        run_ray_batch(identifier, photo_zip, out, checkpoint=tmp_path / "missing.pt")
    assert set(_read(out)) == {"trip/readme.txt", "../evil.jpg"}  # what was known is kept for the rerun


# --- --address with a Ray session already open -----------------------------------------------------------------
_SECOND_INSTANCE = """
import logging, os, sys
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import ray
ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
         object_store_memory=80 * 1024**2, logging_level=logging.WARNING)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes our stdin
ray.shutdown()
"""


def _first_line(process: subprocess.Popen, timeout: float) -> str:
    """The first line a child prints, waiting on the pipe (not a fixed sleep) up to ``timeout`` seconds."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=deadline - time.monotonic()):
                return process.stdout.readline().strip()
    raise AssertionError(f"no line from the child within {timeout} s")


@pytest.fixture(scope="module")
def second_instance(ray_instance, tmp_path_factory):
    """A second local Ray instance, held by a child process; its address (host:port)."""
    log = tmp_path_factory.mktemp("second_ray") / "stderr.txt"
    with log.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", _SECOND_INSTANCE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=REPO,
        )
    try:
        address = _first_line(child, timeout=120)
        assert address, log.read_text()[-2000:]
        yield address
    finally:
        assert child.stdin is not None
        child.stdin.close()  # the child shuts its instance down and exits
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def test_an_address_other_than_the_open_session_is_refused_not_ignored(
    second_instance, photo_zip, tmp_path, capsys
) -> None:
    """The defect: ``start_ray`` returned early when this process held a session, so ``--address`` was ignored
    and the batch ran on the local instance."""
    ray = import_ray()
    current = ray.get_runtime_context().gcs_address
    assert current != second_instance
    with pytest.raises(ScaleError, match="already connected") as info:
        start_ray(second_instance)
    assert current in str(info.value) and second_instance in str(info.value)
    assert ray.is_initialized() and ray.get_runtime_context().gcs_address == current  # left as it was
    assert start_ray(current) is False  # the cluster already connected: used, not restarted

    out = tmp_path / "out.csv"
    assert main(["batch", str(photo_zip), "--engine", "ray", "--address", second_instance, "--csv", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already connected" in err and "Traceback" not in err
    assert not out.exists() or len(out.read_text().splitlines()) <= 1  # nothing was identified anywhere


def test_a_process_without_a_session_connects_to_the_address_given(second_instance) -> None:
    code = (
        "import sys; from whales_identify.batch.on_ray import import_ray, start_ray; "
        "started = start_ray(sys.argv[1]); ray = import_ray(); "
        "print(started, ray.get_runtime_context().gcs_address); ray.shutdown()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, second_instance], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["True", second_instance]


def test_the_ray_summary_names_failed_files_and_strict_fails(ray_csv, photo_zip, tmp_path, capsys) -> None:
    out = tmp_path / "out.csv"
    out.write_bytes(ray_csv.read_bytes())  # a finished run: nothing left to do, the summary comes from the table
    assert main(["batch", str(photo_zip), "--engine", "ray", "--csv", str(out)]) == 0
    err = capsys.readouterr().err
    assert "trip/corrupt.jpg" in err and "trip/readme.txt" in err and "../evil.jpg" in err
    assert main(["batch", str(photo_zip), "--engine", "ray", "--csv", str(out), "--strict"]) == 1
