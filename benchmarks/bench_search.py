"""Catalogue search at 1k, 10k, 100k and 1M photos: the search every identification does.

    python benchmarks/bench_search.py [--sizes 1000 10000 100000 1000000] [--out benchmarks/results/search.json]

A catalogue of ``n`` random L2-normalised embeddings (5 photos per individual)
is set as the identifier's gallery; each query is one ``Identifier.decide`` on
a real photo's forward pass: cosine to every photo, best per individual,
prototype blend, top-5 with probabilities, species. The forward pass itself is
not timed (bench_speed.py times it). Median and p95 over the queries.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import numpy as np
from _report import header, save  # beside this script

from whales_identify.config import REPO_DIR
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.identifier import Identifier

PHOTOS_PER_INDIVIDUAL = 5


def synthetic_gallery(n: int, dim: int, rng: np.random.Generator) -> Gallery:
    embeddings = rng.standard_normal((n, dim), dtype=np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    ids = np.char.add("ind", (np.arange(n) // PHOTOS_PER_INDIVIDUAL).astype(str))
    return Gallery(embeddings, ids, np.full(n, "humpback_whale"), np.arange(n).astype(str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--out", default="benchmarks/results/search.json")
    args = parser.parse_args()

    identifier = Identifier.load(catalogue=None)
    # The k-NN species vote is part of every answer when it is configured on; time it too.
    identifier.config = replace(identifier.config, species_knn_weight=max(identifier.config.species_knn_weight, 0.5))
    photos = sorted((REPO_DIR / "tests" / "data").glob("*.jpg"))
    outputs = identifier.forward([identifier.prepare_input(p) for p in photos])
    rng = np.random.default_rng(0)
    rows = []
    for n in args.sizes:
        gallery = synthetic_gallery(n, identifier.network.config.embedding_dim, rng)
        started = time.perf_counter()
        identifier.set_gallery(gallery)
        index_s = time.perf_counter() - started
        identifier.decide(outputs[0])  # warm-up
        times = []
        for i in range(args.queries):
            started = time.perf_counter()
            identifier.decide(outputs[i % len(outputs)])
            times.append((time.perf_counter() - started) * 1000)
        rows.append(
            {
                "photos": n,
                "individuals": n // PHOTOS_PER_INDIVIDUAL,
                "median_ms": round(statistics.median(times), 2),
                "p95_ms": round(float(np.percentile(times, 95)), 2),
                "set_gallery_s": round(index_s, 3),
                "matrix_mb": round(gallery.embeddings.nbytes / 1e6),
            }
        )
        print(
            f"{n:>9,} photos  median {rows[-1]['median_ms']:>8.2f} ms  p95 {rows[-1]['p95_ms']:>8.2f} ms"
            f"  (matrix {rows[-1]['matrix_mb']} MB)"
        )
        del gallery
        identifier.set_gallery(Gallery.empty(identifier.network.config.embedding_dim))

    result = {
        **header("python benchmarks/bench_search.py"),
        "what": "Identifier.decide per query (search, best per individual, top-5, species); float32 embeddings",
        "rows": rows,
    }
    save(result, args.out)


if __name__ == "__main__":
    main()
