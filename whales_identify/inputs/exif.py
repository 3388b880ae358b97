"""When and where a photo was taken, from its EXIF block (if it has one)."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import ExifTags, Image


@dataclass(frozen=True)
class PhotoMetadata:
    taken_at: str = ""  # "YYYY-MM-DD HH:MM:SS" as the camera wrote it
    latitude: float | None = None
    longitude: float | None = None


def _to_degrees(value: tuple, ref: str) -> float | None:
    try:
        degrees, minutes, seconds = (float(v) for v in value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    result = degrees + minutes / 60 + seconds / 3600
    return -result if ref in ("S", "W") else result


def read_metadata(data: bytes) -> PhotoMetadata:
    """EXIF date and GPS position; empty for files without them or unreadable EXIF."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            exif = image.getexif()
            taken = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.DateTimeOriginal) or exif.get(
                ExifTags.Base.DateTime
            )
            gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    except Exception:
        return PhotoMetadata()
    taken_at = ""
    if isinstance(taken, str) and len(taken) >= 19:
        taken_at = taken[:10].replace(":", "-") + taken[10:19]
    lat = lon = None
    if gps and 2 in gps and 4 in gps:
        lat = _to_degrees(gps[2], str(gps.get(1, "N")))
        lon = _to_degrees(gps[4], str(gps.get(3, "E")))
    return PhotoMetadata(taken_at, lat, lon)
