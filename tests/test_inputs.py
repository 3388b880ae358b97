"""Bad and unusual input: clear typed errors, never a crash."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from whales_identify.archive import iter_photos, iter_zip
from whales_identify.config import ArchiveLimits, ImageLimits
from whales_identify.errors import InvalidArchiveError, InvalidImageError
from whales_identify.imaging import decode_image


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _photo(size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", "not an image"),
        (b"hello, this is text renamed .jpg", "not an image"),
    ],
)
def test_non_images_are_refused_clearly(data: bytes, message: str) -> None:
    with pytest.raises(InvalidImageError, match=message):
        decode_image(data)


def test_truncated_jpeg_is_reported_as_corrupt() -> None:
    data = _encode(_photo((400, 300)), "JPEG")
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])


def test_tiny_image_is_refused() -> None:
    with pytest.raises(InvalidImageError, match="at least"):
        decode_image(_encode(Image.new("RGB", (1, 1)), "PNG"))


def test_decompression_bomb_is_refused() -> None:
    data = _encode(Image.new("1", (12_000, 12_000)), "PNG")
    with pytest.raises(InvalidImageError, match=r"limit|bomb"):
        decode_image(data, ImageLimits(max_pixels=100_000_000))


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "LA"])
def test_every_pixel_mode_becomes_rgb(mode: str) -> None:
    image = _photo().convert("RGB")
    converted = (
        image.convert(mode)
        if mode != "I;16"
        else Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 256)
    )
    fmt = "JPEG" if mode in ("L", "CMYK") else ("TIFF" if mode == "I;16" else "PNG")
    decoded = decode_image(_encode(converted, fmt))
    assert decoded.mode == "RGB" and decoded.size == (64, 48)


def test_exif_orientation_is_applied() -> None:
    image = _photo((80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    decoded = decode_image(_encode(image, "JPEG", exif=exif))
    assert decoded.size == (40, 80)


def test_large_photo_is_reduced_while_decoding() -> None:
    data = _encode(_photo((4000, 3000)), "JPEG", quality=50)
    decoded = decode_image(data)
    assert max(decoded.size) <= ImageLimits().decode_long_side


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(buffer.getvalue())
    assert decoded.getpixel((5, 5))[0] > 200


def _zip(members: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    buffer.seek(0)
    return buffer


def test_zip_members_are_sorted_into_photos_and_skips() -> None:
    jpeg = _encode(_photo(), "JPEG")
    entries = list(
        iter_zip(
            _zip(
                {
                    "a/one.jpg": jpeg,
                    "b/one.jpg": jpeg,
                    "../evil.jpg": jpeg,
                    "notes.txt": b"x",
                    "__MACOSX/a/._one.jpg": b"junk",
                    ".hidden.jpg": jpeg,
                    "inner.zip": b"PK",
                }
            )
        )
    )
    by_name = {e.name: e for e in entries}
    assert by_name["a/one.jpg"].ok and by_name["b/one.jpg"].ok
    assert "unsafe path" in by_name["../evil.jpg"].skipped
    assert "not a photo" in by_name["notes.txt"].skipped
    assert "ZIP inside" in by_name["inner.zip"].skipped
    assert "__MACOSX/a/._one.jpg" not in by_name and ".hidden.jpg" not in by_name


def test_not_a_zip_is_refused() -> None:
    with pytest.raises(InvalidArchiveError, match="not a ZIP"):
        list(iter_photos(io.BytesIO(b"definitely not a zip")))


def test_too_many_members_refused_before_reading() -> None:
    archive = _zip({f"{i}.jpg": b"x" for i in range(12)})
    with pytest.raises(InvalidArchiveError, match="limit"):
        list(iter_zip(archive, ArchiveLimits(max_members=10)))


def test_zip_bomb_refused_by_ratio() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.jpg", b"\0" * (20 * 1024 * 1024))
    buffer.seek(0)
    with pytest.raises(InvalidArchiveError, match="bomb"):
        list(iter_zip(buffer))
