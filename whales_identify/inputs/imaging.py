"""Safe photo decoding: any bytes in, an RGB image or an InvalidImageError out.

Decoding memory is bounded by ``ImageLimits.max_decode_bytes`` for every format: the cost of a
decode (decoded pixels × bytes per pixel of the decoded mode, plus what the codec itself keeps:
libjpeg's coefficient buffer for progressive JPEGs, libtiff's strip buffer, libwebp's canvases,
libheif's RGB output)
is worked out from the header and a photo over the bound is refused before any pixel is read.
JPEGs are reduced while decoding (draft mode); other formats (HEIC/HEIF too, through pillow-heif,
registered when this module is imported) are decoded at full size in their own mode (1 byte a pixel
for palette and greyscale) and converted to RGB tile by tile while they are reduced, so no second
full-size copy is ever made. EXIF orientation is applied; Pillow's decompression-bomb limit is set
on purpose. Whatever the bytes, only ``InvalidImageError`` comes out.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from whales_identify.config import ImageLimits
from whales_identify.errors import InvalidImageError
from whales_identify.inputs.archive import not_regular_reason, open_regular_file
from whales_identify.inputs.heif import HEIF_FORMAT, register_heif

LIMITS = ImageLimits()
Image.MAX_IMAGE_PIXELS = LIMITS.max_pixels
# PNG text chunks are kept in memory (64 MB by default): a photo needs none of them.
PngImagePlugin.MAX_TEXT_MEMORY = 4 * 1024 * 1024

# The only formats opened (a JPEG with extra pictures, as some cameras save, opens as "MPO"; HEIC/HEIF
# through pillow-heif, registered here, once). Anything else Pillow knows (PSD, EPS, ICO, TGA, …) is
# refused as "not an image file".
FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF", *((HEIF_FORMAT,) if register_heif() else ()))
MIB = 1024 * 1024
# Bytes a decode costs besides the pixels: codec libraries, the tile being converted, Python objects.
DECODE_OVERHEAD_BYTES = 24 * MIB
# Pixels of a full-size image converted to RGB at a time (a tile), while it is reduced.
_TILE_SIDE = 1024
# Pillow keeps 1, L and P at one byte a pixel, 16-bit greyscale at two, everything else at four.
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# libwebp's animation decoder (which Pillow uses for every WebP) keeps two RGBA canvases, Pillow
# copies the frame out as bytes, then into the image: four RGBA copies of the picture.
_WEBP_BYTES_PER_PIXEL = 16
# libheif cannot reduce while decoding: it decodes the HEVC picture (YCbCr planes, 10-bit ones in two
# bytes a sample), converts it to interleaved RGB(A) that pillow-heif hands over, and Pillow copies that
# into its image (four bytes a pixel). Measured peak growth: 7.1-7.7 bytes a pixel for 8-bit RGB (12 and
# 48 MP, grid or single picture), 8.0 for 10-bit, 8.6 for RGBA (tests/test_heic.py).
_HEIF_DECODER_BYTES_PER_PIXEL = 2


def read_bytes(source: bytes | str | Path, limits: ImageLimits = LIMITS) -> bytes:
    """Bytes of a path or the bytes themselves, with the size limit checked first.

    Only regular files are read: a FIFO, device or socket would block or never end, and a folder is not
    a photo. The file is opened without blocking and checked on the open descriptor (no race with a swap).
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        data = _read_regular_file(Path(source), limits)
    if not data:
        raise InvalidImageError("the file is empty (0 bytes)")
    if len(data) > limits.max_file_bytes:
        raise InvalidImageError(
            f"the file is {len(data) / 1e6:.0f} MB; the limit is {limits.max_file_bytes / 1e6:.0f} MB"
        )
    return data


def _read_regular_file(path: Path, limits: ImageLimits) -> bytes:
    try:
        reason = not_regular_reason(path.stat().st_mode)  # a photo named directly may be a link: followed
        if reason is not None:  # (a folder cannot even be opened for reading)
            raise InvalidImageError(f"{path.name}: {reason}")
        with open_regular_file(path) as handle:  # never blocks, and checked again on the open file
            size = os.fstat(handle.fileno()).st_size
            if size > limits.max_file_bytes:
                raise InvalidImageError(
                    f"{path.name} is {size / 1e6:.0f} MB; the limit is {limits.max_file_bytes / 1e6:.0f} MB"
                )
            return handle.read(limits.max_file_bytes + 1)  # never more, even if the file grows meanwhile
    except ValueError as exc:  # not a regular file (swapped since the check above)
        raise InvalidImageError(f"{path.name}: {exc}") from exc
    except OSError as exc:
        raise InvalidImageError(f"cannot read {path.name}: {exc.strerror or exc}") from exc


# ISO base-media brands of AVIF photos, and of HEIC/HEIF ones (iPhones save HEIC by default).
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}


def _iso_brand(data: bytes) -> bytes | None:
    return data[8:12] if len(data) >= 12 and data[4:8] == b"ftyp" else None


def _unreadable_reason(data: bytes) -> str:
    """Why Pillow could not open ``data``, in words."""
    brand = _iso_brand(data)
    if brand in _AVIF_BRANDS:
        return "this is an AVIF photo, which cannot be read here; export it as JPEG and try again"
    if brand in _HEIF_BRANDS:
        if HEIF_FORMAT not in FORMATS:
            return (
                "this is a HEIC/HEIF photo (the iPhone default), which cannot be read here without the "
                "pillow-heif package; export it as JPEG (iPhone: Settings › Camera › Formats › Most "
                "Compatible) or install pillow-heif, and try again"
            )
        return (
            "this HEIC/HEIF photo is damaged, cut short or uses a feature the HEIF decoder does not support; "
            "export it as JPEG (iPhone: Settings › Camera › Formats › Most Compatible) and try again"
        )
    return "not an image file Pillow can read (JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC)"


def decode_image(source: bytes | str | Path, limits: ImageLimits = LIMITS, long_side: int | None = None) -> Image.Image:
    """Decode to an upright RGB image whose long side is at most ``long_side``
    (default ``limits.decode_long_side``), in at most ``limits.max_decode_bytes`` of memory."""
    data = read_bytes(source, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            if width * height > limits.max_pixels:
                raise InvalidImageError(
                    f"the image is {width}×{height} pixels ({width * height / 1e6:.0f} MP); "
                    f"the limit is {limits.max_pixels / 1e6:.0f} MP"
                )
            long_side = _target_long_side(width, height, long_side, limits)
            _check_reduced_size(width, height, long_side, limits)  # a long thin strip: refused before decoding
            cost = decode_cost(image, data, long_side)  # for a JPEG this also sets the reduced decode
            if cost > limits.max_decode_bytes:
                raise InvalidImageError(
                    f"the {image.format or 'image'} is {width}×{height} pixels ({width * height / 1e6:.0f} MP, "
                    f"{image.mode}{', progressive' if _jpeg_multi_scan(image, data) else ''}); decoding it "
                    f"would take about {cost / MIB:.0f} MB of memory, over the {limits.max_decode_bytes / MIB:.0f} MB "
                    "limit — save it as a (baseline) JPEG, which is reduced while decoding, or make it smaller"
                )
            image.load()  # an animated GIF/WebP/APNG or a multi-page TIFF: its first frame
            orientation = _orientation(image)
            image = _reduce_to_rgb(image, long_side)
            image = _upright(image, orientation)
            if min(image.size) < limits.min_side:  # (the header check above catches almost all of these)
                raise InvalidImageError(
                    f"the image is {width}×{height} pixels, {image.width}×{image.height} once reduced; "
                    f"at least {limits.min_side} px a side are needed"
                )
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError(f"refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError(_unreadable_reason(data)) from exc
    except MemoryError as exc:
        raise InvalidImageError("the image is too large to decode in the memory available") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError) as exc:
        raise InvalidImageError(f"the image is corrupt or truncated ({exc})") from exc
    except Exception as exc:  # any other decoder failure on hostile bytes is still a bad file, not a crash
        raise InvalidImageError(f"the image could not be decoded ({type(exc).__name__}: {exc})") from exc
    return image


def _target_long_side(width: int, height: int, wanted: int | None, limits: ImageLimits) -> int:
    """The long side to reduce to: as asked, but never so small that the short side drops under
    ``min_side`` when the photo itself is large enough (a panorama stays a valid photo)."""
    cap = limits.decode_long_side
    target = min(wanted or cap, cap)
    short, long = sorted((max(width, 1), max(height, 1)))
    keeps_short_side = math.ceil(limits.min_side * long / short)
    return min(max(target, keeps_short_side), cap)


def _reduced_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """The size ``thumbnail((long_side, long_side))`` gives."""
    scale = min(1.0, long_side / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _check_reduced_size(width: int, height: int, long_side: int, limits: ImageLimits) -> None:
    reduced = _reduced_size(width, height, long_side)
    if min(reduced) >= limits.min_side:
        return
    once = "" if reduced == (width, height) else f", {reduced[0]}×{reduced[1]} once reduced"
    raise InvalidImageError(
        f"the image is {width}×{height} pixels{once}; at least {limits.min_side} px a side are needed"
    )


# --- what a decode costs, from the header ---------------------------------------------------------------
def bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow stores per pixel of ``mode``."""
    return _BYTES_PER_PIXEL.get(mode, 4)


def decode_cost(image: Image.Image, data: bytes, long_side: int) -> int:
    """Peak bytes ``decode_image`` needs for this opened (not loaded) image, from its header alone.

    For a JPEG this sets the reduced decode (draft mode) first, so the size is the reduced one.
    """
    width, height = image.size  # full size
    if image.format in ("JPEG", "MPO"):
        scale = long_side / max(width, height, 1)
        image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
    decoded_w, decoded_h = image.size
    pixels = decoded_w * decoded_h
    cost = pixels * bytes_per_pixel(image.mode)
    if image.format in ("JPEG", "MPO"):
        cost += _jpeg_coefficient_bytes(image, data, width, height)
    elif image.format == "WEBP":
        cost = pixels * _WEBP_BYTES_PER_PIXEL
    elif image.format == "TIFF":
        cost += _tiff_strip_bytes(image, data)
    elif image.format == HEIF_FORMAT:  # libheif's RGB(A) output and its planes, beside Pillow's copy
        cost += pixels * (len(image.mode) + _HEIF_DECODER_BYTES_PER_PIXEL)
    elif image.format == "BMP":
        cost += 2 * pixels  # the RLE decoder (Python) gathers the pixels twice before the image holds them
    if image.mode != "RGB":  # reduced tile by tile into an RGB canvas
        factor = max(1, max(decoded_w, decoded_h) // max(long_side, 1))
        cost += math.ceil(decoded_w / factor) * math.ceil(decoded_h / factor) * 4
    reduced = _reduced_size(decoded_w, decoded_h, long_side)
    return cost + reduced[0] * reduced[1] * 4 * 2 + DECODE_OVERHEAD_BYTES


def _jpeg_multi_scan(image: Image.Image, data: bytes) -> bool:
    """libjpeg buffers the whole picture's coefficients for a progressive JPEG, and for a sequential one
    whose first scan lacks some colour components (several scans): draft mode does not help then."""
    if image.format not in ("JPEG", "MPO"):
        return False
    if image.info.get("progressive") or image.info.get("progression"):
        return True
    components = len(getattr(image, "layer", []) or []) or 1
    first_scan = _first_scan_components(data)
    return first_scan is None or first_scan < components


def _first_scan_components(data: bytes) -> int | None:
    """Colour components in a JPEG's first scan (SOS), or None when the markers cannot be followed."""
    i, n = 2, len(data)
    while i + 4 < n:
        if data[i] != 0xFF:  # stray bytes between segments (libjpeg skips them too)
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x00, 0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        if marker == 0xDA:
            return data[i + 4]
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _jpeg_coefficient_bytes(image: Image.Image, data: bytes, width: int, height: int) -> int:
    if not _jpeg_multi_scan(image, data):
        return 0
    layers = getattr(image, "layer", None) or [("", 1, 1, 0)] * 3
    h_max = max(max(layer[1] for layer in layers), 1)
    v_max = max(max(layer[2] for layer in layers), 1)
    mcus_wide, mcus_high = math.ceil(width / (8 * h_max)), math.ceil(height / (8 * v_max))
    blocks = sum(mcus_wide * max(layer[1], 1) * mcus_high * max(layer[2], 1) for layer in layers)
    return blocks * 64 * 2  # 64 coefficients of 16 bits a block, for the full-size picture


def _tiff_strip_bytes(image: Image.Image, data: bytes) -> int:
    """libtiff decodes a strip (or tile) at a time into a buffer of its own, plus the compressed strip."""
    tags = getattr(image, "tag_v2", {})
    width, height = image.size
    if 322 in tags and 323 in tags:
        strip_pixels = int(tags[322]) * int(tags[323])
    else:
        strip_pixels = width * min(int(tags.get(278, height) or height), height)
    samples = int(tags.get(277, 1) or 1)
    bits = tags.get(258, (8,))
    sample_bits = max(bits) if isinstance(bits, tuple) and bits else int(bits or 8)
    per_pixel = math.ceil(samples * sample_bits / 8)
    if tags.get(262) == 6 or tags.get(259) in (6, 7):  # YCbCr or JPEG-in-TIFF: decoded as 32-bit RGBA
        per_pixel = max(per_pixel, 4)
    return min(strip_pixels, width * height) * per_pixel + len(data)


# --- orientation ------------------------------------------------------------------------------------------
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
        return int(value) if isinstance(value, int) else 1
    except Exception:  # unreadable EXIF: the photo is used as stored
        return 1


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    """EXIF orientation, applied to the reduced image (the same as applying it before reducing)."""
    method = _TRANSPOSE.get(orientation)
    return image.transpose(method) if method is not None else image


# --- reduce and convert -----------------------------------------------------------------------------------
def _reduce_to_rgb(image: Image.Image, long_side: int) -> Image.Image:
    """An RGB image with its long side at most ``long_side``, never holding a second full-size copy.

    RGB (every JPEG) is box-reduced as it is; other modes are converted tile by tile (box-reduced by the
    same integer factor) into a canvas under twice ``long_side``, which is then resized to ``long_side``.
    """
    width, height = image.size
    factor = max(1, max(width, height) // max(long_side, 1))
    if image.mode == "RGB":
        reduced = image.reduce(factor) if factor > 1 else image
    else:
        to_rgb = _rgb_converter(image)
        reduced = Image.new("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
        tile = max(factor, _TILE_SIDE // factor * factor)  # a multiple of the factor: the same as one reduce
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                part = to_rgb(image.crop((left, top, min(width, left + tile), min(height, top + tile))))
                reduced.paste(part.reduce(factor) if factor > 1 else part, (left // factor, top // factor))
    if max(reduced.size) > long_side:
        reduced.thumbnail((long_side, long_side), Image.Resampling.BILINEAR)  # in place (the opened image too)
    return reduced.copy() if reduced is image else reduced  # a plain image, detached from the file


def _rgb_converter(image: Image.Image) -> Callable[[Image.Image], Image.Image]:
    """How one tile of ``image`` becomes RGB: 16-bit and float scaled, palette and transparency onto white."""
    mode = image.mode
    if mode == "F":
        low, high = _finite_range(image)
        scale = 255.0 / (high - low) if high > low else 0.0

        def float_to_rgb(tile: Image.Image) -> Image.Image:
            values = np.asarray(tile, dtype=np.float32)
            scaled = np.nan_to_num((values - low) * scale, nan=0.0, posinf=255.0, neginf=0.0)
            return Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8)).convert("RGB")

        return float_to_rgb
    if mode == "I":
        low, high = cast(tuple[float, float], image.getextrema())  # one band: (min, max)
        if low >= 0 and high <= 65535:  # 16-bit values held as 32-bit (some PNGs and TIFFs)
            return lambda tile: tile.point(lambda v: v / 256).convert("L").convert("RGB")
        span = max(high - low, 1)
        return lambda tile: tile.point(lambda v: (v - low) * 255 / span).convert("L").convert("RGB")
    if mode.startswith("I;16"):
        return lambda tile: tile.point(lambda v: v / 256).convert("L").convert("RGB")
    return _to_rgb


def _finite_range(image: Image.Image) -> tuple[float, float]:
    """The smallest and largest finite value of a float image, read tile by tile."""
    low, high = math.inf, -math.inf
    width, height = image.size
    for top in range(0, height, _TILE_SIDE):
        for left in range(0, width, _TILE_SIDE):
            values = np.asarray(image.crop((left, top, min(width, left + _TILE_SIDE), min(height, top + _TILE_SIDE))))
            finite = values[np.isfinite(values)]
            if finite.size:
                low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    if low > high:
        raise InvalidImageError("the floating-point image holds no finite values (all NaN or infinite)")
    return low, high


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any 8-bit mode: palette, CMYK, greyscale; transparency onto white."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def encode_jpeg(image: Image.Image, long_side: int | tuple[int, int], quality: int, optimize: bool = False) -> bytes:
    """A JPEG of ``image`` with its long side at most ``long_side`` pixels (thumbnails, stored crops, previews),
    or fitted inside a (width, height) box when ``long_side`` is a pair (the comparison strip)."""
    box = long_side if isinstance(long_side, tuple) else (long_side, long_side)
    copy = image.convert("RGB")  # always a copy: the caller's image is left as it is
    if copy.width > box[0] or copy.height > box[1]:
        copy.thumbnail(box, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    copy.save(buffer, format="JPEG", quality=quality, optimize=optimize)
    return buffer.getvalue()
