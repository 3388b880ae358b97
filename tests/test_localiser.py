"""The animal-box localiser: the shipped model on real and made-up photos, its geometry helpers, and its
training (``train-localiser``) end to end on a tiny made-up dataset, offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from conftest import sample_photo
from PIL import Image, ImageDraw

from whales_identify.cli.main import main
from whales_identify.config import NON_CETACEAN, LocaliserConfig
from whales_identify.inputs.imaging import decode_image
from whales_identify.model.localiser import Box, Localiser, grow_box, letterbox, load_localiser

DATA = Path(__file__).parent / "data"


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def sea_with_fin(width: int, height: int, fin: tuple[int, int, int, int], seed: int) -> Image.Image:
    """Grey-blue sea with noise and a dark dorsal fin (a swept-back triangle) filling the box ``fin``."""
    rng = np.random.default_rng(seed)
    sea = np.clip(np.array([70, 95, 115]) + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(sea)
    x1, y1, x2, y2 = fin
    w, h = x2 - x1, y2 - y1
    ImageDraw.Draw(image).polygon(
        [(x1, y2), (x1 + 0.55 * w, y1), (x1 + 0.7 * w, y1 + 0.2 * h), (x2, y2)], fill=(25, 25, 28)
    )
    return image


@pytest.fixture(scope="module")
def shipped() -> Localiser:
    localiser = load_localiser()
    assert localiser is not None, "models/localiser.onnx is missing"
    return localiser


def test_shipped_localiser_finds_the_animal_in_every_cetacean_sample(shipped: Localiser) -> None:
    samples = pd.read_csv(DATA / "samples.csv", dtype=str, keep_default_na=False)
    cetaceans = samples[samples["species"] != NON_CETACEAN]
    assert len(cetaceans) >= 5
    for name in cetaceans["image"]:
        photo = decode_image(DATA / name)
        found = shipped.locate(photo)
        assert found.objectness >= 0.05, name
        assert found.box is not None, name
        x1, y1, x2, y2 = found.box
        assert 0 <= x1 < x2 <= photo.width and 0 <= y1 < y2 <= photo.height, (name, found.box)


def test_shipped_localiser_boxes_a_small_fin_on_a_noisy_sea(shipped: Localiser) -> None:
    fin = (380, 200, 500, 290)  # about 3.5 % of the frame, right of centre
    found = shipped.locate(sea_with_fin(640, 480, fin, seed=3))
    assert found.box is not None
    assert iou(found.box, fin) >= 0.3, found


@pytest.mark.parametrize(
    ("box", "margin", "size"),
    [
        ((100.0, 100.0, 200.0, 150.0), 0.3, (640, 480)),  # in the middle
        ((2.0, 5.0, 60.0, 40.0), 0.3, (640, 480)),  # in the top-left corner: moved inside
        ((600.0, 430.0, 638.0, 478.0), 0.5, (640, 480)),  # in the bottom-right corner
        ((10.0, 200.0, 40.0, 260.0), 0.0, (300, 400)),  # tall, no margin, portrait photo
    ],
)
def test_grow_box_is_a_square_around_the_box_inside_the_photo(box: Box, margin: float, size: tuple[int, int]) -> None:
    left, top, right, bottom = grow_box(box, margin, *size)
    assert abs((right - left) - (bottom - top)) <= 1
    assert right - left >= max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * margin) - 1
    assert left <= box[0] and top <= box[1] and right >= box[2] and bottom >= box[3]
    assert 0 <= left < right <= size[0] and 0 <= top < bottom <= size[1]


def test_grow_box_larger_than_the_photo_is_clipped_to_it() -> None:
    left, top, right, bottom = grow_box((50.0, 20.0, 250.0, 180.0), 0.3, 300, 200)
    assert (left, top, right, bottom) == (0, 0, 300, 200)


@pytest.mark.parametrize("size", [(300, 200), (120, 400), (192, 192), (1000, 37)])
def test_letterbox_then_to_photo_gives_the_box_back(size: tuple[int, int]) -> None:
    photo = Image.new("RGB", size, (200, 30, 30))
    square, placement = letterbox(photo, 192, pad_value=128)
    assert square.shape == (192, 192, 3) and square.dtype == np.uint8
    box = (size[0] * 0.1, size[1] * 0.25, size[0] * 0.6, size[1] * 0.9)
    in_square = placement.to_square(box)
    assert np.all((in_square >= 0) & (in_square <= 1))
    assert np.allclose(placement.to_photo(in_square), box, atol=1e-6)
    whole = placement.to_square((0.0, 0.0, float(size[0]), float(size[1]))) * 192
    x1, y1, x2, y2 = (round(v) for v in whole)
    assert (square[y1:y2, x1:x2] == (200, 30, 30)).all()  # the photo, centred
    assert (square[:y1] == 128).all() and (square[y2:] == 128).all()  # grey padding
    assert (square[:, :x1] == 128).all() and (square[:, x2:] == 128).all()


def _save(image: Image.Image, root: Path, name: str) -> str:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return name


def tiny_dataset(root: Path) -> None:
    """A dozen photos in the shared data's layout: boxed field photos (one box in the wrong pixel scale),
    background-removed PNGs, pre-cropped photos and negative scenes."""
    rows = []
    for i, individual in enumerate("ABCD"):
        fin = (60 + 20 * i, 50, 130 + 20 * i, 100)
        name = _save(sea_with_fin(240, 160, fin, seed=i), root, f"images/field/photo_{i}.jpg")
        rows.append((name, "field_boxes", "humpback_whale", individual, 1, " ".join(str(v) for v in fin)))
    name = _save(sea_with_fin(240, 160, (60, 50, 130, 100), seed=9), root, "images/field/photo_big.jpg")
    rows.append((name, "field_boxes", "humpback_whale", "A", 1, "300 200 520 400"))  # outside: not used
    for i, individual in enumerate("EF"):
        png = Image.new("RGB", (128, 128), (254, 254, 254))
        ImageDraw.Draw(png).ellipse((30 + 10 * i, 40, 100, 90), fill=(40, 45, 50))
        name = _save(png, root, f"images/segmented/cut_{i}.png")
        rows.append((name, "happywhale_segmented_whaleway", "spinner_dolphin", individual, 1, ""))
    for i, individual in enumerate("GH"):
        head = np.full((120, 160, 3), (90, 80, 70), np.uint8)
        head[30:90, 40:120] = (30, 30, 30)
        name = _save(Image.fromarray(head), root, f"images/heads/w_{i}.jpg")
        rows.append((name, "noaa_right_whale", "north_atlantic_right_whale", individual, 1, ""))
    rng = np.random.default_rng(0)
    for scene in ("sea", "street"):
        for i in range(2):
            colour = (60, 90, 120) if scene == "sea" else (120, 110, 100)
            pixels = np.clip(np.array(colour) + rng.normal(0, 20, (150, 200, 3)), 0, 255).astype(np.uint8)
            name = _save(Image.fromarray(pixels), root, f"images/negatives/{scene}_{i}.jpg")
            rows.append((name, "scenes", NON_CETACEAN, "", 0, ""))
    columns = ["image", "source", "species", "individual_id", "is_cetacean", "bbox_xyxy"]
    pd.DataFrame(rows, columns=columns).to_csv(root / "labels.csv", index=False)


def test_train_localiser_command_exports_a_model_the_serving_side_runs(tmp_path: Path) -> None:
    tiny_dataset(tmp_path / "data")
    out = tmp_path / "runs" / "localiser.onnx"
    small = {
        "--input-size": 96,
        "--decode-long-side": 240,
        "--epochs": 2,
        "--batch-size": 16,
        "--cv-folds": 2,
        "--real-views": 2,
        "--composites-train": 8,
        "--composites-test": 4,
        "--composite-long-side": 160,
        "--backgrounds-train": 4,
        "--backgrounds-test": 2,
        "--negative-views": 1,
        "--blank-frames": 2,
        "--threads": 1,
    }
    argv = ["train-localiser", "--data-root", str(tmp_path / "data"), "--out", str(out)]
    argv += [str(part) for flag, value in small.items() for part in (flag, value)]
    assert main(argv) == 0

    report = json.loads(out.with_suffix(".json").read_text())
    assert sum(report["samples"]["real"].values()) == 4 * 2  # the out-of-scale box is not used
    assert {"segmented", "whole", "composite", "negative", "background", "blank"} <= set(report["samples"])
    assert report["onnx_max_abs_diff"] < 1e-4
    assert report["cross_validation"]["real_held_out_individuals"]["n"] == 4
    cached = list((tmp_path / "runs" / "cache").glob("localiser-*.pt"))  # features cached beside the output
    assert len(cached) == 1
    argv[argv.index("--epochs") + 1] = "1"  # a training-only setting: the same features serve again
    assert main(argv) == 0
    assert list((tmp_path / "runs" / "cache").glob("localiser-*.pt")) == cached

    localiser = Localiser(out, LocaliserConfig(min_objectness=0.0, min_side_share=0.0))
    assert localiser.size == 96
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])  # the file: any batch
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [i.shape for i in localiser._session().get_inputs()] == [[1, 3, 96, 96]]  # serving: one photo a run
    assert [o.name for o in session.get_outputs()] == ["box", "objectness"]
    batch = np.random.default_rng(1).uniform(-1, 1, (3, 3, 96, 96)).astype(np.float32)
    box, objectness = session.run(None, {"image": batch})
    assert box.shape == (3, 4) and objectness.shape == (3,)
    assert np.all((box >= 0) & (box <= 1)) and np.all(np.isfinite(objectness))
    photo = sea_with_fin(240, 160, (60, 50, 130, 100), seed=5)
    found = localiser.locate(photo)
    assert 0.0 <= found.objectness <= 1.0
    assert found.box is not None
    x1, y1, x2, y2 = found.box
    assert 0 <= x1 <= x2 <= photo.width and 0 <= y1 <= y2 <= photo.height


def test_a_photo_with_no_animal_in_it_is_rejected_and_says_so(identifier) -> None:
    """A photo in which the localiser finds no animal is rejected whatever the species head thinks (here a
    humpback's forward pass with P(animal) set to 0.01); the same pass with the animal found is not."""
    from dataclasses import replace

    sea = identifier.identify(sample_photo("negative"))
    assert sea.rejected and sea.species == NON_CETACEAN and not sea.new_individual
    image = decode_image((DATA / "humpback_whale_43f3385b-6d40-4b2c-b7f9-6062c680361a.jpg").read_bytes())
    (output,) = identifier.forward([image])
    assert output.objectness is not None and output.objectness > identifier.localiser.config.min_objectness
    kept = identifier.decide(output)
    assert not kept.rejected and kept.species == "humpback_whale"
    emptied = identifier.decide(replace(output, objectness=0.01))
    assert emptied.rejected and emptied.rejection_reason.startswith("no whale or dolphin found")
    assert emptied.species == NON_CETACEAN and emptied.species_probability == pytest.approx(0.99)
    assert not emptied.new_individual
    assert [c.individual_id for c in emptied.top5] == [c.individual_id for c in kept.top5], "nothing else changes"
