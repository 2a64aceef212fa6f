"""Raster access through GDAL: windowed reads only, so memory never grows with the image. A window
is decimated by GDAL, or read at full resolution and averaged here where that is faster (block_mean).

Band rule (documented in the README): a single-band raster uses that band. A multi-band
raster (HiRISE COLOR products are IR/RED/BG, browse products RGB) is reduced to one
grayscale band by the mean of its bands, a pixel being no-data where any band is. A
transparency band (gdalwarp -dstalpha) is no brightness: it is left out of the mean, and its
transparent pixels are no-data. `band=N` picks band N instead.

No-data: the band's declared no-data value, plus DN 0, which fills the area outside the
rotated footprint of every HiRISE RDR whether or not the file declares it.
"""

import contextlib
import dataclasses
import os
import queue
import re
import threading
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Set, Tuple

import numpy as np
from osgeo import gdal, gdal_array, osr

from .errors import DamagedRasterError, RasterError
from .files import special_file_message, special_kind
from .footprint import FOOTPRINT_MAX_SIDE, footprint_from_mask
from .grid import ChunkWindow
from .orientation import NORTH_FAR_DEG, NORTH_WARNED_DEG
from .pdslabel import pixels_label

# Overview-friendly decimation that keeps a few-pixel bright patch visible, unlike nearest.
RESAMPLING = gdal.GRIORA_Average
# Pixel types whose whole-factor average block_mean computes itself.
WHOLE_AVERAGE_TYPES = (gdal.GDT_Byte, gdal.GDT_UInt16, gdal.GDT_Int16, gdal.GDT_UInt32, gdal.GDT_Int32)
# A larger window (a whole image's overview) is left to GDAL, which never holds it at full resolution.
MAX_AVERAGED_HERE_PIXELS = 4096 * 4096

# HiRISE products hold integer DNs (10-bit in 16, or 8-bit stretched); an image processed in ISIS3
# (hical, cam2map) holds I/F as 32-bit floats. Both are read as they are: each chunk is stretched
# on its own. Complex values are not an image of the ground at all.
PIXEL_TYPES = ("Byte", "Int8", "UInt16", "Int16", "UInt32", "Int32", "UInt64", "Int64", "Float32", "Float64")
# ISIS3 marks null and saturated pixels of a float cube with values next to -3.4e38, and GDAL
# declares only the null one as no-data: every such value is special here, as NaN and infinities
# are (they fail the comparison too); saturated ones are read for what they mean (ISIS_SATURATED).
SPECIAL_PIXEL_MAGNITUDE = 1e30
# An integer ISIS3 cube keeps the ends of its type for those pixels (ISIS's SpecialPixel.h): its
# valid DNs lie between these. GDAL declares only the null as no-data; read as they are, the
# others would be DNs at the type's end (a saturated pixel of a signed cube the darkest of all).
ISIS_VALID_DNS = {gdal.GDT_Byte: (1, 254), gdal.GDT_UInt16: (3, 65522), gdal.GDT_Int16: (-32752, 32767)}
# Which of those special values mean saturated, (low, high) by pixel type (float32: 0xFF7FFFFC-0xFF7FFFFF).
# A saturated pixel was measured beyond the sensor's range, not lost: bright ice saturates itself. So it
# reads as the darkest or brightest measured pixel of its window, where the null is no-data.
ISIS_SATURATED = {
    gdal.GDT_Byte: ((), (255,)),
    gdal.GDT_UInt16: ((1, 2), (65534, 65535)),
    gdal.GDT_Int16: ((-32767, -32766), (-32765, -32764)),
    gdal.GDT_Float32: ((-3.4028228579130005e38, -3.4028230607370965e38), (-3.4028232635611926e38, -3.4028234663852886e38)),
}
# An elevation model holds heights, which the network would read as brightness: HiRISE DTMs are
# named DTEEC_, DTEED_, DTEPC_ or DTEPD_, other tools' carry DEM or DTM as a word of the name.
ELEVATION_NAME = re.compile(r"^DTE[EP][CD]_|(^|[^A-Z0-9])(DEM|DTM)([^A-Z0-9]|$)", re.IGNORECASE)
ELEVATION_UNITS = ("m", "meter", "meters", "metre", "metres", "km", "kilometer", "kilometers", "kilometre", "kilometres")

# Mars's radii (polar 3376.2 km, equatorial 3396.19 km) with room for the local radii of RDR CRSs.
MARS_RADIUS_RANGE_M = (3.30e6, 3.45e6)
# HiRISE map products are 0.25 to 2 m per pixel (RED RDRs 0.25 or 0.5 m, COLOR and reduced cubes
# 1-2 m); coarser pixels are a browse image, another instrument's or a mosaic.
HIRISE_COARSEST_PIXEL_M = 5.0

# Ground aspect of a pixel beyond which the network would see the ground squashed (squashed_pixel_warning):
# an image reprojected to degrees at HiRISE's latitudes, -40 to -70 deg, is 1.3 to 2.9 to 1.
SQUASH_TOLERANCE = 1.15

SUPPORTED_FORMATS = "a HiRISE image: GeoTIFF, JP2 with its .LBL, ISIS3 cube or PDS image"

# GDAL's block cache defaults to 5 % of RAM and fills with blocks the chunk grid never reads again,
# so the worker's memory grew with the raster (3.3 GB on a 1-Gpx observation, issue 10). The grid
# reads row by row: a band of chunk rows is all it can reuse.
BLOCK_CACHE_FLOOR = 16 << 20
BLOCK_CACHE_CEILING = 512 << 20


# Threads reading one raster at once (reading_threads), each with its own dataset handle.
MAX_READERS = 4
# Overviews of a north-up view (north_up_view): the shrinks of chunks read at the network's scale (1024 or
# 512 px to 256, a tiny model's 2).
VIEW_OVERVIEW_FACTORS = (2, 4, 8, 16)
# A north-up view's own metadata (_warp_north_up): IMAGE_SIZE, the image's size in it ("width height"),
# and SOURCE_TYPE, the file's pixel type. In a domain of its own, which no GDAL copy carries on.
VIEW_DOMAIN = "HIRISEICE_VIEW"
# Neighbouring windows one reading thread takes in turn: GDAL 3.6 gives a north-up view's overviews
# blocks 512 px wide whatever the view's own, so two chunks at the network's scale share each; read
# by two threads, each thread's handle warped that block again (twice the work, no gain from the second thread).
READ_RUN = 2

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".cub", ".img", ".lbl", ".vrt")


def image_id_of(path: str) -> str:
    """The HiRISE product ID when the file name carries one, else the file's stem."""
    name = os.path.basename(path)
    for suffix in RASTER_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass
class RasterInfo:
    path: str
    width: int
    height: int
    band_count: int
    bands: Tuple[int, ...]
    data_type: str  # the file's pixel type, also where read through a north-up view (which is Float32)
    geotransform: Tuple[float, ...]
    crs_wkt: str
    nodata: Optional[float]
    coloured_palette: bool = False  # a read band's values index a colour table that is not a grey ramp
    alpha_band: int = 0  # a transparency band (gdalwarp -dstalpha): not read as brightness, its transparent pixels no-data
    overviews_skipped: str = ""  # why its overviews are not read (overviews_not_to_read), for the log; "": they are

    @property
    def image_id(self) -> str:
        return image_id_of(self.path)

    @property
    def bands_read(self) -> str:
        """Which bands the pixels are read from (the band rule above) and whether its overviews are, for a log line."""
        return self._bands_read + (f"; its overviews {self.overviews_skipped}, so full resolution is read instead" if self.overviews_skipped else "")

    @property
    def _bands_read(self) -> str:
        if self.band_count == 1:
            return ""
        alpha = f"; band {self.alpha_band} is transparency, its transparent pixels no-data" if self.alpha_band else ""
        if len(self.bands) == 1:
            return f", band {self.bands[0]} read{alpha}"
        return f", read as the mean of bands {', '.join(map(str, self.bands))} (BAND picks one){alpha}"

    @property
    def pixel_size(self) -> float:
        g = self.geotransform
        return float(np.hypot(g[1], g[4]))


@contextlib.contextmanager
def gdal_exceptions():
    """GDAL raises inside this block and returns to its previous mode after it.

    The engine expects exceptions, but the mode is global to GDAL's Python bindings, and
    inside QGIS other plugins may rely on GDAL returning None, so nothing switches it for good.
    """
    previous = gdal.GetUseExceptions()
    gdal.UseExceptions()
    try:
        yield
    finally:
        if not previous:
            gdal.DontUseExceptions()


@contextlib.contextmanager
def gdal_returning_none():
    """GDAL returns None on failure inside this block (gdal_exceptions' opposite)."""
    previous = gdal.GetUseExceptions()
    gdal.DontUseExceptions()
    try:
        yield
    finally:
        if previous:
            gdal.UseExceptions()


@contextlib.contextmanager
def block_cache(limit_bytes: int):
    """GDAL's block cache held to ``limit_bytes`` inside this block, unless the user set
    GDAL_CACHEMAX (an explicit choice wins). Yields a line for the log saying which."""
    if gdal.GetConfigOption("GDAL_CACHEMAX"):
        yield f"GDAL block cache: {gdal.GetCacheMax() >> 20} MB (GDAL_CACHEMAX as set)"
        return
    previous = gdal.GetCacheMax()
    gdal.SetCacheMax(int(limit_bytes))
    try:
        yield f"GDAL block cache: {int(limit_bytes) >> 20} MB (a row of chunks; GDAL_CACHEMAX overrides)"
    finally:
        gdal.SetCacheMax(previous)


# GDAL's stand-in for a file without a geotransform: pixel coordinates, y downwards.
PIXEL_GRID = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def georeferencing(ds, path: str, required: bool = True) -> Tuple[Tuple[float, ...], str]:
    """(geotransform, CRS WKT) placing the raster's pixels on Mars.

    A file georeferenced by ground control points alone (a georeferencer's output saved without
    warping) gets the affine transform its GCPs fit within a quarter pixel, and their CRS, so its
    chunks lie where QGIS draws it; GDAL alone would report pixel coordinates, and every polygon
    would land off the image without a word. With ``required``, a file that cannot be placed
    (no CRS, no geotransform, or GCPs that only a warp fits) is refused with the fix.
    """
    geotransform = ds.GetGeoTransform(can_return_null=True)
    crs_wkt = ds.GetProjection() or ""
    if geotransform is None and ds.GetGCPCount():
        geotransform = gdal.GCPsToGeoTransform(ds.GetGCPs(), 0)  # 0: exact fit only
        crs_wkt = crs_wkt or ds.GetGCPProjection() or ""
        if geotransform is None and required:
            raise RasterError(
                f"'{path}' is georeferenced by {ds.GetGCPCount()} ground control points that no shift, scale and rotation fits "
                "within a quarter pixel, so its chunks cannot be placed on Mars without warping its pixels. Warp it first "
                "(Raster > Projections > Warp, or gdalwarp -r bilinear), then run on the warped file."
            )
    damage = geotransform_damage(geotransform) if geotransform is not None else ""
    if damage and required:
        raise RasterError(
            f"'{path}' has a damaged geotransform ({damage}), so its pixels cannot be placed on Mars and no chunk polygon could be drawn. "
            "Download the product again, or georeference this file again (Raster > Georeferencer, or gdal_edit.py -a_ullr with its corners)."
        )
    if damage:  # read as pixels, placed nowhere (for the caller that needs no georeferencing)
        return PIXEL_GRID, ""
    if required and not crs_wkt and geotransform is None:
        raise RasterError(NOT_MAP_PROJECTED.format(path=path))
    if required and not crs_wkt:
        raise RasterError(
            f"'{path}' has no coordinate reference system, so chunk polygons could not be placed on Mars. "
            "Assign its CRS first (Raster > Projections > Assign Projection, or gdal_edit.py -a_srs with the product's Mars CRS)."
        )
    if required and geotransform is None:
        raise RasterError(
            f"'{path}' has a coordinate reference system but no geotransform (no origin or pixel size), so chunk polygons could not "
            "be placed on Mars. Give the map-projected product (an RDR), or georeference this file first (Raster > Georeferencer)."
        )
    return tuple(geotransform or PIXEL_GRID), crs_wkt


# A file with neither CRS nor geotransform: assigning a CRS alone would only lead to the next refusal.
NOT_MAP_PROJECTED = ("'{path}' has neither a coordinate reference system nor a geotransform (an origin and pixel size): it is not map-projected "
                     "(an EDR, or a copy that lost its georeferencing), so chunk polygons could not be placed on Mars. Give the map-projected "
                     "product (an RDR), or georeference this file (Raster > Georeferencer) with the product's Mars CRS.")


def geotransform_damage(geotransform) -> str:
    """What makes a geotransform place no pixel anywhere (a value that is not a number, pixels of no size), or ''."""
    if not all(np.isfinite(geotransform)):
        damage = "not every value is a number"
    elif geotransform[1] * geotransform[5] - geotransform[2] * geotransform[4] == 0:
        damage = "its pixels have no size"
    else:
        return ""
    return f"{', '.join(f'{value:g}' for value in geotransform)}: {damage}"


def check_north_up(name: str, geotransform, crs_wkt: str = "", width: int = 0, height: int = 0) -> None:
    """Refuse a raster whose north is far from up where the network is to see it as it is (detect and training
    read such a file through north_up_view, so this refuses only what that cannot warp): it reads where shade and
    ice lie from the sun's side (ice on the poleward, lower side of what shades it), and scored a file stored
    south-up upside down (0.21 where the same pixels north-up scored 0.79). Stored south-up (a positive pixel
    height) is told from the geotransform alone; a map whose north turns away from up (a polar stereographic
    product away from its central meridian, as HiRISE's poleward of 65 deg are) from its CRS at the image's
    centre. The chunk grid alone does not care."""
    if geotransform[5] > 0 and geotransform[4] == 0:
        raise RasterError(
            f"'{name}' is stored south-up (its rows run from south to north: a positive pixel height), and the network, which "
            "reads where shade and ice lie from the sun's side, would see it upside down. Make a north-up copy first "
            "(gdalwarp in.tif north_up.tif, or Raster > Projections > Warp), then run on that copy."
        )
    turn = north_turn(crs_wkt, geotransform, width, height)
    if turn is not None and abs(turn.degrees) > NORTH_FAR_DEG:
        raise RasterError(f"{turn.describe(name)} The network, which reads where shade and ice lie from the sun's side, would see it turned "
                          f"that far. {turn.fix()}")


@contextlib.contextmanager
def north_up_view(path: str, band: int = 0, log: Callable[[str], None] = lambda message: None) -> Iterator[str]:
    """The raster to detect on: ``path`` itself, or, where north at its centre turns more than
    NORTH_FAR_DEG from up (a polar stereographic product away from its central meridian, a file
    stored south-up), a north-up view of it warped on the fly (a VRT in GDAL's memory, gone on
    leaving): the same map on the image's own meridian, or its own map stored north-up, so chunk
    polygons and any probability raster come out in that map. A smaller turn keeps the raster's own
    grid (a rotated geotransform is scored over all its pixels) with a warning. A file that cannot be
    opened is handed on as it is, for detect to name what is wrong with it."""
    try:
        with gdal_exceptions(), RasterSource(path, band, require_georeferencing=False) as source:
            info = source.info
        turn = north_turn(info.crs_wkt, info.geotransform, info.width, info.height)
    except RasterError:
        turn = None
    if turn is None or abs(turn.degrees) <= NORTH_FAR_DEG:
        yield path
        return
    view = f"/vsimem/hiriseice/{uuid.uuid4().hex}/{info.image_id}.vrt"
    # GDAL samples points around the image to size the view and prints an ERROR for those off the map's
    # domain, which its exceptions mode would print whatever handler is pushed: so without it, quietly
    with gdal_returning_none(), gdal_messages():
        warped = _warp_north_up(view, path, turn.north_up_srs())
    if not warped:  # detect and training then say why they cannot read it turned
        yield path
        return
    where = f"the same map on its own meridian ({turn.north_up_srs()})" if turn.map_turned() else "its own map, stored north-up"
    log(f"{turn.describe(path)} It is read through a north-up view warped on the fly (by area): {where}. The chunk polygons are in that map.")
    try:
        yield view
    finally:
        gdal.Unlink(view)


def _warp_north_up(view: str, path: str, srs: str) -> bool:
    """Write the north-up view, a warped VRT; False where GDAL cannot warp the file. Its pixels are area
    averages (Float32, so that no average is rounded to a whole DN), and its overviews warp the source
    straight to their scale: a chunk read at the network's scale is warped at that scale instead of every
    full-resolution pixel being warped and then averaged (which took a turned product 2.3x as long as the
    same ground north-up). GDAL sizes an overview of a side that is no whole number of its cells by
    stretching them, off the view's grid by a pixel within a few hundred; so the VRT is grown with no-data
    to whole cells of the coarsest VIEW_OVERVIEW_FACTORS, and the image is its top-left part of GDAL's own
    size (IMAGE_SIZE in VIEW_DOMAIN, which RasterSource reads): its chunks are those of the image stored
    north-up."""
    sized = gdal.Warp(view, path, format="VRT", dstSRS=srs)
    if sized is None:
        return False
    g, image_width, image_height = sized.GetGeoTransform(), sized.RasterXSize, sized.RasterYSize
    source_type = gdal.GetDataTypeName(sized.GetRasterBand(1).DataType)
    sized = None
    cell = VIEW_OVERVIEW_FACTORS[-1]
    width, height = (-(-side // cell) * cell for side in (image_width, image_height))
    warped = gdal.Warp(view, path, format="VRT", dstSRS=srs, outputBounds=(g[0], g[3] + height * g[5], g[0] + width * g[1], g[3]),
                       width=width, height=height, resampleAlg="average", outputType=gdal.GDT_Float32)
    if warped is None:
        return False
    warped.BuildOverviews("AVERAGE", list(VIEW_OVERVIEW_FACTORS))
    warped.SetMetadataItem("IMAGE_SIZE", f"{image_width} {image_height}", VIEW_DOMAIN)
    warped.SetMetadataItem("SOURCE_TYPE", source_type, VIEW_DOMAIN)
    warped = None  # writes the VRT
    return True


def north_turn_warning(name: str, crs_wkt: str, geotransform, width: int, height: int) -> str:
    """A warning when north at the image's centre is turned from up, but not so far as check_north_up refuses."""
    turn = north_turn(crs_wkt, geotransform, width, height)
    if turn is None or abs(turn.degrees) <= NORTH_WARNED_DEG:
        return ""
    return f"{turn.describe(name)} The network learnt ice on the lower, poleward side of what shades it, so it may miss some. {turn.fix()}"


@dataclass
class NorthTurn:
    """Where north points at an image's centre: ``degrees`` clockwise from the image's up, and
    ``map_degrees`` clockwise from its map's up (0 for an equirectangular map, the longitude's angle
    in a polar stereographic one away from its central meridian)."""
    degrees: float
    map_degrees: float
    latitude: float
    longitude: float
    srs: object

    def describe(self, name: str) -> str:
        side = "clockwise" if self.degrees > 0 else "anticlockwise"
        return (f"At the centre of '{name}' ({self.latitude:.1f} deg, {self.longitude:.1f} deg E) north points {abs(self.degrees):.0f} deg "
                f"{side} from the image's up{' (a polar stereographic map away from its central meridian)' if self.map_turned() else ''}.")

    def fix(self) -> str:
        if not self.map_turned():
            return "Make a north-up copy, e.g. gdalwarp IN.tif OUT.tif (or Raster > Projections > Warp), and run on that copy."
        return (f"Reproject it so that north is up at its centre, e.g. gdalwarp -t_srs '{self.north_up_srs()}' IN.tif OUT.tif "
                "(or Raster > Projections > Warp with that CRS), and run on that copy.")

    def map_turned(self) -> bool:
        return abs(self.map_degrees) > NORTH_WARNED_DEG

    def north_up_srs(self) -> str:
        """A CRS in which north is up at the image's centre: its own where only the storage turns it (a
        file stored south-up), else the same kind of map on the image's own meridian."""
        if not self.map_turned():
            return self.srs.ExportToWkt()
        radius = self.srs.GetSemiMajor()
        if self.srs.GetAttrValue("PROJECTION") in ("Polar_Stereographic", "Stereographic_South_Pole", "Stereographic_North_Pole"):
            pole = -90 if self.latitude < 0 else 90
            return f"+proj=stere +lat_0={pole} +lon_0={self.longitude:.3f} +k=1 +R={radius:.0f} +units=m"
        return f"+proj=eqc +lat_ts={self.latitude:.0f} +lon_0={self.longitude:.3f} +R={radius:.0f} +units=m"


def crs_transform(from_wkt: str, to_wkt: str):
    """OSR's transformation between two CRSs, coordinates x (east) first whatever the CRSs' axis order;
    RuntimeError where PROJ finds none (another body's CRS). PROJ finds none between two Mars spheres
    of other radii either (HiRISE's polar products are drawn on the polar radius, 3,376,200 m): to a
    geographic CRS, the source's own longitudes and latitudes are returned, the same planetocentric
    angles on any sphere."""
    source, target = osr.SpatialReference(wkt=from_wkt), osr.SpatialReference(wkt=to_wkt)
    for srs in (source, target):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    with gdal_messages():  # PROJ's own error line: the RuntimeError below says it once
        transform = _transformation(source, target)
        if transform is None and target.IsGeographic() and _on_mars_sphere(source) and _on_mars_sphere(target):
            own = source.CloneGeogCS()
            own.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
            transform = _transformation(source, own)
    if transform is None:  # e.g. from a local CRS
        raise RuntimeError(f"PROJ finds no transformation from {source.GetName()} to {target.GetName()}")
    return transform


def _transformation(source, target):
    """OSR's transformation, or None where PROJ finds none (OSR raises or returns None, as its exceptions are on or off)."""
    try:
        return osr.CreateCoordinateTransformation(source, target)
    except RuntimeError:
        return None


def _on_mars_sphere(srs) -> bool:
    low, high = MARS_RADIUS_RANGE_M
    return (srs.IsProjected() or srs.IsGeographic()) and low <= srs.GetSemiMajor() <= high and srs.GetInvFlattening() == 0


def north_turn(crs_wkt: str, geotransform, width: int, height: int) -> Optional[NorthTurn]:
    """North at the image's centre, from its CRS: None for an unknown CRS, or within a degree of a pole."""
    srs = osr.SpatialReference()
    if not crs_wkt or not width or not height or tuple(geotransform) == PIXEL_GRID or srs.SetFromUserInput(crs_wkt) != 0:
        return None  # PIXEL_GRID: a raster placed nowhere (GCPs that only a warp fits) has no north
    if not (srs.IsProjected() or srs.IsGeographic()):  # a local CRS has no north
        return None
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    geographic = srs.CloneGeogCS()
    geographic.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    try:
        to_degrees = osr.CoordinateTransformation(srs, geographic)
        to_map = osr.CoordinateTransformation(geographic, srs)
        centre = gdal.ApplyGeoTransform(list(geotransform), width / 2, height / 2)
        longitude, latitude = to_degrees.TransformPoint(*centre)[:2]
        if not abs(latitude) < 89.0:
            return None
        north = to_map.TransformPoint(longitude, latitude + 0.01)[:2]
    except RuntimeError:  # a CRS PROJ cannot invert, or a centre off its map
        return None
    inverse = gdal.InvGeoTransform(list(geotransform))
    col0, row0 = gdal.ApplyGeoTransform(inverse, *centre)
    col1, row1 = gdal.ApplyGeoTransform(inverse, *north)
    degrees = float(np.degrees(np.arctan2(col1 - col0, row0 - row1)))
    map_degrees = float(np.degrees(np.arctan2(north[0] - centre[0], north[1] - centre[1])))
    return NorthTurn(degrees, map_degrees, latitude, longitude % 360.0, srs)  # east longitude, 0-360, as HiRISE labels give it


# Files GDAL opens beside a raster when it opens it (PAM's statistics, a mask, external overviews).
SIDECARS = (".aux.xml", ".msk", ".ovr", ".aux")
VRT_DEPTH = 8


def waiting_file_message(path: str) -> str:
    """Why opening the raster would wait for ever (a named pipe, socket or device that it reads: itself, a file
    GDAL opens beside it, or a VRT's source, at any depth), with the fix; empty otherwise. QGIS opens a layer's
    raster while it checks the parameters, where nothing stops a wait, so this is asked before."""
    seen: Set[str] = set()

    def check(file_path: str, depth: int) -> str:
        if file_path in seen or depth > VRT_DEPTH:
            return ""
        seen.add(file_path)
        for candidate in (file_path,) + tuple(file_path + suffix for suffix in SIDECARS):
            kind = special_kind(candidate)
            if kind:
                return special_file_message(path) if candidate == path else (
                    f"'{path}' reads '{candidate}', which is {kind}, not a file: GDAL would wait on it for ever. Remove or replace "
                    f"'{os.path.basename(candidate)}', or give a copy of the image without it.")
        if file_path.lower().endswith(".vrt") and os.path.isfile(file_path):
            for source in _vrt_sources(file_path):
                found = check(source, depth + 1)
                if found:
                    return found
        return ""

    return check(path, 0)


def _vrt_sources(vrt_path: str) -> List[str]:
    """The files a VRT's sources name, as paths (relative ones from the VRT's folder); none for a VRT that is no XML."""
    import xml.etree.ElementTree as ElementTree

    try:
        if os.path.getsize(vrt_path) > 64 * 1024 * 1024:
            return []
        root = ElementTree.parse(vrt_path).getroot()
    except (OSError, ElementTree.ParseError):
        return []
    sources = []
    for element in root.iter("SourceFilename"):
        name = (element.text or "").strip()
        if not name or name.startswith("/vsi"):
            continue
        relative = element.get("relativeToVRT", "0") == "1" or element.get("relativetoVRT", "0") == "1"
        sources.append(os.path.normpath(os.path.join(os.path.dirname(vrt_path), name) if relative else name))
    return sources


class RasterSource:
    """An open raster. Use as a context manager; reads are thread-safe per instance only if not shared."""

    def __init__(self, path: str, band: int = 0, require_georeferencing: bool = True, overviews_skipped: Optional[str] = None):
        """overviews_skipped: None to probe the file's overviews (overviews_not_to_read); a handle() of an
        open source passes its verdict, which a probe would only repeat (it reads a window at full resolution)."""
        if not os.path.exists(path) and not path.startswith("/vsi"):
            raise RasterError(f"The raster '{path}' does not exist. Check the path or load the layer again.")
        special = waiting_file_message(path)
        if special:
            raise RasterError(special)
        try:
            with gdal_exceptions(), gdal_messages() as said:
                self._ds = gdal.Open(path, gdal.GA_ReadOnly)
        except RuntimeError as exc:
            raise not_a_raster_error(path, str(exc)) from None
        damage = next((message for message in said if HEADER_DAMAGE.search(message)), "")
        if damage:
            # GDAL opens a file cut inside its header and only warns, so the lost tags would be
            # blamed on the file (no CRS) instead of on the copy that cut it.
            raise damaged_raster_error(path, damage)
        try:
            self._describe(path, band, require_georeferencing)
            why = overviews_skipped
            if why is None:
                why = overviews_not_to_read(self._ds.GetRasterBand(self.info.bands[0]), self.info.data_type) if self.driver not in RESOLUTION_LEVEL_DRIVERS else ""
            if why:
                with gdal_exceptions():
                    self._ds = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY, open_options=["OVERVIEW_LEVEL=NONE"])
                self.info = dataclasses.replace(self.info, overviews_skipped=why)
        except RuntimeError as exc:  # a tag GDAL reads only on demand is cut off
            raise damaged_raster_error(path, str(exc)) from None

    def _describe(self, path: str, band: int, require_georeferencing: bool) -> None:
        """self.info, once the file is known to open whole."""
        ds = self._ds
        if ds.RasterCount == 0:
            raise RasterError(f"'{path}' has no raster bands. Give {SUPPORTED_FORMATS}.")
        if band < 0 or band > ds.RasterCount:
            raise RasterError(f"Band {band} does not exist in '{path}', which has {ds.RasterCount} band(s). Choose 1..{ds.RasterCount}, or 0 for automatic.")
        alpha_band = next((b for b in range(1, ds.RasterCount + 1) if ds.GetRasterBand(b).GetColorInterpretation() == gdal.GCI_AlphaBand), 0)
        bands = (band,) if band else tuple(b for b in range(1, ds.RasterCount + 1) if b != alpha_band or ds.RasterCount == 1)
        self._band = band
        check_pixel_type(path, ds.GetRasterBand(bands[0]))  # what the file is comes before where it lies
        geotransform, crs_wkt = georeferencing(ds, path, require_georeferencing)
        nodata = ds.GetRasterBand(bands[0]).GetNoDataValue()
        width, height = (int(side) for side in (ds.GetMetadataItem("IMAGE_SIZE", VIEW_DOMAIN) or f"{ds.RasterXSize} {ds.RasterYSize}").split())
        self.info = RasterInfo(
            path=path,
            width=width,
            height=height,
            band_count=ds.RasterCount,
            bands=bands,
            data_type=ds.GetMetadataItem("SOURCE_TYPE", VIEW_DOMAIN) or gdal.GetDataTypeName(ds.GetRasterBand(bands[0]).DataType),
            geotransform=geotransform,
            crs_wkt=crs_wkt,
            nodata=nodata,
            coloured_palette=any(_coloured(ds.GetRasterBand(b).GetRasterColorTable()) for b in bands),
            alpha_band=alpha_band if alpha_band not in bands else 0,
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._ds = None

    @contextlib.contextmanager
    def handles(self, count: int):
        """This source and count - 1 more handles on the same raster and bands, one per reading
        thread (read_in_order); the extra ones closed on leaving."""
        with contextlib.ExitStack() as stack:
            yield [self] + [stack.enter_context(RasterSource(self.info.path, self._band, require_georeferencing=False, overviews_skipped=self.info.overviews_skipped))
                            for _ in range(count - 1)]

    @property
    def driver(self) -> str:
        return self._ds.GetDriver().ShortName

    def grid_cache_bytes(self, chunk_size: int, input_size: int) -> int:
        """Block cache a grid of ``chunk_size`` chunks read at ``input_size`` can reuse: the blocks of
        one row of chunks, plus the block row it may straddle, for the bands read, at the level the
        decimated reads come from (the coarsest overview or JPEG2000 resolution level no coarser than
        chunk_size / input_size, else full resolution). Sized at full resolution, the whole-observation
        JPEG2000's 82 MB filled with level blocks the grid never read again: 60 MB of its peak RSS."""
        band = self._ds.GetRasterBand(self.info.bands[0])
        level = band
        try:
            overviews = [band.GetOverview(index) for index in range(band.GetOverviewCount())]
        except RuntimeError:  # e.g. a VRT whose source is gone: the first read says so clearly
            overviews = []
        for overview in overviews:
            if overview.XSize * chunk_size >= band.XSize * input_size and overview.XSize < level.XSize:
                level = overview
        block_height = level.GetBlockSize()[1]
        sample_bytes = gdal.GetDataTypeSize(band.DataType) // 8 * len(self.info.bands)
        chunk_rows = min(chunk_size, self.info.height) * level.YSize / band.YSize
        wanted = (chunk_rows + block_height) * level.XSize * sample_bytes
        return int(min(max(wanted, BLOCK_CACHE_FLOOR), BLOCK_CACHE_CEILING))

    def read(self, x_off: int, y_off: int, width: int, height: int, out_width: int, out_height: int) -> Tuple[np.ndarray, np.ndarray]:
        """Grayscale float32 window resampled to (out_height, out_width) and its validity mask."""
        values = None
        valid = None
        for b in self.info.bands:
            band = self._ds.GetRasterBand(b)
            data = self._read_band(band, (x_off, y_off, width, height), out_width, out_height)
            band_valid = data != 0
            nodata = band.GetNoDataValue()
            if nodata is not None:
                band_valid &= data != nodata
            special = self._special_pixels(band)
            if special is not None:
                band_valid &= ~special(data)
            values = data if values is None else values + data
            valid = band_valid if valid is None else valid & band_valid
        values /= len(self.info.bands)
        if self.info.alpha_band:
            valid &= self._read_band(self._ds.GetRasterBand(self.info.alpha_band), (x_off, y_off, width, height), out_width, out_height) != 0
        first = self._ds.GetRasterBand(self.info.bands[0])
        if first.GetMaskFlags() == gdal.GMF_PER_DATASET:  # a mask of its own (an internal TIFF mask): GDAL applies it to shrunk reads only
            valid &= self._read_band(first.GetMaskBand(), (x_off, y_off, width, height), out_width, out_height) != 0
        values[~valid] = 0.0
        return values, valid

    def _special_pixels(self, band) -> Optional[Callable[[np.ndarray], np.ndarray]]:
        """The test for a band's special pixels (ISIS3's null and saturated values, NaN), which are
        no-data and no average may mix in: every float band's, an integer ISIS3 cube's (ISIS_VALID_DNS);
        None for any other band."""
        if band.DataType in (gdal.GDT_Float32, gdal.GDT_Float64):
            return lambda data: ~(np.abs(data) < SPECIAL_PIXEL_MAGNITUDE)
        valid_dns = ISIS_VALID_DNS.get(band.DataType) if self._ds.GetDriver().ShortName == "ISIS3" else None
        if valid_dns is None:
            return None
        low, high = valid_dns
        return lambda data: (data < low) | (data > high)

    def _isis_cube_without_overviews(self, band) -> bool:
        """An ISIS3 cube's mask band is its special pixels, which the engine reads for what they mean (GDAL's
        average would leave a saturated pixel out, as if nothing had been measured there)."""
        return self._ds.GetDriver().ShortName == "ISIS3" and band.GetOverviewCount() == 0

    def _read_band(self, band, window, out_width: int, out_height: int) -> np.ndarray:
        """A float32 window of one band; a file whose pixels GDAL cannot decode is a DamagedRasterError
        whether GDAL raises (the engine's mode) or returns None (QGIS's)."""
        factors = whole_shrink(window[2:], (out_width, out_height))
        small = window[2] * window[3] <= MAX_AVERAGED_HERE_PIXELS
        special = self._special_pixels(band)
        try:
            # asking for the overviews opens a VRT's sources: a lost one fails here first. Special pixels are
            # read for what they mean before averaging; whole factors of integers are averaged here, faster.
            full_resolution = (small and (special is not None or (factors is not None and band.DataType in WHOLE_AVERAGE_TYPES))
                               and (averaged_here(band) or self._isis_cube_without_overviews(band)))
            if full_resolution:
                data = band.ReadAsArray(*window)
            else:
                data = band.ReadAsArray(*window, buf_xsize=out_width, buf_ysize=out_height, buf_type=gdal.GDT_Float32, resample_alg=RESAMPLING)
        except RuntimeError as exc:
            raise damaged_raster_error(self._pixels_file(), str(exc)) from None
        if data is None:
            raise damaged_raster_error(self._pixels_file(), gdal.GetLastErrorMsg())
        if not full_resolution:
            return data
        nodata = band.GetNoDataValue()
        if special is not None:
            missing = special(data)
            if nodata is not None:
                missing |= data == nodata
            if missing.any():  # saturation is looked for among the special pixels alone: most windows have none
                found = data[missing]
                low, high = (np.isin(found, np.array(values, data.dtype)) for values in ISIS_SATURATED.get(band.DataType, ((), ())))
                # 0 is no-data to read() in every band; a float's special values are too large to take back out of a block's sum
                filled = np.zeros_like(found)
                if (low.any() or high.any()) and not missing.all():
                    measured = data[~missing]
                    filled[low], filled[high] = measured.min(), measured.max()
                data[missing] = filled
            nodata = 0
        if factors is not None:
            return block_mean(data, factors, nodata)
        if data.shape == (out_height, out_width):
            return data.astype(np.float32)
        return averaged_by_gdal(data, nodata, out_width, out_height)

    def _pixels_file(self) -> str:
        """The file that holds the pixels: a detached label's data file (PDS3 .LBL and .IMG), else the raster's own path."""
        if os.path.splitext(self.info.path)[1].lower() != ".lbl":
            return self.info.path
        data = [f for f in (self._ds.GetFileList() or [])[1:] if os.path.splitext(f)[1].lower() not in (".lbl", ".xml", ".aux")]
        return data[0] if data else self.info.path

    def read_chunk(self, chunk: ChunkWindow, chunk_size: int, input_size: int) -> Tuple[np.ndarray, np.ndarray]:
        """A chunk at the network's scale: chunk_size pixels map to input_size pixels.

        An edge chunk smaller than chunk_size keeps that scale and is padded with no-data to
        input_size x input_size, so a pixel means the same ground size in every chunk.
        """
        out_w, out_h = chunk.scaled_size(chunk_size, input_size)
        data, valid = self.read(chunk.x_off, chunk.y_off, chunk.width, chunk.height, out_w, out_h)
        if (out_h, out_w) == (input_size, input_size):
            return data, valid
        padded = np.zeros((input_size, input_size), np.float32)
        padded_valid = np.zeros((input_size, input_size), bool)
        padded[:out_h, :out_w] = data
        padded_valid[:out_h, :out_w] = valid
        return padded, padded_valid

    def overview(self, max_side: int = 1024) -> Tuple[np.ndarray, np.ndarray, float]:
        """The whole image decimated so its longer side is at most max_side; returns (data, valid, factor)."""
        info = self.info
        factor = max(1.0, max(info.width, info.height) / max_side)
        out_w = max(1, int(round(info.width / factor)))
        out_h = max(1, int(round(info.height / factor)))
        data, valid = self.read(0, 0, info.width, info.height, out_w, out_h)
        return data, valid, factor

    def footprint_wkt(self, max_side: int = FOOTPRINT_MAX_SIDE) -> str:
        """The valid-data footprint (the rotated image outline) as WKT in the raster's CRS, from a
        decimated read of the whole image (detect takes it from its chunk reads instead)."""
        _, valid, _ = self.overview(max_side)
        return footprint_from_mask(valid, self.info.geotransform, self.info.width, self.info.height, self.info.crs_wkt)


def whole_shrink(size: Tuple[int, int], out_size: Tuple[int, int]) -> Optional[Tuple[int, int]]:
    """The whole factors (x, y) by which a window of ``size`` shrinks to ``out_size``; None unless
    both are whole and it shrinks at all."""
    factors = tuple(s // o if o and s % o == 0 else 0 for s, o in zip(size, out_size))
    return factors if all(factors) and factors != (1, 1) else None


def averaged_by_gdal(data: np.ndarray, nodata: float, out_width: int, out_height: int) -> np.ndarray:
    """GDAL's average of pixels already in memory, ``nodata`` left out: shrinks by factors that are not whole."""
    pixels = gdal_array.OpenArray(data)
    pixels.GetRasterBand(1).SetNoDataValue(nodata)
    return pixels.GetRasterBand(1).ReadAsArray(buf_xsize=out_width, buf_ysize=out_height, buf_type=gdal.GDT_Float32, resample_alg=RESAMPLING)


# JPEG2000 resolution levels are the wavelet's low-pass images: averages, whatever the file.
RESOLUTION_LEVEL_DRIVERS = ("JP2OpenJPEG", "JPEG2000", "JP2ECW", "JP2KAK", "JP2MrSID")
# Probe of overviews: this many overview pixels square at the image's centre.
OVERVIEW_PROBE_PIXELS = 64


def overviews_not_to_read(band, file_type: str) -> str:
    """Why a band's overviews (not a JPEG2000's resolution levels) must not be read for chunks, or "":
    they pick pixels (overviews_pick_pixels), or they are a float file's (``file_type``: RasterInfo's,
    so not a north-up view's own, which is float whatever it views), whose averages took NaN and
    ISIS3's special values in with the pixels around them (the engine reads those for what they are)."""
    if band.GetOverviewCount() == 0:
        return ""
    if file_type in ("Float32", "Float64"):
        return "are a float band's, whose averages spread no-data and saturated values over their neighbours"
    if overviews_pick_pixels(band):
        return ("pick pixels instead of averaging them (built by nearest neighbour, the default of QGIS's pyramids; "
                "rebuild them with gdaladdo -r average)")
    return ""


def overviews_pick_pixels(band) -> bool:
    """Whether the band's first overview (not a JPEG2000's resolution level: RESOLUTION_LEVEL_DRIVERS)
    was made by picking one pixel of each block (nearest neighbour) rather than by averaging them:
    read for chunks, such overviews make a small bright patch vanish or flicker with the grid. A
    GeoTIFF keeps no record of how its overviews were built, so a window at the centre of the
    overview is compared with both, made here from full resolution: it is the nearer one."""
    if band.GetOverviewCount() == 0:
        return False
    overview = band.GetOverview(0)
    rx, ry = band.XSize / overview.XSize, band.YSize / overview.YSize
    if rx < 1.5 or ry < 1.5:
        return False
    columns, rows = min(OVERVIEW_PROBE_PIXELS, overview.XSize), min(OVERVIEW_PROBE_PIXELS, overview.YSize)
    ox, oy = (overview.XSize - columns) // 2, (overview.YSize - rows) // 2
    # each overview pixel's source pixels, as GDAL counts them
    x_edges = np.minimum(np.floor(np.arange(ox, ox + columns + 1) * rx).astype(int), band.XSize)
    y_edges = np.minimum(np.floor(np.arange(oy, oy + rows + 1) * ry).astype(int), band.YSize)
    pixels = band.ReadAsArray(int(x_edges[0]), int(y_edges[0]), int(x_edges[-1] - x_edges[0]), int(y_edges[-1] - y_edges[0]))
    found = overview.ReadAsArray(ox, oy, columns, rows)
    if pixels is None or found is None:
        return False
    pixels = pixels.astype(np.float64)
    x_edges, y_edges = x_edges - x_edges[0], y_edges - y_edges[0]
    summed = np.pad(pixels, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    box = summed[np.ix_(y_edges[1:], x_edges[1:])] - summed[np.ix_(y_edges[:-1], x_edges[1:])] - summed[np.ix_(y_edges[1:], x_edges[:-1])] + summed[np.ix_(y_edges[:-1], x_edges[:-1])]
    averaged = box / np.outer(np.diff(y_edges), np.diff(x_edges))
    # which pixel of its window an overview pixel copies: the rules in use (GDAL's has changed over versions)
    def picks_at(shift: float, rounding):
        index_y = rounding((np.arange(oy, oy + rows) + shift) * ry).astype(int) - int(np.floor(oy * ry))
        index_x = rounding((np.arange(ox, ox + columns) + shift) * rx).astype(int) - int(np.floor(ox * rx))
        return pixels[np.ix_(index_y.clip(0, pixels.shape[0] - 1), index_x.clip(0, pixels.shape[1] - 1))]

    picks = [picks_at(0.0, np.floor), picks_at(0.0, np.round), picks_at(0.5, np.floor)]
    found = found.astype(np.float64)
    nodata = band.GetNoDataValue() or 0
    valid = np.isfinite(averaged) & np.isfinite(found) & (found != nodata) & np.all([pick != nodata for pick in picks], axis=0)
    if valid.sum() < 16 or not min(np.abs(pick - averaged)[valid].mean() for pick in picks) > 0.5:  # smooth ground, or no image: either would do
        return False
    return min(float(np.abs(found - pick)[valid].mean()) for pick in picks) < float(np.abs(found - averaged)[valid].mean())


def averaged_here(band) -> bool:
    """Whether the engine may read this band's windows at full resolution and average them itself,
    as GDAL would: no overview or JPEG2000 level for GDAL to read from instead (far cheaper than full
    resolution), and no mask beyond the declared no-data, which the engine leaves out as GDAL does."""
    return band.GetOverviewCount() == 0 and band.GetMaskFlags() in (gdal.GMF_ALL_VALID, gdal.GMF_NODATA)


def block_mean(data: np.ndarray, factors: Tuple[int, int], nodata: Optional[float]) -> np.ndarray:
    """Float32 mean of each factors[0] x factors[1] block of ``data``, leaving out pixels equal to
    ``nodata`` as GDAL's average does (a block of no-data alone stays ``nodata``). Exact, where
    GDAL rounds an integer band's averages to whole DNs; twice as fast as GDAL's resampler, which
    took as long as decoding the pixels."""
    fx, fy = factors
    missing = None if nodata is None else data == nodata
    if missing is not None and missing.all():  # outside an RDR's footprint: a third of its chunks
        return np.full((data.shape[0] // fy, data.shape[1] // fx), nodata, np.float32)
    # float32 sums 16-bit DNs exactly while they stay under 2**24
    accumulator = np.float64 if data.itemsize >= 4 or fx * fy > 256 else np.float32
    total = _block_sum(data, fx, fy, accumulator)
    if missing is None or not missing.any():
        mean = total / (fx * fy)
    else:
        missing_count = _block_sum(missing.view(np.uint8), fx, fy, np.uint16 if fx * fy < 65536 else np.uint32)
        if nodata:
            total -= missing_count * accumulator(nodata)
        count = fx * fy - missing_count.astype(accumulator)
        mean = np.divide(total, count, out=np.full_like(total, nodata), where=count > 0)
    return mean.astype(np.float32, copy=False)


def _block_sum(data: np.ndarray, fx: int, fy: int, dtype) -> np.ndarray:
    """Sum of each fx x fy block, by strided slices: numpy adds whole rows at a time that way."""
    rows = data[0::fy].astype(dtype)
    for offset in range(1, fy):
        rows += data[offset::fy]
    total = rows[:, 0::fx].copy()
    for offset in range(1, fx):
        total += rows[:, offset::fx]
    return total


def read_in_order(windows: List, reads: List[Callable]) -> Iterator[Tuple[object, object]]:
    """(window, read(window)) in the windows' order, read ahead while the caller works (the
    network runs) by one thread per read function, each with its own dataset handle (GDAL
    releases the GIL while decoding): the windows are dealt in runs of READ_RUN, reader k taking
    the runs k, k + n, ...; at most two windows per reader in memory."""
    pending: List["queue.Queue"] = [queue.Queue(maxsize=1) for _ in reads]
    done = threading.Event()

    def reader(k: int, read: Callable):
        try:
            for window in (w for i, w in enumerate(windows) if (i // READ_RUN) % len(reads) == k):
                if done.is_set():
                    return
                pending[k].put((window, read(window), None))
        except BaseException as exc:  # handed to the consumer
            pending[k].put((None, None, exc))

    threads = [threading.Thread(target=reader, args=(k, read), name=f"window-reader-{k}", daemon=True) for k, read in enumerate(reads)]
    for thread in threads:
        thread.start()
    try:
        for index in range(len(windows)):
            window, arrays, failure = pending[(index // READ_RUN) % len(reads)].get()
            if failure is not None:
                raise failure
            yield window, arrays
    finally:
        done.set()
        for k, thread in enumerate(threads):
            while thread.is_alive():
                try:
                    pending[k].get_nowait()
                except queue.Empty:
                    thread.join(0.05)


def reading_threads() -> int:
    """How many threads should read a raster at once. GDAL decodes a window's blocks one after
    another on one core, DEFLATE GeoTIFF and JPEG2000 alike: on 2 cores a second reading thread
    made a whole observation's detect 1.2x (GeoTIFF) and 1.25x (JPEG2000) as fast, where GDAL's
    own GDAL_NUM_THREADS gained nothing measurable (benchmarks/scene.py). Up to MAX_READERS on
    larger machines, where the network needs cores too (not measured here)."""
    return max(1, min(MAX_READERS, (os.cpu_count() or 1) // 2 + 1))


# What GDAL's TIFF reader warns of a file cut short inside its header (it opens it all the same).
HEADER_DAMAGE = re.compile(r"IO error during reading|tags apparently corrupt|Read error|Incorrect count for", re.IGNORECASE)


@contextlib.contextmanager
def gdal_messages():
    """GDAL's warnings and errors in this thread inside the block, collected instead of printed."""
    said: List[str] = []
    gdal.PushErrorHandler(lambda _class, _number, message: said.append(str(message)))
    try:
        yield said
    finally:
        gdal.PopErrorHandler()


def not_a_raster_error(path: str, gdal_message: str) -> RasterError:
    label = pixels_label(path)
    if label:  # a PDS3 image's raw pixels, which GDAL reads only through the label that describes them
        return RasterError(f"'{path}' holds raw pixels that GDAL reads only through their PDS label: give '{label}' instead.")
    return RasterError(f"'{path}' exists but is not a raster GDAL can read ({gdal_message.strip()}). Give {SUPPORTED_FORMATS}.")


def damaged_raster_error(path: str, gdal_message: str) -> DamagedRasterError:
    missing = re.match(r"(.+?): No such file or directory", gdal_message.strip())
    if missing and os.path.abspath(missing.group(1)) != os.path.abspath(path):
        # A VRT or a detached label whose pixels live in another file: nothing is truncated.
        return DamagedRasterError(
            f"'{path}' refers to '{missing.group(1)}' for its pixels, and that file cannot be found. "
            "Put it back where the reference says (or rebuild the VRT), then run again."
        )
    unreadable = re.match(r"`(.+?)' not recognized as", gdal_message.strip())
    if unreadable and os.path.abspath(unreadable.group(1)) != os.path.abspath(path):
        return DamagedRasterError(
            f"'{path}' refers to '{unreadable.group(1)}' for its pixels, and that file is not a raster GDAL can read. "
            "Point the reference at the image file (or rebuild the VRT from the images), then run again."
        )
    if "Recursion detected" in gdal_message:
        return DamagedRasterError(
            f"'{path}' refers to itself for its pixels, directly or through another VRT. Rebuild it from the image files "
            "(gdalbuildvrt, or Raster > Miscellaneous > Build Virtual Raster), then run again."
        )
    return DamagedRasterError(
        f"'{path}' is damaged: GDAL opened it but cannot decode its pixels ({gdal_message.strip()}). The file is probably "
        "truncated by an interrupted download or copy: download it again and check its size against the archive's."
    )


def check_pixel_type(path: str, band) -> None:
    """Refuse what is not an image of the ground: complex values, or an elevation model (by its
    band's unit or its name), whose heights the network would read as brightness."""
    data_type = gdal.GetDataTypeName(band.DataType)
    if data_type not in PIXEL_TYPES:
        raise RasterError(
            f"'{path}' holds complex values ({data_type}), not the DNs or I/F of a HiRISE image. "
            "Give the image itself (a RED or COLOR product, or its ISIS3 cube)."
        )
    unit = (band.GetUnitType() or "").strip().lower()
    if unit in ELEVATION_UNITS or ELEVATION_NAME.search(os.path.basename(path)):
        why = f"its values are in {band.GetUnitType().strip()}" if unit in ELEVATION_UNITS else "so its name says; rename it if it is an image"
        raise RasterError(
            f"'{path}' is an elevation model ({why}): its values are heights, and the network would read them as brightness. "
            "Give the image of the same ground instead (the RED or COLOR product, or the orthoimage made with the DTM)."
        )


# The largest HiRISE products are about 20,000 x 126,000 px (2.5 gigapixels); eight times that is no HiRISE image.
MAX_PIXELS = 20_000_000_000


def check_claimed_size(name: str, width: int, height: int) -> None:
    """Refuse a header that claims far more pixels than any HiRISE product: its grid of windows alone would
    not fit in memory (a 20,000,000-px-square JP2 of 2 kB ended in a MemoryError), and its pixels would take days."""
    if width * height > MAX_PIXELS:
        raise RasterError(
            f"'{name}' claims {width:,} x {height:,} px ({width * height / 1e9:,.0f} gigapixels), far more than any HiRISE product "
            f"(at most about 2.5): its header is damaged, or it is not one image. Download it again, or cut the part you need "
            "(gdal_translate -srcwin)."
        )


def check_size(name: str, width: int, height: int, chunk_size: int) -> None:
    """Refuse a raster whose size no chunk grid can score: a damaged header's claim, or less than a chunk's terrain."""
    check_claimed_size(name, width, height)
    check_holds_a_chunk(name, width, height, chunk_size)


def check_holds_a_chunk(name: str, width: int, height: int, chunk_size: int) -> None:
    """Refuse an image smaller than one chunk both ways, or narrower than an eighth of one (a cell of
    the network's score map at the default reading scale) either way: it would be graded on a sliver
    of terrain, and a 1-px strip was scored as four chunks of one column each."""
    if width < chunk_size and height < chunk_size:
        raise RasterError(
            f"'{name}' is {width} x {height} px, smaller than one chunk ({chunk_size} x {chunk_size} px), so it holds too little "
            "terrain to be scored and categorised. Give the whole image or a crop of at least one chunk, or lower CHUNK_SIZE."
        )
    narrowest = max(1, chunk_size // 8)
    if min(width, height) < narrowest:
        raise RasterError(
            f"'{name}' is {width} x {height} px, a strip narrower than an eighth of a chunk ({narrowest} px at CHUNK_SIZE {chunk_size}), "
            "so every chunk would hold a sliver of terrain. Give a crop at least that wide both ways, or lower CHUNK_SIZE."
        )


def not_mars_warning(name: str, crs_wkt: str) -> str:
    """A warning when the CRS's body is not Mars (e.g. EPSG:4326, Earth) or it lies on no body (a local CRS); empty when it is Mars or unknown."""
    srs = osr.SpatialReference()
    if not crs_wkt or srs.SetFromUserInput(crs_wkt) != 0:
        return ""
    if not (srs.IsProjected() or srs.IsGeographic()):
        return (
            f"'{name}' is georeferenced in a local CRS ({srs.GetName()}) that lies on no body: its chunk polygons will have that "
            "CRS's coordinates, not a place on Mars. If it is a HiRISE image, assign its Mars CRS (Raster > Projections > Assign "
            "Projection, or gdal_edit.py -a_srs) and run again."
        )
    radius = srs.GetSemiMajor()
    low, high = MARS_RADIUS_RANGE_M
    if low <= radius <= high:
        return ""
    return (
        f"'{name}' is georeferenced on a body of radius {radius / 1000:.0f} km ({srs.GetName()}), not on Mars (3396 km): its chunk "
        "polygons will lie there. If it is a HiRISE image, assign its Mars CRS (Raster > Projections > Assign Projection, or "
        "gdal_edit.py -a_srs) and run again."
    )


def _coloured(table) -> bool:
    """A colour table whose entries are not shades of grey rising with their index."""
    if table is None:
        return False
    entries = [table.GetColorEntry(index)[:3] for index in range(table.GetCount())]
    grey = all(red == green == blue for red, green, blue in entries)
    return not (grey and all(a[0] <= b[0] for a, b in zip(entries, entries[1:])))


def palette_warning(name: str, info: RasterInfo) -> str:
    """A warning when the pixels are palette indices in colour: their order need not be brightness."""
    if not info.coloured_palette:
        return ""
    return (
        f"'{name}' holds palette indices with a colour table, not brightness: they are scored as if they were brightness, which "
        "is only right where the index rises with it. If it is a coloured rendering, detect on the grayscale product instead "
        "(or expand it: gdal_translate -expand gray)."
    )


def pixel_metres(crs_wkt: str, pixel_size: float) -> float:
    """A pixel's size in metres: map units of a projected CRS, degrees of a geographic one on its
    body's equator; nan where the CRS is unknown."""
    srs = osr.SpatialReference()
    if not crs_wkt or srs.SetFromUserInput(crs_wkt) != 0:
        return float("nan")
    if srs.IsGeographic():
        return pixel_size * np.pi / 180.0 * srs.GetSemiMajor()
    return pixel_size * srs.GetLinearUnits()


def coarse_pixel_warning(name: str, crs_wkt: str, pixel_size: float, chunk_size: int) -> str:
    """A warning when the pixels are far coarser than HiRISE's: a chunk then spans kilometres, and
    metre-sized ice patches fall below a pixel. Empty for HiRISE's scales or an unknown CRS."""
    metres = pixel_metres(crs_wkt, pixel_size)
    if not metres > HIRISE_COARSEST_PIXEL_M:
        return ""
    return (
        f"'{name}' has {metres:.3g} m pixels, coarser than any HiRISE map product (0.25-2 m), so each {chunk_size}-px chunk spans "
        f"{metres * chunk_size / 1000:.3g} km and ice patches a few metres across are smaller than a pixel. If it is a browse or "
        "reduced image, detect on the full-resolution product (RDR) instead; the scores of this one say little."
    )


def squashed_pixel_warning(name: str, crs_wkt: str, geotransform, width: int, height: int) -> str:
    """A warning when a pixel is far longer one way than the other on the ground (an image reprojected
    to degrees of latitude and longitude, or resampled unevenly): a chunk is read as a square of
    pixels, so the network would see the ground squashed. Empty for square pixels or an unknown CRS."""
    srs = osr.SpatialReference()
    if not crs_wkt or srs.SetFromUserInput(crs_wkt) != 0:
        return ""
    g = geotransform
    wide, tall = float(np.hypot(g[1], g[4])), float(np.hypot(g[2], g[5]))
    where, standard_parallel = "", "LATITUDE"
    if srs.IsGeographic():
        latitude = g[3] + g[4] * width / 2 + g[5] * height / 2
        metres_per_degree = np.pi / 180.0 * srs.GetSemiMajor()
        wide, tall = wide * metres_per_degree * np.cos(np.radians(latitude)), tall * metres_per_degree
        where, standard_parallel = f" at {latitude:.1f} deg latitude", f"{latitude:.0f}"
    else:
        wide, tall = wide * srs.GetLinearUnits(), tall * srs.GetLinearUnits()
    if not min(wide, tall) > 0 or max(wide, tall) / min(wide, tall) <= SQUASH_TOLERANCE:
        return ""
    return (
        f"'{name}' has pixels {wide:.3g} m wide and {tall:.3g} m tall on the ground{where} ({max(wide, tall) / min(wide, tall):.2f} to 1): "
        "each chunk is read as a square of pixels, so the network sees the ground, its shadows and ice patches squashed. "
        "Reproject it to square pixels in a map projection, as HiRISE's own products are (equirectangular, or polar "
        f"stereographic poleward of 65 deg), e.g. gdalwarp -t_srs '+proj=eqc +lat_ts={standard_parallel} +R=3396190' -tr {min(wide, tall):.2g} "
        f"{min(wide, tall):.2g} IN.tif OUT.tif, and run again."
    )

