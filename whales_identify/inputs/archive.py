"""Reading a ZIP of photos (or a folder) safely, one member at a time.

Limits on member count, total and per-member size and compression ratio are
checked on the ZIP's directory before anything is read (the ratio against the
ZIP's real size, so members that overlap each other do not pass), and the bytes
actually read are counted against the same total; ``../`` and absolute paths,
symlinks, encrypted members, ``__MACOSX/`` and hidden files are handled without
ever writing to disk. A name repeated in the ZIP gets its member number, so
every row names one member. In a folder only regular files are read, never
blocking on a FIFO or device. Members are streamed, so memory stays bounded.
"""

from __future__ import annotations

import lzma
import os
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
# What a damaged or hostile ZIP can make the standard library raise while it is listed or read.
ZIP_ERRORS = (
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

    name: str  # path inside the archive, '/'-separated (unique: a repeated ZIP name gets " [member N]")
    data: bytes | None
    skipped: str = ""  # reason, when ``data`` is None
    member: int = -1  # index in the ZIP's file list (``check_zip``); -1 for a folder's file

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
    if isinstance(source, str | Path):  # a FIFO would block the open until someone writes to it
        try:
            kind = special_file_kind(os.stat(source).st_mode)
        except OSError as exc:
            raise InvalidArchiveError(f"cannot read the ZIP: {exc.strerror or exc}") from exc
        if kind is not None:
            raise InvalidArchiveError(f"{Path(source).name} is {kind}, not a ZIP file")
    try:
        return zipfile.ZipFile(source)
    except zipfile.BadZipFile as exc:
        raise InvalidArchiveError("this is not a ZIP file (or it is damaged)") from exc
    except OSError as exc:
        raise InvalidArchiveError(f"cannot read the ZIP: {exc}") from exc
    except ZIP_ERRORS as exc:
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
    # Against what the ZIP really holds: members may overlap (each claiming the same compressed bytes).
    packed = min(sum(info.compress_size for info in members), _zip_data_size(archive))
    if total > 10 * 1024 * 1024 and total > limits.max_compression_ratio * max(packed, 1):
        raise InvalidArchiveError("the ZIP is compressed suspiciously well (a ZIP bomb?); refused")
    return members


def _zip_data_size(archive: zipfile.ZipFile) -> int:
    """The ZIP's own size in bytes: all the compressed data there can be."""
    try:
        handle = archive.fp
        if handle is None:
            raise ValueError("closed")
        position = handle.tell()
        size = handle.seek(0, os.SEEK_END)
        handle.seek(position)
        return int(size)
    except (OSError, ValueError, AttributeError):
        return 1 << 62  # unknown: the claimed sizes are all there is


def zip_entry_names(members: list[zipfile.ZipInfo]) -> list[str]:
    """The row name of each member: its path, or, when an earlier member has the same path, the path with
    " [member N]" (its index) before the extension: results and metadata are kept apart per member, never
    mixed up by name (``a.jpg`` twice: ``a.jpg`` and ``a [member 1].jpg``)."""
    seen: set[str] = set()
    names = []
    for index, info in enumerate(members):
        name = info.filename
        if name in seen:
            folder, slash, last = name.rpartition("/")
            stem, dot, extension = last.rpartition(".")
            name = f"{folder}{slash}{stem} [member {index}]{dot}{extension}" if stem else f"{name} [member {index}]"
            while name in seen:  # a hostile ZIP may hold that name too
                name = f"{folder}{slash}_{name[len(folder) + len(slash) :]}"
        seen.add(name)
        names.append(name)
    return names


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
) -> Iterator[tuple[int, zipfile.ZipInfo, str, str | None]]:
    """Each member that gets a row: its index in ``check_zip``'s list, its info, its row name
    (``zip_entry_names``) and ``zip_skip_reason``.

    Reads no member's bytes, so a driver can plan the work for a whole archive cheaply; the index
    names a member unambiguously even when a (hostile) ZIP repeats a name.
    """
    members = check_zip(archive, limits)
    for index, (info, name) in enumerate(zip(members, zip_entry_names(members), strict=True)):
        # An unsafe path always gets its row, even when it also looks hidden.
        if is_ignored(info.filename) and not _unsafe_path(info.filename):
            continue
        yield index, info, name, zip_skip_reason(info, limits)


def read_zip_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    limits: ArchiveLimits = LIMITS,
    name: str | None = None,
    member: int = -1,
) -> ArchiveEntry:
    """One member's bytes, or why they cannot be had; a damaged member never raises."""
    name = info.filename if name is None else name
    try:
        # Never more than the per-photo limit + 1 byte, whatever the header claims.
        with archive.open(info) as handle:
            data = handle.read(limits.max_member_uncompressed + 1)
    except ZIP_ERRORS as exc:
        return ArchiveEntry(name, None, f"cannot be read from the ZIP ({exc})", member)
    except Exception as exc:  # one damaged member never stops the others
        return ArchiveEntry(name, None, f"cannot be read from the ZIP ({type(exc).__name__}: {exc})", member)
    if len(data) > limits.max_member_uncompressed:
        return ArchiveEntry(name, None, "larger than its header says; skipped", member)
    return ArchiveEntry(name, data, "", member)


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale / 10:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


class ReadBudget:
    """The bytes actually read from one archive, against ``max_total_uncompressed``: the directory was
    checked before, but what decompression yields is counted too, in case a directory lies."""

    def __init__(self, limits: ArchiveLimits = LIMITS) -> None:
        self.limit = limits.max_total_uncompressed
        self.read = 0

    @property
    def spent(self) -> bool:
        return self.read >= self.limit

    def reason(self) -> str:
        return f"not read: the ZIP has already given {_size(self.read)}, its limit of {_size(self.limit)} in total"

    def take(self, entry: ArchiveEntry) -> ArchiveEntry:
        """Count an entry's bytes; past the limit it is dropped (it was read, but is not handed on)."""
        if entry.data is None:
            return entry
        self.read += len(entry.data)
        if self.read > self.limit:
            return ArchiveEntry(entry.name, None, self.reason(), entry.member)
        return entry


def iter_zip(source: str | Path | BinaryIO, limits: ArchiveLimits = LIMITS) -> Iterator[ArchiveEntry]:
    """Each member of a ZIP as an ``ArchiveEntry``; nothing is extracted to disk."""
    budget = ReadBudget(limits)
    with open_zip(source) as archive:
        for index, info, name, reason in list_zip(archive, limits):
            if reason is None and budget.spent:
                reason = budget.reason()
            if reason is not None:
                yield ArchiveEntry(name, None, reason, index)
            else:
                yield budget.take(read_zip_member(archive, info, limits, name, index))


def special_file_kind(mode: int) -> str | None:
    """What a file of this ``st_mode`` is when it is not a regular file ("a named pipe (FIFO)", …), else None.

    A FIFO would block its reader until someone writes to it, a device may never end, and a folder or a
    socket cannot be read at all: none of them is ever opened as a photo or a ZIP.
    """
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def not_regular_reason(mode: int) -> str | None:
    """Why a file of this ``st_mode`` is not read as a photo (``None``: a regular file)."""
    kind = special_file_kind(mode)
    if kind is None:
        return None
    if kind == "a symbolic link":
        return "a symbolic link; skipped"
    return f"{kind}, not a photo file; skipped"


def open_regular_file(path: Path, follow_symlinks: bool = True) -> BinaryIO:
    """``path`` opened for reading, only if it is a regular file: opened without blocking (a FIFO would
    wait for a writer) and checked on the open descriptor, so a file swapped since it was listed is caught.
    ``follow_symlinks=False``: a symbolic link is refused (``OSError``), not followed.

    Raises ``OSError`` when it cannot be opened, ``ValueError`` (with the reason) when it is not a regular file.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        reason = not_regular_reason(os.fstat(fd).st_mode)
        if reason is not None:
            raise ValueError(reason)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def folder_skip_reason(path: Path, name: str, limits: ArchiveLimits = LIMITS) -> str | None:
    """Why a file under a folder is not read (``None``: read it); shared with the Ray engine."""
    try:
        info = path.lstat()  # a link is judged as a link, never followed
    except OSError as exc:  # vanished or unreadable since it was listed
        return f"cannot be read ({exc.strerror or exc})"
    reason = not_regular_reason(info.st_mode)
    if reason is not None:
        return reason
    if not is_image_name(name, limits):
        return "not a photo (by its extension); skipped"
    if info.st_size > limits.max_member_uncompressed:
        return f"{info.st_size / 1e6:.0f} MB is over the per-photo limit"
    return None


def list_folder(folder: str | Path, limits: ArchiveLimits = LIMITS) -> Iterator[tuple[Path, str, str | None]]:
    """Each file under a folder that gets a row (recursively, sorted): path, '/'-separated name, skip reason.

    Folders are walked, not listed; anything else that is not a regular file (a FIFO, socket, device or
    symbolic link) gets a row with its reason and is never opened.
    """
    root = Path(folder)
    count = 0
    for path in sorted(root.rglob("*")):
        try:
            is_folder = stat.S_ISDIR(path.lstat().st_mode)
        except OSError:
            is_folder = False  # vanished: its row says so
        if is_folder or is_ignored(str(path.relative_to(root))):
            continue
        count += 1
        if count > limits.max_members * 100:
            raise InvalidArchiveError(f"more than {limits.max_members * 100:,} files under {root}")
        name = path.relative_to(root).as_posix()
        yield path, name, folder_skip_reason(path, name, limits)


def read_folder_file(path: Path, name: str, limits: ArchiveLimits = LIMITS) -> ArchiveEntry:
    """One file's bytes, never more than the per-photo limit + 1 byte (the file may grow after it was listed);
    only a regular file is read, and opening never blocks (it may have become a FIFO since)."""
    try:
        with open_regular_file(path, follow_symlinks=False) as handle:
            data = handle.read(limits.max_member_uncompressed + 1)
    except ValueError as exc:
        return ArchiveEntry(name, None, str(exc))
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
