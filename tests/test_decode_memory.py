"""Decoding memory, measured: small crafted files of large pictures, in every format the decoder opens.

Each file is decoded in a fresh process and the growth of its peak resident memory (Pillow's C
allocations included, which tracemalloc would not see) is compared with the bound
``ImageLimits.max_decode_bytes`` and with the cost ``decode_cost`` worked out from the header. The peak
is the kernel's ``VmHWM`` of the process: ``getrusage(RUSAGE_SELF).ru_maxrss`` would do, but a child
started from a large process (pytest with the model loaded) inherits its parent's peak across
``exec``, which hides the growth (measured 0 MB for a 200 MB decode). The
files are written by hand (a PNG's rows through zlib, a JPEG's blocks as single Huffman bits, a TIFF
with one strip, an RLE bitmap), so a 100-megapixel picture is a few hundred kilobytes and takes no
memory to make.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from whales_identify.config import ImageLimits

REPO = Path(__file__).parent.parent
BOUND_MB = ImageLimits().max_decode_bytes / 2**20


# --- crafted files ------------------------------------------------------------------------------------------
def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def write_png(path: Path, width: int, height: int, color_type: int = 2, bit_depth: int = 8, transparent=False) -> None:
    """A uniform PNG, its rows compressed as a stream (no picture in memory)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    row = b"\x00" + bytes([0x5A]) * ((width * channels * bit_depth + 7) // 8)
    compressor = zlib.compressobj(1)
    rows_per_block = max(1, (4 << 20) // len(row))
    parts, done = [], 0
    while done < height:
        count = min(rows_per_block, height - done)
        parts.append(compressor.compress(row * count))
        done += count
    parts.append(compressor.flush())
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))]
    if color_type == 3:
        chunks.append(_png_chunk(b"PLTE", bytes(range(256)) * 3))
        if transparent:
            chunks.append(_png_chunk(b"tRNS", b"\x00"))
    chunks += [_png_chunk(b"IDAT", b"".join(parts)), _png_chunk(b"IEND", b"")]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(chunks))


def _jpeg_segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def write_jpeg(path: Path, width: int, height: int, progressive: bool = False, luma_sampling: int = 0x22) -> None:
    """A uniform grey JPEG coded by hand: every block is a DC difference of 0 (one bit) and, for a
    baseline file, an end-of-block (one bit); a progressive file holds just its first (DC) scan."""
    components = [(1, luma_sampling), (2, 0x11), (3, 0x11)]
    frame = struct.pack(">BHHB", 8, height, width, 3) + b"".join(bytes([c, s, 0]) for c, s in components)
    start_of_frame = _jpeg_segment(0xC2 if progressive else 0xC0, frame)
    parts = [b"\xff\xd8", _jpeg_segment(0xDB, b"\x00" + b"\x01" * 64), start_of_frame]
    parts.append(_jpeg_segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00"))  # DC table: "0" is symbol 0
    if not progressive:
        parts.append(_jpeg_segment(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00"))  # AC table: "0" is EOB
    scan = bytes([3]) + b"".join(bytes([c, 0]) for c, _ in components) + bytes([0, 0 if progressive else 63, 0])
    parts.append(_jpeg_segment(0xDA, scan))
    h, v = luma_sampling >> 4, luma_sampling & 15
    blocks = -(-width // (8 * h)) * -(-height // (8 * v)) * (h * v + 2)
    bits = blocks * (1 if progressive else 2)
    parts.append(bytes(bits // 8) + (bytes([(1 << (8 - bits % 8)) - 1]) if bits % 8 else b""))
    path.write_bytes(b"".join([*parts, b"\xff\xd9"]))


def write_tiff_one_strip(path: Path, width: int, height: int) -> None:
    """An RGB TIFF whose whole picture is one deflate strip: libtiff decodes it into a buffer of its own."""
    compressor = zlib.compressobj(1)
    row = bytes([0x40]) * (width * 3)
    rows = max(1, (4 << 20) // len(row))
    parts, done = [], 0
    while done < height:
        count = min(rows, height - done)
        parts.append(compressor.compress(row * count))
        done += count
    data = b"".join([*parts, compressor.flush()])
    bits_per_sample = struct.pack("<HHH", 8, 8, 8)
    data_offset = 8 + len(bits_per_sample)
    ifd_offset = data_offset + len(data) + len(data) % 2

    def entry(tag: int, kind: int, count: int, value: int) -> bytes:
        if kind == 3 and count == 1:
            return struct.pack("<HHIHH", tag, kind, count, value, 0)
        return struct.pack("<HHII", tag, kind, count, value)

    entries = [
        entry(256, 4, 1, width),
        entry(257, 4, 1, height),
        entry(258, 3, 3, 8),  # BitsPerSample: at offset 8
        entry(259, 3, 1, 8),  # deflate
        entry(262, 3, 1, 2),  # RGB
        entry(273, 4, 1, data_offset),
        entry(277, 3, 1, 3),
        entry(278, 4, 1, height),  # one strip
        entry(279, 4, 1, len(data)),
        entry(284, 3, 1, 1),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", 0)
    header = b"II*\x00" + struct.pack("<I", ifd_offset)
    path.write_bytes(header + bits_per_sample + data + b"\x00" * (len(data) % 2) + ifd)


def write_bmp_rle8(path: Path, width: int, height: int) -> None:
    """An 8-bit run-length-encoded bitmap: 255 pixels in two bytes."""
    row = bytearray()
    left = width
    while left:
        count = min(255, left)
        row += bytes([count, 1])
        left -= count
    pixels = bytes(row + b"\x00\x00") * height + b"\x00\x01"
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    path.write_bytes(b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels)


def write_gif(path: Path, width: int, height: int) -> None:
    """A palette GIF with transparency (Pillow's LZW makes a uniform picture tiny)."""
    image = Image.new("P", (width, height))
    image.putpalette(bytes(range(256)) * 3)
    image.save(path, transparency=0)


def write_webp(path: Path, width: int, height: int) -> None:
    Image.new("RGB", (width, height), (20, 90, 140)).save(path, quality=50, method=0)


# name → (writer, decoded: True when it is within the bound, False when it must be refused from the header)
CASES: dict[str, tuple[Callable[[Path], None], bool]] = {
    # the reported ones: a 173 KB 59 MP PNG (+448 MB), a 44 KB GIF (+792 MB), a 12000×9000 progressive JPEG (+304 MB)
    "png_rgb_59mp": (lambda p: write_png(p, 8880, 6640), False),
    "gif_palette_transparent_59mp": (lambda p: write_gif(p, 8880, 6640), True),
    "jpeg_progressive_108mp": (lambda p: write_jpeg(p, 12000, 9000, progressive=True), False),
    # formats and modes, just under the bound
    "png_rgb_50mp": (lambda p: write_png(p, 8160, 6120), True),
    "png_rgba_50mp": (lambda p: write_png(p, 8160, 6120, color_type=6), True),
    "png_grey16_59mp": (lambda p: write_png(p, 8880, 6640, color_type=0, bit_depth=16), True),
    "png_palette_120mp": (lambda p: write_png(p, 12000, 9990, color_type=3), True),
    "jpeg_progressive_70mp": (lambda p: write_jpeg(p, 9600, 7200, progressive=True), True),
    "jpeg_progressive_444_35mp": (lambda p: write_jpeg(p, 6800, 5100, progressive=True, luma_sampling=0x11), True),
    "jpeg_baseline_48mp_phone": (lambda p: write_jpeg(p, 8000, 6000), True),
    "jpeg_baseline_120mp": (lambda p: write_jpeg(p, 12640, 9480), True),
    "tiff_one_strip_27mp": (lambda p: write_tiff_one_strip(p, 6000, 4500), True),
    "tiff_one_strip_50mp": (lambda p: write_tiff_one_strip(p, 8000, 6250), False),
    "bmp_rle8_59mp": (lambda p: write_bmp_rle8(p, 8880, 6640), True),
    "webp_12mp_phone": (lambda p: write_webp(p, 4032, 3024), True),
    "webp_30mp": (lambda p: write_webp(p, 6000, 5000), False),
}

# The peak resident memory of this process (MB): VmHWM, which a child does not inherit (ru_maxrss does).
PEAK_RSS = r"""
def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource  # not Linux: ru_maxrss (KB on Linux, bytes on macOS)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
"""

_MEASURE = r"""
import io, sys
from PIL import Image
from whales_identify.errors import InvalidImageError
from whales_identify.inputs import imaging
data = open(sys.argv[1], "rb").read()
with Image.open(io.BytesIO(data)) as probe:  # the cost worked out from the header (no pixel read)
    cost = imaging.decode_cost(probe, data, imaging._target_long_side(*probe.size, None, imaging.LIMITS))
before = peak_rss_mb()
try:
    image = imaging.decode_image(data)
    outcome = "decoded %dx%d" % image.size
except InvalidImageError as exc:
    outcome = "refused: %s" % exc
print(peak_rss_mb() - before, cost / 2**20, outcome)
"""


def crafted_file(folder: Path, name: str) -> Path:
    """The case's file: its name with the format's usual extension."""
    return folder / f"{name}.{name.split('_')[0].replace('jpeg', 'jpg').replace('tiff', 'tif')}"


def measure(path: Path) -> tuple[float, float, str]:
    """Peak RSS growth (MB) of ``decode_image`` on a file in a fresh process, its header cost (MB), the outcome."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS + _MEASURE, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    growth, cost, outcome = done.stdout.strip().split(maxsplit=2)
    return float(growth), float(cost), outcome


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("crafted")
    for name, (write, _) in CASES.items():
        write(crafted_file(folder, name))
    return folder


@pytest.mark.parametrize("name", list(CASES))
def test_decoding_memory_is_bounded_for_every_format(crafted: Path, name: str) -> None:
    decodes = CASES[name][1]
    path = crafted_file(crafted, name)
    growth, cost, outcome = measure(path)
    size_kb = path.stat().st_size / 1024
    print(f"{name}: {size_kb:.0f} KB, +{growth:.0f} MB peak RSS, header cost {cost:.0f} MB: {outcome[:90]}")
    assert growth <= BOUND_MB, f"{name}: +{growth:.0f} MB, over the {BOUND_MB:.0f} MB bound ({outcome})"
    if decodes:
        assert outcome.startswith("decoded") and max(map(int, outcome.split()[1].split("x"))) <= 1280, outcome
        assert growth <= cost, f"{name}: +{growth:.0f} MB, more than the {cost:.0f} MB worked out from the header"
    else:
        assert outcome.startswith("refused") and "memory" in outcome, outcome
        assert growth < 16, f"{name}: refused, yet +{growth:.0f} MB: pixels were read before refusing"


_BATCH = r"""
import sys
from whales_identify.batch.local import run_batch
from whales_identify.matching.identifier import Identifier
identifier = Identifier.load()
list(run_batch(identifier, sys.argv[2]))  # warm: ONNX Runtime's sessions and arenas for both workers
before = peak_rss_mb()
rows = list(run_batch(identifier, sys.argv[1]))
print(peak_rss_mb() - before, identifier.batch_plan()[1], " ".join(sorted(r.status for r in rows)))
"""


def test_a_small_zip_of_large_pictures_stays_within_one_bound_per_batch_worker(crafted: Path, tmp_path: Path) -> None:
    """The reported case: a 537 KB ZIP of such files reached 2.4 GB in ``batch`` (two workers decode at once)."""
    archive = tmp_path / "crafted.zip"
    names = ["gif_palette_transparent_59mp", "png_rgb_50mp", "jpeg_progressive_70mp", "png_rgb_59mp", "bmp_rle8_59mp"]
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            zf.write(crafted_file(crafted, name), crafted_file(Path("trip"), name).as_posix())
    warm = tmp_path / "warm"
    warm.mkdir()
    Image.new("RGB", (640, 480), (20, 90, 140)).save(warm / "a.jpg")
    Image.new("RGB", (640, 480), (120, 90, 40)).save(warm / "b.jpg")
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS + _BATCH, str(archive), str(warm)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    growth, workers, statuses = done.stdout.strip().split(maxsplit=2)
    print(f"{archive.stat().st_size / 1024:.0f} KB ZIP, {workers} workers: +{float(growth):.0f} MB; {statuses}")
    assert len(statuses.split()) == len(names) and "skipped" not in statuses
    assert float(growth) <= int(workers) * BOUND_MB, f"+{float(growth):.0f} MB with {workers} workers"


_METADATA = r"""
import sys
from whales_identify.inputs.exif import read_metadata
data = open(sys.argv[1], "rb").read()
before = peak_rss_mb()
meta = read_metadata(data)
print(peak_rss_mb() - before)
"""


@pytest.mark.parametrize("name", ["png_rgb_59mp", "png_palette_120mp", "webp_30mp", "tiff_one_strip_50mp"])
def test_reading_a_photos_metadata_never_decodes_its_pixels(crafted: Path, name: str) -> None:
    """Pillow's PNG ``getexif`` decodes the whole picture when the EXIF is not in the header: a batch read
    the metadata of every row (refused ones too) that way, a third full decode beside the two workers'."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS + _METADATA, str(crafted_file(crafted, name))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    growth = float(done.stdout.strip())
    assert growth < 16, f"{name}: reading its EXIF took +{growth:.0f} MB"
