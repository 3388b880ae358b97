"""The content gate: a blank, uniform, smooth or noise frame is refused, never answered as a whale."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from whales_identify.config import NON_CETACEAN
from whales_identify.inputs.content import GATE, blank_reason, content_stats
from whales_identify.matching.identifier import Identifier

SAMPLES = sorted((Path(__file__).parent / "data").glob("*.jpg"))
SEA = (40, 70, 90)


def _jpeg(pixels: np.ndarray, quality: int = 75) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _frames() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    h, w = 480, 640
    frames = {
        name: np.broadcast_to(np.asarray(colour, np.uint8), (h, w, 3)).copy()
        for name, colour in {"black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128), "sea": SEA}.items()
    }
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    frames["horizontal gradient"] = np.broadcast_to(x * 255, (h, w, 3)).astype(np.uint8)
    frames["sea-to-sky gradient"] = (np.asarray(SEA) * (1 - y) + np.asarray((180, 200, 220)) * y + 0 * x).astype(
        np.uint8
    )
    for sigma in (3, 20, 80):
        noise = rng.normal(0, sigma, (h, w, 3))
        frames[f"grey noise σ={sigma}"] = np.clip(128 + noise, 0, 255).astype(np.uint8)
        frames[f"sea noise σ={sigma}"] = np.clip(np.asarray(SEA) + noise, 0, 255).astype(np.uint8)
    frames["uniform random pixels"] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return frames


FRAMES = _frames()


@pytest.mark.parametrize("name", list(FRAMES))
def test_blank_uniform_smooth_and_noise_frames_are_refused(name: str) -> None:
    assert blank_reason(FRAMES[name])
    # the same frame after JPEG compression (as a camera or an upload would give it)
    decoded = np.asarray(Image.open(io.BytesIO(_jpeg(FRAMES[name]))).convert("RGB"))
    assert blank_reason(decoded)


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_every_real_sample_photo_passes_with_room_to_spare(path: Path) -> None:
    image = Image.open(path).convert("RGB")
    assert blank_reason(image) == ""
    stats = content_stats(image)
    # with room: the lowest of the 4,433 shared photos passes each threshold by at least a quarter
    assert stats.coarse_std > 1.25 * GATE.min_coarse_std
    assert stats.structure > 1.25 * GATE.min_structure
    assert stats.detail > 1.25 * GATE.min_detail


def test_a_small_animal_in_a_flat_sea_is_not_blank() -> None:
    frame = FRAMES["sea"].copy()
    frame[200:260, 300:340] = (25, 25, 28)  # a dark fin, 0.8 % of the frame
    assert blank_reason(frame) == ""
    vignette = np.clip(
        np.asarray(SEA)
        + 120 * np.hypot(*np.meshgrid(np.linspace(-0.5, 0.5, 640), np.linspace(-0.5, 0.5, 480)))[..., None],
        0,
        255,
    )
    assert blank_reason(vignette.astype(np.uint8))  # a smooth radial field: nothing in it


@pytest.mark.parametrize("name", ["black", "grey", "sea", "sea noise σ=20", "uniform random pixels"])
def test_the_identifier_rejects_them_without_a_species_or_candidates(identifier: Identifier, name: str) -> None:
    result = identifier.identify(_jpeg(FRAMES[name]))
    assert result.rejected and result.answer == "rejected" and result.rejection_reason
    assert result.species == NON_CETACEAN and result.top5 == [] and not result.new_individual
    assert all(p == 0 for n, p in result.species_probabilities.items() if n != NON_CETACEAN)


def test_a_batch_mixes_refused_frames_and_real_photos_in_order(identifier: Identifier) -> None:
    sources = [("grey.jpg", _jpeg(FRAMES["grey"]))] + [(p.name, p.read_bytes()) for p in SAMPLES[:2]]
    sources.append(("noise.jpg", _jpeg(FRAMES["grey noise σ=20"])))
    outcomes = dict(identifier.identify_many(sources))
    assert list(outcomes) == [name for name, _ in sources]
    assert outcomes["grey.jpg"].rejected and outcomes["noise.jpg"].rejected
    for path in SAMPLES[:2]:
        single = identifier.identify(path)
        assert outcomes[path.name].answer == single.answer
