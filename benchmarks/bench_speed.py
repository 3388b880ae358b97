"""CPU speed and memory of the bundled model: load, one photo end to end without and with the mask.

    python benchmarks/bench_speed.py [--repeats 60] [--out benchmarks/results/speed.json]

One photo end to end = decode the file → resize → embed → search the bundled
catalogue → species (``Identifier.identify``), for both engines, on two kinds
of photo: the sample photos in tests/data (JPEG, up to 480 px) and a 12 MP
phone-sized JPEG (4000×3000, made from a sample so nothing outside the repo is
needed); without keypoint verification (the fast path, as in a batch), and, apart,
the right-whale samples with it (the default for one photo). With the mask = what
the app's Identify page does for a 1024 px photo: decode at display size, identify,
and the u2netp animal mask. Batch throughput is bench_batch.py; catalogue search at
1k–1M photos is bench_search.py.
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from _report import header, save  # beside this script
from PIL import Image

from whales_identify.config import REPO_DIR
from whales_identify.matching.identifier import Identifier
from whales_identify.model.mask import Masker

# A fresh process, as a user's: import, load, identify the samples; then its resident memory.
COLD_START = """
import glob, resource, time
t0 = time.perf_counter()
from whales_identify.matching.identifier import Identifier
t1 = time.perf_counter()
identifier = Identifier.load()
t2 = time.perf_counter()
for path in sorted(glob.glob("tests/data/*.jpg")) * 3:
    identifier.identify(path)
rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(round(t1 - t0, 3), round(t2 - t1, 3), identifier.engine.name, rss, peak)
"""
PHONE_SIZE = (4000, 3000)
MASK_PHOTO_SIDE = 1024


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(run: Callable[[int], object], repeats: int) -> dict[str, float]:
    """Median and p95 in ms of ``run(i)`` after three warm-up calls."""
    for i in range(3):
        run(i)
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        run(i)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 1), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1)}


def jpeg(image: Image.Image, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    image.resize(size, Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--out", default="benchmarks/results/speed.json")
    args = parser.parse_args()

    imports_s, load_s, engine, fresh_rss, fresh_peak = subprocess.run(
        [sys.executable, "-c", COLD_START], capture_output=True, text=True, check=True, cwd=REPO_DIR
    ).stdout.split()
    photos = sorted((REPO_DIR / "tests" / "data").glob("*.jpg"))
    samples = [p.read_bytes() for p in photos]
    first = Image.open(photos[0]).convert("RGB")
    phone = jpeg(first, PHONE_SIZE)
    width, height = first.size
    display = jpeg(first, (MASK_PHOTO_SIDE, round(height * MASK_PHOTO_SIDE / width)))

    engines = {}
    for name in ("onnx", "torch"):
        identifier = Identifier.load(engine=name)
        engines[name] = {  # the fast path: no keypoint verification
            "samples": timed(
                lambda i: identifier.identify(samples[i % len(samples)], verify=False),  # noqa: B023
                args.repeats,
            ),
            "phone_12mp": timed(lambda i: identifier.identify(phone, verify=False), args.repeats // 2),  # noqa: B023
        }
        print(
            f"{name:<6} one photo: samples median {engines[name]['samples']['median_ms']} ms"
            f" (p95 {engines[name]['samples']['p95_ms']}), 12 MP JPEG median "
            f"{engines[name]['phone_12mp']['median_ms']} ms (p95 {engines[name]['phone_12mp']['p95_ms']})"
        )

    identifier = Identifier.load()
    right_whales = [p.read_bytes() for p in photos if p.name.startswith("north_atlantic_right_whale")]
    verified = timed(lambda i: identifier.identify(right_whales[i % len(right_whales)]), args.repeats // 2)
    print(
        f"right-whale samples with keypoint verification (the default for one photo): median {verified['median_ms']} ms"
    )
    masker = Masker()

    def with_mask(_: int) -> None:
        image = identifier.prepare(display)  # display size, as the app keeps it
        identifier.identify(display)
        masker.mask(image)

    masked = timed(with_mask, max(10, args.repeats // 4))
    print(f"with the mask (1024 px photo): median {masked['median_ms']} ms (p95 {masked['p95_ms']})")

    result = {
        **header("python benchmarks/bench_speed.py"),
        "cold_start_imports_s": float(imports_s),
        "cold_start_model_load_s": float(load_s),
        "default_engine": engine,
        "rss_mb_fresh_process_after_identifying": int(fresh_rss),
        "peak_rss_mb_fresh_process": int(fresh_peak),
        "one_photo_without_mask": engines,
        "one_right_whale_photo_with_verification_onnx": verified,
        "one_photo_with_mask_1024px": masked,
        "catalogue_images": len(identifier.gallery),
        "rss_mb_this_benchmark_process": round(rss_mb()),
        "peak_rss_mb_this_benchmark_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "note": "this benchmark process holds both engines and the mask model; a user's process holds one "
        "engine: see the fresh-process numbers",
    }
    save(result, args.out)


if __name__ == "__main__":
    main()
