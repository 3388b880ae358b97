"""HEIC/HEIF photos (the iPhone's default) through ``pillow-heif``: libheif and libde265 inside the wheel,
so it works offline.

``register_heif()`` teaches Pillow to open them and adds ``"HEIF"`` to the formats ``imaging.decode_image``
accepts; call it once at start-up, before any photo is decoded (it is idempotent and cheap). Without
``pillow-heif`` installed it returns False and HEIC photos keep being refused with their explanation.
The decode itself is ``decode_image``'s: header size checks, memory bound, reduction, orientation.
"""

from __future__ import annotations

from whales_identify.inputs import imaging

HEIF_FORMAT = "HEIF"  # the name pillow-heif registers with Pillow
HEIF_SUFFIXES = (".heic", ".heif", ".hif")


def register_heif() -> bool:
    """Open HEIC/HEIF photos with Pillow (pillow-heif) and let ``decode_image`` accept them.

    True when HEIF photos can now be decoded; False when ``pillow-heif`` is not installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    # No embedded thumbnails (they would be opened as extra frames); the decoder applies the photo's
    # rotation itself and sets the EXIF orientation to 1 so it is not applied twice.
    register_heif_opener(thumbnails=False)
    if HEIF_FORMAT not in imaging.FORMATS:
        imaging.FORMATS = (*imaging.FORMATS, HEIF_FORMAT)  # type: ignore[assignment]
    return True
