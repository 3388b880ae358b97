"""Each CLI command on the real model and real photos."""

from __future__ import annotations

import csv
import io
import json
import shutil
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
