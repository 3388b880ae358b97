"""CSV injection in the Ray engine's rows: ``on_ray.csv_cells`` goes through ``inputs.text.csv_safe``,
as the local engine's ``write_csv`` does, so both engines write the same, neutralised cells."""

from __future__ import annotations

import csv
import io

from whales_identify.batch.local import CSV_COLUMNS, BatchRow, write_csv
from whales_identify.batch.on_ray import csv_cells, to_columns


def _hostile_rows() -> list[BatchRow]:
    return [
        BatchRow('=HYPERLINK("http://example.invalid").jpg', "error", "@SUM(A1)"),
        BatchRow("+cmd.jpg", "skipped", "\tnot a photo"),
        BatchRow("-2+3.jpg", "error", "\rbroken", latitude=-33.9, longitude=-151.2),
        BatchRow("plain.jpg", "ok", species="humpback_whale", individual_id="-W1", probability=0.5),
    ]


def test_ray_csv_cells_are_neutralised() -> None:
    cells = [csv_cells(row) for row in _hostile_rows()]
    assert cells[0]["file"] == '\'=HYPERLINK("http://example.invalid").jpg' and cells[0]["error"] == "'@SUM(A1)"
    assert cells[1]["file"] == "'+cmd.jpg" and cells[1]["error"] == "'\tnot a photo"
    assert cells[2]["file"] == "'-2+3.jpg" and cells[2]["error"] == "'\rbroken"
    assert cells[2]["latitude"] == "-33.9" and cells[2]["longitude"] == "-151.2"  # numbers stay numbers
    assert cells[3]["individual_id"] == "'-W1" and cells[3]["file"] == "plain.jpg"
    columns = to_columns(_hostile_rows())
    assert columns["file"][0].startswith("'=")


def test_both_engines_write_the_same_cells() -> None:
    buffer = io.StringIO()
    write_csv(_hostile_rows(), buffer)
    local = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert [dict(row) for row in local] == [csv_cells(row) for row in _hostile_rows()]
    assert tuple(local[0]) == CSV_COLUMNS
