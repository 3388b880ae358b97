"""Batch throughput on a ZIP of 500 real photos, end to end, against the bare forward pass.

    python benchmarks/bench_batch.py [--data-root ../shared/data] [--n 500] [--out benchmarks/results/batch.json]

The ZIP holds ``n`` photos drawn at random (seed 0) from the shared data, all
sources mixed (most are 224 px right-whale crops; the rest up to 1280 px).
End to end = ``run_batch`` on the ZIP: read each member, decode, resize, embed,
search the bundled catalogue, species, EXIF, one row per photo. Bare forward =
the same photos already decoded, run through the networks (the localiser, the crop around
the animal and the identification network: ``Identifier.forward``) in the same chunks and
threads as the pipeline. Goal: end to end ≥ 0.8 × bare.
Both engines (ONNX Runtime, the default, and PyTorch, the reference) are measured.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from _report import header, save  # beside this script
from PIL import Image

from whales_identify.batch.local import run_batch
from whales_identify.config import DEFAULT_DATA_ROOT
from whales_identify.matching.identifier import Identifier
from whales_identify.model.threads import single_threaded_blas


def build_zip(data_root: Path, n: int, path: Path) -> list[str]:
    labels = pd.read_csv(data_root / "labels.csv")
    chosen = labels.sample(n, random_state=0)["image"].tolist()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:  # JPEGs do not compress further
        for name in chosen:
            archive.write(data_root / name, name)
    return chosen


def bare_forward(identifier: Identifier, images: list[Image.Image]) -> float:
    """Photos per second of the networks alone, chunked and threaded as the pipeline does."""
    chunk, workers, threads = identifier.batch_plan()
    batches = [images[i : i + chunk] for i in range(0, len(images), chunk)]
    identifier.forward(batches[0], threads)  # warm-up
    with single_threaded_blas(), ThreadPoolExecutor(workers) as pool:
        started = time.perf_counter()
        list(pool.map(lambda b: identifier.forward(b, threads), batches))
        return len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--out", default="benchmarks/results/batch.json")
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "photos.zip"
        names = build_zip(Path(args.data_root), args.n, archive)
        for engine in ("onnx", "torch"):
            identifier = Identifier.load(engine=engine)
            with zipfile.ZipFile(archive) as z:
                images = [identifier.prepare_input(z.read(name)) for name in names]
            bare = bare_forward(identifier, images)
            list(run_batch(identifier, archive))  # warm-up: file cache, sessions, allocator
            started = time.perf_counter()
            rows = list(run_batch(identifier, archive))
            end_to_end = len(rows) / (time.perf_counter() - started)
            ok = sum(row.status == "ok" for row in rows)
            results[engine] = {
                "photos": len(rows),
                "ok": ok,
                "end_to_end_photos_per_s": round(end_to_end, 1),
                "bare_forward_photos_per_s": round(bare, 1),
                "ratio": round(end_to_end / bare, 2),
                "chunk": identifier.speed.batch_chunk,
                "workers": identifier.speed.batch_workers,
            }
            print(
                f"{engine:<6} end to end {end_to_end:6.1f} photos/s   bare forward {bare:6.1f} photos/s"
                f"   ratio {end_to_end / bare:.2f}   ({ok}/{len(rows)} ok)"
            )
    sizes = [max(image.size) for image in images]
    result = {
        **header("python benchmarks/bench_batch.py"),
        "photos": f"{args.n} real photos from the shared data, seed 0; long side after decoding: "
        f"median {int(np.median(sizes))} px, max {max(sizes)} px",
        "engines": results,
    }
    save(result, args.out)


if __name__ == "__main__":
    main()
