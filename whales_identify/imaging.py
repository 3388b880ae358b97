"""Safe photo decoding: any bytes in, an RGB image or an InvalidImageError out.

Large photos are reduced while decoding (JPEG draft mode) so a 40-megapixel
file costs little memory; EXIF orientation is applied before anything looks at
the pixels; Pillow's decompression-bomb limit is set on purpose.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .config import ImageLimits
from .errors import InvalidImageError

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


def decode_image(source: bytes | str | Path, limits: ImageLimits = LIMITS) -> Image.Image:
    """Decode to an upright RGB image whose long side is at most ``decode_long_side``."""
    data = read_bytes(source, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format == "PDF":
                raise InvalidImageError("this is a PDF, not a photograph")
            width, height = image.size
            if width * height > limits.max_pixels:
                raise InvalidImageError(
                    f"the image is {width}×{height} pixels ({width * height / 1e6:.0f} MP); "
                    f"the limit is {limits.max_pixels / 1e6:.0f} MP"
                )
            if image.format == "JPEG":
                image.draft("RGB", (limits.decode_long_side, limits.decode_long_side))
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)  # animated GIF/WebP: the first frame
            image.load()
            image = ImageOps.exif_transpose(image)
            image = _to_rgb(image)
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError(f"refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError("not an image file Pillow can read (JPEG, PNG, WebP, TIFF, BMP, GIF)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImageError(f"the image is corrupt or truncated ({exc})") from exc
    if min(image.size) < limits.min_side:
        raise InvalidImageError(
            f"the image is {image.width}×{image.height} pixels; at least {limits.min_side} px a side are needed"
        )
    if max(image.size) > limits.decode_long_side:
        image.thumbnail((limits.decode_long_side, limits.decode_long_side), Image.Resampling.BILINEAR)
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any mode: 16-bit, palette, CMYK, greyscale; transparency onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")
