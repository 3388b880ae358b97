"""The app server's memory over many browser sessions, one after another (issue 14, item 7).

    python benchmarks/bench_server_memory.py [--sessions 30] [--batch-every 5] [--settle 0]
                                             [--label NAME] [--out benchmarks/results/server_memory.json]

Starts the real server (``streamlit run app/streamlit_app.py`` on a free port, an empty user
catalogue, as ``tests/e2e/test_browser.py`` does) and drives ``--sessions`` browser sessions with
Playwright and Debian's Chromium, one after another. Each session is a new browser context (a new
Streamlit session): open the Identify page, upload a photo, wait until its answer and mask are
drawn; every ``--batch-every``-th session also runs a small ZIP (4 photos) on the Batch page and
opens one row's mask. Then the context is closed (the browser disconnects, as a user closing the
tab). Each session's photos are distinct bytes (a sample photo re-encoded with its own quality and
a marked pixel), as different users' photos are, so a cache keyed by photo sees a new key every time.

After each session the server's VmRSS and VmHWM are read from ``/proc/<pid>/status``. ``--settle``
seconds after the last session (e.g. past ``server.disconnectedSessionTTL``) one more sample is taken.
Written: the per-session series, the peak, and the spread after the first five sessions.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from _report import header, save  # beside this script
from bench_first_photo import ROOT, app_server, chromium, identify_upload, open_identify, settled
from PIL import Image

SAMPLES = sorted(p for p in (ROOT / "tests" / "data").glob("*.jpg"))


def unique_photo(index: int, folder: Path, long_side: int) -> Path:
    """Sample ``index % n`` enlarged to a phone photo's size and re-encoded so that its bytes are this session's own."""
    source = SAMPLES[index % len(SAMPLES)]
    image = Image.open(source).convert("RGB")
    scale = long_side / max(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    image.putpixel((0, 0), (index % 256, (index * 7) % 256, (index * 13) % 256))
    path = folder / f"s{index:03d}_{source.name}"
    image.save(path, "JPEG", quality=80 + index % 15)
    return path


def batch_zip(index: int, folder: Path, long_side: int) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for k in range(4):
            archive.write(unique_photo(index * 10 + k + 1000, folder, long_side // 2), f"survey/photo_{k}.jpg")
    path = folder / f"batch_{index:03d}.zip"
    path.write_bytes(buffer.getvalue())
    return path


def run_batch(page, zip_path: Path) -> None:
    page.locator("[data-testid='stSidebarNav'] a").filter(has_text="Batch").click()
    page.get_by_text("Batch identification").first.wait_for()
    page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(str(zip_path))
    page.get_by_role("button", name="Identify 4 photos").click()
    page.get_by_text("Download all results (CSV)").wait_for()
    page.locator("[data-testid='stDataFrame']").first.wait_for()
    settled(page)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--batch-every", type=int, default=5)
    parser.add_argument("--settle", type=float, default=0.0, help="seconds to wait after the last session")
    parser.add_argument("--label", default="latest")
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the venv that serves the app")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose app is served")
    parser.add_argument("--long-side", type=int, default=2400, help="px: each uploaded photo is enlarged to this")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "server_memory.json"))
    args = parser.parse_args()

    os.chdir(args.tree)  # Streamlit's config (read for the JSON) is the served checkout's .streamlit/config.toml
    folder = Path(tempfile.mkdtemp(prefix="server_memory_photos_"))
    series: list[dict[str, object]] = []
    with chromium() as browser, app_server(args.python, args.tree, {"PYTHONPATH": str(args.tree)}) as server:
        start = time.perf_counter()
        base = server.status()
        print("server started", base, flush=True)
        for index in range(args.sessions):
            context = browser.new_context(viewport={"width": 1400, "height": 1800})
            page = context.new_page()
            page.set_default_timeout(180_000)
            began = time.perf_counter()
            open_identify(page, server.url)
            identify_upload(page, unique_photo(index, folder, args.long_side))
            batch = args.batch_every > 0 and index % args.batch_every == args.batch_every - 1
            if batch:
                run_batch(page, batch_zip(index, folder, args.long_side))
            context.close()
            sample = {
                "session": index + 1,
                "batch": batch,
                "seconds": round(time.perf_counter() - began, 2),
                "at_s": round(time.perf_counter() - start, 1),
                **{f"{k}_mb": v for k, v in server.status().items()},
            }
            series.append(sample)
            print(sample, flush=True)
        settled_sample = None
        if args.settle > 0:
            time.sleep(args.settle)  # a benchmark waiting out the server's session TTL, not a test
            settled_sample = {"after_s": args.settle, **{f"{k}_mb": v for k, v in server.status().items()}}
            print("settled", settled_sample, flush=True)
        config = {
            "server.disconnectedSessionTTL": _config_value("server.disconnectedSessionTTL"),
        }
    rss = [int(s["VmRSS_mb"]) for s in series]  # type: ignore[call-overload]
    after_five = rss[5:] if len(rss) > 5 else rss
    result = {
        **header("python benchmarks/bench_server_memory.py " + " ".join(sys.argv[1:])),
        "label": args.label,
        "sessions": args.sessions,
        "batch_every": args.batch_every,
        "started_mb": base,
        "series": series,
        "settled": settled_sample,
        "peak_hwm_mb": max(int(s["VmHWM_mb"]) for s in series),  # type: ignore[call-overload]
        "rss_after_session_5_mb": rss[4] if len(rss) > 4 else None,
        "rss_last_mb": rss[-1],
        "rss_spread_after_five_mb": max(after_five) - min(after_five),
        "rss_growth_session_5_to_last_mb": rss[-1] - rss[4] if len(rss) > 4 else None,
        "config": config,
    }
    print({k: v for k, v in result.items() if k not in ("series",)})
    out = Path(args.out)
    merged = json.loads(out.read_text()) if out.is_file() else {}
    measurements = merged.get("measurements", {}) if isinstance(merged, dict) else {}
    measurements[args.label] = result
    save({"measurements": measurements}, out)


def _config_value(name: str) -> object:
    """The option's value as the server's checkout configures it (.streamlit/config.toml, else Streamlit's default)."""
    import streamlit.config as st_config

    st_config.get_config_options(force_reparse=True)
    return st_config.get_option(name)


if __name__ == "__main__":
    main()
