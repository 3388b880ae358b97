"""CPU speed and memory of the bundled model: load, one photo end to end, batches.

    python benchmarks/bench_speed.py [--photos DIR] [--out benchmarks/results/speed.json]

One photo end to end = decode the file → resize → embed → search the bundled
catalogue → species; measured on the sample photos in tests/data (JPEG).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from whales_identify.config import REPO_DIR
from whales_identify.identify import Identifier

COLD_START = """
import time
t0 = time.perf_counter()
from whales_identify.identify import Identifier
t1 = time.perf_counter()
Identifier.load()
print(round(t1 - t0, 3), round(time.perf_counter() - t1, 3))
"""


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", default=str(REPO_DIR / "tests" / "data"))
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--out", default="benchmarks/results/speed.json")
    args = parser.parse_args()

    cold = subprocess.run(
        [sys.executable, "-c", COLD_START], capture_output=True, text=True, check=True, cwd=REPO_DIR
    ).stdout.split()
    started = time.perf_counter()
    identifier = Identifier.load()
    load_s = time.perf_counter() - started
    photos = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    data = [p.read_bytes() for p in photos]
    for blob in data[:3]:
        identifier.identify(blob)  # warm-up

    single = []
    for i in range(args.repeats):
        blob = data[i % len(data)]
        t = time.perf_counter()
        identifier.identify(blob)
        single.append((time.perf_counter() - t) * 1000)

    images = [identifier.prepare(b) for b in data]
    batch = (images * (64 // len(images) + 1))[:64]
    t = time.perf_counter()
    outputs = [o for i in range(0, 64, 16) for o in identifier.forward(batch[i : i + 16])]  # as identify_many
    forward_s = time.perf_counter() - t
    t = time.perf_counter()
    results = list(identifier.identify_many(((str(i), b) for i, b in enumerate((data * (64 // len(data) + 1))[:64]))))
    batch_s = time.perf_counter() - t
    assert len(outputs) == len(results) == 64

    result = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "command": "python benchmarks/bench_speed.py",
        "cold_start_imports_s": float(cold[0]),
        "cold_start_model_load_s": float(cold[1]),
        "model_load_s": round(load_s, 3),
        "single_photo_ms_median": round(statistics.median(single), 1),
        "single_photo_ms_p95": round(sorted(single)[int(0.95 * (len(single) - 1))], 1),
        "batch_photos_per_s_end_to_end": round(64 / batch_s, 1),
        "batch_photos_per_s_forward_only_batches_of_16": round(64 / forward_s, 1),
        "catalogue_images": len(identifier.gallery),
        "rss_mb_after_load_and_runs": round(rss_mb(), 0),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
    }
    for key, value in result.items():
        print(f"{key:<34} {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
