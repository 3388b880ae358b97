"""The animal mask: box arithmetic, the overlay, and u2netp run offline from models/."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from whales_identify.config import MaskConfig
from whales_identify.errors import ModelLoadError
from whales_identify.model.mask import AnimalMask, Masker, crop_to_box, mask_box, overlay


def _mask(size=(100, 80), box=(10, 20, 60, 50)) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
    return mask


def test_mask_box_is_exact_and_counts_coverage() -> None:
    box, coverage = mask_box(_mask())
    assert box == (10, 20, 60, 50)
    assert coverage == pytest.approx(50 * 30 / (100 * 80))


def test_mask_box_ignores_specks_and_faint_values() -> None:
    specks = Image.new("L", (200, 200), 0)
    specks.putpixel((5, 5), 255)
    assert mask_box(specks) == (None, pytest.approx(1 / 40000))
    faint = Image.new("L", (50, 50), 100)  # below the 0.5 threshold everywhere
    assert mask_box(faint)[0] is None


def test_overlay_opacity_and_box() -> None:
    photo = Image.new("RGB", (100, 80), (10, 20, 30))
    mask = _mask()
    assert np.array_equal(np.asarray(overlay(photo, mask, 0.0)), np.asarray(photo))
    full = np.asarray(overlay(photo, mask, 1.0, color=(0, 200, 255)))
    assert tuple(full[30, 30]) == (0, 200, 255) and tuple(full[5, 5]) == (10, 20, 30)
    half = np.asarray(overlay(photo, mask, 0.5, color=(0, 200, 255)))
    assert 90 < half[30, 30][1] < 115  # halfway between 20 and 200
    boxed = np.asarray(overlay(photo, None, 0.5, box=(10, 20, 60, 50), box_color=(255, 196, 0)))
    assert tuple(boxed[20, 30]) == (255, 196, 0) and tuple(boxed[35, 30]) == (10, 20, 30)


def test_overlay_resizes_a_mask_of_another_size() -> None:
    photo = Image.new("RGB", (200, 160))
    assert overlay(photo, _mask(), 0.4).size == (200, 160)


def test_crop_to_box_keeps_a_margin_inside_the_photo() -> None:
    photo = Image.new("RGB", (100, 80))
    assert crop_to_box(photo, None) is photo
    crop = crop_to_box(photo, (0, 0, 50, 40), margin=0.1)
    assert crop.size == (55, 44)


def test_png_round_trip() -> None:
    mask = _mask()
    png = AnimalMask(mask, (10, 20, 60, 50), 0.19).png()
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(mask))


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    masker = Masker(MaskConfig(model_path=str(tmp_path / "nope.onnx")))
    with pytest.raises(ModelLoadError, match="mask model is missing"):
        masker.mask(Image.new("RGB", (64, 64)))


@pytest.fixture(scope="module")
def masker() -> Masker:
    masker = Masker()
    if not masker.model_path.is_file():
        pytest.fail(f"{masker.model_path} must ship with the repository")
    return masker


def _synthetic_whale(size=(640, 400)) -> Image.Image:
    """A dark fin-shaped body on bright, textured water: an easy salient object."""
    rng = np.random.default_rng(0)
    water = (rng.normal(0, 6, (size[1], size[0], 3)) + np.array([150, 185, 205])).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(water)
    draw = ImageDraw.Draw(image)
    draw.ellipse((120, 200, 520, 330), fill=(45, 50, 58))
    draw.polygon([(300, 215), (360, 110), (390, 215)], fill=(45, 50, 58))
    return image


def test_u2netp_finds_the_animal_offline(masker: Masker, monkeypatch: pytest.MonkeyPatch) -> None:
    import pooch

    def no_network(*args, **kwargs):
        raise AssertionError("the mask model must never be downloaded")

    monkeypatch.setattr(pooch, "retrieve", no_network)
    image = _synthetic_whale()
    result = masker.mask(image)
    assert result.mask.size == image.size and result.mask.mode == "L"
    assert result.box is not None
    left, top, right, bottom = result.box
    # the box covers the body and is not the whole photo
    assert left < 160 and right > 480 and top < 220 and bottom > 300
    assert (right - left) * (bottom - top) < 0.8 * image.width * image.height
    assert 0.05 < result.coverage < 0.6


def test_blank_photo_gives_no_confident_box_or_a_valid_one(masker: Masker) -> None:
    result = masker.mask(Image.new("RGB", (300, 200), (120, 160, 190)))
    if result.box is not None:
        left, top, right, bottom = result.box
        assert 0 <= left < right <= 300 and 0 <= top < bottom <= 200
