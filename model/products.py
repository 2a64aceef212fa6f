"""HiRISE RDR products as the catalog knows them, and the query that selects them.

Pure Python: QGIS's Find algorithm, the command line (``python3 -m model.catalog``), downloads and
the survey use it alike.

Conventions
- Longitudes are degrees east, planetocentric. A footprint is a ring of (lon, lat) whose
  western edge lies in [0, 360) and which is unwrapped eastward, so one that crosses the prime
  meridian ends past 360 (e.g. 355.3 to 360.07); areas may use any longitude domain
  (-180..180 or 0..360) and are matched modulo 360.
- A product lies in the latitude band when the centre of its latitude extent does.
- A solar-longitude or local-time window whose start is greater than its end wraps
  (Ls 350 to 10 means Ls >= 350 or Ls <= 10).
- The paper's window: centre latitude -60 to -40 (-70 to -40 as the wider option), Ls 140 to 200.
"""

import datetime as _dt
import math
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from .errors import EngineError
from .orientation import hirise_north_turn
from .schema import CATALOG_FIELDS


PAPER_LATITUDE = (-60.0, -40.0)
PAPER_LS = (140.0, 200.0)
PRODUCT_TYPES = ("RED", "COLOR")
MARS_RADIUS_M = 3396190.0
# The sphere of IAU_2015:49900 (Mars (2015) - Sphere / Ocentric), with its longitudes 0 to 360 east as
# PDS gives them: QGIS asks a layer for the features in the map's extent in the layer's CRS, and from
# IAU_2015:49900 PROJ answers -180 to 180, so a footprint at 226 deg E would never be drawn over its
# image. +lon_wrap=180 makes PROJ answer 0 to 360 (WKT 2's PROJ remark carries it: QGIS reads WKT 1's
# PROJ4 extension as IAU_2015:49900 and drops it); and, being a plain sphere rather than IAU's Mars, it
# has a transformation from the polar-radius CRS of HiRISE's polar products, which IAU_2015:49900 has not.
MARS_GEOGCS_WKT = (
    'GEOGCRS["Mars (2015) - Sphere / Ocentric, longitudes 0-360 E",DATUM["Mars (2015) - Sphere",'
    'ELLIPSOID["Mars (2015) - Sphere",3396190,0,LENGTHUNIT["metre",1]]],PRIMEM["Reference Meridian",0,ANGLEUNIT["degree",0.0174532925199433]],'
    'CS[ellipsoidal,2],AXIS["longitude",east,ORDER[1],ANGLEUNIT["degree",0.0174532925199433]],'
    'AXIS["latitude",north,ORDER[2],ANGLEUNIT["degree",0.0174532925199433]],'
    'REMARK["PROJ CRS string: +proj=longlat +R=3396190 +lon_wrap=180 +no_defs"]]'
)


class CatalogError(EngineError):
    code = "catalog"


class OdeUnavailableError(CatalogError):
    code = "ode_unavailable"


@dataclass
class Product:
    product_id: str
    observation_id: str
    product_type: str
    minimum_latitude: float
    maximum_latitude: float
    westernmost_longitude: float
    easternmost_longitude: float
    jp2_url: str
    lbl_url: str
    solar_longitude: Optional[float] = None
    incidence_angle: Optional[float] = None
    emission_angle: Optional[float] = None
    phase_angle: Optional[float] = None
    local_time: Optional[float] = None
    map_scale: Optional[float] = None
    start_time: str = ""
    orbit_number: Optional[int] = None
    mission_phase: str = ""
    corners: Optional[List[Tuple[float, float]]] = None  # (lon, lat) x 4 where the index has them
    jp2_bytes: Optional[int] = None
    lbl_bytes: Optional[int] = None
    size_unit_bytes: int = 1
    index_storage_bytes: Optional[int] = None
    themes: Set[str] = field(default_factory=set)
    source: str = ""

    @property
    def centre_latitude(self) -> float:
        return (self.minimum_latitude + self.maximum_latitude) / 2.0

    @property
    def centre_longitude(self) -> float:
        west, east = unwrapped_span(self.westernmost_longitude, self.easternmost_longitude)
        return ((west + east) / 2.0) % 360.0

    @property
    def north_turn(self) -> float:
        return hirise_north_turn(self.centre_latitude, self.centre_longitude)

    @property
    def year(self) -> Optional[int]:
        return int(self.start_time[:4]) if re.match(r"\d{4}", self.start_time or "") else None

    @property
    def mars_year(self) -> Optional[int]:
        return mars_year(self.start_time, self.solar_longitude)

    def ring(self) -> List[Tuple[float, float]]:
        """The footprint, closed, western edge in [0, 360), unwrapped eastward."""
        if self.corners and len(self.corners) >= 3:
            points = unwrap_ring(self.corners)
        else:
            west, east = unwrapped_span(self.westernmost_longitude, self.easternmost_longitude)
            if self.easternmost_longitude - self.westernmost_longitude >= 360.0:  # the index's way of saying it circles the pole (-180 to 354)
                west, east = 0.0, 360.0
            south, north = self.minimum_latitude, self.maximum_latitude
            # edges of a quarter turn at most, so that unwrapping (which keeps each step within 180 degrees) keeps a wide ring wide
            steps = max(1, math.ceil((east - west) / 90.0))
            edge = [west + (east - west) * i / steps for i in range(steps + 1)]
            points = [(lon, south) for lon in edge] + [(lon, north) for lon in reversed(edge)]
        shift = math.floor(min(lon for lon, _ in points) / 360.0) * 360.0
        points = [(lon - shift, lat) for lon, lat in points]
        if points[0] != points[-1]:
            points.append(points[0])
        return points

    def wkt(self) -> str:
        return "POLYGON((" + ",".join(f"{lon:.7f} {lat:.7f}" for lon, lat in self.ring()) + "))"

    def as_row(self) -> Dict:
        row = {name: getattr(self, name) for name, _ in CATALOG_FIELDS if name != "themes"}
        row["themes"] = "; ".join(sorted(self.themes))
        row["wkt"] = self.wkt()
        return row


def unwrapped_span(west: float, east: float) -> Tuple[float, float]:
    """(west, east) with west in [0, 360) and east >= west (east past 360 across the prime meridian)."""
    west = west % 360.0
    east = east % 360.0
    if east < west:
        east += 360.0
    return west, east


def western_edge(longitudes: Sequence[float]) -> float:
    """The western end, in [0, 360), of the shortest span of longitude that holds them all (a product's
    corners: far less than 180 deg apart)."""
    reference = longitudes[0]
    return (reference + min((lon - reference + 180.0) % 360.0 - 180.0 for lon in longitudes)) % 360.0


def unwrap_ring(points: Sequence[Tuple[float, float]]) -> List[Tuple[float, float]]:
    """Each longitude moved by a multiple of 360 to lie within 180 of the previous one."""
    out = []
    for lon, lat in points:
        if out:
            previous = out[-1][0]
            lon = lon + 360.0 * round((previous - lon) / 360.0)
        out.append((float(lon), float(lat)))
    return out


def area_ring(points: Sequence[Tuple[float, float]]) -> List[Tuple[float, float]]:
    """A drawn area's ring in unwrapped longitudes (unwrap_ring: its edges no longer than 180 deg,
    find densifies them); a ring that goes once around a pole (a polar area drawn in a polar
    CRS) is closed over that pole, so that it holds the ground between it and the pole."""
    ring = unwrap_ring(points)
    (first, _), (last, _) = ring[0], ring[-1]
    winding = last - first + ((first - last + 180.0) % 360.0 - 180.0)
    if abs(winding) < 180.0:
        return ring
    pole = -90.0 if sum(lat for _, lat in ring) < 0 else 90.0
    # the closing edge, unwrapped, ends a turn away from the start; from there along the pole back to it
    return ring + [(first + winding, ring[0][1]), (first + winding, pole), (first, pole)]


# Mars Year 1 began (Ls 0) on 1955-04-11 (Clancy et al. 2000; Piqueux et al. 2015); a Mars year is 686.9726 days.
_MY1_START = _dt.datetime(1955, 4, 11)
_MARS_YEAR_DAYS = 686.9726


def mars_year(start_time: str, ls: Optional[float] = None) -> Optional[int]:
    """Mars Year of an ISO time; the observation's Ls (where given) settles the days around Ls 0."""
    match = re.match(r"(\d{4})-(\d{2})-(\d{2})", start_time or "")
    if not match:
        return None
    when = _dt.datetime(*map(int, match.groups()))
    years = (when - _MY1_START).days / _MARS_YEAR_DAYS
    number = int(math.floor(years)) + 1
    phase = years - math.floor(years)
    if ls is not None:
        if phase < 0.1 and ls > 300:
            number -= 1
        elif phase > 0.9 and ls < 60:
            number += 1
    return number


def in_window(value: Optional[float], start: Optional[float], end: Optional[float], period: Optional[float] = None) -> bool:
    """start <= value <= end; with a period (360 for Ls, 24 for local time) start > end wraps."""
    if start is None and end is None:
        return True
    if value is None:
        return False
    if start is None:
        return value <= end
    if end is None:
        return value >= start
    if period is not None and start > end:
        return value >= start or value <= end
    return start <= value <= end


@dataclass
class Query:
    """What to find; None means no limit. The defaults are the paper's window."""

    latitude_min: Optional[float] = PAPER_LATITUDE[0]
    latitude_max: Optional[float] = PAPER_LATITUDE[1]
    ls_start: Optional[float] = PAPER_LS[0]
    ls_end: Optional[float] = PAPER_LS[1]
    incidence_min: Optional[float] = None
    incidence_max: Optional[float] = None
    local_time_start: Optional[float] = None
    local_time_end: Optional[float] = None
    scale_min: Optional[float] = None  # metres per pixel
    scale_max: Optional[float] = None
    themes: Tuple[str, ...] = ()  # any of these science themes (case-insensitive)
    product_type: str = "RED"
    areas: Tuple[Tuple[Tuple[float, float], ...], ...] = ()  # rings of (lon, lat) degrees in a Mars geographic CRS
    area_holes: Tuple[Tuple[Tuple[float, float], ...], ...] = ()  # the areas' holes: a footprint wholly in one is left out
    swapped: Tuple[str, ...] = field(default=(), init=False)  # the windows given high to low, taken low to high (describe_query says so)

    def __post_init__(self):
        self.product_type = self.product_type.upper()
        if self.product_type not in PRODUCT_TYPES:
            raise CatalogError(f"Unknown product type {self.product_type!r}: choose RED or COLOR.")
        # "from -40 to -70" means the band between them, as incidence "90 to 10" and scale "1 to 0.25" do: none of them wraps
        # (Ls and local time do), and a reversed incidence window had found 0 products without a word
        for name in ("latitude", "incidence", "scale"):
            low, high = getattr(self, f"{name}_min"), getattr(self, f"{name}_max")
            if low is not None and high is not None and low > high:
                setattr(self, f"{name}_min", high)
                setattr(self, f"{name}_max", low)
                self.swapped += (name,)
        for name in ("ls_start", "ls_end"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 360.0:
                raise CatalogError(f"Solar longitude {value} is outside 0 to 360 degrees: give Ls in degrees, e.g. 140 to 200 (a window may wrap: 350 to 10).")
        for name in ("local_time_start", "local_time_end"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 24.0:
                raise CatalogError(f"Local time {value} is outside 0 to 24 hours.")
        self.themes = tuple(t.strip() for t in self.themes if t and t.strip())
        self.areas = tuple(tuple(area_ring(ring)) for ring in self.areas if len(ring) >= 3)
        self.area_holes = tuple(tuple(unwrap_ring(ring)) for ring in self.area_holes if len(ring) >= 3)

    def bounding_box(self) -> Tuple[float, float, List[Tuple[float, float]]]:
        """(min lat, max lat, [(west, east), ...] in 0..360) for a server-side query."""
        south = self.latitude_min if self.latitude_min is not None else -90.0
        north = self.latitude_max if self.latitude_max is not None else 90.0
        if not self.areas:
            return south, north, [(0.0, 360.0)]
        lats = [lat for ring in self.areas for _, lat in ring]
        south, north = max(south, min(lats)), min(north, max(lats))
        if south > north:  # the areas lie outside the latitude band: nothing to ask for
            return south, north, []
        spans = []
        for ring in self.areas:
            west, east = min(lon for lon, _ in ring), max(lon for lon, _ in ring)
            if east - west >= 360.0:
                return south, north, [(0.0, 360.0)]
            west360 = west % 360.0
            east360 = west360 + (east - west)
            if east360 > 360.0:
                spans += [(west360, 360.0), (0.0, east360 - 360.0)]
            else:
                spans.append((west360, east360))
        return south, north, spans

    def matches(self, product: Product) -> bool:
        return self.failed_test(product) is None

    def failed_test(self, product: Product) -> Optional[str]:
        """The first test the product fails, or None."""
        if product.product_type != self.product_type:
            return "product type"
        if not in_window(product.centre_latitude, self.latitude_min, self.latitude_max):
            return "latitude"
        if not in_window(product.solar_longitude, self.ls_start, self.ls_end, 360.0):
            return "solar longitude"
        if not in_window(product.incidence_angle, self.incidence_min, self.incidence_max):
            return "incidence angle"
        if not in_window(product.local_time, self.local_time_start, self.local_time_end, 24.0):
            return "local time"
        if not in_window(product.map_scale, self.scale_min, self.scale_max):
            return "map scale"
        if self.themes:
            wanted = {t.lower() for t in self.themes}
            if not any(t.lower() in wanted for t in product.themes):
                return "theme"
        if self.areas and not any(rings_intersect(product.ring(), area) for area in self.areas):
            return "area"
        if any(ring_within(product.ring(), hole) for hole in self.area_holes):
            return "area"
        return None


def _point_in_ring(x: float, y: float, ring: Sequence[Tuple[float, float]]) -> bool:
    inside = False
    n = len(ring)
    for i in range(n):
        x1, y1 = ring[i]
        x2, y2 = ring[(i + 1) % n]
        if (y1 > y) != (y2 > y):
            if x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
    return inside


def _segments_cross(a, b, c, d) -> bool:
    def orient(p, q, r):
        value = (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
        return (value > 0) - (value < 0)

    def on_segment(p, q, r):
        return min(p[0], r[0]) <= q[0] <= max(p[0], r[0]) and min(p[1], r[1]) <= q[1] <= max(p[1], r[1])

    o1, o2, o3, o4 = orient(a, b, c), orient(a, b, d), orient(c, d, a), orient(c, d, b)
    if o1 != o2 and o3 != o4:
        return True
    return (o1 == 0 and on_segment(a, c, b)) or (o2 == 0 and on_segment(a, d, b)) or (o3 == 0 and on_segment(c, a, d)) or (o4 == 0 and on_segment(c, b, d))


def _planar_intersect(p: Sequence[Tuple[float, float]], q: Sequence[Tuple[float, float]]) -> bool:
    if max(x for x, _ in p) < min(x for x, _ in q) or max(x for x, _ in q) < min(x for x, _ in p):
        return False
    if max(y for _, y in p) < min(y for _, y in q) or max(y for _, y in q) < min(y for _, y in p):
        return False
    if _point_in_ring(p[0][0], p[0][1], q) or _point_in_ring(q[0][0], q[0][1], p):
        return True
    for i in range(len(p)):
        for j in range(len(q)):
            if _segments_cross(p[i], p[(i + 1) % len(p)], q[j], q[(j + 1) % len(q)]):
                return True
    return False


def rings_intersect(footprint: Sequence[Tuple[float, float]], area: Sequence[Tuple[float, float]]) -> bool:
    """Do two lon/lat rings overlap, modulo 360 degrees of longitude? The footprint is unwrapped here,
    the area is taken as Query keeps it (area_ring)."""
    footprint = unwrap_ring(footprint)
    area_west = min(x for x, _ in area)
    foot_west = min(x for x, _ in footprint)
    base = 360.0 * round((area_west - foot_west) / 360.0)
    for k in (-1, 0, 1):
        shift = base + 360.0 * k
        if _planar_intersect([(x + shift, y) for x, y in footprint], area):
            return True
    return False


def ring_within(footprint: Sequence[Tuple[float, float]], hole: Sequence[Tuple[float, float]]) -> bool:
    """Does the footprint lie wholly inside the (unwrapped) hole, modulo 360 degrees of longitude?"""
    footprint = unwrap_ring(footprint)
    base = 360.0 * round((min(x for x, _ in hole) - min(x for x, _ in footprint)) / 360.0)
    for k in (-1, 0, 1):
        shifted = [(x + base + 360.0 * k, y) for x, y in footprint]
        if all(_point_in_ring(x, y, hole) for x, y in shifted) and not any(
                _segments_cross(shifted[i], shifted[(i + 1) % len(shifted)], hole[j], hole[(j + 1) % len(hole)])
                for i in range(len(shifted)) for j in range(len(hole))):
            return True
    return False


def as_float(value) -> Optional[float]:
    if value is None:
        return None
    text = str(value).strip().strip('"').strip()
    if text == "" or text.upper() in ("N/A", "UNK", "NULL", "NONE"):
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    if math.isnan(number) or number <= -1e30:  # PDS's "unknown" constants
        return None
    return number


def as_int(value) -> Optional[int]:
    number = as_float(value)
    return int(number) if number is not None else None


def observing_conditions(first: Callable[..., object]) -> Dict[str, object]:
    """A product's fields beyond its footprint, which ODE and both index formats give under the same
    PDS names (ODE in mixed case); first(*names) is a record's first non-empty value of those names."""
    def text(*names) -> str:
        return str(first(*names) or "").strip()
    return dict(
        solar_longitude=as_float(first("SOLAR_LONGITUDE")),
        incidence_angle=as_float(first("INCIDENCE_ANGLE")),
        emission_angle=as_float(first("EMISSION_ANGLE")),
        phase_angle=as_float(first("PHASE_ANGLE")),
        local_time=as_float(first("LOCAL_TIME", "LOCAL_SOLAR_TIME")),
        map_scale=as_float(first("MAP_SCALE")),  # not MAP_RESOLUTION: that is pixels per degree
        # ODE's UTC_start_time first; the indexes have START_TIME (the CSV with the MRO: prefix in some releases)
        start_time=text("UTC_START_TIME", "START_TIME", "OBSERVATION_START_TIME", "MRO:OBSERVATION_START_TIME", "OBSERVATION_TIME"),
        orbit_number=as_int(first("ORBIT_NUMBER")),
        mission_phase=text("MISSION_PHASE_NAME"),
    )


def observation_of(name: str) -> str:
    """ESP_011605_1170 from a product ID, file name or URL."""
    matches = re.findall(r"(?<![A-Z])((?:PSP|ESP|TRA|AEB|INT|CAL|KIL|TSH)_\d{6}_\d{4})", (name or "").upper())
    return matches[-1] if matches else ""


def product_type_of(name: str) -> str:
    stem = os.path.splitext(os.path.basename(name or ""))[0].upper()
    return "RED" if re.search(r"_RED\d*$", stem) else ("COLOR" if stem.endswith("COLOR") else "")
