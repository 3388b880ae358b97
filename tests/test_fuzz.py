"""Fuzzing the two doors hostile bytes come through: ``decode_image`` and ``iter_zip``.

Whatever the bytes, only the package's typed errors may come out (``InvalidImageError``,
``InvalidArchiveError``, both ``WhaleIdError``), and what does come out obeys the safety rules.
The default run is small enough for CI; ``WHALE_ID_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py``
runs a bigger campaign.
"""

from __future__ import annotations

import io
import os
import zipfile
from functools import lru_cache
from pathlib import PurePosixPath

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from whales_identify.config import ArchiveLimits, ImageLimits
from whales_identify.errors import InvalidArchiveError, InvalidImageError
from whales_identify.inputs.archive import _unsafe_path, is_ignored, iter_zip
from whales_identify.inputs.imaging import decode_image

EXAMPLES = int(os.environ.get("WHALE_ID_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 200,  # the CI run is reproducible; a big campaign explores new ground
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMITS = ImageLimits()


@lru_cache(maxsize=1)
def seeds() -> dict[str, bytes]:
    """Small real files of every format the decoder meets, to mutate."""
    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8))
    out = {}
    for fmt, image, kwargs in (
        ("JPEG", photo, {"quality": 80}),
        ("JPEG-progressive-exif", photo, {"format": "JPEG", "progressive": True, "exif": _exif()}),
        ("PNG", photo, {}),
        ("PNG-palette", photo.convert("P"), {"format": "PNG"}),
        ("PNG-16bit", Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 256), {"format": "PNG"}),
        ("GIF", photo, {}),
        ("WEBP", photo, {}),
        ("TIFF", photo, {}),
        ("BMP", photo, {}),
    ):
        buffer = io.BytesIO()
        image.save(buffer, **({"format": fmt} | kwargs if "format" not in kwargs else kwargs))
        out[fmt] = buffer.getvalue()
    return out


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif


@st.composite
def mutated_image(draw) -> bytes:
    data = bytearray(seeds()[draw(st.sampled_from(sorted(seeds())))])
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["flip", "byte", "insert", "delete", "header_int"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "header_int" and len(data) > 40:
            # sizes, offsets and counts live in the first bytes: make them huge, zero or negative
            at = draw(st.integers(0, 40))
            data[at : at + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"]))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@FUZZ
@given(data=st.one_of(mutated_image(), st.binary(max_size=256)))
def test_decode_image_only_ever_raises_invalid_image_error(data: bytes) -> None:
    try:
        image = decode_image(data)
    except InvalidImageError as exc:
        assert str(exc)
        return
    assert image.mode == "RGB"
    assert LIMITS.min_side <= min(image.size) and max(image.size) <= LIMITS.decode_long_side


NAMES = st.one_of(
    st.sampled_from(
        [
            "a.jpg",
            "dir/b.jpg",
            "../up.jpg",
            "/abs.jpg",
            "C:/win.jpg",
            "..\\back.jpg",
            "__MACOSX/x/._a.jpg",
            ".hidden.jpg",
            "dir/.DS_Store",
            "inner.zip",
            "notes.txt",
            "same/a.jpg",
            "other/a.jpg",
            "dir/",
            "a/b/../../c.png",
            "ünïcode/Ωhale.JPG",
            "spaces in name.jpeg",
            "x" * 200 + ".png",
        ]
    ),
    st.text(min_size=1, max_size=30),
)


@st.composite
def zip_bytes(draw) -> bytes:
    photo = seeds()["JPEG"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for _ in range(draw(st.integers(0, 6))):
            name = draw(NAMES)
            info = zipfile.ZipInfo(name)
            info.compress_type = draw(
                st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
            )
            if draw(st.booleans()):
                info.external_attr = draw(st.sampled_from([0o120777, 0o100644, 0o040755])) << 16
            content = draw(st.one_of(st.just(photo), st.binary(max_size=64), st.just(b"\0" * 200_000)))
            try:
                archive.writestr(info, content)
            except (ValueError, UnicodeEncodeError):  # names zipfile itself refuses to write
                continue
    data = bytearray(buffer.getvalue())
    for _ in range(draw(st.integers(0, 6))):  # then damage it: headers, sizes, flags, the directory
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@pytest.mark.filterwarnings("ignore:Duplicate name")
@FUZZ
@given(data=st.one_of(zip_bytes(), st.binary(max_size=128)))
def test_iter_zip_only_ever_raises_invalid_archive_error(data: bytes) -> None:
    limits = ArchiveLimits(max_member_uncompressed=100_000)
    try:
        entries = list(iter_zip(io.BytesIO(data), limits))
    except InvalidArchiveError as exc:
        assert str(exc)
        return
    for entry in entries:
        if entry.ok:  # what is handed on is a safe, visible, bounded photo member
            assert not _unsafe_path(entry.name) and not is_ignored(entry.name)
            assert PurePosixPath(entry.name).suffix.lower() in limits.image_suffixes
            assert len(entry.data) <= limits.max_member_uncompressed
        else:
            assert entry.skipped
