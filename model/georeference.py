"""Where a raster's pixels lie on Mars: its geotransform and CRS (ground control points included), the
refusals of what cannot be placed, transformations between CRSs, the image's centre and which way north
points there (orientation.py holds the angles' rules, raster.north_up_view the view that turns it)."""

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from osgeo import gdal, osr

from .errors import RasterError
from .gdalstate import gdal_messages
from .orientation import NORTH_FAR_DEG, NORTH_WARNED_DEG
from .pdslabel import map_projected_label_beside


# Mars's radii (polar 3376.2 km, equatorial 3396.19 km) with room for the local radii of RDR CRSs.
MARS_RADIUS_RANGE_M = (3.30e6, 3.45e6)
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
        raise RasterError(not_map_projected_message(path))
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
    off = placement_damage(geotransform, crs_wkt) if geotransform is not None and crs_wkt else ""
    if off and required:
        raise RasterError(
            f"'{path}' is georeferenced where no map of Mars can place it ({off}): its geotransform is damaged, or was typed in another "
            "unit. Download the product again, or georeference this file again (Raster > Georeferencer, or gdal_edit.py -a_ullr with its corners)."
        )
    return tuple(geotransform or PIXEL_GRID), crs_wkt


# Pixels no map of Mars has (HiRISE's are 0.25-2 m, a browse image's tens of metres): a georeference damaged or
# typed in the wrong unit. One of 1e12 m had been warned of only as "coarser than HiRISE", one of 4e-12 m not at all.
PIXEL_SIZE_RANGE_M = (1e-3, 1e4)


def placement_damage(geotransform, crs_wkt: str) -> str:
    """What places a georeferenced image off Mars, or '': pixels of no plausible size, or an origin beyond the poles
    (one at 1e15 m put the report's centre at latitude 16870604858 deg). The origin, not the centre: a header's absurd
    size is imagechecks.check_claimed_size's to name. A CRS PROJ cannot invert is left alone."""
    srs = osr.SpatialReference()
    if srs.ImportFromWkt(crs_wkt) != 0 or not (srs.IsProjected() or srs.IsGeographic()):
        return ""
    # a geographic CRS's pixels in degrees of its sphere's great circle
    metres = srs.GetLinearUnits() if srs.IsProjected() else math.radians(1.0) * srs.GetSemiMajor()
    pixel_m = float(np.hypot(geotransform[1], geotransform[4])) * metres
    low, high = PIXEL_SIZE_RANGE_M
    if not low <= pixel_m <= high:
        return f"pixels of {pixel_m:g} m"
    try:
        with gdal_messages():
            latitude = to_own_degrees(srs)[1].TransformPoint(geotransform[0], geotransform[3])[1]
    except (RuntimeError, TypeError):
        return ""
    return "" if math.isfinite(latitude) and abs(latitude) <= 90.0 else f"its origin at latitude {latitude:g} deg"


def not_map_projected_message(path: str, name: str = "") -> str:
    """A file with neither CRS nor geotransform (shown as ``name``, default its path): assigning a CRS alone
    would only lead to the next refusal; an RDR's JP2 without GeoJP2 boxes is georeferenced by its label."""
    label = map_projected_label_beside(path)
    if label:
        return (f"'{name or path}' has neither a coordinate reference system nor a geotransform (an origin and pixel size), but its PDS label "
                f"beside it, {label}, holds its map projection: give that label as the input instead (GDAL reads the image through it).")
    return (f"'{name or path}' has neither a coordinate reference system nor a geotransform (an origin and pixel size): it is not map-projected "
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


def x_first(srs):
    """``srs`` read with x as its east-west axis, as QGIS draws every CRS (PROJ's order for display). GDAL's
    traditional GIS order swaps only the latitude-first CRSs whose longitude counts east, so a raster in a
    west-positive geographic CRS (IAU_2015:49901) had its latitude taken from x: its survey footprint lay
    at 50 deg E, 10 deg N instead of 10 deg W, 50 deg S."""
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    axes = srs.GetAxesCount()
    if axes >= 2 and srs.GetAxisOrientation(None, 0) in (osr.OAO_North, osr.OAO_South) and srs.GetAxisOrientation(None, 1) in (osr.OAO_East, osr.OAO_West):
        srs.SetDataAxisToSRSAxisMapping([2, 1] + list(range(3, axes + 1)))
    return srs


def to_own_degrees(srs):
    """(``srs``'s own geographic CRS, OSR's transformation into it), both read with x first (``srs`` is set so
    too): its longitudes and latitudes on its own body; None for a local CRS, which has none. RuntimeError
    where PROJ cannot make the transformation."""
    x_first(srs)
    geographic = srs.CloneGeogCS()
    if geographic is None:
        return None
    x_first(geographic)
    return geographic, osr.CoordinateTransformation(srs, geographic)


def east_longitude(geographic, longitude: float) -> float:
    """A longitude of the geographic CRS ``geographic`` counted east, as HiRISE's labels, Find and the survey give it."""
    west = any(geographic.GetAxisOrientation(None, axis) == osr.OAO_West for axis in range(geographic.GetAxesCount()))
    return -longitude if west else longitude


def image_centre(raster: Dict) -> Optional[Dict]:
    """The centre of the image: map coordinates, and longitude/latitude in the CRS's own geographic
    coordinates (the body's) where the CRS is known."""
    gt = raster.get("geotransform")
    if not gt:
        return None
    col, row = raster["width"] / 2.0, raster["height"] / 2.0
    x, y = gt[0] + col * gt[1] + row * gt[2], gt[3] + col * gt[4] + row * gt[5]
    centre = {"x": x, "y": y, "lon": None, "lat": None, "crs": ""}
    if raster.get("crs_wkt"):
        srs = osr.SpatialReference()
        if srs.ImportFromWkt(raster["crs_wkt"]) == 0:
            # a north-up view's map has no name: its definition says which map x and y are in
            centre["crs"] = srs.GetName() if srs.GetName() not in ("", "unknown") else srs.ExportToProj4().strip()
            convert = to_east_degrees(raster["crs_wkt"])  # None for a local CRS, which has no longitude or latitude
            try:
                lon, lat = convert(x, y) if convert is not None else (math.nan, math.nan)
            except (RuntimeError, TypeError):
                lon = lat = math.nan
            if math.isfinite(lon) and math.isfinite(lat):
                centre["lon"], centre["lat"] = lon, lat
    return centre


def to_east_degrees(crs_wkt: str) -> Optional[Callable[[float, float], Tuple[float, float]]]:
    """(x, y) in the CRS -> (longitude counted east, latitude) in degrees on its body; None for a CRS without them (a local
    CRS, one PROJ cannot read)."""
    srs = osr.SpatialReference()
    if not crs_wkt or srs.ImportFromWkt(crs_wkt) != 0:
        return None
    try:
        degrees = to_own_degrees(srs)
    except RuntimeError:
        return None
    if degrees is None:
        return None
    geographic, transform = degrees

    def convert(x, y):
        lon, lat, _ = transform.TransformPoint(x, y)
        return east_longitude(geographic, lon), lat
    return convert


def crs_transform(from_wkt: str, to_wkt: str):
    """OSR's transformation between two CRSs, coordinates x (east) first whatever the CRSs' axis order;
    RuntimeError where PROJ finds none (another body's CRS). PROJ finds none between two Mars spheres
    of other radii either (HiRISE's polar products are drawn on the polar radius, 3,376,200 m): to a
    geographic CRS, the source's own longitudes and latitudes are returned, the same planetocentric
    angles on any sphere."""
    source, target = osr.SpatialReference(wkt=from_wkt), osr.SpatialReference(wkt=to_wkt)
    for srs in (source, target):
        x_first(srs)
    with gdal_messages():  # PROJ's own error line: the RuntimeError below says it once
        transform = _transformation(source, target)
        if transform is None and target.IsGeographic() and _on_mars_sphere(source) and _on_mars_sphere(target):
            own = x_first(source.CloneGeogCS())
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
    try:
        geographic, to_degrees = to_own_degrees(srs)
        centre = gdal.ApplyGeoTransform(list(geotransform), width / 2, height / 2)
        longitude, latitude = to_degrees.TransformPoint(*centre)[:2]
        if not abs(latitude) < 89.0:
            return None
        # North from how longitude and latitude change around the centre, never by mapping a longitude back
        # to the map: eastings beyond the CRS's antimeridian (an image across it, an ISIS3 map of longitudes
        # 0-360 on meridian 0) come back on its other side, which read as north turned 90 deg.
        step = 10.0 * float(np.hypot(geotransform[1], geotransform[4]))
        east = to_degrees.TransformPoint(centre[0] + step, centre[1])[:2]
        up = to_degrees.TransformPoint(centre[0], centre[1] + step)[:2]
    except RuntimeError:  # a CRS PROJ cannot invert, or a centre off its map
        return None
    lon_x, lon_y = ((point[0] - longitude + 180.0) % 360.0 - 180.0 for point in (east, up))
    lat_x, lat_y = east[1] - latitude, up[1] - latitude
    determinant = lon_x * lat_y - lon_y * lat_x
    if not determinant:
        return None
    scale = step / float(np.hypot(lon_y, lon_x))
    north = (centre[0] - lon_y * scale * np.sign(determinant), centre[1] + lon_x * scale * np.sign(determinant))
    inverse = gdal.InvGeoTransform(list(geotransform))
    col0, row0 = gdal.ApplyGeoTransform(inverse, *centre)
    col1, row1 = gdal.ApplyGeoTransform(inverse, *north)
    degrees = float(np.degrees(np.arctan2(col1 - col0, row0 - row1)))
    map_degrees = float(np.degrees(np.arctan2(north[0] - centre[0], north[1] - centre[1])))
    return NorthTurn(degrees, map_degrees, latitude, east_longitude(geographic, longitude) % 360.0, srs)  # 0-360 E, as HiRISE labels give it
