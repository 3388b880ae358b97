"""Keypoint verification on real photos: the shipped right-whale samples (three individuals) and
one true pair of different photos of a fourth whale (tests/data/verify/)."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from whales_identify.config import VerifyConfig
from whales_identify.matching.verify import Keypoints, describe, describe_query, match, rerank

CFG = VerifyConfig()
VERIFY = "data/verify/north_atlantic_right_whale_whale_29858_w_{}.jpg"


@pytest.fixture(scope="module")
def right_whales(samples: pd.DataFrame) -> list[np.ndarray]:
    rows = samples[samples["species"] == "north_atlantic_right_whale"]
    assert rows["individual_id"].nunique() == len(rows) == 3
    return [np.asarray(Image.open(path).convert("RGB")) for path in rows["path"]]


@pytest.fixture(scope="module")
def pair(request: pytest.FixtureRequest) -> tuple[Image.Image, Image.Image]:
    root = request.path.parent
    return Image.open(root / VERIFY.format(3164)), Image.open(root / VERIFY.format(3510))


def altered(photo: np.ndarray, angle: float = 12.0, scale: float = 0.85, gain: float = 1.25) -> np.ndarray:
    """The photo rotated, shrunk and brightened in place (same canvas)."""
    h, w = photo.shape[:2]
    warp = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    moved = cv2.warpAffine(photo, warp, (w, h), borderMode=cv2.BORDER_REFLECT)
    return np.clip(moved.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def test_altered_copy_scores_far_above_other_whales(right_whales: list[np.ndarray]) -> None:
    keypoints = [describe(photo, CFG) for photo in right_whales]
    for photo, mine in zip(right_whales, keypoints, strict=True):
        copy = match(mine, describe(altered(photo), CFG), CFG)
        others = [match(mine, other, CFG).inliers for other in keypoints if other is not mine]
        assert copy.inliers >= 3 * CFG.verified_inliers
        assert max(others) < CFG.verified_inliers
        # The transform found is the one applied: shrunk by 0.85, rotated by 12°.
        assert copy.transform is not None
        applied = cv2.getRotationMatrix2D((112, 112), 12.0, 0.85)
        np.testing.assert_allclose(copy.transform[:, :2], applied[:, :2], atol=0.03)
        assert copy.pairs.shape == (copy.inliers, 2)


def test_two_different_photos_of_one_whale_verify(pair, right_whales: list[np.ndarray]) -> None:
    first, second = (describe(photo, CFG) for photo in pair)
    same = match(first, second, CFG)
    assert same.inliers >= 2 * CFG.verified_inliers
    for other in right_whales:
        assert match(first, describe(other, CFG), CFG).inliers < CFG.verified_inliers
    # Matched keypoints, mapped by the transform, land near their partners (what a UI would draw).
    assert same.transform is not None
    moved = first.xy[same.pairs[:, 0]] @ same.transform[:, :2].T + same.transform[:, 2]
    assert np.abs(moved - second.xy[same.pairs[:, 1]]).max() <= CFG.ransac_threshold + 0.5


def test_describe_caps_keypoints_and_works_on_any_size(right_whales: list[np.ndarray]) -> None:
    photo = right_whales[0]
    few = describe(photo, VerifyConfig(max_keypoints=50))
    assert len(few) == 50 and few.size == (224, 224)
    large = describe(Image.fromarray(photo).resize((448, 448)).convert("L"), CFG)
    assert large.size == (CFG.long_side, CFG.long_side)
    assert len(large) <= CFG.max_keypoints
    assert len(large.to_bytes()) <= 15_000  # the default stores at most ~14 KB a photo
    blank = describe(np.full((100, 300), 128, np.uint8), CFG)
    assert len(blank) == 0 and blank.size == (224, 75)
    assert match(blank, few, CFG).inliers == 0


@pytest.mark.parametrize("bits", [8, 4])
def test_bytes_round_trip_and_are_compact(right_whales: list[np.ndarray], bits: int) -> None:
    cfg = VerifyConfig(descriptor_bits=bits)
    keypoints = describe(right_whales[1], cfg)
    data = keypoints.to_bytes()
    back = Keypoints.from_bytes(data)
    assert back.size == keypoints.size and back.bits == bits
    np.testing.assert_array_equal(back.descriptors, keypoints.descriptors)
    np.testing.assert_allclose(back.xy, keypoints.xy, atol=1 / 16)
    assert len(data) <= 11 + len(keypoints) * (4 + 128 * bits // 8)
    # Matching the stored form gives the same answer as the fresh one.
    query = describe(altered(right_whales[1]), cfg)
    assert match(query, back, cfg).inliers == match(query, keypoints, cfg).inliers
    with pytest.raises(ValueError):
        Keypoints.from_bytes(data[:-1])
    with pytest.raises(ValueError):
        Keypoints.from_bytes(b"JUNK" + data[4:])


def test_describe_and_match_are_deterministic(pair) -> None:
    first = [describe(photo, CFG) for photo in pair]
    again = [describe(photo, CFG) for photo in pair]
    assert [k.to_bytes() for k in first] == [k.to_bytes() for k in again]
    results = [match(first[0], first[1], CFG) for _ in range(3)]
    assert len({r.inliers for r in results}) == 1
    for r in results[1:]:
        np.testing.assert_array_equal(r.pairs, results[0].pairs)
        np.testing.assert_array_equal(r.transform, results[0].transform)


def test_rerank_puts_the_verified_candidate_first() -> None:
    scores = np.array([0.62, 0.60, 0.55, 0.50], np.float32)
    inliers = np.array([3, 0, 25, 5])
    ranked = rerank(scores, inliers, CFG)
    assert ranked.order[0] == 2
    assert ranked.verified.tolist() == [False, False, True, False]
    # Without evidence the global order stands; the fused score never falls below the global one.
    plain = rerank(scores, np.zeros(4, int), CFG)
    assert plain.order.tolist() == [0, 1, 2, 3]
    assert np.all(ranked.scores >= scores)


def test_the_query_photo_may_keep_more_keypoints_than_the_catalogue_stores(pair) -> None:
    """``query_keypoints``: the photo being identified keeps its own number (0: as many as stored)."""
    query, _ = pair
    assert len(describe_query(query, CFG)) == len(describe(query, CFG)) <= CFG.max_keypoints
    more = describe_query(query, VerifyConfig(max_keypoints=120, query_keypoints=300))
    assert 120 < len(more) <= 300
    assert set(map(tuple, describe(query, VerifyConfig(max_keypoints=120)).xy)) <= set(map(tuple, more.xy))
