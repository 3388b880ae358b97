"""The first photo after install (issue 14, item 5): the mask path compiles nothing.

Importing rembg imports pymatting, whose numba functions compile at import: 33 s on an idle
2-core machine, 193 s on a loaded one, the first time after an install. The mask now runs
u2netp with ONNX Runtime itself; these tests hold it to rembg's mask, byte for byte, and
hold the app's path (identify + mask) free of rembg, pymatting, numba and llvmlite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from whales_identify.config import MODELS_DIR, REPO_DIR
from whales_identify.inputs.imaging import decode_image
from whales_identify.model.mask import Masker

SAMPLES = sorted((REPO_DIR / "tests" / "data").glob("*.jpg"))

# rembg's own u2netp, run in a child with numba's compiler switched off (its functions then run as
# plain Python: importing rembg costs no compilation, and u2netp's predict never calls them anyway).
REMBG_MASKS = """
import json, sys
import numpy as np
import onnxruntime as ort
from PIL import Image
from rembg.sessions.u2netp import U2netpSession

session = U2netpSession("u2netp", ort.SessionOptions(), providers=["CPUExecutionProvider"])
out = {}
for path in json.loads(sys.argv[1]):
    image = Image.open(path).convert("RGB")
    image.thumbnail((640, 640))
    out[path] = np.asarray(session.predict(image)[0])
np.savez(sys.argv[2], **{str(i): out[p] for i, p in enumerate(json.loads(sys.argv[1]))})
"""


def test_the_mask_is_rembgs_u2netp_to_the_byte(tmp_path: Path) -> None:
    assert SAMPLES, "the sample photos ship in tests/data"
    paths = [str(p) for p in SAMPLES]
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "U2NET_HOME": str(MODELS_DIR)}  # rembg finds the shipped file
    subprocess.run(
        [sys.executable, "-c", REMBG_MASKS, json.dumps(paths), str(tmp_path / "rembg.npz")],
        check=True,
        env=env,
        timeout=300,
    )
    reference = np.load(tmp_path / "rembg.npz")
    masker = Masker()
    for index, path in enumerate(paths):
        image = Image.open(path).convert("RGB")
        image.thumbnail((640, 640))
        ours = np.asarray(masker.predict(image))
        assert ours.dtype == np.uint8 and ours.shape == (image.height, image.width)
        assert np.array_equal(ours, reference[str(index)]), path
        assert ours.min() < 50 < ours.max(), f"{path}: a real mask, not a blank one, was compared"


def test_a_uniform_prediction_is_an_empty_mask_not_nan() -> None:
    from whales_identify.model.mask import u2netp_mask

    mask = u2netp_mask(np.full((1, 1, 320, 320), 0.7, dtype=np.float32), (50, 40))
    assert mask.size == (50, 40) and mask.mode == "L"
    assert np.asarray(mask).max() == 0


APP_PATH = """
import json, sys, time
start = time.perf_counter()
import app.state as state
from whales_identify.matching.identifier import Identifier
identifier = Identifier.load()
photo = state.analyse_photo(identifier, "photo.jpg", open(sys.argv[1], "rb").read())
assert photo.error == "" and photo.mask_error == "", (photo.error, photo.mask_error)
assert photo.mask is not None and photo.mask.box is not None
heavy = sorted(name for name in ("rembg", "pymatting", "numba", "llvmlite", "pooch") if name in sys.modules)
print(json.dumps({"heavy": heavy, "seconds": time.perf_counter() - start}))
"""


def test_identifying_and_masking_a_photo_imports_no_compiler() -> None:
    """What the Identify page runs for a photo (app.state.analyse_photo) in a fresh process."""
    env = {**os.environ, "NUMBA_CACHE_DIR": "/nonexistent"}  # were numba used, it could not even cache
    done = subprocess.run(
        [sys.executable, "-c", APP_PATH, str(SAMPLES[0])],
        cwd=REPO_DIR,
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], report


def test_warm_up_loads_the_mask_model_once() -> None:
    masker = Masker()
    assert not masker.loaded
    masker.warm_up()
    assert masker.loaded
    session = masker._session
    masker.warm_up()
    assert masker._session is session
    result = masker.mask(decode_image(SAMPLES[0]))
    assert result.box is not None


def test_the_background_warm_up_loads_the_model_and_the_mask_once() -> None:
    from app import state, warmup

    warmup._warm_up.clear()
    state.get_masker.clear()
    assert warmup.start() is None  # no server in a test process (AppTest included): nothing is started
    warm = warmup._warm_up()  # what start() runs on a server
    assert warmup._warm_up() is warm  # one thread per server, however many runs call it
    assert warm.thread is not None
    warm.thread.join(timeout=300)
    assert warm.done and warm.error == "", warm
    masker = state.get_masker()
    assert masker.loaded  # the page's photo gets the warmed session, not a new one
    assert state.services() is state.services()
    warmup._warm_up.clear()


STATUS_PAGE = """
from app import warmup
warmup.status_line()
"""


def test_the_identify_page_says_what_is_loading_until_it_is_done(monkeypatch) -> None:
    from streamlit.testing.v1 import AppTest

    from app import warmup

    record = warmup.WarmUp(step="loading the animal-mask model")
    monkeypatch.setattr(warmup, "start", lambda: record)
    at = AppTest.from_string(STATUS_PAGE, default_timeout=60).run()
    captions = " ".join(c.value for c in at.caption)
    assert "Getting ready: loading the animal-mask model" in captions
    record.done = True
    at.run()
    assert not at.caption  # nothing once the models are ready
