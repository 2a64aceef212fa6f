"""Finding HiRISE RDR products: local indexes (the PDS cumulative index or a CSV) and ODE's REST service.

Pure Python (csv, gzip, json, urllib): QGIS's algorithm (processing_provider/find_algorithm.py)
and the command line (``python3 -m model.catalog``) use it alike.

Conventions
- Longitudes are degrees east, planetocentric. A footprint is a ring of (lon, lat) whose
  western edge lies in [0, 360) and which is unwrapped eastward, so one that crosses the prime
  meridian ends past 360 (e.g. 355.3 to 360.07); areas may use any longitude domain
  (-180..180 or 0..360) and are matched modulo 360.
- A product lies in the latitude band when the centre of its latitude extent does.
- A solar-longitude or local-time window whose start is greater than its end wraps
  (Ls 350 to 10 means Ls >= 350 or Ls <= 10).
- The paper's window: centre latitude -60 to -40 (-70 to -40 as the wider option), Ls 140 to 200.

Sources
- ``RDRCUMINDEX.LBL`` + ``RDRCUMINDEX.TAB`` (PDS3 fixed-width ASCII table): the label's COLUMN
  objects (NAME, START_BYTE, BYTES) say where each field lies in a row; the URLs are
  PDS_BASE_URL + FILE_NAME_SPECIFICATION.
- A CSV with the columns of ``hirise_rdr_index.csv.gz`` (FILE_NAME, MINIMUM_LATITUDE, ...,
  IMG_URL, LABEL_URL). Its rows are COLOR products (``*_COLOR.IMG`` and ``*_UNFILTERED_COLOR.IMG``
  of one observation share one JP2); a RED product's URLs are derived from the COLOR ones
  (same folder, ``_RED.JP2``), as the HiRISE archive lays them out. It has no MAP_SCALE.
- ODE REST (``query=product&ihid=MRO&iid=HIRISE&pt=RDRV11&output=JSON``), filtered here by the
  rest of the query. The JSON shape (ODEResults / Products / Product, Product_files / Product_file
  with FileName, URL, KBytes) is written from ODE's documentation as we know it: this code
  was tested against a local server answering in that shape, never against ODE itself.
"""

import csv
import datetime as _dt
import gzip
import html
import io
import json
import math
import os
import re
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from . import files
from .errors import CancelledError, EngineError
from .orientation import NORTH_FAR_DEG, hirise_north_turn

PAPER_LATITUDE = (-60.0, -40.0)
PAPER_LS = (140.0, 200.0)
PRODUCT_TYPES = ("RED", "COLOR")

PDS_BASE_URL = "https://hirise-pds.lpl.arizona.edu/PDS/"
ODE_URL = "https://oderest.rsl.wustl.edu/live2/"

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

BUNDLED_EXTRACT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resources", "index", "hirise_rdr_paper_window.csv.gz")

# The output layer's fields, in order (name, kind), as model/schema.py writes its tables.
CATALOG_FIELDS = (
    ("product_id", "text"),
    ("observation_id", "text"),
    ("product_type", "text"),
    ("centre_latitude", "real"),
    ("centre_longitude", "real"),
    ("minimum_latitude", "real"),
    ("maximum_latitude", "real"),
    ("westernmost_longitude", "real"),
    ("easternmost_longitude", "real"),
    ("solar_longitude", "real"),
    ("incidence_angle", "real"),
    ("emission_angle", "real"),
    ("phase_angle", "real"),
    ("local_time", "real"),
    ("map_scale", "real"),
    ("north_turn", "real"),  # degrees clockwise from up that north points at the centre of the product's map
    ("start_time", "text"),
    ("year", "int"),
    ("mars_year", "int"),
    ("orbit_number", "int"),
    ("mission_phase", "text"),
    ("themes", "text"),
    ("jp2_url", "text"),
    ("lbl_url", "text"),
    # Byte counts are "real": QGIS's "int" fields are 32-bit, and a double holds integers exactly up to 2**53.
    ("jp2_bytes", "real"),  # NULL where the source does not give it (the CSV and the PDS index do not)
    ("lbl_bytes", "real"),
    ("size_unit_bytes", "int"),  # precision of jp2_bytes/lbl_bytes: 1, or 1024 from ODE's KBytes
    ("index_storage_bytes", "real"),  # the CSV's REQUIRED_STORAGE_BYTES (the uncompressed product, not the JP2)
    ("source", "text"),
)


class CatalogError(EngineError):
    code = "catalog"


class OdeUnavailableError(CatalogError):
    code = "ode_unavailable"


# --- products -------------------------------------------------------------------------------


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


# --- Mars years -----------------------------------------------------------------------------

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


# --- the query ------------------------------------------------------------------------------


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
    latitudes_swapped: bool = field(default=False, init=False)

    def __post_init__(self):
        self.product_type = self.product_type.upper()
        if self.product_type not in PRODUCT_TYPES:
            raise CatalogError(f"Unknown product type {self.product_type!r}: choose RED or COLOR.")
        if self.latitude_min is not None and self.latitude_max is not None and self.latitude_min > self.latitude_max:
            # "from -40 to -70" means the band between them; said in describe_query, since latitudes do not wrap
            self.latitude_min, self.latitude_max = self.latitude_max, self.latitude_min
            self.latitudes_swapped = True
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


# --- polygons in longitude/latitude -----------------------------------------------------------


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


# --- reading indexes --------------------------------------------------------------------------


def _open_text(path: str):
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace", newline="")
    return open(path, "r", encoding="utf-8-sig", errors="replace", newline="")


def _float(value) -> Optional[float]:
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


def _int(value) -> Optional[int]:
    number = _float(value)
    return int(number) if number is not None else None


def observation_of(name: str) -> str:
    """ESP_011605_1170 from a product ID, file name or URL."""
    matches = re.findall(r"(?<![A-Z])((?:PSP|ESP|TRA|AEB|INT|CAL|KIL|TSH)_\d{6}_\d{4})", (name or "").upper())
    return matches[-1] if matches else ""


def _type_of(name: str) -> str:
    stem = os.path.splitext(os.path.basename(name or ""))[0].upper()
    return "RED" if re.search(r"_RED\d*$", stem) else ("COLOR" if stem.endswith("COLOR") else "")


def _red_url(color_url: str) -> str:
    return re.sub(r"_COLOR(\.[A-Za-z0-9]+)$", r"_RED\1", color_url)


def read_themes(path: str) -> Dict[str, Set[str]]:
    """Observation ID -> science themes, from a two-column CSV (file or product name, theme), with or without header."""
    themes: Dict[str, Set[str]] = {}
    with _open_text(path) as handle:
        for row in csv.reader(handle):
            if len(row) < 2:
                continue
            observation = observation_of(row[0])
            if observation and row[1].strip():
                themes.setdefault(observation, set()).add(row[1].strip())
    if not themes:
        raise CatalogError(f"The themes file {path} holds no (product, theme) rows: give a CSV like hirise_themes.csv.gz (FILE_NAME,THEME).")
    return themes


@dataclass
class ReadStats:
    rows: int = 0
    without_metadata: int = 0
    duplicates: int = 0
    has_map_scale: bool = False


def read_csv_index(path: str, product_type: str = "RED", stats: Optional[ReadStats] = None) -> Iterator[Product]:
    """Products of a CSV like hirise_rdr_index.csv.gz (one COLOR row per product, see the module's notes)."""
    stats = stats if stats is not None else ReadStats()
    product_type = product_type.upper()
    seen: Dict[str, Product] = OrderedDict()
    with _open_text(path) as handle:
        reader = csv.DictReader(handle)
        columns = {name.strip().upper(): name for name in (reader.fieldnames or [])}
        required = ("MINIMUM_LATITUDE", "MAXIMUM_LATITUDE", "WESTERNMOST_LONGITUDE", "EASTERNMOST_LONGITUDE", "IMG_URL")
        missing = [c for c in required if c not in columns]
        if missing:
            raise CatalogError(f"{path} is not a HiRISE index CSV: it lacks the columns {', '.join(missing)}. Give a CSV like hirise_rdr_index.csv.gz, or RDRCUMINDEX.LBL with its .TAB.")
        stats.has_map_scale = "MAP_SCALE" in columns

        def get(row, name):
            key = columns.get(name)
            return row.get(key) if key else None

        for row in reader:
            stats.rows += 1
            url = (get(row, "IMG_URL") or "").strip()
            south, north = _float(get(row, "MINIMUM_LATITUDE")), _float(get(row, "MAXIMUM_LATITUDE"))
            west, east = _float(get(row, "WESTERNMOST_LONGITUDE")), _float(get(row, "EASTERNMOST_LONGITUDE"))
            if not url or None in (south, north, west, east):
                stats.without_metadata += 1
                continue
            label_url = (get(row, "LABEL_URL") or "").strip() or re.sub(r"\.JP2$", ".LBL", url, flags=re.I)
            observation = observation_of(url)
            if product_type == "RED":
                url, label_url = _red_url(url), _red_url(label_url)
            product_id = os.path.splitext(os.path.basename(url))[0]
            file_name = (get(row, "FILE_NAME") or "").strip().upper()
            exact = os.path.splitext(file_name)[0] == product_id.upper() if file_name else False
            if product_id in seen:
                stats.duplicates += 1
                if not exact:  # keep the row whose FILE_NAME is the JP2's own product
                    continue
            seen[product_id] = Product(
                product_id=product_id,
                observation_id=observation,
                product_type=product_type,
                minimum_latitude=south,
                maximum_latitude=north,
                westernmost_longitude=west,
                easternmost_longitude=east,
                jp2_url=url,
                lbl_url=label_url,
                solar_longitude=_float(get(row, "SOLAR_LONGITUDE")),
                incidence_angle=_float(get(row, "INCIDENCE_ANGLE")),
                emission_angle=_float(get(row, "EMISSION_ANGLE")),
                phase_angle=_float(get(row, "PHASE_ANGLE")),
                local_time=_float(get(row, "LOCAL_TIME")),
                map_scale=_float(get(row, "MAP_SCALE")),
                start_time=(get(row, "START_TIME") or get(row, "MRO:OBSERVATION_START_TIME") or "").strip(),
                orbit_number=_int(get(row, "ORBIT_NUMBER")),
                mission_phase=(get(row, "MISSION_PHASE_NAME") or "").strip(),
                index_storage_bytes=_int(get(row, "REQUIRED_STORAGE_BYTES")) if product_type == "COLOR" else None,
                source=os.path.basename(path),
            )
    yield from seen.values()


# --- the PDS cumulative index (RDRCUMINDEX.LBL + .TAB) ----------------------------------------


@dataclass
class TableColumn:
    name: str
    start_byte: int  # 1-based, as PDS3 counts
    nbytes: int
    data_type: str = "CHARACTER"


@dataclass
class TableLayout:
    table_file: str
    row_bytes: Optional[int]
    rows: Optional[int]
    columns: List[TableColumn]


def parse_index_label(text: str) -> TableLayout:
    """The INDEX_TABLE (or TABLE) object of a PDS3 label: the table's file name, row length and columns."""
    table_file = ""
    match = re.search(r'^\s*\^(?:\w*_)?TABLE\s*=\s*\(?\s*"?([^",)\s]+)"?', text, re.M | re.I)
    if match:
        table_file = match.group(1)
    columns: List[TableColumn] = []
    current: Optional[Dict[str, str]] = None
    row_bytes = rows = None
    depth_in_table = False
    for raw in text.splitlines():
        line = raw.strip()
        m = re.match(r"^(\^?[A-Z0-9_:]+)\s*=\s*(.*)$", line, re.I)
        if not m:
            continue
        key, value = m.group(1).upper(), m.group(2).strip().strip('"').strip()
        if key == "OBJECT" and value.upper().endswith("TABLE"):
            depth_in_table = True
        elif key == "OBJECT" and value.upper() == "COLUMN":
            current = {}
        elif key == "END_OBJECT" and value.upper() == "COLUMN" and current is not None:
            try:
                columns.append(TableColumn(current["NAME"], int(current["START_BYTE"]), int(current["BYTES"]), current.get("DATA_TYPE", "CHARACTER")))
            except (KeyError, ValueError):
                raise CatalogError(f"A COLUMN of the index label lacks NAME, START_BYTE or BYTES ({current}): is this RDRCUMINDEX.LBL?") from None
            current = None
        elif current is not None:
            current[key] = value
        elif depth_in_table and key == "ROW_BYTES":
            row_bytes = int(value)
        elif depth_in_table and key == "ROWS":
            rows = int(value)
    if not columns:
        raise CatalogError("The label describes no table columns (no OBJECT = COLUMN with NAME, START_BYTE, BYTES): give the index's own .LBL (RDRCUMINDEX.LBL).")
    return TableLayout(table_file, row_bytes, rows, columns)


def _companion(path: str, name: str) -> Optional[str]:
    """``name`` beside ``path``, matched case-insensitively."""
    folder = os.path.dirname(os.path.abspath(path))
    for candidate in os.listdir(folder):
        if candidate.lower() == os.path.basename(name).lower():
            return os.path.join(folder, candidate)
    return None


def pds_index_files(path: str) -> Tuple[str, str]:
    """(label, table) from either of them."""
    stem, ext = os.path.splitext(path)
    if ext.lower() == ".lbl":
        label = path
        with open(label, "r", encoding="latin-1") as handle:
            layout = parse_index_label(handle.read())
        table = _companion(label, layout.table_file) if layout.table_file else None
        table = table or _companion(label, os.path.basename(stem) + ".TAB")
        if not table:
            raise CatalogError(f"The table of {label} ({layout.table_file or os.path.basename(stem) + '.TAB'}) is not beside it: download RDRCUMINDEX.TAB into the same folder.")
        return label, table
    label = _companion(path, os.path.basename(stem) + ".LBL")
    if not label:
        raise CatalogError(f"{path} needs its label {os.path.basename(stem)}.LBL beside it (the label says where each column lies): download RDRCUMINDEX.LBL too.")
    return label, path


def read_pds_index(path: str, product_type: str = "RED", base_url: str = PDS_BASE_URL, stats: Optional[ReadStats] = None) -> Iterator[Product]:
    """Products of RDRCUMINDEX.TAB, its columns located by RDRCUMINDEX.LBL."""
    stats = stats if stats is not None else ReadStats()
    product_type = product_type.upper()
    label, table = pds_index_files(path)
    with open(label, "r", encoding="latin-1") as handle:
        layout = parse_index_label(handle.read())
    names = {c.name.upper(): c for c in layout.columns}
    stats.has_map_scale = "MAP_SCALE" in names
    for needed in ("FILE_NAME_SPECIFICATION",):
        if needed not in names:
            raise CatalogError(f"{label} has no {needed} column, so products cannot be located: is it the HiRISE RDR index?")

    def field_of(line: str, name: str) -> Optional[str]:
        column = names.get(name)
        if column is None:
            return None
        return line[column.start_byte - 1: column.start_byte - 1 + column.nbytes].strip().strip('"').strip()

    def first(line, *choices):
        for name in choices:
            value = field_of(line, name)
            if value not in (None, ""):
                return value
        return None

    with open(table, "r", encoding="latin-1", newline="") as handle:
        for line in handle:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            stats.rows += 1
            spec = field_of(line, "FILE_NAME_SPECIFICATION") or ""
            product_id = first(line, "PRODUCT_ID") or os.path.splitext(os.path.basename(spec))[0]
            kind = _type_of(product_id)
            if kind != product_type:
                continue
            south, north = _float(first(line, "MINIMUM_LATITUDE")), _float(first(line, "MAXIMUM_LATITUDE"))
            west = _float(first(line, "WESTERNMOST_LONGITUDE", "MINIMUM_LONGITUDE"))
            east = _float(first(line, "EASTERNMOST_LONGITUDE", "MAXIMUM_LONGITUDE"))
            corners = []
            for i in range(1, 5):
                lat, lon = _float(field_of(line, f"CORNER{i}_LATITUDE")), _float(field_of(line, f"CORNER{i}_LONGITUDE"))
                if lat is not None and lon is not None:
                    corners.append((lon, lat))
            corners = corners if len(corners) == 4 else None
            if corners and None in (south, north, west, east):
                south, north = min(c[1] for c in corners), max(c[1] for c in corners)
                unwrapped = unwrap_ring(corners)
                west, east = min(c[0] for c in unwrapped) % 360.0, max(c[0] for c in unwrapped) % 360.0
            if not spec or None in (south, north, west, east):
                stats.without_metadata += 1
                continue
            stem = os.path.splitext(spec.lstrip("/"))[0]
            root = base_url.rstrip("/") + "/"
            yield Product(
                product_id=product_id,
                observation_id=first(line, "OBSERVATION_ID") or observation_of(product_id),
                product_type=kind,
                minimum_latitude=south,
                maximum_latitude=north,
                westernmost_longitude=west,
                easternmost_longitude=east,
                jp2_url=root + stem + ".JP2",
                lbl_url=root + stem + ".LBL",
                solar_longitude=_float(first(line, "SOLAR_LONGITUDE")),
                incidence_angle=_float(first(line, "INCIDENCE_ANGLE")),
                emission_angle=_float(first(line, "EMISSION_ANGLE")),
                phase_angle=_float(first(line, "PHASE_ANGLE")),
                local_time=_float(first(line, "LOCAL_TIME")),
                map_scale=_float(first(line, "MAP_SCALE")),
                start_time=first(line, "START_TIME", "OBSERVATION_START_TIME") or "",
                orbit_number=_int(first(line, "ORBIT_NUMBER")),
                mission_phase=first(line, "MISSION_PHASE_NAME") or "",
                corners=corners,
                source=os.path.basename(table),
            )


def read_index(path: str, product_type: str = "RED", stats: Optional[ReadStats] = None) -> Iterator[Product]:
    """Products of a local index: RDRCUMINDEX.LBL/.TAB or a CSV (plain or gzip)."""
    if not os.path.isfile(path):
        raise CatalogError(files.special_file_message(path, "index") or
                           f"The index {path} does not exist: give RDRCUMINDEX.LBL (with its .TAB beside it) or a CSV like hirise_rdr_index.csv.gz.")
    if os.path.splitext(path)[1].lower() in (".lbl", ".tab"):
        return read_pds_index(path, product_type, stats=stats)
    return _damage_said(path, read_csv_index(path, product_type, stats=stats))


def _damage_said(path: str, products: Iterator[Product]) -> Iterator[Product]:
    """The products; a compressed index cut short or corrupted (gzip finds it only mid-read) is named as such."""
    try:
        yield from products
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise CatalogError(f"The index {path} is damaged ({exc}): it was probably cut short or corrupted by an interrupted "
                           "download or copy. Download it again.") from None
    except csv.Error as exc:  # e.g. a field of megabytes: no index's, a file named like one
        raise CatalogError(f"The index {path} is not a readable CSV ({exc}). Give a CSV like hirise_rdr_index.csv.gz, "
                           "or RDRCUMINDEX.LBL with its .TAB.") from None


# --- ODE REST -------------------------------------------------------------------------------


def _key(record: Dict, *names):
    lower = {k.lower(): v for k, v in record.items()}
    for name in names:
        value = lower.get(name.lower())
        if value not in (None, ""):
            return value
    return None


def _as_list(value) -> List:
    if value is None or isinstance(value, str):
        return []  # ODE writes "No Products Found" in place of an empty list
    return value if isinstance(value, list) else [value]


def product_from_ode(record: Dict) -> Optional[Product]:
    pdsid = str(_key(record, "pdsid", "PDSID", "Product_id") or "")
    files = _as_list((_key(record, "Product_files") or {}).get("Product_file") if isinstance(_key(record, "Product_files"), dict) else None)
    jp2 = lbl = None
    for item in files:
        name = str(_key(item, "FileName", "URL") or "").upper()
        if name.endswith(".JP2") and jp2 is None:
            jp2 = item
        elif name.endswith(".LBL") and lbl is None:
            lbl = item
    south, north = _float(_key(record, "Minimum_latitude")), _float(_key(record, "Maximum_latitude"))
    west, east = _float(_key(record, "Westernmost_longitude")), _float(_key(record, "Easternmost_longitude"))
    if not pdsid or None in (south, north, west, east):
        return None
    jp2_url = str(_key(jp2, "URL") or "") if jp2 else ""
    lbl_url = str(_key(lbl, "URL") or "") if lbl else str(_key(record, "LabelURL") or "")
    if not jp2_url and lbl_url:
        jp2_url = re.sub(r"\.LBL$", ".JP2", lbl_url, flags=re.I)
    if not lbl_url and jp2_url:
        lbl_url = re.sub(r"\.JP2$", ".LBL", jp2_url, flags=re.I)
    kbytes = lambda item: int(round(_float(_key(item, "KBytes")) * 1024)) if item and _float(_key(item, "KBytes")) is not None else None  # noqa: E731
    return Product(
        product_id=pdsid,
        observation_id=observation_of(pdsid),
        product_type=_type_of(pdsid),
        minimum_latitude=south,
        maximum_latitude=north,
        westernmost_longitude=west,
        easternmost_longitude=east,
        jp2_url=jp2_url,
        lbl_url=lbl_url,
        solar_longitude=_float(_key(record, "Solar_longitude")),
        incidence_angle=_float(_key(record, "Incidence_angle")),
        emission_angle=_float(_key(record, "Emission_angle")),
        phase_angle=_float(_key(record, "Phase_angle")),
        local_time=_float(_key(record, "Local_time", "Local_solar_time", "LOCAL_TIME")),
        map_scale=_float(_key(record, "Map_scale")),  # not Map_resolution: that is pixels per degree
        start_time=str(_key(record, "UTC_start_time", "Observation_time", "Start_time") or ""),
        orbit_number=_int(_key(record, "Orbit_number")),
        mission_phase=str(_key(record, "Mission_phase_name") or ""),
        jp2_bytes=kbytes(jp2),
        lbl_bytes=kbytes(lbl),
        size_unit_bytes=1024,
        source="ODE",
    )


def ode_pages(query: Query, base_url: str = ODE_URL, page_size: int = 500, max_pages: int = 200, timeout: float = 60.0,
              opener=None, is_cancelled: Callable[[], bool] = lambda: False, log: Callable[[str], None] = lambda s: None) -> Iterator[Product]:
    """Products from ODE's REST service for the query's latitude/longitude box (the rest is filtered locally)."""
    address = urllib.parse.urlsplit(base_url)
    if address.scheme not in ("http", "https") or not address.netloc:
        raise CatalogError(f"The ODE REST URL {base_url!r} is not a web address: give it whole, with https:// (ODE's own is {ODE_URL}).")
    opener = opener or urllib.request.build_opener()
    south, north, spans = query.bounding_box()
    seen: Set[str] = set()
    for west, east in spans:
        for page in range(max_pages):
            if is_cancelled():
                raise CancelledError("Cancelled by the user; no footprint layer was written.")
            params = OrderedDict(
                query="product", results="fp", output="JSON", target="mars", ihid="MRO", iid="HIRISE", pt="RDRV11",
                minlat=f"{south:g}", maxlat=f"{north:g}", westernlon=f"{west:g}", easternlon=f"{east:g}",
                limit=str(page_size), offset=str(page * page_size),
            )
            url = base_url + ("&" if "?" in base_url else "?") + urllib.parse.urlencode(params)
            try:
                with opener.open(url, timeout=timeout) as response:
                    payload = response.read()
            except urllib.error.HTTPError as exc:
                raise OdeUnavailableError(f"ODE ({base_url}) answered HTTP {exc.code} {exc.reason}: try again later, or search a local index (RDRCUMINDEX.LBL or the CSV).") from None
            except (urllib.error.URLError, socket.timeout, ConnectionError, OSError, HTTPException) as exc:  # HTTPException: an answer cut off
                reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
                raise OdeUnavailableError(
                    f"ODE's REST service ({base_url}) is not reachable ({reason}). Check the network connection or proxy "
                    "(QGIS: Settings > Options > Network), or search a local index: RDRCUMINDEX.LBL with its .TAB from "
                    "https://hirise-pds.lpl.arizona.edu/PDS/INDEX/, or a CSV like hirise_rdr_index.csv.gz."
                ) from None
            try:
                document = json.loads(payload.decode("utf-8"))
                results = document["ODEResults"]
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                raise OdeUnavailableError(f"ODE ({base_url}) answered something that is not ODE's JSON (ODEResults): check the service URL.") from None
            status = str(results.get("Status", "")).upper()
            if status and status != "SUCCESS":
                raise OdeUnavailableError(f"ODE refused the query: {results.get('Error') or results.get('Status')}. Check the query's limits.")
            products = results.get("Products")
            records = _as_list(products.get("Product") if isinstance(products, dict) else None)
            for record in records:
                product = product_from_ode(record) if isinstance(record, dict) else None
                if product is not None and product.product_id not in seen:
                    seen.add(product.product_id)
                    yield product
            log(f"ODE: {len(records)} products at offset {page * page_size} (longitudes {west:g} to {east:g})")
            if len(records) < page_size:
                break
        else:
            raise CatalogError(f"ODE returned more than {max_pages * page_size} products for longitudes {west:g} to {east:g}: narrow the query (a drawn area or a narrower latitude band).")


# --- finding --------------------------------------------------------------------------------


@dataclass
class FindResult:
    products: List[Product]
    scanned: int
    without_metadata: int
    rejected: Counter
    source: str
    duplicates: int = 0


def find(source: str, query: Query, themes_path: Optional[str] = None, ode_url: str = ODE_URL, opener=None,
         is_cancelled: Callable[[], bool] = lambda: False, log: Callable[[str], None] = lambda s: None) -> FindResult:
    """Products of ``source`` (an index path, or "ode") that match ``query``, sorted by product ID."""
    themes = read_themes(themes_path) if themes_path else {}
    if query.themes and not themes:
        raise CatalogError("A science theme was asked for but no themes file was given: give hirise_themes.csv.gz (FILE_NAME,THEME).")
    stats = ReadStats()
    if source.lower() == "ode":
        products = ode_pages(query, ode_url, opener=opener, is_cancelled=is_cancelled, log=log)
        stats.has_map_scale = True
        label = f"ODE ({ode_url})"
    else:
        products = read_index(source, query.product_type, stats)
        label = source
    matched: List[Product] = []
    rejected: Counter = Counter()
    scanned = 0
    for number, product in enumerate(products):
        if number % 2000 == 0 and is_cancelled():
            raise CancelledError("Cancelled by the user; no footprint layer was written.")
        scanned += 1
        if themes:
            product.themes = set(themes.get(product.observation_id, ()))
        failed = query.failed_test(product)
        if failed:
            rejected[failed] += 1
        else:
            matched.append(product)
    if (query.scale_min is not None or query.scale_max is not None) and not stats.has_map_scale:
        raise CatalogError(f"{os.path.basename(label)} has no MAP_SCALE column, so the map-scale limits cannot be applied: clear them, or search RDRCUMINDEX.LBL or ODE.")
    matched.sort(key=lambda p: p.product_id)
    return FindResult(matched, scanned if source.lower() == "ode" else stats.rows, stats.without_metadata, rejected, label, stats.duplicates)


# --- the report -----------------------------------------------------------------------------


def ls_bin(ls: Optional[float], width: float = 10.0) -> str:
    if ls is None:
        return "unknown"
    start = math.floor(ls / width) * width
    return f"{start:g}-{start + width:g}"


def window_counts(products: Iterable[Product], ls_width: float = 10.0) -> Dict[str, Dict[str, int]]:
    products = list(products)
    by_year = Counter(str(p.year) if p.year else "unknown" for p in products)
    by_mars_year = Counter(f"MY{p.mars_year}" if p.mars_year else "unknown" for p in products)
    by_ls = Counter(ls_bin(p.solar_longitude, ls_width) for p in products)
    by_lat = Counter(ls_bin(p.centre_latitude, 5.0) for p in products)

    def ordered(counter):
        return OrderedDict(sorted(counter.items(), key=lambda kv: (_sort_key(kv[0]))))

    return OrderedDict(
        total={"products": len(products), "observations": len({p.observation_id for p in products})},
        year=ordered(by_year), mars_year=ordered(by_mars_year), solar_longitude=ordered(by_ls), centre_latitude=ordered(by_lat),
    )


def _sort_key(text: str):
    match = re.search(r"-?\d+(\.\d+)?", text)
    return (0, float(match.group(0))) if match else (1, text)


def describe_query(query: Query) -> str:
    def window(a, b, unit=""):
        if a is None and b is None:
            return "any"
        return f"{'-inf' if a is None else f'{a:g}'} to {'inf' if b is None else f'{b:g}'}{unit}"

    parts = [
        f"{query.product_type} products", f"centre latitude {window(query.latitude_min, query.latitude_max)}"
        + (f" (given from {query.latitude_max:g} to {query.latitude_min:g}: taken south to north)" if query.latitudes_swapped else ""),
        f"Ls {window(query.ls_start, query.ls_end)}" + (" (wraps through 360)" if None not in (query.ls_start, query.ls_end) and query.ls_start > query.ls_end else ""),
    ]
    if query.incidence_min is not None or query.incidence_max is not None:
        parts.append(f"incidence {window(query.incidence_min, query.incidence_max)}")
    if query.local_time_start is not None or query.local_time_end is not None:
        parts.append(f"local time {window(query.local_time_start, query.local_time_end, ' h')}")
    if query.scale_min is not None or query.scale_max is not None:
        parts.append(f"map scale {window(query.scale_min, query.scale_max, ' m/px')}")
    if query.themes:
        parts.append("themes " + ", ".join(query.themes))
    if query.areas:
        parts.append(f"{len(query.areas)} drawn area(s)")
    return "; ".join(parts)


def report_lines(result: FindResult, query: Query) -> List[str]:
    counts = window_counts(result.products)
    lines = [
        f"Source: {result.source}; {result.scanned} index rows read"
        + (f", {result.without_metadata} without latitude/longitude metadata skipped" if result.without_metadata else "")
        + (f", {result.duplicates} of them repeating a product read before (counted once)" if result.duplicates else ""),
        f"Query: {describe_query(query)}",
        f"Found {counts['total']['products']} products ({counts['total']['observations']} observations)",
    ]
    if result.rejected:
        lines.append("Rejected by: " + ", ".join(f"{k} {v}" for k, v in result.rejected.most_common()))
    turned = sum(abs(p.north_turn) > NORTH_FAR_DEG for p in result.products)
    if turned:
        lines.append(f"{turned} of them are polar stereographic maps whose north turns more than {NORTH_FAR_DEG:.0f} deg from up (field north_turn): "
                     "Detect and Train read them through a north-up view warped on the fly")
    for title, key in (("By year (UTC start)", "year"), ("By Mars year", "mars_year"), ("By Ls bin (degrees)", "solar_longitude")):
        lines.append(f"{title}: " + ", ".join(f"{k}: {v}" for k, v in counts[key].items()))
    return lines


def write_report_csv(path: str, result: FindResult) -> None:
    counts = window_counts(result.products)
    partial = _partial(path)
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["grouping", "bin", "products"])
        writer.writerow(["total", "all", counts["total"]["products"]])
        for key in ("year", "mars_year", "solar_longitude", "centre_latitude"):
            for bin_name, value in counts[key].items():
                writer.writerow([key, bin_name, value])
    os.replace(partial, path)


def write_report_html(path: str, result: FindResult, query: Query) -> None:
    counts = window_counts(result.products)

    def table(title, mapping):
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td style='text-align:right'>{v}</td></tr>" for k, v in mapping.items())
        return f"<h2>{html.escape(title)}</h2><table border='1' cellspacing='0' cellpadding='3'><tr><th>bin</th><th>products</th></tr>{rows}</table>"

    body = "".join(f"<p>{html.escape(line)}</p>" for line in report_lines(result, query) if not line.startswith("By "))  # those are the tables
    body += table("By year (UTC start)", counts["year"]) + table("By Mars year", counts["mars_year"])
    body += table("By solar longitude (10-degree bins)", counts["solar_longitude"]) + table("By centre latitude (5-degree bins)", counts["centre_latitude"])
    partial = _partial(path)
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>HiRISE find report</title></head><body><h1>HiRISE products found</h1>{body}</body></html>\n")
    os.replace(partial, path)


def write_products_csv(path: str, products: Iterable[Product]) -> None:
    partial = _partial(path)
    names = [name for name, _ in CATALOG_FIELDS] + ["wkt"]
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, names)
        writer.writeheader()
        for product in products:
            writer.writerow({k: ("" if v is None else v) for k, v in product.as_row().items()})
    os.replace(partial, path)


def _partial(path: str) -> str:
    try:
        from .files import partial_path
    except ImportError:
        from model.files import partial_path
    partial = partial_path(path)
    os.makedirs(os.path.dirname(partial), exist_ok=True)
    return partial


# --- command line ---------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python3 -m model.catalog", description="Find HiRISE RDR products in an index (the paper's window by default).")
    parser.add_argument("source", help="RDRCUMINDEX.LBL (or .TAB), a CSV like hirise_rdr_index.csv.gz, or 'ode'")
    parser.add_argument("--themes", help="hirise_themes.csv.gz, for --theme and the themes field")
    parser.add_argument("--theme", action="append", default=[])
    parser.add_argument("--product-type", default="RED", choices=PRODUCT_TYPES)
    parser.add_argument("--lat", nargs=2, type=float, default=list(PAPER_LATITUDE), metavar=("MIN", "MAX"))
    parser.add_argument("--ls", nargs=2, type=float, default=list(PAPER_LS), metavar=("START", "END"))
    parser.add_argument("--incidence", nargs=2, type=float, metavar=("MIN", "MAX"))
    parser.add_argument("--local-time", nargs=2, type=float, metavar=("START", "END"))
    parser.add_argument("--scale", nargs=2, type=float, metavar=("MIN", "MAX"))
    parser.add_argument("--csv", help="write the products (with WKT footprints) to this CSV")
    parser.add_argument("--report-html")
    parser.add_argument("--report-csv")
    parser.add_argument("--ode-url", default=ODE_URL)
    args = parser.parse_args(argv)
    try:
        query = Query(
            latitude_min=args.lat[0], latitude_max=args.lat[1], ls_start=args.ls[0], ls_end=args.ls[1],
            incidence_min=args.incidence[0] if args.incidence else None, incidence_max=args.incidence[1] if args.incidence else None,
            local_time_start=args.local_time[0] if args.local_time else None, local_time_end=args.local_time[1] if args.local_time else None,
            scale_min=args.scale[0] if args.scale else None, scale_max=args.scale[1] if args.scale else None,
            themes=tuple(args.theme), product_type=args.product_type,
        )
        result = find(args.source, query, args.themes, args.ode_url, log=lambda s: print(s, file=sys.stderr))
        for line in report_lines(result, query):
            print(line)
        if args.csv:
            write_products_csv(args.csv, result.products)
        if args.report_html:
            write_report_html(args.report_html, result, query)
        if args.report_csv:
            write_report_csv(args.report_csv, result)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
