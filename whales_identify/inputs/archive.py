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

from whales_identify.config import ArchiveLimits
from whales_identify.errors import InvalidArchiveError

LIMITS = ArchiveLimits()
# What a damaged or hostile ZIP can make the standard library raise (besides BadZipFile).
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    ValueError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
    RuntimeError,
    NotImplementedError,
    UnicodeDecodeError,
    OverflowError,
    IndexError,
    KeyError,
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


def is_ignored(name: str) -> bool:
    """Members every reader skips silently: macOS resource forks and hidden files."""
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


def zip_skip_reason(info: zipfile.ZipInfo, limits: ArchiveLimits = LIMITS) -> str | None:
    """Why a member is not read (``None``: read it), judged from the directory alone.

    Shared by ``iter_zip`` and the Ray engine, so a member is refused for the same reasons on one machine or many.
    Hidden files and ``__MACOSX/`` are not judged here: ``list_zip`` drops them without a row.
    """
    name = info.filename
    if _unsafe_path(name):
        return "unsafe path (absolute or '..'); skipped"
    if _is_symlink(info):
        return "a symbolic link; skipped"
    if info.flag_bits & 0x1:
        return "encrypted; skipped"
    if name.lower().endswith(".zip"):
        return "a ZIP inside the ZIP; unpack it first"
    if not is_image_name(name, limits):
        return "not a photo (by its extension); skipped"
    if info.file_size > limits.max_member_uncompressed:
        return f"{info.file_size / 1e6:.0f} MB is over the per-photo limit"
    if info.file_size > 1024 * 1024 and info.file_size > limits.max_compression_ratio * max(info.compress_size, 1):
        return "compressed suspiciously well (a bomb?); skipped"
    return None


def list_zip(
    archive: zipfile.ZipFile, limits: ArchiveLimits = LIMITS
) -> Iterator[tuple[int, zipfile.ZipInfo, str | None]]:
    """Each member that gets a row: its index in ``check_zip``'s list, its info and ``zip_skip_reason``.

    Reads no member's bytes, so a driver can plan the work for a whole archive cheaply; the index
    names a member unambiguously even when a (hostile) ZIP repeats a name.
    """
    for index, info in enumerate(check_zip(archive, limits)):
        # An unsafe path always gets its row, even when it also looks hidden.
        if is_ignored(info.filename) and not _unsafe_path(info.filename):
            continue
        yield index, info, zip_skip_reason(info, limits)


def read_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ArchiveLimits = LIMITS) -> ArchiveEntry:
    """One member's bytes, or why they cannot be had; a damaged member never raises."""
    name = info.filename
    try:
        # Never more than the per-photo limit + 1 byte, whatever the header claims.
        with archive.open(info) as handle:
            data = handle.read(limits.max_member_uncompressed + 1)
    except _ZIP_ERRORS as exc:
        return ArchiveEntry(name, None, f"cannot be read from the ZIP ({exc})")
    except Exception as exc:  # one damaged member never stops the others
        return ArchiveEntry(name, None, f"cannot be read from the ZIP ({type(exc).__name__}: {exc})")
    if len(data) > limits.max_member_uncompressed:
        return ArchiveEntry(name, None, "larger than its header says; skipped")
    return ArchiveEntry(name, data)


def iter_zip(source: str | Path | BinaryIO, limits: ArchiveLimits = LIMITS) -> Iterator[ArchiveEntry]:
    """Each member of a ZIP as an ``ArchiveEntry``; nothing is extracted to disk."""
    with open_zip(source) as archive:
        for _, info, reason in list_zip(archive, limits):
            if reason is not None:
                yield ArchiveEntry(info.filename, None, reason)
            else:
                yield read_zip_member(archive, info, limits)


def folder_skip_reason(path: Path, name: str, limits: ArchiveLimits = LIMITS) -> str | None:
    """Why a file under a folder is not read (``None``: read it); shared with the Ray engine."""
    if path.is_symlink():
        return "a symbolic link; skipped"
    if not is_image_name(name, limits):
        return "not a photo (by its extension); skipped"
    try:
        size = path.stat().st_size
    except OSError as exc:  # vanished or unreadable since it was listed
        return f"cannot be read ({exc.strerror or exc})"
    if size > limits.max_member_uncompressed:
        return f"{size / 1e6:.0f} MB is over the per-photo limit"
    return None


def list_folder(folder: str | Path, limits: ArchiveLimits = LIMITS) -> Iterator[tuple[Path, str, str | None]]:
    """Each file under a folder that gets a row (recursively, sorted): path, '/'-separated name, skip reason."""
    root = Path(folder)
    count = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or is_ignored(str(path.relative_to(root))):
            continue
        count += 1
        if count > limits.max_members * 100:
            raise InvalidArchiveError(f"more than {limits.max_members * 100:,} files under {root}")
        name = path.relative_to(root).as_posix()
        yield path, name, folder_skip_reason(path, name, limits)


def read_folder_file(path: Path, name: str, limits: ArchiveLimits = LIMITS) -> ArchiveEntry:
    """One file's bytes, never more than the per-photo limit + 1 byte (the file may grow after it was listed)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limits.max_member_uncompressed + 1)
    except OSError as exc:  # vanished or unreadable since it was listed: a row, not a crash
        return ArchiveEntry(name, None, f"cannot be read ({exc.strerror or exc})")
    if len(data) > limits.max_member_uncompressed:
        return ArchiveEntry(name, None, f"{len(data) / 1e6:.0f} MB is over the per-photo limit")
    return ArchiveEntry(name, data)


def iter_folder(folder: str | Path, limits: ArchiveLimits = LIMITS) -> Iterator[ArchiveEntry]:
    """Each file under a folder (recursively, sorted), as an ``ArchiveEntry``."""
    for path, name, reason in list_folder(folder, limits):
        yield ArchiveEntry(name, None, reason) if reason is not None else read_folder_file(path, name, limits)


def iter_photos(source: str | Path | BinaryIO, limits: ArchiveLimits = LIMITS) -> Iterator[ArchiveEntry]:
    """A ZIP (path or file object) or a folder, as a stream of entries."""
    if isinstance(source, str | Path) and Path(source).is_dir():
        return iter_folder(source, limits)
    return iter_zip(source, limits)
