"""Untrusted text: individual ids, species names, CSV files users hand us and CSV cells we hand back.

* ``csv_safe`` — every cell of every CSV the package writes goes through it (OWASP CSV injection:
  a cell a spreadsheet would run as a formula is prefixed with ``'``); ``csv_unsafe`` reads one back.
* ``validate_individual_id`` / ``validate_species`` / ``validate_model_version`` — wherever such a
  value enters the catalogue (enrolment, import, rename). The rules are in ``config.TextRules``.
* ``decode_text`` / ``read_csv`` — an enrolment CSV: UTF-8 (with or without BOM), UTF-16 with a BOM,
  else Windows-1252 (said so in a note), never silently replaced characters; a typed error naming
  the file and line for anything else (an undecodable byte, NUL, a huge field, a broken quote).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import TypeVar

from whales_identify.config import TextRules
from whales_identify.errors import LabelsError, WhaleIdError

RULES = TextRules()
T = TypeVar("T")
# A number as a spreadsheet reads it: '-1.5', '+3', '1e-3' stay as they are.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


class InvalidTextError(WhaleIdError):
    """An id, species or other text value that does not follow the rules (the message says which)."""


def csv_safe(value: T, rules: TextRules = RULES) -> T | str:
    """``value`` made safe for a CSV cell: text starting with ``= + - @``, tab or CR gets a leading ``'``
    (so a spreadsheet shows it instead of running it) unless it is a number; other values unchanged."""
    if isinstance(value, str) and value.startswith(rules.csv_formula_starts) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_unsafe(cell: str, rules: TextRules = RULES) -> str:
    """The text ``csv_safe`` was given for ``cell``: its leading ``'`` removed exactly when ``csv_safe``
    adds one (``'=x`` → ``=x``; ``'abc``, ``'-1`` and ``abc`` stay as they are).

    ``csv_safe`` leaves text already starting with ``'`` alone, so a cell ``'=x`` may also have been
    given as it is: a reader that must not miss it (a resume) accepts both ``cell`` and this."""
    rest = cell[1:]
    return rest if cell.startswith("'") and csv_safe(rest, rules) != rest else cell


def shown(text: str, limit: int = 40) -> str:
    """``text`` fit for an error message: quoted, control characters escaped, shortened."""
    short = text if len(text) <= limit else text[:limit] + "…"
    return repr(short)


def _bad_character(text: str, allowed: str) -> str | None:
    """A readable name for the first character of ``text`` outside ``allowed`` (a regex class body)."""
    pattern = re.compile(f"[{allowed}]")
    for char in text:
        if not pattern.fullmatch(char):
            if char.isascii() and char.isprintable():
                return repr(char)
            return f"U+{ord(char):04X} ({unicodedata.name(char, 'a control character').lower()})"
    return None


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def validate_individual_id(text: object, rules: TextRules = RULES) -> str:
    """``text`` if it is a valid individual id, else ``InvalidTextError`` saying what is wrong.

    ASCII letters and digits, with ``_ . : ( )`` anywhere and ``-`` and space inside; 1–64 characters
    (``config.INDIVIDUAL_ID_PATTERN``). Nothing is trimmed or changed: callers strip what a person typed.
    """
    if not isinstance(text, str):
        raise InvalidTextError(f"an individual id must be text, not {type(text).__name__}")
    rule = (
        f"individual ids use letters A–Z a–z, digits and _ . : ( ) with - and spaces inside, "
        f"1–{rules.individual_id_max_chars} characters"
    )
    if not text:
        raise InvalidTextError(f"the individual id is empty; {rule}")
    if len(text) > rules.individual_id_max_chars:
        raise InvalidTextError(f"individual id {shown(text)} has {len(text):,} characters; {rule}")
    if _compiled(rules.individual_id_pattern).fullmatch(text):
        return text
    if text[0] in "=+-@":
        problem = f"starts with {text[0]!r} (a spreadsheet would run it as a formula)"
    elif text != text.strip():
        problem = "starts or ends with a space"
    else:
        bad = _bad_character(text, r"A-Za-z0-9_.:() \-")
        problem = f"contains {bad}" if bad else "is not allowed"
    raise InvalidTextError(f"individual id {shown(text)} {problem}; {rule}")


def validate_species(text: object, known: Iterable[str] = (), rules: TextRules = RULES) -> str:
    """``text`` if it is one of ``known`` (the model's species) or a snake_case name, else ``InvalidTextError``."""
    if not isinstance(text, str):
        raise InvalidTextError(f"a species must be text, not {type(text).__name__}")
    if text in set(known) or _compiled(rules.species_pattern).fullmatch(text):
        return text
    raise InvalidTextError(
        f"species {shown(text)} is not a known species name nor snake_case "
        "(lower-case letters, digits and _, starting with a letter, 2–64 characters, e.g. humpback_whale)"
    )


def validate_model_version(text: object, rules: TextRules = RULES) -> str:
    """``text`` if it looks like a model version (letters, digits, ``_ . : + -``; 1–64 characters)."""
    if isinstance(text, str) and _compiled(rules.model_version_pattern).fullmatch(text):
        return text
    what = shown(text) if isinstance(text, str) else type(text).__name__
    raise InvalidTextError(f"model version {what} is not valid (letters, digits and _ . : + -, 1–64 characters)")


# --- CSV files from users ------------------------------------------------------------------------------------
def decode_text(data: bytes, name: str) -> tuple[str, str]:
    """(text, note): UTF-8 (BOM or not), UTF-16 with a BOM, else Windows-1252 with a note saying so.

    ``LabelsError`` when none fits or the text holds NUL characters (a binary file, or UTF-16 without a BOM).
    """
    note = ""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise LabelsError(f"{name} starts like UTF-16 but is not valid UTF-16 ({exc.reason})") from exc
        note = f"{name} was read as UTF-16"
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as utf8:
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError as exc:
                raise LabelsError(
                    f"{name} is not UTF-8 text (byte 0x{data[utf8.start]:02x} at position {utf8.start:,}) "
                    f"nor Windows-1252 (byte 0x{data[exc.start]:02x}); save it as 'CSV UTF-8' and try again"
                ) from exc
            note = (
                f"{name} is not UTF-8 (byte 0x{data[utf8.start]:02x} at position {utf8.start:,}): "
                "it was read as Windows-1252 (cp1252); check accented names"
            )
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise LabelsError(
            f"{name}, line {line}: contains NUL characters, so it is not a plain-text CSV "
            "(a spreadsheet file renamed .csv, or UTF-16 without a byte-order mark?); save it as 'CSV UTF-8'"
        )
    return text, note


@dataclass(frozen=True)
class CsvTable:
    """A CSV read from a user's file: header, rows as {column: cell}, and the line each row ends on."""

    columns: list[str]
    rows: list[dict[str, str]]
    lines: list[int]  # 1 is the header; a quoted cell may span several lines


def read_csv(text: str, name: str, max_field_chars: int | None = None) -> CsvTable:
    """Parse a CSV; ``LabelsError`` naming the file and line for a field over ``max_field_chars`` (default
    ``TextRules.max_csv_field_chars``) or a malformed line, never ``csv.Error``. Blank lines are skipped;
    header names are stripped; a short row gets empty cells, cells under no header are dropped."""
    limit = RULES.max_csv_field_chars if max_field_chars is None else max_field_chars
    reader = csv.reader(io.StringIO(text, newline=""))
    columns: list[str] | None = None
    rows: list[dict[str, str]] = []
    lines: list[int] = []
    try:
        for cells in reader:
            for cell in cells:
                if len(cell) > limit:
                    raise LabelsError(
                        f"{name}, line {reader.line_num}: a field of {len(cell):,} characters; the limit is {limit:,}"
                    )
            if columns is None:
                columns = [c.strip() for c in cells]
            elif any(c.strip() for c in cells):
                rows.append({column: cells[i] if i < len(cells) else "" for i, column in enumerate(columns) if column})
                lines.append(reader.line_num)
    except csv.Error as exc:  # the csv module's own field limit (131,072 characters), a stray quote...
        raise LabelsError(
            f"{name}, line {reader.line_num}: cannot be read as CSV ({exc}); fields are limited to {limit:,} characters"
        ) from exc
    return CsvTable(columns or [], rows, lines)
