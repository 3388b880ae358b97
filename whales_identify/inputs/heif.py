"""HEIC/HEIF photos (the iPhone's default) through ``pillow-heif``: libheif and libde265 inside the wheel,
so it works offline.

``imaging`` calls ``register_heif()`` once, when it is imported, and lists ``"HEIF"`` among the formats
``decode_image`` opens when it returns True; nobody else needs to call it. Registering costs one import
(about 25 ms) and opens nothing. Without ``pillow-heif`` installed it returns False and HEIC photos are
refused with an explanation. The decode itself is ``decode_image``'s: header size checks, memory bound
(``decode_cost``), reduction, orientation.
"""

from __future__ import annotations

from functools import cache

HEIF_FORMAT = "HEIF"  # the name pillow-heif registers with Pillow


@cache
def register_heif() -> bool:
    """Let Pillow open HEIC/HEIF photos (pillow-heif), once per process.

    True when HEIF photos can be decoded; False when ``pillow-heif`` is not installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    # No embedded thumbnails (they would be opened as extra frames); the decoder applies the photo's
    # rotation itself and sets the EXIF orientation to 1 so it is not applied twice.
    register_heif_opener(thumbnails=False)
    return True
