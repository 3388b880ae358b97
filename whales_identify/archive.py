"""Reading a ZIP of photos (or a folder) safely, one member at a time.

Limits on member count, total and per-member size and compression ratio are
checked on the ZIP's directory before anything is read; ``../`` and absolute
paths, symlinks, encrypted members, ``__MACOSX/`` and hidden files are handled
without ever writing to disk. Members are streamed, so memory stays bounded.
"""

from __future__ import annotations

import lzma
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .config import ArchiveLimits
from .errors import InvalidArchiveError

LIMITS = ArchiveLimits()
# What a damaged or hostile ZIP can make the standard library raise (besides BadZipFile).
_ZIP_ERRORS = (
    zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, struct.error, zlib.error, lzma.LZMAError,
    RuntimeError, NotImplementedError, UnicodeDecodeError, OverflowError, IndexError, KeyError,
)


@dataclass(frozen=True)
class ArchiveEntry:
    """One file found in a ZIP or folder: its bytes, or why it was skipped."""

    name: str  # path inside the archive, '/'-separated
    data: bytes | None
    skipped: str = ""  # reason, when ``data`` is None

    @property
    def ok(self) -> bool:
        return self.data is not None


def is_image_name(name: str, limits: ArchiveLimits = LIMITS) -> bool:
    return PurePosixPath(name).suffix.lower() in limits.image_suffixes


def _is_ignored(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return any(part == "__MACOSX" or (part.startswith(".") and part != "..") for part in parts)


def _unsafe_path(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or (len(name) > 1 and name[1] == ":")


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def open_zip(source: str | Path | BinaryIO) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except zipfile.BadZipFile as exc:
        raise InvalidArchiveError("this is not a ZIP file (or it is damaged)") from exc
    except OSError as exc:
        raise InvalidArchiveError(f"cannot read the ZIP: {exc}") from exc
    except _ZIP_ERRORS as exc:
        raise InvalidArchiveError(f"the ZIP's directory is damaged ({type(exc).__name__}: {exc})") from exc


def check_zip(archive: zipfile.ZipFile, limits: ArchiveLimits = LIMITS) -> list[zipfile.ZipInfo]:
    """The file members, after checking the whole directory against the limits."""
    # (not ``info.is_dir()``: it fails on a member with an empty name, which a hostile ZIP can hold)
    members = [info for info in archive.infolist() if not info.filename.endswith("/")]
    if len(members) > limits.max_members:
        raise InvalidArchiveError(f"the ZIP holds {len(members):,} files; the limit is {limits.max_members:,}")
    total = sum(info.file_size for info in members)
    if total > limits.max_total_uncompressed:
        raise InvalidArchiveError(
            f"the ZIP expands to {total / 1e9:.1f} GB; the limit is {limits.max_total_uncompressed / 1e9:.1f} GB"
        )
    packed = sum(info.compress_size for info in members)
    if total > 10 * 1024 * 1024 and total > limits.max_compression_ratio * max(packed, 1):
        raise InvalidArchiveError("the ZIP is compressed suspiciously well (a ZIP bomb?); refused")
    return members


def iter_zip(source: str | Path | BinaryIO, limits: ArchiveLimits = LIMITS) -> Iterator[ArchiveEntry]:
    """Each member of a ZIP as an ``ArchiveEntry``; nothing is extracted to disk."""
    with open_zip(source) as archive:
        members = check_zip(archive, limits)
        for info in members:
            name = info.filename
            if _unsafe_path(name):
                yield ArchiveEntry(name, None, "unsafe path (absolute or '..'); skipped")
            elif _is_ignored(name):
                continue
            elif _is_symlink(info):
                yield ArchiveEntry(name, None, "a symbolic link; skipped")
            elif info.flag_bits & 0x1:
                yield ArchiveEntry(name, None, "encrypted; skipped")
            elif name.lower().endswith(".zip"):
                yield ArchiveEntry(name, None, "a ZIP inside the ZIP; unpack it first")
            elif not is_image_name(name, limits):
                yield ArchiveEntry(name, None, "not a photo (by its extension); skipped")
            elif info.file_size > limits.max_member_uncompressed:
                yield ArchiveEntry(name, None, f"{info.file_size / 1e6:.0f} MB is over the per-photo limit")
            elif info.file_size > 1024 * 1024 and info.file_size > limits.max_compression_ratio * max(
                info.compress_size, 1
            ):
                yield ArchiveEntry(name, None, "compressed suspiciously well (a bomb?); skipped")
            else:
                try:
                    # Never more than the per-photo limit + 1 byte, whatever the header claims.
                    with archive.open(info) as handle:
                        data = handle.read(limits.max_member_uncompressed + 1)
                except _ZIP_ERRORS as exc:
                    yield ArchiveEntry(name, None, f"cannot be read from the ZIP ({exc})")
                    continue
                except Exception as exc:  # one damaged member never stops the others
                    yield ArchiveEntry(name, None, f"cannot be read from the ZIP ({type(exc).__name__}: {exc})")
                    continue
                if len(data) > limits.max_member_uncompressed:
                    yield ArchiveEntry(name, None, "larger than its header says; skipped")
                else:
                    yield ArchiveEntry(name, data)


def iter_folder(folder: str | Path, limits: ArchiveLimits = LIMITS) -> Iterator[ArchiveEntry]:
    """Each file under a folder (recursively, sorted), as an ``ArchiveEntry``."""
    root = Path(folder)
    count = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or _is_ignored(str(path.relative_to(root))):
            continue
        count += 1
        if count > limits.max_members * 100:
            raise InvalidArchiveError(f"more than {limits.max_members * 100:,} files under {root}")
        name = path.relative_to(root).as_posix()
        if path.is_symlink():
            yield ArchiveEntry(name, None, "a symbolic link; skipped")
        elif not is_image_name(name, limits):
            yield ArchiveEntry(name, None, "not a photo (by its extension); skipped")
        elif path.stat().st_size > limits.max_member_uncompressed:
            yield ArchiveEntry(name, None, f"{path.stat().st_size / 1e6:.0f} MB is over the per-photo limit")
        else:
            yield ArchiveEntry(name, path.read_bytes())


def iter_photos(source: str | Path | BinaryIO, limits: ArchiveLimits = LIMITS) -> Iterator[ArchiveEntry]:
    """A ZIP (path or file object) or a folder, as a stream of entries."""
    if isinstance(source, str | Path) and Path(source).is_dir():
        return iter_folder(source, limits)
    return iter_zip(source, limits)
