"""When and where a photo was taken, from its EXIF block (if it has one).

A GPS position is used only when it is a real place: finite, latitude within ±90°, longitude within
±180°, minutes and seconds within 0–60, a known hemisphere letter. Anything else (a zero denominator
gives NaN, a latitude of 95, a longitude of 500) is dropped and ``gps_note`` says why, so a bad
camera clock or a hostile file never puts an impossible point into a table, a map or the catalogue.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

from PIL import ExifTags, Image


@dataclass(frozen=True)
class PhotoMetadata:
    taken_at: str = ""  # "YYYY-MM-DD HH:MM:SS" as the camera wrote it
    latitude: float | None = None  # degrees north, -90..90; None when absent or invalid
    longitude: float | None = None  # degrees east, -180..180; None when absent or invalid
    gps_note: str = ""  # why a GPS position in the EXIF was not used (empty: none, or it was fine)

    @property
    def has_position(self) -> bool:
        return self.latitude is not None and self.longitude is not None


class _InvalidPosition(ValueError):
    pass


def _ref(value: Any, allowed: str, default: str) -> str:
    if value is None:
        return default
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    text = str(value).strip("\x00 ").upper()
    if text == "":
        return default
    if text not in allowed:
        raise _InvalidPosition(f"hemisphere {text[:8]!r} is not one of {', '.join(allowed)}")
    return text


def _to_degrees(value: Any, ref: str, axis: str, limit: float) -> float:
    """Degrees from EXIF's (degrees, minutes, seconds) rationals; ``_InvalidPosition`` when not a real angle."""
    try:
        degrees, minutes, seconds = (float(v) for v in value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
        raise _InvalidPosition(f"the {axis} is not three numbers") from exc
    if not all(math.isfinite(v) for v in (degrees, minutes, seconds)):
        raise _InvalidPosition(f"the {axis} is not a finite number (a zero denominator?)")
    if degrees < 0 or not 0 <= minutes <= 60 or not 0 <= seconds <= 60:
        raise _InvalidPosition(f"the {axis} {degrees:g}° {minutes:g}′ {seconds:g}″ is not a valid angle")
    result = degrees + minutes / 60 + seconds / 3600
    if result > limit:
        raise _InvalidPosition(f"the {axis} {result:g}° is beyond ±{limit:g}°")
    return -result if ref in ("S", "W") else result


def read_position(gps: dict[int, Any]) -> tuple[float | None, float | None, str]:
    """Latitude, longitude and a note from a GPS IFD: both or neither, and why not."""
    if not gps or (2 not in gps and 4 not in gps):
        return None, None, ""
    try:
        if 2 not in gps or 4 not in gps:
            raise _InvalidPosition("only one of latitude and longitude is given")
        latitude = _to_degrees(gps[2], _ref(gps.get(1), "NS", "N"), "latitude", 90.0)
        longitude = _to_degrees(gps[4], _ref(gps.get(3), "EW", "E"), "longitude", 180.0)
    except _InvalidPosition as exc:
        return None, None, f"GPS position ignored: {exc}"
    return latitude, longitude, ""


def _png_exif_chunk(data: bytes) -> bytes | None:
    """The body of a PNG's eXIf chunk, found by walking the chunks (no pixel is decompressed)."""
    position = 8
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        if kind == b"eXIf":
            return data[position + 8 : position + 8 + length]
        if kind == b"IEND":
            return None
        position += 12 + length
    return None


def _exif_without_decoding(image: Image.Image, data: bytes) -> Image.Exif:
    """The EXIF block, never decoding the picture: Pillow's PNG ``getexif`` loads every pixel when the
    eXIf chunk comes after the image data (a 59 MP PNG: +226 MB just to look for a date)."""
    if image.format != "PNG":
        return image.getexif()
    exif = Image.Exif()
    raw = image.info.get("exif") or _png_exif_chunk(data)
    if raw:
        exif.load(raw)
    return exif


def read_metadata(data: bytes) -> PhotoMetadata:
    """EXIF date and GPS position; empty for files without them or unreadable EXIF. No pixel is decoded."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            exif = _exif_without_decoding(image, data)
            taken = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.DateTimeOriginal) or exif.get(
                ExifTags.Base.DateTime
            )
            gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    except Exception:
        return PhotoMetadata()
    taken_at = ""
    if isinstance(taken, str) and len(taken) >= 19:
        taken_at = taken[:10].replace(":", "-") + taken[10:19]
    try:
        latitude, longitude, note = read_position(dict(gps or {}))
    except Exception as exc:  # whatever a hostile GPS block holds, the photo itself is still usable
        latitude, longitude, note = None, None, f"GPS position ignored: unreadable ({type(exc).__name__})"
    return PhotoMetadata(taken_at, latitude, longitude, note)
