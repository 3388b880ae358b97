"""Each CLI command on the real model and real photos."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from whales_identify.cli.main import main
from whales_identify.config import DEFAULT_CHECKPOINT
from whales_identify.matching.identifier import Identifier

DATA = Path(__file__).parent / "data"


def test_identify_json(capsys, known_samples) -> None:
    row = known_samples.iloc[0]
    assert main(["identify", row["path"], "--json"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output[row["path"]]["answer"] == row["individual_id"]
    assert len(output[row["path"]]["top5"]) == 5


def test_identify_reads_its_probabilities_under_the_catalogued_share_given(capsys, known_samples) -> None:
    """The same photo, the same answer; stating that most photos show catalogued animals makes a named
    individual more probable, and a share outside (0, 1) is refused before anything loads."""
    path = known_samples.iloc[0]["path"]
    shown = {}
    for share in ("0.1", "0.9"):
        assert main(["identify", path, "--json", "--no-verify", "--catalogued-share", share]) == 0
        shown[share] = json.loads(capsys.readouterr().out)[path]
    assert shown["0.1"]["answer"] == shown["0.9"]["answer"] == known_samples.iloc[0]["individual_id"]
    assert shown["0.9"]["top5"][0]["probability"] > shown["0.1"]["top5"][0]["probability"]
    with pytest.raises(SystemExit):
        main(["identify", path, "--catalogued-share", "1.2"])
    assert "between 0 and 1" in capsys.readouterr().err


def test_identify_reports_a_bad_file_and_fails(tmp_path, capsys, known_samples) -> None:
    bad = tmp_path / "fake.jpg"
    bad.write_bytes(b"%PDF-1.4 not a photo")
    assert main(["identify", known_samples.iloc[0]["path"], str(bad)]) == 1
    captured = capsys.readouterr()
    assert known_samples.iloc[0]["individual_id"] in captured.out
    assert "fake.jpg: error" in captured.err


def test_batch_zip_to_csv(tmp_path, samples) -> None:
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for row in samples.itertuples():
            zf.write(row.path, f"trip/{row.image}")
        zf.writestr("trip/corrupt.jpg", b"\xff\xd8\xff\xe0 truncated")
        zf.writestr("trip/readme.txt", "notes")
    out = tmp_path / "results.csv"
    assert main(["batch", str(archive), "--csv", str(out)]) == 0
    rows = {r["file"]: r for r in csv.DictReader(out.open())}
    assert rows["trip/corrupt.jpg"]["status"] == "error" and rows["trip/corrupt.jpg"]["error"]
    assert rows["trip/readme.txt"]["status"] == "skipped"
    for row in samples.itertuples():
        assert rows[f"trip/{row.image}"]["status"] == "ok"
        assert rows[f"trip/{row.image}"]["species"]


def _labels(tmp_path: Path, samples, split_of) -> Path:
    path = tmp_path / "labels.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "individual_id", "species", "split", "note"])
        for row in samples.itertuples():
            writer.writerow([row.image, row.individual_id, row.species, split_of(row), "ignored"])
    return path


def test_evaluate_contract(tmp_path, samples) -> None:
    # Gallery and query hold the same photos: every known individual must be found at rank 1.
    rows = list(samples.itertuples())
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "individual_id", "species", "split"])
        for row in rows:
            writer.writerow([row.image, row.individual_id, row.species, "gallery"])
            writer.writerow([row.image, row.individual_id, row.species, "query"])
    out = tmp_path / "report.json"
    assert main(["evaluate", str(labels), "--root", str(Path(rows[0].path).parent), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for key in (
        "n_queries",
        "top1",
        "top5",
        "map5",
        "species_accuracy",
        "non_cetacean_rejection",
        "per_species",
        "images_per_second",
    ):
        assert key in report
    assert report["n_queries"] == len(rows)
    assert report["known_top1"] == 1.0
    assert report["non_cetacean_rejection"] == 1.0
    assert set(report["per_species"]) == set(samples["species"])


def test_evaluate_names_missing_images(tmp_path, capsys, samples) -> None:
    labels = _labels(tmp_path, samples, lambda row: "query")
    assert main(["evaluate", str(labels), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and samples.iloc[0]["image"] in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("image,species\nx.jpg,beluga\n", "lacks the column"),
        ("image,individual_id,species,split\nx,a,b,train\n", "split"),
    ],
)
def test_evaluate_rejects_malformed_csv(tmp_path, capsys, content, message) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(content)
    assert main(["evaluate", str(labels), "--root", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_batch_of_a_non_zip_is_a_clear_error(tmp_path, capsys) -> None:
    fake = tmp_path / "photos.zip"
    fake.write_bytes(io.BytesIO(b"nope").getvalue())
    assert main(["batch", str(fake)]) == 2
    assert "not a ZIP" in capsys.readouterr().err


def test_export_onnx_writes_a_stamped_model_beside_the_checkpoint(tmp_path, capsys) -> None:
    checkpoint = tmp_path / "mine.pt"
    shutil.copyfile(DEFAULT_CHECKPOINT, checkpoint)
    assert main(["export-onnx", "--checkpoint", str(checkpoint)]) == 0
    assert "mine.onnx" in capsys.readouterr().out
    identifier = Identifier.load(checkpoint, catalogue=None, engine="onnx")  # refused were it stale
    reference = Identifier.load(checkpoint, catalogue=None, engine="torch")
    photo = sorted(DATA.glob("*.jpg"))[0]
    fast, slow = identifier.identify(photo), reference.identify(photo)
    assert np.abs(fast.embedding - slow.embedding).max() < 1e-4


def test_export_onnx_of_a_missing_checkpoint_is_a_clear_error(tmp_path, capsys) -> None:
    assert main(["export-onnx", "--checkpoint", str(tmp_path / "none.pt")]) != 0
    assert "not found" in capsys.readouterr().err


# --- folders, FIFOs and failed files --------------------------------------------------------------------------
REPO = Path(__file__).parent.parent


def test_identify_a_folder_identifies_the_photos_in_it(tmp_path, capsys, known_samples) -> None:
    folder = tmp_path / "trip"
    (folder / "day2").mkdir(parents=True)
    first, second = known_samples.iloc[0], known_samples.iloc[1]
    shutil.copy(first["path"], folder / "a.jpg")
    shutil.copy(second["path"], folder / "day2" / "b.jpg")
    (folder / "notes.txt").write_text("not a photo")
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "pipe.jpg")  # never opened, so it cannot block
    assert main(["identify", str(folder), "--json", "--no-verify"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output[str(folder / "a.jpg")]["answer"] == first["individual_id"]
    assert output[str(folder / "day2" / "b.jpg")]["answer"] == second["individual_id"]
    assert "not a photo" in output[str(folder / "notes.txt")]["skipped"]
    if hasattr(os, "mkfifo"):
        assert "named pipe" in output[str(folder / "pipe.jpg")]["skipped"]


def test_identify_a_folder_without_photos_says_so(tmp_path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert main(["identify", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no photos" in err and "Traceback" not in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need POSIX")
def test_identify_a_fifo_refuses_it_and_goes_on_instead_of_hanging(tmp_path, known_samples) -> None:
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    command = [sys.executable, "-m", "whales_identify", "identify", str(fifo), known_samples.iloc[0]["path"]]
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=90, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("identify blocked on a named pipe")
    assert done.returncode == 1
    assert "photo.jpg: error" in done.stderr and "named pipe" in done.stderr and "Traceback" not in done.stderr
    assert known_samples.iloc[0]["individual_id"] in done.stdout


def _zip_with_failures(tmp_path: Path, samples, broken: int) -> Path:
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(samples.iloc[0]["path"], "trip/good.jpg")
        for i in range(broken):
            zf.writestr(f"trip/broken_{i:02d}.jpg", b"\xff\xd8\xff\xe0 truncated")
        zf.writestr("trip/readme.txt", "notes")
    return archive


def test_batch_names_the_files_that_failed(tmp_path, capsys, samples) -> None:
    archive = _zip_with_failures(tmp_path, samples, broken=12)
    assert main(["batch", str(archive), "--csv", str(tmp_path / "out.csv")]) == 0  # something was identified
    err = capsys.readouterr().err
    assert "1 identified, 12 failed, 1 skipped" in err
    named = [f"trip/broken_{i:02d}.jpg" for i in range(12)]
    assert all(name in err for name in named[:10]) and not any(name in err for name in named[10:])
    assert "and 2 more" in err and "corrupt or truncated" in err
    assert "trip/readme.txt" in err and "not a photo" in err


def test_batch_strict_fails_when_any_file_failed_or_was_skipped(tmp_path, capsys, samples) -> None:
    archive = _zip_with_failures(tmp_path, samples, broken=1)
    assert main(["batch", str(archive), "--csv", str(tmp_path / "out.csv"), "--strict"]) == 1
    assert "trip/broken_00.jpg" in capsys.readouterr().err
    clean = tmp_path / "clean.zip"
    with zipfile.ZipFile(clean, "w") as zf:
        zf.write(samples.iloc[0]["path"], "good.jpg")
    assert main(["batch", str(clean), "--csv", str(tmp_path / "clean.csv"), "--strict"]) == 0
    only_skipped = tmp_path / "skipped.zip"
    with zipfile.ZipFile(only_skipped, "w") as zf:
        zf.write(samples.iloc[0]["path"], "good.jpg")
        zf.writestr("readme.txt", "notes")
    assert main(["batch", str(only_skipped), "--csv", str(tmp_path / "s.csv")]) == 0
    assert main(["batch", str(only_skipped), "--csv", str(tmp_path / "s.csv"), "--strict"]) == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need POSIX")
def test_batch_of_a_fifo_is_a_clear_error_not_a_hang(tmp_path) -> None:
    fifo = tmp_path / "photos.zip"
    os.mkfifo(fifo)
    command = [sys.executable, "-m", "whales_identify", "batch", str(fifo)]
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=90, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("batch blocked on a named pipe")
    assert done.returncode == 2 and "a named pipe (FIFO), not a ZIP" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""  # no table started


def test_build_commands_name_the_first_skipped_photos_and_count_the_rest(capsys) -> None:
    from whales_identify.cli.options import SKIPPED_SHOWN, print_skipped

    print_skipped([f"p{i}.jpg: unreadable" for i in range(SKIPPED_SHOWN + 2)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[:SKIPPED_SHOWN] == [f"  skipped p{i}.jpg: unreadable" for i in range(SKIPPED_SHOWN)]
    assert lines[SKIPPED_SHOWN:] == ["  ... and 2 more skipped"]
    print_skipped(["one.jpg: empty"])
    assert capsys.readouterr().out.splitlines() == ["  skipped one.jpg: empty"]
