"""Safe photo decoding: any bytes in, an RGB image or an InvalidImageError out.

Large photos are reduced while decoding (JPEG draft mode) so a 100-megapixel
JPEG costs little memory; formats without a reduced decode (PNG, TIFF, WebP, …)
are refused above ``ImageLimits.max_full_decode_pixels`` before any pixel is
read; EXIF orientation is applied before anything looks at the pixels;
Pillow's decompression-bomb limit is set on purpose. Whatever the bytes, only
``InvalidImageError`` comes out.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from whales_identify.config import ImageLimits
from whales_identify.errors import InvalidImageError

LIMITS = ImageLimits()
Image.MAX_IMAGE_PIXELS = LIMITS.max_pixels


def read_bytes(source: bytes | str | Path, limits: ImageLimits = LIMITS) -> bytes:
    """Bytes of a path or the bytes themselves, with the size limit checked first."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise InvalidImageError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
        if size > limits.max_file_bytes:
            raise InvalidImageError(
                f"{path.name} is {size / 1e6:.0f} MB; the limit is {limits.max_file_bytes / 1e6:.0f} MB"
            )
        data = path.read_bytes()
    if not data:
        raise InvalidImageError("the file is empty (0 bytes)")
    if len(data) > limits.max_file_bytes:
        raise InvalidImageError(
            f"the file is {len(data) / 1e6:.0f} MB; the limit is {limits.max_file_bytes / 1e6:.0f} MB"
        )
    return data


# ISO base-media brands of HEIC/HEIF/AVIF photos (iPhones save HEIC by default).
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}


def _is_heif(data: bytes) -> bool:
    return len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS


def decode_image(source: bytes | str | Path, limits: ImageLimits = LIMITS, long_side: int | None = None) -> Image.Image:
    """Decode to an upright RGB image whose long side is at most ``long_side``
    (default ``limits.decode_long_side``); a JPEG is reduced while it is decoded."""
    data = read_bytes(source, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            if image.format == "PDF":
                raise InvalidImageError("this is a PDF, not a photograph")
            width, height = image.size
            if width * height > limits.max_pixels:
                raise InvalidImageError(
                    f"the image is {width}×{height} pixels ({width * height / 1e6:.0f} MP); "
                    f"the limit is {limits.max_pixels / 1e6:.0f} MP"
                )
            long_side = _target_long_side(width, height, long_side, limits)
            if image.format == "JPEG":
                # The largest DCT reduction that keeps the long side at or above ``long_side``.
                scale = long_side / max(width, height, 1)
                image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
            elif width * height > limits.max_full_decode_pixels:
                # No reduced decode for this format: reading it would cost the full size in memory.
                raise InvalidImageError(
                    f"the {image.format or 'image'} is {width}×{height} pixels ({width * height / 1e6:.0f} MP); "
                    f"above {limits.max_full_decode_pixels / 1e6:.0f} MP only JPEG can be reduced while decoding "
                    "— save it as a JPEG or make it smaller"
                )
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)  # animated GIF/WebP: the first frame
            image.load()
            image = ImageOps.exif_transpose(image)
            image = _to_rgb(image)
            upright = image.size
            if max(image.size) > long_side:
                image.thumbnail((long_side, long_side), Image.Resampling.BILINEAR)
            if min(image.size) < limits.min_side:  # checked after the reduction: a long thin strip fails too
                reduced = "" if image.size == upright else f", {image.width}×{image.height} once reduced"
                raise InvalidImageError(
                    f"the image is {upright[0]}×{upright[1]} pixels{reduced}; "
                    f"at least {limits.min_side} px a side are needed"
                )
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError(f"refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        if _is_heif(data):
            raise InvalidImageError(
                "this is a HEIC/HEIF photo (the iPhone default), which cannot be read here without an extra "
                "codec; export it as JPEG (iPhone: Settings › Camera › Formats › Most Compatible) and try again"
            ) from exc
        raise InvalidImageError("not an image file Pillow can read (JPEG, PNG, WebP, TIFF, BMP, GIF)") from exc
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


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any mode: 16-bit, palette, CMYK, greyscale; transparency onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def encode_jpeg(image: Image.Image, long_side: int, quality: int, optimize: bool = False) -> bytes:
    """A JPEG of ``image`` with its long side at most ``long_side`` pixels (thumbnails, stored crops, previews)."""
    copy = image.convert("RGB")  # always a copy: the caller's image is left as it is
    if max(copy.size) > long_side:
        copy.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    copy.save(buffer, format="JPEG", quality=quality, optimize=optimize)
    return buffer.getvalue()
