"""The fast path (ONNX Runtime, reduced decoding, the parallel batch pipeline) against the reference."""

from __future__ import annotations

import io
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from threadpoolctl import threadpool_info, threadpool_limits

from whales_identify.config import DEFAULT_CATALOGUE, DEFAULT_CHECKPOINT, SpeedConfig
from whales_identify.errors import InvalidImageError, ModelLoadError
from whales_identify.inputs.imaging import LIMITS
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.identifier import Identifier
from whales_identify.model.engines import INFO_KEY, VERSION_KEY, OnnxEngine, onnx_path_for
from whales_identify.model.threads import single_threaded_blas
from whales_identify.model.torch_engine import export_onnx

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def reference() -> Identifier:
    return Identifier.load(engine="torch")


def test_the_bundled_model_runs_on_onnx_runtime_by_default(identifier: Identifier) -> None:
    assert identifier.engine.name == "onnx"
    assert OnnxEngine(onnx_path_for(DEFAULT_CHECKPOINT)).model_version() == identifier.model_version


def test_onnx_matches_pytorch_on_real_photos(identifier: Identifier, reference: Identifier) -> None:
    photos = sorted(DATA.glob("*.jpg"))
    images = [identifier.prepare_input(p) for p in photos]
    fast = identifier.forward(images)
    slow = reference.forward(images)
    for path, a, b in zip(photos, fast, slow, strict=True):
        assert np.abs(a.embedding - b.embedding).max() < 1e-4, path.name
        assert np.abs(a.species_logits - b.species_logits).max() < 1e-3, path.name
        fast_answer, slow_answer = identifier.decide(a), reference.decide(b)
        assert [c.individual_id for c in fast_answer.top5] == [c.individual_id for c in slow_answer.top5]
        assert (fast_answer.answer, fast_answer.species) == (slow_answer.answer, slow_answer.species)


def test_one_photo_and_a_batch_give_the_same_answer(identifier: Identifier) -> None:
    photos = sorted(DATA.glob("*.jpg"))
    items = [(p.name, p.read_bytes()) for p in photos] + [("broken.jpg", b"\xff\xd8 not a jpeg")]
    items.insert(2, ("empty.jpg", b""))
    for verify in (False, True):  # the batch verifies only when asked; one photo does by default
        batch = list(identifier.identify_many(items, batch_size=2, verify=verify))
        assert [name for name, _ in batch] == [name for name, _ in items]  # input order, errors in place
        for (name, data), (_, outcome) in zip(items, batch, strict=True):
            if name in ("broken.jpg", "empty.jpg"):
                assert isinstance(outcome, InvalidImageError)
                continue
            single = identifier.identify(data, verify=verify)
            assert outcome.answer == single.answer
            assert [c.individual_id for c in outcome.top5] == [c.individual_id for c in single.top5]
            assert [e.inliers for e in outcome.evidence] == [e.inliers for e in single.evidence]
            assert np.abs(outcome.embedding - single.embedding).max() < 1e-4


def test_the_onnx_engine_runs_a_batch_one_photo_at_a_time_on_fixed_shapes(identifier: Identifier) -> None:
    """Sessions have every shape fixed (batch 1: the 'same'-padding arithmetic folds away at load); a
    batch of several photos gives, row by row, what each photo gives alone."""
    engine = identifier.engine
    batch = np.random.default_rng(2).uniform(-1, 1, (3, 3, 224, 224)).astype(np.float32)
    embeddings, logits = engine.run(batch, 1)
    session = engine._pool(1).get_nowait()  # the one that ran (back in its pool)
    try:
        assert session.get_inputs()[0].shape == [1, 3, 224, 224]
    finally:
        engine._pool(1).put(session)
    assert embeddings.shape == (3, 512) and logits.shape[0] == 3
    for row in range(3):
        alone_e, alone_s = engine.run(batch[row : row + 1], 1)
        np.testing.assert_allclose(embeddings[row], alone_e[0], atol=1e-6)
        np.testing.assert_allclose(logits[row], alone_s[0], atol=1e-5)
    assert not np.allclose(embeddings[0], embeddings[1])  # three photos, three answers


def test_a_stale_export_is_never_used(tmp_path: Path) -> None:
    checkpoint = tmp_path / "whale_id.pt"
    shutil.copyfile(DEFAULT_CHECKPOINT, checkpoint)
    reference = Identifier.load(checkpoint, catalogue=None, engine="torch")
    export_onnx(
        reference.engine.model, onnx_path_for(checkpoint), replace(reference.network, model_version="another-model")
    )
    assert Identifier.load(checkpoint, catalogue=None).engine.name == "torch"  # auto falls back
    with pytest.raises(ModelLoadError, match="re-export"):
        Identifier.load(checkpoint, catalogue=None, engine="onnx")


def test_a_fresh_export_is_picked_up_and_stamped(tmp_path: Path) -> None:
    checkpoint = tmp_path / "whale_id.pt"
    shutil.copyfile(DEFAULT_CHECKPOINT, checkpoint)
    with pytest.raises(ModelLoadError, match="export-onnx"):
        Identifier.load(checkpoint, catalogue=None, engine="onnx")  # no export yet
    reference = Identifier.load(checkpoint, catalogue=None, engine="torch")
    path = export_onnx(reference.engine.model, onnx_path_for(checkpoint), reference.network)
    engine = OnnxEngine(path)
    assert engine.model_version() == reference.model_version
    assert Identifier.load(checkpoint, catalogue=DEFAULT_CATALOGUE).engine.name == "onnx"
    import onnx

    assert {p.key for p in onnx.load(str(path)).metadata_props} >= {VERSION_KEY, INFO_KEY}
    served = Identifier.load(checkpoint, catalogue=None)
    assert served.network.individuals == reference.network.individuals
    np.testing.assert_allclose(served.network.prototypes, reference.network.prototypes, atol=1e-6)


def test_a_broken_onnx_file_is_a_clear_error_and_auto_falls_back(tmp_path: Path) -> None:
    checkpoint = tmp_path / "whale_id.pt"
    shutil.copyfile(DEFAULT_CHECKPOINT, checkpoint)
    bad = onnx_path_for(checkpoint)
    bad.write_bytes(b"this is not a model")  # e.g. an export cut short
    with pytest.raises(ModelLoadError, match="not a readable ONNX model"):
        OnnxEngine(bad)
    with pytest.raises(ModelLoadError, match="not a readable ONNX model"):
        Identifier.load(checkpoint, catalogue=None, engine="onnx")
    assert Identifier.load(checkpoint, catalogue=None).engine.name == "torch"  # the app still starts


def test_unknown_engine_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="unknown engine"):
        Identifier.load(catalogue=None, engine="tensorrt")


def test_a_large_jpeg_is_decoded_straight_to_the_network_size(identifier: Identifier) -> None:
    photo = Image.open(sorted(DATA.glob("*.jpg"))[0]).convert("RGB").resize((4000, 3000))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=85)
    side = SpeedConfig().identify_long_side
    assert max(identifier.prepare_input(buffer.getvalue()).size) == side
    assert max(identifier.prepare(buffer.getvalue()).size) == LIMITS.decode_long_side  # display size unchanged
    # A panorama keeps a usable short side instead of being shrunk under the minimum.
    strip = Image.new("RGB", (3000, 40), (20, 60, 90))
    strip_bytes = io.BytesIO()
    strip.save(strip_bytes, format="JPEG")
    assert min(identifier.prepare_input(strip_bytes.getvalue()).size) >= 16


def test_best_score_per_individual_equals_brute_force() -> None:
    rng = np.random.default_rng(3)
    n = 2_000
    ids = np.array([f"ind{x:03d}" if x % 9 else "" for x in rng.integers(0, 400, n)])
    gallery = Gallery(rng.standard_normal((n, 16)), ids, np.full(n, "humpback_whale"), np.arange(n).astype(str))
    sims = rng.standard_normal(n).astype(np.float32)
    expected = [sims[gallery.individual_ids == name].max() for name in gallery.individuals]
    assert np.array_equal(gallery.best_per_individual(sims), np.asarray(expected, np.float32))
    assert len(Gallery.empty(16).best_per_individual(np.zeros(0, np.float32))) == 0


def _blas_threads() -> int:
    return max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")


def test_blas_is_single_threaded_only_while_a_batch_runs() -> None:
    with threadpool_limits(2, user_api="blas"):  # so that "back to before" is not already 1
        before = _blas_threads()
        assert before == 2
        _check_blas_limit(before)


def _check_blas_limit(before: int) -> None:
    with single_threaded_blas():
        assert _blas_threads() == 1
        with single_threaded_blas():  # a second, overlapping batch
            assert _blas_threads() == 1
        assert _blas_threads() == 1  # the first batch still runs
    assert _blas_threads() == before


def test_a_batch_abandoned_half_way_releases_its_threads(identifier: Identifier) -> None:
    photo = sorted(DATA.glob("*.jpg"))[0].read_bytes()
    with threadpool_limits(2, user_api="blas"):
        stream = identifier.identify_many((f"{i}.jpg", photo) for i in range(50))
        assert next(stream)[0] == "0.jpg"
        stream.close()  # the caller stops early (a closed page, a break)
        assert _blas_threads() == 2


def test_an_unexpected_error_in_a_batch_propagates_and_leaves_nothing_behind(identifier: Identifier) -> None:
    photo = sorted(DATA.glob("*.jpg"))[0].read_bytes()
    before = _blas_threads()

    def items():
        yield "ok.jpg", photo
        yield "odd.jpg", 12345  # neither bytes, a path nor an image: a caller's bug, not bad input

    with pytest.raises(TypeError):
        list(identifier.identify_many(items()))
    assert _blas_threads() == before
    assert [name for name, _ in identifier.identify_many([("again.jpg", photo)])] == ["again.jpg"]


def test_serving_imports_neither_torch_nor_timm() -> None:
    """The ONNX path answers from the export alone: torch and timm cost seconds and 300+ MB to import."""
    import subprocess
    import sys

    sample = next(p for p in sorted((DEFAULT_CHECKPOINT.parents[1] / "tests" / "data").glob("*.jpg")))
    code = (
        "import sys; from whales_identify import Identifier; "
        f"r = Identifier.load().identify({str(sample)!r}); "
        "print(r.answer, 'torch' in sys.modules, 'timm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1:] == ["False", "False"], out
