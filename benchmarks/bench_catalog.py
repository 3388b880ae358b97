"""Speed of the user's catalogue: search over 1k/10k/100k photos, and enrolment rate.

    python benchmarks/bench_catalog.py [--sizes 1000 10000 100000] [--photos DIR] [--n-photos 64]

Search: random L2-normalised 512-d embeddings stored in a fresh SQLite catalogue;
the one search path (``Catalog.gallery`` → best photo per individual → top 5), median over
repeated queries once the gallery is cached
(target ≤ 20 ms at 100k). The one-off cost of building the cache from the database
is reported separately. Enrolment: ``enrol_zip`` of real photos (decode, crop, EXIF,
embed in batches of 16, one transaction) with the bundled model, or the smoke
checkpoint when the bundled one is absent (target ≥ 30 photos/s).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from whales_identify.catalog.enrol import enrol_zip
from whales_identify.catalog.store import Catalog, NewImage
from whales_identify.config import DEFAULT_CHECKPOINT, DEFAULT_DATA_ROOT, REPO_DIR, CatalogConfig
from whales_identify.matching.rules import top_k

DIM = 512
INSERT_CHUNK = 10_000  # rows per transaction while filling the benchmark database
SEARCH_TARGET_MS = 20.0
ENROL_TARGET_PER_S = 30.0
FALLBACK_CHECKPOINT = Path("/tmp/smoke_model.pt")
BATCH = CatalogConfig().embed_batch_size


def fill(catalog: Catalog, n: int, rng: np.random.Generator) -> None:
    """``n`` photos of ``n // 5`` individuals with random unit embeddings."""
    for start in range(0, n, INSERT_CHUNK):
        count = min(INSERT_CHUNK, n - start)
        emb = rng.standard_normal((count, DIM)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        rows = [
            NewImage(
                f"ind{(start + i) // 5:06d}",
                "humpback_whale",
                f"{start + i:064x}",
                b"t",
                b"c",
                emb[i],
                catalog.model_version,
                new=(start + i) % 5 == 0,
            )
            for i in range(count)
        ]
        catalog.add_images(rows, actor="bench")


def bench_search(sizes: list[int], repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            with Catalog(Path(tmp) / f"search{n}.sqlite3", model_version="bench") as catalog:
                t = time.perf_counter()
                fill(catalog, n, rng)
                fill_s = time.perf_counter() - t
                queries = rng.standard_normal((repeats, DIM)).astype(np.float32)
                queries /= np.linalg.norm(queries, axis=1, keepdims=True)
                t = time.perf_counter()
                gallery = catalog.gallery()  # builds the cached matrix from the database
                top_k(gallery.best_per_individual(gallery.similarities(queries[0])), 5)
                build_ms = (time.perf_counter() - t) * 1000
                times = []
                for q in queries:
                    t = time.perf_counter()
                    gallery = catalog.gallery()
                    top_k(gallery.best_per_individual(gallery.similarities(q)), 5)
                    times.append((time.perf_counter() - t) * 1000)
            results.append(
                {
                    "rows": n,
                    "individuals": n // 5,
                    "median_ms": round(statistics.median(times), 3),
                    "p95_ms": round(float(np.percentile(times, 95)), 3),
                    "cache_build_ms": round(build_ms, 1),
                    "insert_rows_per_s": round(n / fill_s),
                    "meets_target": statistics.median(times) <= SEARCH_TARGET_MS,
                }
            )
            print(
                f"search {n:>7,} rows: median {results[-1]['median_ms']:.2f} ms, p95 {results[-1]['p95_ms']:.2f} ms,"
                f" cache build {build_ms:.0f} ms"
            )
    return results


def find_photos(folder: Path, n: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    step = max(1, len(files) // n)  # spread over the sources, not one folder
    return files[::step][:n]


def bench_enrol(photos_dir: Path, n: int) -> dict:
    from whales_identify.matching.identifier import Identifier

    checkpoint = DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.exists() else FALLBACK_CHECKPOINT
    if not checkpoint.exists():
        return {"skipped": "no model checkpoint"}
    photos = find_photos(photos_dir, n)
    if not photos:
        return {"skipped": f"no photos under {photos_dir}"}
    identifier = Identifier.load(checkpoint, catalogue=None)
    identifier.forward([identifier.prepare(photos[0].read_bytes())])  # warm-up
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "photos.zip"
        with zipfile.ZipFile(archive, "w") as handle:
            for i, path in enumerate(photos):
                handle.write(path, f"ind{i % 8}/{i:04d}{path.suffix.lower()}")
        with Catalog(Path(tmp) / "enrol.sqlite3", model_version=identifier.model_version) as catalog:
            t = time.perf_counter()
            report = enrol_zip(catalog, identifier, archive, actor="bench", species="humpback_whale")
            seconds = time.perf_counter() - t
    added = report.count("added")
    rate = added / seconds
    # the model's share: the forward pass alone on the same photos, same batches
    images = [identifier.prepare(p.read_bytes()) for p in photos]
    t = time.perf_counter()
    for start in range(0, len(images), BATCH):
        identifier.forward(images[start : start + BATCH])
    forward_rate = len(images) / (time.perf_counter() - t)
    print(
        f"enrolment: {added} photos in {seconds:.1f} s = {rate:.1f} photos/s ({checkpoint.name}); "
        f"forward pass alone {forward_rate:.1f} photos/s"
    )
    return {
        "photos": added,
        "duplicates": report.count("duplicate"),
        "seconds": round(seconds, 2),
        "photos_per_s": round(rate, 2),
        "forward_only_photos_per_s": round(forward_rate, 2),
        "checkpoint": checkpoint.name,
        "torch_threads": torch.get_num_threads(),
        "meets_target": rate >= ENROL_TARGET_PER_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--photos", type=Path, default=DEFAULT_DATA_ROOT / "images")
    parser.add_argument("--n-photos", type=int, default=64)
    parser.add_argument("--out", type=Path, default=REPO_DIR / "benchmarks" / "results" / "catalog.json")
    args = parser.parse_args()

    search = bench_search(args.sizes, args.repeats)
    enrol = bench_enrol(args.photos, args.n_photos)
    print()
    print(f"{'rows':>9} | {'median ms':>9} | {'p95 ms':>7} | {'target':>6}")
    for row in search:
        print(
            f"{row['rows']:>9,} | {row['median_ms']:>9.2f} | {row['p95_ms']:>7.2f} | "
            f"{'ok' if row['meets_target'] else 'MISS':>6}"
        )
    if "photos_per_s" in enrol:
        verdict = "ok" if enrol["meets_target"] else "MISS"
        print(f"enrolment: {enrol['photos_per_s']:.1f} photos/s (target ≥ {ENROL_TARGET_PER_S:.0f}) {verdict}")
    else:
        print(f"enrolment: skipped ({enrol['skipped']})")
    result = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "targets": {"search_median_ms_at_100k": SEARCH_TARGET_MS, "enrol_photos_per_s": ENROL_TARGET_PER_S},
        "search": search,
        "enrolment": enrol,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
