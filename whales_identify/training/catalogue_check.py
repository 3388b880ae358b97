"""What must never ship in the bundled catalogue: photos with nothing in them, and placeholder ids.

A uniform grey photo in the catalogue becomes the best match of every blank frame; a
placeholder such as ``unknown(not 1056)`` (213 photos of unidentified animals under one
made-up id) is answered as if it were an animal. ``bundle`` leaves degenerate photos out
and refuses placeholder ids, which are labelling mistakes to fix in ``labels.csv``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from whales_identify.errors import LabelsError, WhaleIdError
from whales_identify.inputs.content import blank_reason
from whales_identify.inputs.imaging import decode_image

# An id that names no animal: "unknown", "unidentified", "new_whale", "n/a", "-1", "unknown(not 1056)", ...
PLACEHOLDER_ID = re.compile(r"^\s*(unknown|unidentified|unid|new[_ ]?whale|none|null|nan|n/?a|-+|\?+|0|-1)\b", re.I)


def placeholder_ids(ids: Iterable[str]) -> list[str]:
    """The ids (sorted, once each) that are placeholders rather than animals."""
    return sorted({str(i) for i in ids if i and PLACEHOLDER_ID.match(str(i))})


def degenerate_photos(paths: Sequence[Path | str]) -> dict[int, str]:
    """Index → reason for every photo that cannot be decoded or shows nothing (the content gate)."""
    problems: dict[int, str] = {}
    for index, path in enumerate(paths):
        try:
            reason = blank_reason(decode_image(path, long_side=640))
        except WhaleIdError as exc:
            reason = str(exc)
        if reason:
            problems[index] = reason
    return problems


def refuse_placeholders(ids: Iterable[str], where: str) -> None:
    """LabelsError naming every placeholder id found (give those photos an empty id instead)."""
    found = placeholder_ids(ids)
    if found:
        shown = ", ".join(repr(i) for i in found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
        raise LabelsError(
            f"{where} names no animal with the id(s) {shown}: leave the individual_id of unidentified "
            "animals empty, so they are not answered as one individual"
        )
