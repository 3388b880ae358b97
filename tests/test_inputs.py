"""Bad and unusual input: clear typed errors, never a crash."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from whales_identify.config import ArchiveLimits, ImageLimits
from whales_identify.errors import InvalidArchiveError, InvalidImageError
from whales_identify.inputs.archive import iter_photos, iter_zip
from whales_identify.inputs.imaging import decode_image, encode_jpeg

DATA = Path(__file__).parent / "data"


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


# --- more hostile and unusual photos (the reliability issue) ---------------------------------------------
def test_pdf_or_text_renamed_jpg_on_disk_is_refused(tmp_path) -> None:
    for name, data in (("scan.jpg", b"%PDF-1.7\n%\xe2\xe3\n1 0 obj<<>>endobj\n"), ("notes.jpg", b"just text")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InvalidImageError, match="not an image"):
            decode_image(path)


def test_corrupt_jpeg_body_is_refused_or_decoded_never_crashes() -> None:
    data = bytearray(_encode(_photo((200, 150)), "JPEG"))
    data[600:700] = b"\xff" * 100  # garbage inside the entropy-coded data
    try:
        assert decode_image(bytes(data)).mode == "RGB"  # libjpeg may recover: then it is a photo
    except InvalidImageError as exc:
        assert str(exc)


def test_sixteen_bit_png_becomes_rgb_with_the_right_brightness() -> None:
    grey = np.full((40, 50), 40_000, dtype=np.uint16)  # 16-bit: 40000/65535 ≈ 61 % grey
    decoded = decode_image(_encode(Image.fromarray(grey), "PNG"))
    assert decoded.mode == "RGB" and decoded.size == (50, 40)
    assert abs(decoded.getpixel((10, 10))[0] - 40_000 // 256) <= 1


def test_transparent_pixels_go_onto_white() -> None:
    image = Image.new("RGBA", (32, 32), (255, 0, 0, 0))  # fully transparent red
    assert decode_image(_encode(image, "PNG")).getpixel((3, 3)) == (255, 255, 255)


def test_animated_webp_uses_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    decoded = decode_image(buffer.getvalue())
    assert Image.open(io.BytesIO(buffer.getvalue())).n_frames == 2
    red, _, blue = decoded.getpixel((5, 5))
    assert red > 200 and blue < 50


def test_a_heic_photo_is_decoded_not_refused() -> None:
    """HEIC used to be refused with an explanation; it is decoded now (tests/test_heic.py has the rest)."""
    image = decode_image(DATA / "north_atlantic_right_whale_w_3212.heic")
    assert image.mode == "RGB" and min(image.size) >= 16


@pytest.mark.parametrize(("brand", "named"), [(b"heic", "HEIC"), (b"mif1", "HEIC"), (b"avif", "AVIF")])
def test_a_damaged_heic_or_an_avif_is_explained_not_called_garbage(brand: bytes, named: str) -> None:
    data = b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    with pytest.raises(InvalidImageError, match=named) as info:
        decode_image(data)
    assert "JPEG" in str(info.value)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP", "GIF", "BMP", "HEIF"])
def test_large_images_without_a_reduced_decode_are_refused_before_reading(fmt: str) -> None:
    data = _encode(Image.new("RGB", (1200, 900), (10, 80, 120)), fmt)
    limits = ImageLimits(max_decode_bytes=28 * 1024 * 1024)  # the fixed overhead (24 MiB) + ~1 MP
    with pytest.raises(InvalidImageError, match=r"would take about .* MB of memory"):
        decode_image(data, limits)
    assert decode_image(data).size == (1200, 900)  # under the default bound it decodes


_RSS_SCRIPT = r"""
import sys
from whales_identify.errors import InvalidImageError
from whales_identify.inputs.imaging import decode_image

def peak_mb():  # VmHWM: a child started by pytest inherits its parent's ru_maxrss, not this
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) // 1024

data = open(sys.argv[1], "rb").read()
before = peak_mb()
try:
    image = decode_image(data)
    outcome = "decoded %dx%d" % image.size
except InvalidImageError as exc:
    outcome = "refused: %s" % exc
print(peak_mb() - before, outcome)
"""


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_100_megapixel_photo_costs_bounded_memory(tmp_path, fmt: str) -> None:
    """Peak RSS growth of the decode, measured in a fresh process: a full RGB decode would take 400 MB."""
    import subprocess
    import sys

    size = (11_600, 8_700)  # 100.9 MP
    path = tmp_path / f"big.{fmt.lower()}"
    options = {"quality": 70} if fmt == "JPEG" else {"compress_level": 1}
    make = (
        f"import sys; from PIL import Image, ImageDraw; im = Image.new('RGB', {size!r}, (20, 90, 140)); "
        "ImageDraw.Draw(im).ellipse((2000, 2000, 9000, 6000), fill=(200, 200, 210)); "
        f"im.save(sys.argv[1], {fmt!r}, **{options!r})"
    )
    subprocess.run([sys.executable, "-c", make, str(path)], check=True, timeout=120)
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(path)], check=True, capture_output=True, text=True, timeout=120
    ).stdout.split(maxsplit=1)
    growth_mb, outcome = int(out[0]), out[1]
    if fmt == "JPEG":
        assert outcome.startswith("decoded") and max(map(int, outcome.split()[1].split("x"))) <= 1280
    else:
        assert "MB of memory" in outcome  # 100 MP × 4 bytes: over the bound, refused from the header
    assert growth_mb < 80, f"{fmt}: peak RSS grew {growth_mb} MB ({outcome})"


# --- more hostile ZIPs -----------------------------------------------------------------------------------
def test_encrypted_member_is_skipped_with_a_reason() -> None:
    jpeg = _encode(_photo(), "JPEG")
    raw = bytearray(_zip({"secret.jpg": jpeg, "plain.jpg": jpeg}).getvalue())
    # Set the "encrypted" flag bit of the first member, as a password-protected ZIP does
    # (zipfile cannot write encrypted members): in its local header and its directory entry.
    raw[6] |= 0x1
    raw[raw.index(b"PK\x01\x02") + 8] |= 0x1
    by_name = {e.name: e for e in iter_zip(io.BytesIO(bytes(raw)))}
    assert "encrypted" in by_name["secret.jpg"].skipped and by_name["plain.jpg"].ok


def test_symlink_member_is_skipped_not_followed() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("link.jpg")
        info.external_attr = 0o120777 << 16  # S_IFLNK: a symbolic link, as `zip -y` stores one
        archive.writestr(info, "/etc/passwd")
    buffer.seek(0)
    (entry,) = iter_zip(buffer)
    assert entry.data is None and "symbolic link" in entry.skipped


@pytest.mark.parametrize("name", ["/etc/photo.jpg", "a/../../photo.jpg", "..\\photo.jpg", "C:/photo.jpg"])
def test_absolute_and_parent_paths_are_skipped(name: str) -> None:
    (entry,) = iter_zip(_zip({name: _encode(_photo(), "JPEG")}))
    assert entry.data is None and "unsafe path" in entry.skipped


def test_nested_zip_hidden_files_and_folders_only() -> None:
    inner = _zip({"x.jpg": _encode(_photo(), "JPEG")}).getvalue()
    entries = list(iter_zip(_zip({"deep/inner.ZIP": inner, "a/.DS_Store": b"x", "a/._x.jpg": b"x", "empty/": b""})))
    assert [(e.name, e.ok) for e in entries] == [("deep/inner.ZIP", False)]


def test_per_member_size_limit_is_checked_from_the_directory() -> None:
    jpeg = _encode(_photo((400, 300)), "JPEG")
    entries = list(iter_zip(_zip({"big.jpg": jpeg, "ok.jpg": jpeg[:100]}), ArchiveLimits(max_member_uncompressed=1000)))
    by_name = {e.name: e for e in entries}
    assert "over the per-photo limit" in by_name["big.jpg"].skipped and by_name["ok.jpg"].ok


def test_one_bomb_member_below_the_total_limit_is_skipped() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.jpg", b"\0" * (5 * 1024 * 1024))  # 5 MB: under the whole-ZIP check
        archive.writestr("ok.jpg", _encode(_photo(), "JPEG"))
    buffer.seek(0)
    by_name = {e.name: e for e in iter_zip(buffer)}
    assert "suspiciously well" in by_name["bomb.jpg"].skipped and by_name["ok.jpg"].ok


def test_a_member_larger_than_its_header_says_is_never_read_past_the_limit() -> None:
    """The directory claims 100 bytes; the stream holds 3 MB. Reading stops at the claim (CRC fails): skipped."""
    payload = bytes(range(256)) * (3 * 4096)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("liar.jpg", payload)
    raw = buffer.getvalue()
    real = len(payload).to_bytes(4, "little")
    assert raw.count(real) == 2  # local header and central directory
    lying = io.BytesIO(raw.replace(real, (100).to_bytes(4, "little")))
    (entry,) = iter_zip(lying, ArchiveLimits(max_member_uncompressed=1000))
    assert entry.data is None and entry.skipped


def test_the_same_name_in_two_folders_keeps_both_paths() -> None:
    jpeg_a, jpeg_b = _encode(_photo(), "JPEG"), _encode(_photo((50, 40)), "JPEG")
    entries = list(iter_zip(_zip({"2024/fin.jpg": jpeg_a, "2025/fin.jpg": jpeg_b})))
    assert [e.name for e in entries] == ["2024/fin.jpg", "2025/fin.jpg"]
    assert entries[0].data == jpeg_a and entries[1].data == jpeg_b


@pytest.mark.parametrize("damage", ["truncated", "empty", "directory_garbage"])
def test_damaged_zip_directory_is_a_typed_error(damage: str) -> None:
    raw = _zip({"a.jpg": _encode(_photo(), "JPEG")}).getvalue()
    if damage == "truncated":
        data = raw[: len(raw) // 2]
    elif damage == "empty":
        data = b""
    else:
        cd = raw.rindex(b"PK\x01\x02")
        data = raw[: cd + 10] + b"\xff" * 20 + raw[cd + 30 :]
    try:
        entries = list(iter_zip(io.BytesIO(data)))
    except InvalidArchiveError as exc:
        assert str(exc)
    else:
        assert all(e.ok or e.skipped for e in entries)


def test_member_with_an_empty_name_is_skipped_not_a_crash() -> None:
    """Found by tests/test_fuzz.py: zipfile's ``is_dir()`` raises IndexError on an empty member name."""
    raw = bytearray(_zip({"a.jpg": _encode(_photo(), "JPEG")}).getvalue())
    cd = raw.index(b"PK\x01\x02")
    raw[cd + 28 : cd + 30] = b"\x00\x00"  # directory entry: name length 0
    del raw[cd + 46 : cd + 51]  # and the name itself
    raw[-10:-6] = (int.from_bytes(raw[-10:-6], "little") - 5).to_bytes(4, "little")  # directory size
    entries = list(iter_zip(io.BytesIO(bytes(raw))))
    assert len(entries) == 1 and not entries[0].ok and entries[0].skipped


def test_a_corrupt_lzma_member_is_skipped_and_the_others_read() -> None:
    """Found by tests/test_fuzz.py: a damaged LZMA stream raised LZMAError out of iter_zip."""
    jpeg = _encode(_photo((120, 90)), "JPEG")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("broken.jpg", jpeg, compress_type=zipfile.ZIP_LZMA)
        archive.writestr("fine.jpg", jpeg)
    raw = bytearray(buffer.getvalue())
    start = 30 + len("broken.jpg") + 4  # past the local header and the LZMA properties header
    raw[start : start + 40] = bytes(40)
    by_name = {e.name: e for e in iter_zip(io.BytesIO(bytes(raw)))}
    assert not by_name["broken.jpg"].ok and "cannot be read" in by_name["broken.jpg"].skipped
    assert by_name["fine.jpg"].data == jpeg


def test_a_long_thin_strip_is_refused_after_reduction() -> None:
    """Found by tests/test_fuzz.py: 4000×40 passed the size check, then became 1280×12 once reduced."""
    with pytest.raises(InvalidImageError, match="once reduced"):
        decode_image(_encode(Image.new("RGB", (4000, 40), (0, 90, 150)), "PNG"))


# --- the total a ZIP may expand to, overlapping members, repeated names --------------------------------------------
def _hand_built_zip(entries: list[tuple[str, bytes, int, int]], local: list[tuple[str, bytes, int, int]] | None = None):
    """A deflate ZIP written by hand from already-compressed members: (name, deflated, crc, size) each.

    ``local``: the members actually stored; ``entries`` (the central directory) then all point at the
    first stored one: members that overlap, each claiming the same compressed bytes.
    """
    stored = entries if local is None else local
    body, offsets = bytearray(), []
    for name, deflated, crc, size in stored:
        offsets.append(len(body))
        raw = name.encode()
        body += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(deflated), size, len(raw), 0)
        body += raw + deflated
    directory = bytearray()
    for i, (name, deflated, crc, size) in enumerate(entries):
        raw = name.encode()
        offset = offsets[i] if local is None else offsets[0]
        directory += struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            20,
            20,
            0,
            8,
            0,
            0x21,
            crc,
            len(deflated),
            size,
            len(raw),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        directory += raw
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(directory), len(body), 0)
    return io.BytesIO(bytes(body + directory + end))


def _padded_mebibyte() -> tuple[bytes, int, int]:
    """1 MiB of zeros with random bytes in it, so that it compresses at just under 200 : 1."""
    payload = bytes(1024 * 1024 - 3800) + np.random.default_rng(1).bytes(3800)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = compressor.compress(payload) + compressor.flush()
    assert 190 < len(payload) / len(deflated) < 200  # under both ratio checks
    return deflated, zlib.crc32(payload), len(payload)


def test_4000_members_of_one_mib_padded_with_random_bytes_are_refused_by_the_total() -> None:
    """21 MB that would expand to 4.2 GB: every member passes the ratio checks, only the total catches it."""
    deflated, crc, size = _padded_mebibyte()
    archive = _hand_built_zip([(f"trip/{i:04d}.jpg", deflated, crc, size) for i in range(4000)])
    assert ArchiveLimits().max_total_uncompressed <= 2 * 1024**3
    with pytest.raises(InvalidArchiveError, match=r"expands to 4\.2 GB; the limit is 2\.1 GB"):
        list(iter_zip(archive))


def test_members_overlapping_one_compressed_block_are_refused_by_the_real_size() -> None:
    """The 'better ZIP bomb': 2,000 directory entries share one 5 kB block; the claimed compressed sizes
    add up to 10 MB (under 200 : 1), the ZIP itself holds 110 kB."""
    deflated, crc, size = _padded_mebibyte()
    block = [("a.jpg", deflated, crc, size)]
    archive = _hand_built_zip(block * 2000, local=block)
    assert len(archive.getvalue()) < 200_000
    with pytest.raises(InvalidArchiveError, match="suspiciously well"):
        list(iter_zip(archive))


def test_the_bytes_actually_read_are_counted_against_the_total(monkeypatch) -> None:
    """A directory that understates the members (here: a reader that yields more than it says) still
    stops at the total limit: the rest are skipped with the reason."""
    from whales_identify.inputs import archive as archive_module

    monkeypatch.setattr(
        archive_module,
        "read_zip_member",
        lambda archive, info, limits, name, member: archive_module.ArchiveEntry(name, b"x" * 1000, "", member),
    )
    source = _zip({f"{i}.jpg": b"tiny" for i in range(6)})
    entries = list(iter_zip(source, ArchiveLimits(max_total_uncompressed=2500)))
    assert [e.ok for e in entries] == [True, True, False, False, False, False]
    assert all("limit of 2.5 kB in total" in e.skipped for e in entries[2:])


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_a_name_repeated_in_a_zip_gives_each_member_its_own_row() -> None:
    first, second = _encode(_photo(), "JPEG"), _encode(_photo((48, 64)), "JPEG")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("trip/a.jpg", first)
        archive.writestr("trip/b.jpg", first)
        archive.writestr("trip/a.jpg", second)
    buffer.seek(0)
    entries = list(iter_zip(buffer))
    named = [(e.name, e.member) for e in entries]
    assert named == [("trip/a.jpg", 0), ("trip/b.jpg", 1), ("trip/a [member 2].jpg", 2)]
    assert entries[0].data == first and entries[2].data == second


def test_encode_jpeg_fits_a_long_side_or_a_box_and_leaves_the_image_alone() -> None:
    wide = Image.new("RGB", (900, 150), (10, 120, 200))
    with Image.open(io.BytesIO(encode_jpeg(wide, 300, quality=85))) as square_fit:
        assert square_fit.size == (300, 50)
    with Image.open(io.BytesIO(encode_jpeg(wide, (288, 96), quality=85))) as strip:
        assert strip.size == (288, 48)
    tall = Image.new("RGB", (100, 400))
    with Image.open(io.BytesIO(encode_jpeg(tall, (288, 96), quality=85))) as strip:
        assert strip.size == (24, 96)
    assert wide.size == (900, 150)
