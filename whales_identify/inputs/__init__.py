"""Untrusted bytes → photos, metadata and archive members, or a typed error (never a crash)."""

from whales_identify.inputs.archive import ArchiveEntry, is_ignored, is_image_name, iter_photos, open_zip
from whales_identify.inputs.exif import PhotoMetadata, read_metadata
from whales_identify.inputs.imaging import decode_image, encode_jpeg

__all__ = [
    "ArchiveEntry",
    "PhotoMetadata",
    "decode_image",
    "encode_jpeg",
    "is_ignored",
    "is_image_name",
    "iter_photos",
    "open_zip",
    "read_metadata",
]
