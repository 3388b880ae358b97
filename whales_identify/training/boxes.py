"""The animal's box in every training photo, in the pixels of the photo as decoded for training.

The labels' box where there is one that fits the stored photo (scaled to the decode); else the
localiser's, exactly as identification will see the photo; else none (the whole photo is the
animal: pre-cropped heads and fins). 54 of the 80 boxes in the shared labels lie partly outside
their photo (given in the original photo's pixels, not the downscaled copy's): those are not used.
"""

from __future__ import annotations

import logging

import pandas as pd
from PIL import Image

from whales_identify.errors import WhaleIdError
from whales_identify.inputs.imaging import decode_image
from whales_identify.model.localiser import Box, load_localiser

log = logging.getLogger(__name__)


def scaled_box(box: Box, stored_size: tuple[int, int], decoded_size: tuple[int, int]) -> Box:
    """A box in stored-photo pixels → pixels of the same photo decoded at another size."""
    sx, sy = decoded_size[0] / stored_size[0], decoded_size[1] / stored_size[1]
    x1, y1, x2, y2 = box
    return (x1 * sx, y1 * sy, x2 * sx, y2 * sy)


def fits(box: Box, size: tuple[int, int], slack: float = 1.0) -> bool:
    """True when ``box`` lies inside a photo of ``size`` (to ``slack`` pixels) and is not empty."""
    x1, y1, x2, y2 = box
    return -slack <= x1 < x2 <= size[0] + slack and -slack <= y1 < y2 <= size[1] + slack


def training_boxes(
    rows: pd.DataFrame, decode_long_side: int, crop_to_animal: bool
) -> tuple[dict[str, Box | None], set[str]]:
    """Path → box for every row (empty when the model looks at whole photos), and the paths whose
    box is a labelled one (hard negatives are cut only beside those)."""
    if not crop_to_animal:
        return {}, set()
    localiser = load_localiser()
    if localiser is None:
        log.warning("no localiser installed: photos without a labelled box are seen whole")
    boxes: dict[str, Box | None] = {}
    labelled: set[str] = set()
    found = 0
    for row in rows.itertuples(index=False):
        try:
            image = decode_image(row.path, long_side=decode_long_side)
        except WhaleIdError:
            boxes[row.path] = None  # an unreadable photo is skipped later with its error
            continue
        if row.box is not None:
            with Image.open(row.path) as stored:
                stored_size = stored.size
        if row.box is not None and fits(row.box, stored_size):
            boxes[row.path] = scaled_box(row.box, stored_size, image.size)
            labelled.add(row.path)
        elif localiser is not None:
            boxes[row.path] = localiser.locate(image).box
            found += boxes[row.path] is not None
        else:
            boxes[row.path] = None
    log.info("boxes: %d labelled, %d from the localiser, of %d photos", len(labelled), found, len(rows))
    return boxes, labelled
