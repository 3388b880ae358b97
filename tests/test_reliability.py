"""Faults and hostile conditions: a crash mid-enrolment, a mismatched catalogue, a page that fails,
thousands of photos in bounded memory, concurrent sessions on one model.

All on the real product (the bundled model, the real SQLite catalogue, the real app); only the
inputs are generated.
"""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, TiffImagePlugin

from whales_identify.batch.local import identify_entries
from whales_identify.catalog.store import Catalog
from whales_identify.config import DEFAULT_CATALOGUE, DEFAULT_CHECKPOINT
from whales_identify.errors import ModelLoadError
from whales_identify.inputs.archive import ArchiveEntry
from whales_identify.inputs.text import csv_safe, csv_unsafe
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.identifier import Identifier

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


def _jpeg(seed: int, size: tuple[int, int] = (32, 32)) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


# --- the catalogue survives a crash in the middle of an enrolment ---------------------------------------
_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from whales_identify.catalog.store import Catalog, NewImage

    def record(i):
        v = np.ones(48, np.float32) / np.sqrt(48)
        crop = bytes([i % 256]) * 400_000  # big rows: the open transaction spills pages into the WAL
        return NewImage(f"K{i}", "humpback_whale", f"{i:064x}", b"thumb", crop, v, "v1", new=True,
                        source_name=f"{i}.jpg")

    class StallsMidWrite(list):
        # add_images walks the batch twice (rule check, then the inserts): stall inside the inserts.
        passes = 0
        def __iter__(self):
            StallsMidWrite.passes += 1
            for n, item in enumerate(list.__iter__(self)):
                if StallsMidWrite.passes == 2 and n == 12:
                    print("MID-TRANSACTION", flush=True)
                    time.sleep(600)
                yield item

    catalog = Catalog(sys.argv[1], model_version="v1", actor="doomed")
    catalog.add_images([record(i) for i in range(5)])  # committed
    print("COMMITTED", flush=True)
    catalog.add_images(StallsMidWrite(record(i) for i in range(5, 30)))
    """
)


def test_sigkill_mid_enrolment_leaves_a_consistent_catalogue(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert child.stdout.readline().strip() == "COMMITTED"
        assert child.stdout.readline().strip() == "MID-TRANSACTION"
        wal = path.with_name(path.name + "-wal")
        assert wal.exists() and wal.stat().st_size > 1_000_000, "the open transaction had reached the WAL"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Catalog(path, model_version="v1") as catalog:
        stats = catalog.stats()
        assert (stats["individuals"], stats["images"]) == (5, 5)  # the committed batch, nothing of the other
        assert len(catalog.audit_log()) == 5
        assert sorted(catalog.individuals(include_bundled=False)["id"]) == [f"K{i}" for i in range(5)]
        # the lock died with the process: the next writer is not blocked
        from whales_identify.catalog.store import NewImage

        v = np.ones(48, np.float32) / np.sqrt(48)
        catalog.add_images([NewImage("AFTER", "beluga", "f" * 64, b"t", b"c", v, "v1", new=True)])
        assert catalog.stats()["images"] == 6


# --- a catalogue made by another model is refused with an explanation -----------------------------------
def test_bundled_catalogue_from_another_model_version_is_explained(tmp_path: Path) -> None:
    bundled = Gallery.load(DEFAULT_CATALOGUE)
    assert bundled.model_version, "the bundled catalogue records the model version that made it"
    foreign = Gallery(
        bundled.embeddings,
        bundled.individual_ids,
        bundled.species,
        bundled.image_names,
        bundled.thumbnails,
        "0123456789ab",
    )
    foreign.save(tmp_path / "old_catalogue.npz")
    with pytest.raises(ModelLoadError) as info:
        Identifier.load(DEFAULT_CHECKPOINT, catalogue=tmp_path / "old_catalogue.npz")
    message = str(info.value)
    assert "old_catalogue.npz" in message and "0123456789ab" in message and bundled.model_version in message
    assert "bundle" in message
    with pytest.raises(ModelLoadError, match="model version"):
        Identifier.load(DEFAULT_CHECKPOINT, catalogue=foreign)
    # the matching pair, and no catalogue at all, still load
    assert Identifier.load(DEFAULT_CHECKPOINT, catalogue=None).model_version == bundled.model_version


# --- batches stream: a bounded number of photos in flight ------------------------------------------------
def test_batch_streams_with_a_bounded_number_of_photos_in_flight(identifier: Identifier) -> None:
    n_photos, batch_size = 192, 8
    state = {"made": 0, "done": 0, "peak": 0}

    def entries():
        for i in range(n_photos):
            if i % 50 == 3:
                yield ArchiveEntry(f"notes{i}.txt", None, "not a photo (by its extension); skipped")
            if i % 61 == 5:
                state["made"] += 1
                yield ArchiveEntry(f"broken{i}.jpg", b"\xff\xd8 not really a jpeg")
                continue
            state["made"] += 1  # bytes made on demand, as iter_zip reads members
            state["peak"] = max(state["peak"], state["made"] - state["done"])
            yield ArchiveEntry(f"p{i:04d}.jpg", _jpeg(i))

    statuses: dict[str, int] = {}
    names = []
    for row in identify_entries(identifier, entries(), batch_size=batch_size):
        statuses[row.status] = statuses.get(row.status, 0) + 1
        if row.status != "skipped":
            state["done"] += 1
            names.append(row.file)
    limit = identifier.max_photos_in_flight(batch_size)
    assert limit < n_photos // 2  # a real bound, not the whole stream
    assert state["peak"] <= limit, f"{state['peak']} photos alive at once"
    assert statuses == {"ok": n_photos - 4, "error": 4, "skipped": 4}
    assert len(names) == len(set(names)) == n_photos


# --- one model, many sessions: concurrent answers equal sequential ones ---------------------------------
def _summary(result) -> tuple:
    return (
        result.species,
        round(result.species_probability, 4),
        result.answer,
        tuple((c.individual_id, round(c.probability, 4)) for c in result.top5),
        result.rejected,
    )


def test_concurrent_identification_gives_the_sequential_answers(identifier: Identifier) -> None:
    photos = sorted(DATA.glob("*.jpg"))
    assert len(photos) >= 5
    expected = {p.name: _summary(identifier.identify(p)) for p in photos}
    jobs = [photos[(i * 3) % len(photos)] for i in range(24)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda p: (p.name, _summary(identifier.identify(p.read_bytes()))), jobs))
    for name, summary in got:
        assert summary == expected[name], name
    # batches from two threads at once agree too
    sources = [(p.name, p.read_bytes()) for p in photos]
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda _: dict(identifier.identify_many(sources, batch_size=4, verify=True)), range(2)))
    for run in runs:
        for name, result in run.items():
            assert _summary(result)[:3] == expected[name][:3]
            assert np.allclose([c.probability for c in result.top5], [p for _, p in expected[name][3]], atol=2e-3)


# --- the app: a failing page does not break the session --------------------------------------------------
def test_a_failing_page_leaves_the_other_pages_working(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("WHALE_ID_HOME", str(tmp_path / "home"))
    at = AppTest.from_file(str(ROOT / "app" / "streamlit_app.py"), default_timeout=180)
    at.run()
    assert not at.exception

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    with monkeypatch.context() as patch:
        patch.setattr(Catalog, "individuals", broken)
        at.switch_page("views/catalogue.py").run()
        assert not at.exception
        errors = [e.value for e in at.error]
        assert errors and "Something went wrong" in errors[0] and "secret internal detail" not in errors[0]

    at.switch_page("views/identify.py").run()
    photo = sorted(DATA.glob("*.jpg"))[0]
    at.file_uploader[0].set_value((photo.name, photo.read_bytes(), "image/jpeg")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.get("vega_lite_chart"), "the identify page still identifies"
    at.switch_page("views/catalogue.py").run()  # and the failed page recovers once its fault is gone
    assert not at.exception and not at.error, [e.value for e in at.error]


# --- damaged model files: a typed error with a plain message, never unsafe advice ------------------------------
UNSAFE_ADVICE = ("allow_pickle", "weights_only", "pickle.load", "trust")


def _whole_story(exc: BaseException) -> str:
    """The message and everything a traceback or a log would show with it (causes, contexts)."""
    import traceback

    return "".join(traceback.format_exception(exc))


def _garbage_checkpoints(folder: Path) -> dict[str, Path]:
    import pickle

    import torch

    real = DEFAULT_CHECKPOINT.read_bytes()
    files = {
        "random bytes": b"garbage\x00\x01\x02",
        "a plain pickle": pickle.dumps({"a": 1}),
        "truncated": real[: len(real) // 2],
        "empty": b"",
    }
    paths = {}
    for kind, data in files.items():
        paths[kind] = folder / f"{kind.replace(' ', '_')}.pt"
        paths[kind].write_bytes(data)
    paths["a pickled object"] = folder / "object.pt"
    torch.save({"x": Path("/tmp")}, paths["a pickled object"])  # loadable only with weights_only=False
    paths["another format"] = folder / "other.pt"
    torch.save({"format_version": 1, "meta": {}}, paths["another format"])  # right marker, missing parts
    return paths


def test_a_damaged_checkpoint_is_a_plain_model_load_error(tmp_path: Path) -> None:
    from whales_identify.model.checkpoint import load_checkpoint

    for kind, path in _garbage_checkpoints(tmp_path).items():
        with pytest.raises(ModelLoadError) as info:
            load_checkpoint(path)
        story = _whole_story(info.value)
        assert path.name in str(info.value), kind
        assert not any(advice in story for advice in UNSAFE_ADVICE), (kind, story)


def _garbage_catalogues(folder: Path) -> dict[str, Path]:
    real = DEFAULT_CATALOGUE.read_bytes()
    paths = {kind: folder / f"{kind.replace(' ', '_')}.npz" for kind in ("random", "truncated", "empty")}
    paths["random"].write_bytes(b"garbage, not a catalogue")
    paths["truncated"].write_bytes(real[:20_000])
    paths["empty"].write_bytes(b"")
    paths["object array"] = folder / "object.npz"
    with paths["object array"].open("wb") as handle:
        np.save(handle, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    paths["other arrays"] = folder / "other.npz"
    np.savez(paths["other arrays"], a=np.zeros(3))
    paths["ragged"] = folder / "ragged.npz"
    with np.load(DEFAULT_CATALOGUE) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["individual_ids"] = arrays["individual_ids"][:3]
    np.savez(paths["ragged"], **arrays)
    return paths


def test_a_damaged_catalogue_is_a_plain_model_load_error(tmp_path: Path) -> None:
    for kind, path in _garbage_catalogues(tmp_path).items():
        with pytest.raises(ModelLoadError) as info:
            Gallery.load(path)
        story = _whole_story(info.value)
        assert path.name in str(info.value), kind
        assert not any(advice in story for advice in UNSAFE_ADVICE), (kind, story)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("temperature: [1, 2\n", "not valid YAML"),
        ("- 1\n- 2\n", "should map each setting to its value"),
        ("temperature: warm\n", "temperature should be a number"),
        ("temperature: .nan\n", "temperature should be a finite number"),
        ("top_k: 2.5\n", "top_k should be a whole number"),
        ("top_k: true\n", "top_k should be a whole number"),
        ("tuned_on: [a, b]\n", "tuned_on should be text"),
        ("\x00\x01binary", "cannot be read"),
    ],
)
def test_a_malformed_inference_config_is_a_plain_model_load_error(tmp_path: Path, text: str, message: str) -> None:
    from whales_identify.config import InferenceConfig

    path = tmp_path / "inference.yaml"
    path.write_text(text)
    with pytest.raises(ModelLoadError, match=message) as info:
        InferenceConfig.load(path)
    assert "inference.yaml" in str(info.value)


def test_the_cli_reports_damaged_model_files_without_a_traceback(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "inference.yaml"
    bad_yaml.write_text("temperature: [1, 2\n")
    photo = next(DATA.glob("*.jpg"))
    cases = [
        ("--inference-config", str(bad_yaml)),
        ("--catalogue", str(_garbage_catalogues(tmp_path)["random"])),
        ("--checkpoint", str(_garbage_checkpoints(tmp_path)["a plain pickle"])),
    ]
    for option, value in cases:
        done = subprocess.run(
            [sys.executable, "-m", "whales_identify", "identify", str(photo), option, value, "--bundled-only"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2, (option, done.stderr)
        assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr, (option, done.stderr)
        assert not any(advice in done.stderr for advice in UNSAFE_ADVICE), (option, done.stderr)


def _jpeg_at(latitude: int, seed: int) -> bytes:
    """A photo whose EXIF puts it at ``latitude`` degrees north, 20 east."""
    rational = TiffImagePlugin.IFDRational
    exif = Image.Exif()
    exif[ExifTags.IFD.GPSInfo] = {
        1: "N",
        2: (rational(latitude), rational(0), rational(0)),
        3: "E",
        4: (rational(20), rational(0), rational(0)),
    }
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


@pytest.mark.parametrize("batch_size", [1, 2])
def test_entries_with_the_same_name_each_keep_their_own_gps(identifier, batch_size: int) -> None:
    """The batch looked a photo's metadata up by name: with two entries of one name (the app's uploads of
    two ``IMG_0001.jpg``, any caller's own entries) the first got the second's position and the second none.
    Now outcome and bytes are paired by position."""
    entries = [
        ArchiveEntry("IMG_0001.jpg", _jpeg_at(10, 1), member=0),
        ArchiveEntry("skipped.txt", None, "not a photo", member=1),
        ArchiveEntry("IMG_0001.jpg", _jpeg_at(30, 2), member=2),
        ArchiveEntry("IMG_0001.jpg", b"not a jpeg", member=3),
        ArchiveEntry("IMG_0001.jpg", _jpeg_at(50, 3), member=4),
    ]
    rows = [row for row in identify_entries(identifier, entries, batch_size=batch_size) if row.status != "skipped"]
    assert [row.status for row in rows] == ["ok", "ok", "error", "ok"]
    assert [row.latitude for row in rows] == [pytest.approx(10), pytest.approx(30), None, pytest.approx(50)]


def test_csv_unsafe_reads_back_exactly_what_csv_safe_wrote() -> None:
    texts = ["=x.jpg", "+1 fin.jpg", "@home", "-dorsal", "\tx", "\rx", "-33.9", "+3", "'=q", "'abc", "abc", "'", ""]
    for text in texts:
        cell = csv_safe(text)
        assert csv_unsafe(cell) == text or (text.startswith("'") and csv_safe(csv_unsafe(cell)) == cell), text
    assert csv_unsafe("'=x.jpg") == "=x.jpg" and csv_unsafe("'-33.9") == "'-33.9" and csv_unsafe("'abc") == "'abc"
