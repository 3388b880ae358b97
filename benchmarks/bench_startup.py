"""What starting the app costs: import time, model load and resident memory of a fresh process.

    python benchmarks/bench_startup.py [--repeats 5] [--compare OTHER_CHECKOUT] [--out benchmarks/results/startup.json]

Each run is a new Python process doing what the app's server does before its first answer:
``from whales_identify import Identifier``, ``Identifier.load()`` (bundled model and catalogue),
identify the sample photos; then its resident memory (VmRSS), its peak (ru_maxrss), and whether
torch and timm were imported. ``--compare`` runs the same script against another checkout (e.g.
an older commit made with ``git worktree add``) in alternation with this one, so both see the
same machine load.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from _report import header, save  # beside this script

from whales_identify.config import REPO_DIR

COLD_START = """
import glob, resource, sys, time
t0 = time.perf_counter()
from whales_identify import Identifier
identifier_class = Identifier  # the lazy export resolves here, as in the app
t1 = time.perf_counter()
identifier = Identifier.load()
t2 = time.perf_counter()
for path in sorted(glob.glob("tests/data/*.jpg")):
    identifier.identify(path)
rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(round(t1 - t0, 3), round(t2 - t1, 3), rss, peak, "torch" in sys.modules, "timm" in sys.modules)
"""


def cold_start(tree: Path) -> dict[str, float | bool]:
    out = subprocess.run(
        [sys.executable, "-c", COLD_START],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
    ).stdout.split()
    return {
        "import_s": float(out[0]),
        "load_s": float(out[1]),
        "rss_mb": int(out[2]),
        "peak_mb": int(out[3]),
        "torch_imported": out[4] == "True",
        "timm_imported": out[5] == "True",
    }


def summarise(runs: list[dict[str, float | bool]]) -> dict[str, float | bool]:
    keys = ("import_s", "load_s", "rss_mb", "peak_mb")
    summary: dict[str, float | bool] = {k: round(statistics.median(float(r[k]) for r in runs), 3) for k in keys}
    summary["torch_imported"] = any(bool(r["torch_imported"]) for r in runs)
    summary["timm_imported"] = any(bool(r["timm_imported"]) for r in runs)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compare", type=Path, default=None, help="another checkout to measure alongside")
    parser.add_argument("--out", default=str(REPO_DIR / "benchmarks" / "results" / "startup.json"))
    args = parser.parse_args()
    trees = {"this": REPO_DIR} | ({"compare": args.compare.resolve()} if args.compare else {})
    runs: dict[str, list[dict[str, float | bool]]] = {name: [] for name in trees}
    for _ in range(args.repeats):
        for name, tree in trees.items():  # alternate, so both see the same load
            runs[name].append(cold_start(tree))
    report = {**header("python benchmarks/bench_startup.py " + " ".join(sys.argv[1:])), "repeats": args.repeats}
    for name, tree in trees.items():
        report[name] = {"tree": str(tree), **summarise(runs[name])}
        print(f"{name:>8}: {report[name]}")
    save(report, args.out)


if __name__ == "__main__":
    main()
