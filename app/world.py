"""A world outline for maps drawn offline, and the view that frames a set of positions.

``land()`` is Natural Earth's 1:110m land (public domain, version 4.1.0, via the ``world-atlas``
package's ``land-110m.json`` TopoJSON, decoded to GeoJSON with coordinates rounded to 0.01°:
125 polygons, 86 kB). It ships in this folder, so nothing is fetched when a map is drawn.
``view_box`` is the longitude/latitude box a map of some positions should show.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

LAND_FILE = Path(__file__).with_name("world_land_110m.json")


@cache
def land() -> dict[str, Any]:
    """The land masses as a GeoJSON FeatureCollection of polygons (lon, lat); empty if the file is missing."""
    try:
        return json.loads(LAND_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"type": "FeatureCollection", "features": []}


def view_box(
    latitudes: Sequence[float], longitudes: Sequence[float], margin: float = 0.25, min_span: float = 12.0
) -> tuple[float, float, float, float]:
    """(west, south, east, north) framing every position, with ``margin`` of the span on each side and at
    least ``min_span`` degrees across (a single position gets a region around it, not a point), inside
    the world's limits. ``ValueError`` without positions."""
    if not latitudes or len(latitudes) != len(longitudes):
        raise ValueError("view_box needs as many latitudes as longitudes, at least one")
    west, east = min(longitudes), max(longitudes)
    south, north = min(latitudes), max(latitudes)
    lon_pad = max((east - west) * margin, (min_span - (east - west)) / 2, 0.0)
    lat_pad = max((north - south) * margin, (min_span - (north - south)) / 2, 0.0)
    return (
        max(west - lon_pad, -180.0),
        max(south - lat_pad, -85.0),
        min(east + lon_pad, 180.0),
        min(north + lat_pad, 85.0),
    )


def box_corners(box: tuple[float, float, float, float]) -> dict[str, Any]:
    """The box as a GeoJSON MultiPoint of its corners: what a map projection is fitted to (a polygon's
    winding would matter on the sphere; points have none)."""
    west, south, east, north = box
    return {"type": "MultiPoint", "coordinates": [[west, south], [west, north], [east, south], [east, north]]}
