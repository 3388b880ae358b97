"""Odd but real inputs: float TIFFs, impossible GPS positions, FIFOs and folders given as photos."""

from __future__ import annotations

import csv
import io
import math
import os
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, TiffImagePlugin

from whales_identify.batch.local import run_batch, write_csv
from whales_identify.errors import InvalidImageError
from whales_identify.inputs.archive import iter_folder
from whales_identify.inputs.exif import read_metadata
from whales_identify.inputs.imaging import decode_image

R = TiffImagePlugin.IFDRational
fifo_only = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need POSIX")


def _tiff(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="TIFF")
    return buffer.getvalue()


# --- floating-point TIFF -----------------------------------------------------------------------------------
def test_a_float32_tiff_is_scaled_from_its_own_range_not_clipped_to_black() -> None:
    ramp = np.tile(np.linspace(0.0, 1.0, 200, dtype=np.float32), (120, 1))  # values 0..1, as scientific TIFFs hold
    data = _tiff(ramp)
    assert Image.open(io.BytesIO(data)).mode == "F"
    decoded = np.asarray(decode_image(data))
    assert decoded.shape == (120, 200, 3)
    assert decoded[:, 0].max() <= 2 and decoded[:, -1].min() >= 253  # the full 0..255 range, left to right
    assert abs(float(decoded[:, 100].mean()) - 127.5) < 3


def test_a_float_tiff_with_nan_and_infinity_uses_its_finite_range() -> None:
    values = np.tile(np.linspace(-50.0, 50.0, 64, dtype=np.float32), (64, 1))
    values[:8] = np.nan
    values[8:10] = np.inf
    decoded = np.asarray(decode_image(_tiff(values)))
    assert decoded[20:, 0].max() <= 2 and decoded[20:, -1].min() >= 253
    assert decoded[:8].max() == 0  # NaN: black, not garbage


def test_a_float_tiff_without_a_finite_value_is_a_typed_error() -> None:
    with pytest.raises(InvalidImageError, match="no finite values"):
        decode_image(_tiff(np.full((32, 32), np.nan, dtype=np.float32)))


# --- GPS in the EXIF -----------------------------------------------------------------------------------------
def _jpeg_with_gps(gps: dict) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.IFD.GPSInfo] = gps
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (20, 90, 140)).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


SYDNEY = {1: "S", 2: (R(33), R(51), R(3171, 100)), 3: "E", 4: (R(151), R(12), R(4017, 100))}


def test_a_valid_gps_position_is_read() -> None:
    meta = read_metadata(_jpeg_with_gps(SYDNEY))
    assert meta.latitude == pytest.approx(-33.8588, abs=1e-4) and meta.longitude == pytest.approx(151.2112, abs=1e-4)
    assert meta.gps_note == "" and meta.has_position


@pytest.mark.parametrize(
    ("gps", "note"),
    [
        ({1: "N", 2: (R(95), R(0), R(0)), 3: "E", 4: (R(5), R(0), R(0))}, "latitude 95° is beyond ±90°"),
        ({1: "N", 2: (R(10), R(0), R(0)), 3: "E", 4: (R(500), R(0), R(0))}, "longitude 500° is beyond ±180°"),
        ({1: "N", 2: (R(10, 0), R(0), R(0)), 3: "E", 4: (R(5), R(0), R(0))}, "not a finite number"),  # 10/0
        ({1: "N", 2: (R(0, 0), R(0), R(0)), 3: "E", 4: (R(5), R(0), R(0))}, "not a finite number"),  # 0/0 = NaN
        ({1: "N", 2: (R(10), R(75), R(0)), 3: "E", 4: (R(5), R(0), R(0))}, "not a valid angle"),
        ({1: "Q", 2: (R(10), R(0), R(0)), 3: "E", 4: (R(5), R(0), R(0))}, "hemisphere"),
        ({1: "N", 2: (R(10), R(0)), 3: "E", 4: (R(5), R(0), R(0))}, "not three numbers"),
        ({1: "N", 2: (R(10), R(0), R(0))}, "only one of"),
    ],
)
def test_an_impossible_gps_position_is_dropped_with_a_note(gps: dict, note: str) -> None:
    meta = read_metadata(_jpeg_with_gps(gps))
    assert meta.latitude is None and meta.longitude is None and not meta.has_position
    assert meta.gps_note.startswith("GPS position ignored") and note in meta.gps_note


def test_an_impossible_gps_position_never_reaches_the_batch_table(identifier) -> None:
    bad = _jpeg_with_gps({1: "N", 2: (R(95), R(0), R(0)), 3: "E", 4: (R(1, 0), R(0), R(0))})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("bad_gps.jpg", bad)
        archive.writestr("good_gps.jpg", _jpeg_with_gps(SYDNEY))
    buffer.seek(0)
    rows = {row.file: row for row in run_batch(identifier, buffer)}
    assert rows["bad_gps.jpg"].status == "ok"  # the photo is still identified
    assert rows["bad_gps.jpg"].latitude is None and rows["bad_gps.jpg"].longitude is None
    assert rows["good_gps.jpg"].latitude == pytest.approx(-33.8588, abs=1e-4)
    # the row says why the position is missing, in the CSV too; a good position has no note
    assert "latitude 95° is beyond ±90°" in rows["bad_gps.jpg"].gps_note and rows["good_gps.jpg"].gps_note == ""
    out = io.StringIO()
    write_csv(list(rows.values()), out)
    cells = {r["file"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert cells["bad_gps.jpg"]["gps_note"] == rows["bad_gps.jpg"].gps_note and cells["bad_gps.jpg"]["latitude"] == ""
    for row in rows.values():  # nothing a map or a form could choke on
        assert all(v is None or math.isfinite(v) for v in (row.latitude, row.longitude))


# --- FIFOs, folders and other files that are not photos ----------------------------------------------------------
def _with_a_writer_ready(fifo: Path):
    """A writer that would unblock a reader stuck on the FIFO, so a failing test ends instead of hanging."""

    def unblock() -> None:
        try:
            fd = os.open(fifo, os.O_WRONLY)  # blocks until a reader opens it (if one ever does)
            os.close(fd)
        except OSError:
            pass

    thread = threading.Thread(target=unblock, daemon=True)
    thread.start()
    return thread


@fifo_only
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def decode() -> None:
        try:
            decode_image(fifo)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=decode, daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():  # the defect: it waits for a writer forever
        _with_a_writer_ready(fifo).join(timeout=5)
        worker.join(timeout=5)
        pytest.fail("decode_image blocked on a named pipe")
    assert isinstance(outcome[0], InvalidImageError) and "named pipe" in str(outcome[0])


def test_a_folder_given_as_a_photo_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="a folder, not a photo"):
        decode_image(tmp_path)


@fifo_only
def test_a_folder_source_lists_a_fifo_as_skipped_and_never_opens_it(tmp_path: Path) -> None:
    Image.new("RGB", (64, 48), (20, 90, 140)).save(tmp_path / "a.jpg")
    os.mkfifo(tmp_path / "b.jpg")
    entries = {}

    def read() -> None:
        entries.update({entry.name: entry for entry in iter_folder(tmp_path)})

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():
        _with_a_writer_ready(tmp_path / "b.jpg").join(timeout=5)
        pytest.fail("reading the folder blocked on a named pipe")
    assert entries["a.jpg"].ok
    assert not entries["b.jpg"].ok and "named pipe" in entries["b.jpg"].skipped


# --- a name repeated in a ZIP ----------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_a_repeated_name_in_a_zip_keeps_each_photos_own_gps(identifier) -> None:
    """Metadata was looked up by name: the first of two ``a.jpg`` got the second's position, the second none."""
    north = {1: "N", 2: (R(10), R(0), R(0)), 3: "E", 4: (R(20), R(0), R(0))}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("trip/a.jpg", _jpeg_with_gps(SYDNEY))
        archive.writestr("trip/a.jpg", _jpeg_with_gps(north))
    buffer.seek(0)
    rows = {row.file: row for row in run_batch(identifier, buffer)}
    assert set(rows) == {"trip/a.jpg", "trip/a [member 1].jpg"}
    assert rows["trip/a.jpg"].latitude == pytest.approx(-33.8588, abs=1e-4)
    assert rows["trip/a [member 1].jpg"].latitude == pytest.approx(10.0)
    assert all(row.status == "ok" for row in rows.values())


def test_gps_is_read_from_a_png_whose_exif_comes_after_the_pixels() -> None:
    """(read without decoding the picture: see test_decode_memory.py)"""
    exif = Image.Exif()
    exif[ExifTags.IFD.GPSInfo] = SYDNEY
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (20, 90, 140)).save(buffer, "PNG", exif=exif)
    data = buffer.getvalue()
    start = data.index(b"eXIf") - 4  # move the eXIf chunk after IDAT, where some writers put it
    length = int.from_bytes(data[start : start + 4], "big")
    chunk = data[start : start + 12 + length]
    rest = data[:start] + data[start + 12 + length :]
    end = rest.index(b"IEND") - 4
    moved = rest[:end] + chunk + rest[end:]
    assert moved.index(b"eXIf") > moved.index(b"IDAT")
    meta = read_metadata(moved)
    assert meta.latitude == pytest.approx(-33.8588, abs=1e-4) and meta.longitude == pytest.approx(151.2112, abs=1e-4)
    assert read_metadata(data).latitude == pytest.approx(-33.8588, abs=1e-4)  # and before the pixels
