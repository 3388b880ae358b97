"""HEIC/HEIF (the iPhone default) end to end: decoded by ``decode_image`` with nothing to set up, accepted as
photos in uploads, folders and ZIPs, identified like the same picture as a JPEG, and within the decode
memory bound.

The sample, tests/data/north_atlantic_right_whale_w_3212.heic (5 kB), is a right whale photo encoded by
pillow-heif (quality 50); its picture is compared with pillow-heif's own decode and with a JPEG of it made
here (the JPEG it came from may be replaced with the samples). The large HEICs of the memory check are made
here (uniform, x265 "ultrafast", 512 px grid tiles as an iPhone writes them) and decoded in fresh processes.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from whales_identify.batch.local import run_batch
from whales_identify.config import IMAGE_SUFFIXES, ImageLimits
from whales_identify.errors import InvalidImageError
from whales_identify.inputs.archive import iter_photos
from whales_identify.inputs.imaging import decode_image, encode_jpeg

ROOT = Path(__file__).resolve().parents[1]
HEIC = ROOT / "tests" / "data" / "north_atlantic_right_whale_w_3212.heic"
BOUND_MB = ImageLimits().max_decode_bytes / 2**20


def _run(code: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_heic_sample_is_a_real_small_heic() -> None:
    data = HEIC.read_bytes()
    assert data[4:12] == b"ftypheic" and len(data) <= 60 * 1024


def test_a_heic_photo_decodes_with_nothing_to_set_up() -> None:
    """A fresh interpreter imports the decoder and nothing else: the HEIF opener is registered by it."""
    out = _run(
        f"""
import json
from whales_identify.inputs import imaging
image = imaging.decode_image({str(HEIC)!r})
import pillow_heif
reference = pillow_heif.open_heif({str(HEIC)!r}).to_pillow().convert("RGB")
reference.thumbnail(image.size)
diff = sum(abs(a - b) for a, b in zip(image.tobytes(), reference.tobytes())) / len(reference.tobytes())
print(json.dumps({{"formats": imaging.FORMATS, "mode": image.mode, "size": image.size,
                  "reference_size": reference.size, "mean_abs_diff": diff}}))
"""
    )
    assert "HEIF" in out["formats"]
    assert out["mode"] == "RGB" and out["size"] == out["reference_size"]
    assert out["mean_abs_diff"] < 3  # the same picture (both reduced from libheif's decode)


def test_heic_and_heif_files_are_photos_in_folders_and_zips(tmp_path: Path) -> None:
    assert {".heic", ".heif"} <= set(IMAGE_SUFFIXES)  # the app's upload widgets take their types from here
    folder = tmp_path / "trip"
    folder.mkdir()
    for name in ("a.heic", "b.HEIF"):
        (folder / name).write_bytes(HEIC.read_bytes())
    archive = tmp_path / "trip.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(HEIC, "trip/a.heic")
        zf.write(HEIC, "trip/b.HEIF")
    for source in (folder, archive):
        entries = list(iter_photos(source))
        assert len(entries) == 2 and all(entry.ok for entry in entries), [(e.name, e.skipped) for e in entries]


def test_a_heic_photo_is_identified_like_its_jpeg_alone_and_in_a_batch(identifier, tmp_path: Path) -> None:
    jpeg_bytes = encode_jpeg(decode_image(HEIC, long_side=4096), long_side=4096, quality=95)
    heic, jpeg = identifier.identify(HEIC), identifier.identify(jpeg_bytes)
    assert (heic.species, heic.answer) == (jpeg.species, jpeg.answer)
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(HEIC, "trip/w.heic")
        zf.writestr("trip/w.jpg", jpeg_bytes)
    rows = {row.file: row for row in run_batch(identifier, archive)}
    assert rows["trip/w.heic"].status == "ok", rows["trip/w.heic"].error
    assert rows["trip/w.heic"].individual_id == rows["trip/w.jpg"].individual_id == jpeg.answer


@pytest.mark.parametrize("damage", ["truncated", "header_only"])
def test_a_damaged_heic_is_a_typed_error(damage: str) -> None:
    data = HEIC.read_bytes()
    broken = data[: len(data) // 2] if damage == "truncated" else data[:40]
    with pytest.raises(InvalidImageError, match=r"HEIC|corrupt"):
        decode_image(broken)


def test_a_heic_with_a_zeroed_body_is_decoded_or_refused_never_a_crash() -> None:
    data = HEIC.read_bytes()
    try:
        image = decode_image(data[: len(data) // 2] + bytes(len(data) - len(data) // 2))
    except InvalidImageError:
        return
    assert image.mode == "RGB" and min(image.size) >= 16  # libde265 conceals the damage


# --- decode memory ------------------------------------------------------------------------------------------
_MAKE = r"""
import sys
from PIL import Image
from pillow_heif import register_heif_opener
register_heif_opener(grid_tile_size=512, thumbnails=False)
Image.new(sys.argv[4], (int(sys.argv[2]), int(sys.argv[3])), (20, 90, 140, 200)[: len(sys.argv[4])]).save(
    sys.argv[1], format="HEIF", quality=0, enc_params={"preset": "ultrafast"})
print("{}")
"""

_MEASURE = r"""
import io, json, sys
from PIL import Image
from whales_identify.errors import InvalidImageError
from whales_identify.inputs import imaging
def peak_rss_mb():  # VmHWM: a child of pytest does not inherit its parent's peak, as ru_maxrss would
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
data = open(sys.argv[1], "rb").read()
with Image.open(io.BytesIO(data), formats=imaging.FORMATS) as probe:  # header only
    cost = imaging.decode_cost(probe, data, imaging._target_long_side(*probe.size, None, imaging.LIMITS))
before = peak_rss_mb()
try:
    outcome = "decoded %dx%d" % imaging.decode_image(data).size
except InvalidImageError as exc:
    outcome = "refused: %s" % exc
print(json.dumps({"growth": peak_rss_mb() - before, "cost": cost / 2**20, "outcome": outcome}))
"""

# name → (width, height, mode, decoded)
HEIC_CASES = {
    "iphone_12mp_rgba": (4032, 3024, "RGBA", True),
    "iphone_24mp": (5712, 4284, "RGB", True),  # the 24 MP default of recent iPhones: must decode
    "iphone_48mp": (8064, 6048, "RGB", False),  # "HEIF Max": no reduced decode exists, so refused
}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's")
@pytest.mark.parametrize("name", list(HEIC_CASES))
def test_heic_decoding_memory_is_bounded(name: str, tmp_path: Path) -> None:
    """libheif decodes the whole picture (no reduced decode): measured 7.1-8.6 bytes a pixel of peak growth,
    which ``decode_cost`` covers (it counted 4, as for a PNG: a 48 MP HEIC passed as 226 MB and took +342 MB)."""
    width, height, mode, decodes = HEIC_CASES[name]
    path = tmp_path / f"{name}.heic"
    _run(_MAKE, str(path), str(width), str(height), mode)
    out = _run(_MEASURE, str(path))
    growth, cost, outcome = out["growth"], out["cost"], out["outcome"]
    print(f"{name}: {path.stat().st_size / 1024:.0f} KB, +{growth:.0f} MB peak RSS, cost {cost:.0f} MB: {outcome}")
    assert growth <= BOUND_MB and growth <= cost, f"{name}: +{growth:.0f} MB (cost {cost:.0f} MB): {outcome}"
    if decodes:
        assert outcome == "decoded 1280x960", outcome
    else:
        assert outcome.startswith("refused") and "memory" in outcome, outcome
        assert growth < 16, f"{name}: refused, yet +{growth:.0f} MB: pixels were read before refusing"


def test_reading_a_heic_photos_metadata_never_decodes_its_pixels(tmp_path: Path) -> None:
    path = tmp_path / "big.heic"
    _run(_MAKE, str(path), "8064", "6048", "RGB")
    out = _run(
        r"""
import json, sys
from whales_identify.inputs import imaging  # registers HEIF: ``read_metadata`` opens it too
from whales_identify.inputs.exif import read_metadata
def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
data = open(sys.argv[1], "rb").read()
before = peak_rss_mb()
read_metadata(data)
print(json.dumps({"growth": peak_rss_mb() - before}))
""",
        str(path),
    )
    assert out["growth"] < 16, out


def test_a_heic_in_memory_and_on_disk_decode_alike() -> None:
    assert decode_image(io.BytesIO(HEIC.read_bytes()).getvalue()).tobytes() == decode_image(HEIC).tobytes()
