"""Training end to end on a tiny made-up dataset: it runs, writes a loadable checkpoint, and a run
stopped after an epoch continues to exactly the weights of an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw

from whales_identify.config import NON_CETACEAN, ModelConfig, TrainConfig
from whales_identify.model.checkpoint import load_checkpoint
from whales_identify.training.train import train


def _dataset(root: Path) -> None:
    """Three 'individuals' of two species (a dark shape with its own notch pattern on a sea), two negatives."""
    rng = np.random.default_rng(0)
    rows = []
    (root / "images").mkdir(parents=True)
    for k, (individual, species) in enumerate(
        [("A", "beluga"), ("B", "beluga"), ("C", "fin_whale"), ("D", "fin_whale")]
    ):
        for photo in range(4):
            sea = rng.normal((40, 70, 90), 12, (160, 240, 3)).clip(0, 255).astype(np.uint8)
            image = Image.fromarray(sea)
            draw = ImageDraw.Draw(image)
            x, y = 60 + 10 * photo, 50
            draw.polygon([(x, y + 60), (x + 40 + 10 * k, y), (x + 80, y + 60)], fill=(20, 20, 24))
            for notch in range(k + 1):
                draw.ellipse((x + 20 + 12 * notch, y + 20, x + 26 + 12 * notch, y + 26), fill=(200, 200, 200))
            name = f"images/{individual}_{photo}.jpg"
            image.save(root / name)
            box = f"{x} {y} {x + 80} {y + 60}" if photo == 0 else ""
            rows.append((name, "made_up", species, individual, 1, box))
    for n in range(3):
        name = f"images/street_{n}.jpg"
        Image.fromarray(rng.integers(0, 255, (12, 18, 3), dtype=np.uint8)).resize((240, 160)).save(root / name)
        rows.append((name, "made_up", NON_CETACEAN, "", 0, ""))
    columns = ["image", "source", "species", "individual_id", "is_cetacean", "bbox_xyxy"]
    pd.DataFrame(rows, columns=columns).to_csv(root / "labels.csv", index=False)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    _dataset(root)
    return root


def _config(data_root: Path, out: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(
        data_root=str(data_root), out=str(out), epochs=2, batch_size=8, views=2, workers=1, device="cpu", split="photo"
    )
    return TrainConfig(**{**base.__dict__, **changes})


def test_a_stopped_run_continues_to_the_same_weights(data_root: Path, tmp_path: Path) -> None:
    model_config = ModelConfig(image_size=96, crop_to_animal=True)
    straight = tmp_path / "straight" / "m.pt"
    meta = train(_config(data_root, straight), model_config)
    assert [e["epoch"] for e in meta["history"]] == [1, 2] and straight.exists()
    assert meta["train_background_patches"] > 0  # sea beside the labelled boxes: hard negatives
    assert not straight.with_suffix(".resume.pt").exists()

    resumed = tmp_path / "resumed" / "m.pt"
    first = train(_config(data_root, resumed, stop_after=1), model_config)
    assert first["stopped_after_epoch"] == 1 and not resumed.exists()
    assert resumed.with_suffix(".resume.pt").exists()
    second = train(_config(data_root, resumed), model_config)  # the same command again
    assert [e["epoch"] for e in second["history"]] == [1, 2]
    assert second["history"][0]["loss"] == pytest.approx(first["history"][0]["loss"])

    a, meta_a = load_checkpoint(straight)
    b, _ = load_checkpoint(resumed)
    assert meta_a["species"] == sorted({"beluga", "fin_whale", NON_CETACEAN})
    assert a.config.crop_to_animal and a.config.image_size == 96
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_a_resume_file_of_another_recipe_is_not_used(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "m.pt"
    model_config = ModelConfig(image_size=96)
    train(_config(data_root, out, stop_after=1), model_config)
    with caplog.at_level("INFO", logger="whales_identify.training.train"):
        changed = train(_config(data_root, out, lr=3e-2), model_config)  # another recipe
    assert "starting afresh" in caplog.text and "resuming" not in caplog.text
    assert [e["epoch"] for e in changed["history"]] == [1, 2] and out.exists()


def test_kept_samples_keep_the_ones_that_still_hold_and_name_the_pool_of_the_others() -> None:
    from whales_identify.config import NEW_INDIVIDUAL
    from whales_identify.errors import WhaleIdError
    from whales_identify.training.bundle import _kept_samples

    frame = pd.DataFrame(
        {
            "image": ["rw/a.jpg", "rw/b.jpg", "fin/c.jpg", "neg/d.jpg", "hw/e.jpg"],
            "individual_id": ["W1", "W1", "F1", "", "H1"],
            "species": ["right_whale", "right_whale", "fin_whale", NON_CETACEAN, "humpback_whale"],
            "source": ["noaa_right_whale", "noaa_right_whale", "fin_whale_catrlog", "negatives", "kabuga"],
        },
        index=[10, 11, 12, 13, 14],
    )
    keep = pd.DataFrame(
        {
            "image": ["s1.jpg", "s2.jpg", "s3.jpg", "s4.jpg"],
            "original": ["rw/a.jpg", "neg/d.jpg", "hw/e.jpg", "fin/c.jpg"],
        }
    )
    counts = frame["individual_id"].value_counts()
    asked: list[tuple[str, int]] = []

    def judge(kind: str, verdict: bool):
        return lambda index: asked.append((kind, index)) or verdict

    chosen, failed = _kept_samples(
        frame, keep, counts, judge("known", False), judge("new", True), judge("negative", True)
    )
    assert chosen == [10, 13, 14, 12]  # in the listed order, failed ones in place until replaced
    assert asked == [("known", 10), ("negative", 13), ("new", 14), ("new", 12)]  # F1 and H1 have one photo each
    assert failed == [(0, "noaa_right_whale")]
    _, failed = _kept_samples(frame, keep, counts, judge("known", True), judge("new", False), judge("negative", False))
    assert failed == [(1, NON_CETACEAN), (2, NEW_INDIVIDUAL), (3, NEW_INDIVIDUAL)]
    with pytest.raises(WhaleIdError, match="not in the data"):
        _kept_samples(frame, keep.assign(original=["gone.jpg"] * 4), counts, *(judge("x", True),) * 3)


def test_gentle_species_learn_from_views_that_keep_their_detail() -> None:
    """``gentle_species``: an aligned right-whale head crop is augmented gently (``views.ALIGNED``: no
    distance, little blur or haze), so its views stay closer to the clean crop than field views do; other
    species keep the field effects."""
    from whales_identify.training.train import TrainItem, views_tensor

    photo = Path(__file__).parent / "data" / "north_atlantic_right_whale_w_932.jpg"
    model = ModelConfig()
    gentle = TrainConfig(gentle_species="beluga, north_atlantic_right_whale")

    def distance_to_clean(item: TrainItem, config: TrainConfig) -> float:
        views = torch.cat([views_tensor(item, 4, model, config, seed) for seed in range(6)])
        clean = views_tensor(item, 1, model, config, 0)[0]
        return float((views - clean).abs().mean())

    right_whale = TrainItem(photo, "w", "north_atlantic_right_whale", None)
    assert distance_to_clean(right_whale, gentle) < 0.8 * distance_to_clean(right_whale, TrainConfig())
    other = TrainItem(photo, "w", "fin_whale", None)  # not listed: the field views, seed for seed
    assert torch.equal(views_tensor(other, 3, model, gentle, 5), views_tensor(other, 3, model, TrainConfig(), 5))
