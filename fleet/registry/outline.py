"""An area's outline: a GeoJSON geometry (RFC 7946), checked before the registry stores it.

Pure: it takes what a client sent (parsed JSON) and either returns the geometry as the registry
keeps it (``{"type", "coordinates"}``, numbers as floats) or raises :class:`OutlineError` whose
message says what is wrong and where (``polygon 2, ring 0, position 5``), so an admin who pasted
a ward boundary from a GIS export can find the fault. What is accepted:

- ``Polygon`` or ``MultiPolygon`` (an area is a surface; points and lines outline nothing);
- every ring closed (its last position repeats its first) with at least four positions;
- positions ``[longitude, latitude]`` in range (a ``[latitude, longitude]`` pair from a
  Vietnamese city fails the latitude range and the message says the order);
- at most :data:`MAX_POSITIONS` positions in all: the map sends every visible area's outline
  to every dashboard, so a survey-grade boundary must be simplified first (a ward needs a few
  hundred points at most to be drawn at street zoom).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MAX_POSITIONS", "OutlineError", "check_outline", "outline_summary"]

#: Positions in one area's outline, all rings together.
MAX_POSITIONS = 5000


class OutlineError(ValueError):
    """The geometry is not an outline the registry stores; the message says why and where."""


def _number(value: Any, what: str) -> float:
    # JSON true/false are ints to Python; neither is a coordinate.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OutlineError(f"{what} is {value!r}, not a number")
    number = float(value)
    if not math.isfinite(number):
        raise OutlineError(f"{what} is not a finite number")
    return number


def _position(value: Any, where: str) -> list[float]:
    # RFC 7946 allows an altitude as a third element (GIS exports often write z = 0); the map
    # is flat, so it is checked as a number and dropped.
    if not isinstance(value, list) or len(value) not in (2, 3):
        raise OutlineError(f"{where}: a position is [longitude, latitude] or [longitude, "
                           f"latitude, altitude], got {value!r}"[:300])
    lon = _number(value[0], f"{where}: longitude")
    lat = _number(value[1], f"{where}: latitude")
    if len(value) == 3:
        _number(value[2], f"{where}: altitude")
    if not -180.0 <= lon <= 180.0:
        raise OutlineError(f"{where}: longitude {lon:g} is outside -180..180")
    if not -90.0 <= lat <= 90.0:
        raise OutlineError(f"{where}: latitude {lat:g} is outside -90..90 (GeoJSON positions "
                           "are [longitude, latitude])")
    return [lon, lat]


def _polygon(value: Any, where: str, budget: list[int]) -> list[list[list[float]]]:
    if not isinstance(value, list) or not value:
        raise OutlineError(f"{where or 'coordinates: '}a polygon is a non-empty list of rings")
    rings = []
    for r, ring in enumerate(value):
        here = f"{where}ring {r}"
        if not isinstance(ring, list):
            raise OutlineError(f"{here}: a ring is a list of positions")
        budget[0] -= len(ring)
        if budget[0] < 0:
            raise OutlineError(f"more than {MAX_POSITIONS} positions: simplify the outline")
        if len(ring) < 4:
            raise OutlineError(f"{here}: a ring needs at least 4 positions (3 corners and the "
                               f"first one again), got {len(ring)}")
        points = [_position(p, f"{here}, position {i}") for i, p in enumerate(ring)]
        if points[0] != points[-1]:
            raise OutlineError(f"{here} is not closed: its last position {points[-1]} differs "
                               f"from its first {points[0]}")
        rings.append(points)
    return rings


def check_outline(geometry: Any) -> dict[str, Any]:
    """The geometry as stored, or :class:`OutlineError`."""
    if not isinstance(geometry, dict):
        raise OutlineError("an outline is a GeoJSON geometry object")
    kind = geometry.get("type")
    if kind in ("Feature", "FeatureCollection"):
        raise OutlineError(f"type {kind!r}: send the feature's geometry, not the {kind}")
    if kind not in ("Polygon", "MultiPolygon"):
        raise OutlineError(f"type {kind!r}: an outline is a Polygon or a MultiPolygon")
    extra = sorted(set(geometry) - {"type", "coordinates", "bbox"})
    if extra:
        raise OutlineError(f"unexpected member(s) {', '.join(extra)}: a geometry has type and "
                           "coordinates")
    coordinates = geometry.get("coordinates")
    budget = [MAX_POSITIONS]
    if kind == "Polygon":
        return {"type": kind, "coordinates": _polygon(coordinates, "", budget)}
    if not isinstance(coordinates, list) or not coordinates:
        raise OutlineError("a MultiPolygon's coordinates are a non-empty list of polygons")
    return {"type": kind, "coordinates": [_polygon(p, f"polygon {i}, ", budget)
                                          for i, p in enumerate(coordinates)]}


def outline_summary(geometry: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the audit log keeps of an outline: its shape and size, not every vertex."""
    if geometry is None:
        return None
    polygons = (geometry["coordinates"] if geometry["type"] == "MultiPolygon"
                else [geometry["coordinates"]])
    points = [p for poly in polygons for ring in poly for p in ring]
    lons, lats = [p[0] for p in points], [p[1] for p in points]
    return {"type": geometry["type"], "polygons": len(polygons), "positions": len(points),
            "bbox": [min(lons), min(lats), max(lons), max(lats)]}
