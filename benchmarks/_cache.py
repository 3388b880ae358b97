"""Keypoint records that benchmarks compute once and keep between runs, in the bundled keypoint
file's own format (``matching/verify.save_keypoints``, read back by ``KeypointFile``): one packing of
names, concatenated records and offsets for the product and its benchmarks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

from whales_identify.config import VerifyConfig
from whales_identify.matching.verify import KeypointFile, save_keypoints


def cached_records(
    paths: Sequence[str], cfg: VerifyConfig, cache: Path, prefix: str, make: Callable[[str], bytes]
) -> dict[str, bytes]:
    """Per photo path, its keypoint record (``make(path)``), kept in ``cache`` under a name that says the
    describing settings of ``cfg`` and the photos; recomputed when the file is missing or unreadable."""
    tag = f"{cfg.long_side}_{cfg.max_keypoints}_{cfg.descriptor_bits}"
    key = hashlib.sha1((tag + "\n".join(paths)).encode()).hexdigest()[:12]
    file = cache / f"{prefix}_{tag}_{key}.npz"
    if file.exists():
        found = KeypointFile(file)(paths)
        if len(found) == len(set(paths)):
            return found
    records = [make(p) for p in paths]
    save_keypoints(file, paths, records)
    return dict(zip(paths, records, strict=True))
