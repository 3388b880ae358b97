"""Time of the animal mask (rembg's u2netp on ONNX Runtime, CPU) on a 1024-pixel photo.

    python benchmarks/bench_mask.py [--photo PATH] [--repeats 20] [--out benchmarks/results/mask.json]

The photo (default: the first sample in tests/data) is resized so its long side
is 1024 px, then masked ``repeats`` times after one warm-up; the first call
(session creation) is reported separately.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

from PIL import Image

from whales_identify.config import REPO_DIR
from whales_identify.inputs.imaging import decode_image
from whales_identify.model.mask import Masker, overlay


def _photo(path: str | None) -> tuple[str, Image.Image]:
    if path:
        chosen = Path(path)
    else:
        found = sorted(
            p for p in (REPO_DIR / "tests" / "data").glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
        )
        if not found:
            raise SystemExit("no photo: pass --photo")
        chosen = found[0]
    image = decode_image(chosen)
    scale = 1024 / max(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    return chosen.name, image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photo")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=str(REPO_DIR / "benchmarks" / "results" / "mask.json"))
    args = parser.parse_args()

    name, image = _photo(args.photo)
    masker = Masker()
    start = time.perf_counter()
    first = masker.mask(image)
    first_ms = (time.perf_counter() - start) * 1000
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = masker.mask(image)
        times.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    overlay(image, result.mask, 0.4, box=result.box)
    overlay_ms = (time.perf_counter() - start) * 1000
    report = {
        "photo": name,
        "size": list(image.size),
        "model": Path(masker.config.model_path).name,
        "input_long_side": masker.config.input_long_side,
        "threads": masker.config.threads,
        "first_call_ms": round(first_ms, 1),
        "median_ms": round(statistics.median(times), 1),
        "p90_ms": round(sorted(times)[int(0.9 * (len(times) - 1))], 1),
        "min_ms": round(min(times), 1),
        "overlay_ms": round(overlay_ms, 1),
        "repeats": args.repeats,
        "box": list(first.box) if first.box else None,
        "coverage": round(first.coverage, 4),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(report, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
