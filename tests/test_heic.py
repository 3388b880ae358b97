"""HEIC (the iPhone default) decodes through ``decode_image`` once ``inputs.heif.register_heif()`` has run.

The sample, tests/data/north_atlantic_right_whale_w_3212.heic (5 kB), is the JPEG sample of the same name
encoded by pillow-heif (quality 50). Each check runs in a fresh interpreter: registering a Pillow plugin
is process-wide, and tests/test_inputs.py checks the explanation HEIC gets when it is not registered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEIC = ROOT / "tests" / "data" / "north_atlantic_right_whale_w_3212.heic"
JPEG = HEIC.with_suffix(".jpg")


def _run(code: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_heic_sample_is_a_real_small_heic() -> None:
    data = HEIC.read_bytes()
    assert data[4:12] == b"ftypheic" and len(data) <= 60 * 1024


def test_a_heic_photo_decodes_after_register_heif() -> None:
    out = _run(
        f"""
import json
from PIL import Image
from whales_identify.errors import InvalidImageError
from whales_identify.inputs.heif import register_heif
from whales_identify.inputs.imaging import decode_image
try:
    decode_image({str(HEIC)!r})
    before = "decoded"
except InvalidImageError as exc:
    before = str(exc)
registered = register_heif()
again = register_heif()  # idempotent
image = decode_image({str(HEIC)!r})
jpeg = decode_image({str(JPEG)!r})
diff = sum(abs(a - b) for a, b in zip(image.tobytes(), jpeg.tobytes())) / len(jpeg.tobytes())
print(json.dumps({{"before": before, "registered": registered and again, "mode": image.mode,
                  "size": image.size, "jpeg_size": jpeg.size, "mean_abs_diff": diff}}))
"""
    )
    assert "HEIC" in out["before"]  # refused with its explanation until registered
    assert out["registered"] is True
    assert out["mode"] == "RGB" and out["size"] == out["jpeg_size"]
    assert out["mean_abs_diff"] < 12  # the same picture (lossy at quality 50)


def test_a_heic_photo_is_identified_like_its_jpeg() -> None:
    out = _run(
        f"""
import json
from whales_identify.inputs.heif import register_heif
from whales_identify.matching.identifier import Identifier
register_heif()
identifier = Identifier.load()
heic = identifier.identify({str(HEIC)!r})
jpeg = identifier.identify({str(JPEG)!r})
print(json.dumps({{"heic": [heic.species, heic.answer], "jpeg": [jpeg.species, jpeg.answer]}}))
"""
    )
    assert out["heic"] == out["jpeg"]
