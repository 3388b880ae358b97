"""Memory of a large batch: 2,000 photos in a ZIP through the real model, streamed.

    python benchmarks/bench_batch_memory.py [--photos 2000] [--size 96x64] [--out benchmarks/results/batch_memory.json]

Builds a ZIP of generated JPEGs (plus a few non-photos and a corrupt one), loads the bundled
model, identifies one warm-up batch, resets the kernel's peak-RSS counter, then runs the whole
ZIP through ``whales_identify.batch.local.run_batch`` (what the CLI and the app use) while sampling the
resident memory. Streaming shows as a flat curve: the RSS after 10 % of the photos and after all
of them are the same to within noise, and the peak does not grow with the number of photos.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from whales_identify.batch.local import run_batch
from whales_identify.matching.identifier import Identifier


def _status(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def make_zip(path: Path, n: int, size: tuple[int, int]) -> int:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size[1] // 4, size[0] // 4, 3), dtype=np.uint8)
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(n):
            pixels = np.roll(base, i, axis=1) ^ np.uint8(i % 251)
            buffer = io.BytesIO()
            Image.fromarray(pixels).resize(size).save(buffer, format="JPEG", quality=85)
            archive.writestr(f"survey/{i // 500:02d}/photo_{i:05d}.jpg", buffer.getvalue())
        archive.writestr("survey/README.txt", "not a photo")
        archive.writestr("survey/broken.jpg", b"\xff\xd8 truncated")
        archive.writestr("__MACOSX/survey/._photo_00000.jpg", b"junk")
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--size", default="96x64")
    parser.add_argument("--batch-size", type=int, default=None, help="photos per forward pass (default: the package's)")
    parser.add_argument("--out", default="benchmarks/results/batch_memory.json")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "survey.zip"
        zip_bytes = make_zip(archive, args.photos, size)
        identifier = Identifier.load()
        list(identifier.identify_many([(str(i), _warm(size)) for i in range(16)], args.batch_size))
        rss_before = _status("VmRSS")
        peak_reset = reset_peak()
        samples: list[tuple[int, float]] = []
        counts: dict[str, int] = {}
        started = time.perf_counter()
        for n, row in enumerate(run_batch(identifier, archive, batch_size=args.batch_size), start=1):
            counts[row.status] = counts.get(row.status, 0) + 1
            if n % 100 == 0:
                samples.append((n, round(_status("VmRSS"), 1)))
        seconds = time.perf_counter() - started
        peak = _status("VmHWM")
        rss_after = _status("VmRSS")

    tenth = next((rss for n, rss in samples if n >= args.photos // 10), rss_before)
    report = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "photos": args.photos,
        "photo_size": list(size),
        "zip_mb": round(zip_bytes / 1e6, 1),
        "batch_size": args.batch_size or identifier.speed.batch_chunk,
        "rows": counts,
        "seconds": round(seconds, 1),
        "photos_per_second": round(args.photos / seconds, 1),
        "rss_after_model_load_mb": round(rss_before, 1),
        "rss_after_10_percent_mb": tenth,
        "rss_at_end_mb": round(rss_after, 1),
        "peak_rss_during_batch_mb": round(peak, 1),
        "peak_growth_over_loaded_model_mb": round(peak - rss_before, 1),
        "peak_counter_reset": peak_reset,
        "rss_every_100_rows_mb": samples,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{args.photos} photos ({report['zip_mb']} MB ZIP) in {report['seconds']} s "
        f"({report['photos_per_second']}/s); RSS {rss_before:.0f} MB after load → {tenth:.0f} MB at 10 % → "
        f"{rss_after:.0f} MB at the end; peak {peak:.0f} MB (+{peak - rss_before:.0f} MB); rows {counts}"
    )


def _warm(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 90, 140)).save(buffer, format="JPEG")
    return buffer.getvalue()


if __name__ == "__main__":
    main()
