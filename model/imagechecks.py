"""What makes a raster unfit, or doubtful, as a HiRISE image for the network: a file GDAL cannot read or
decode, pixels that are no brightness (complex values, heights), a size no chunk grid can score, a body
other than Mars, palette colours, pixels far coarser than HiRISE's or squashed. Each refusal and warning
names the problem and the fix."""

import os
import re
from typing import TYPE_CHECKING

import numpy as np
from osgeo import gdal, osr

from .errors import DamagedRasterError, RasterError
from .georeference import MARS_RADIUS_RANGE_M
from .files import missing_path_message
from .pdslabel import pixels_label

if TYPE_CHECKING:
    from .raster import RasterInfo


# HiRISE products hold integer DNs (10-bit in 16, or 8-bit stretched); an image processed in ISIS3
# (hical, cam2map) holds I/F as 32-bit floats. Both are read as they are: each chunk is stretched
# on its own. Complex values are not an image of the ground at all.
PIXEL_TYPES = ("Byte", "Int8", "UInt16", "Int16", "UInt32", "Int32", "UInt64", "Int64", "Float32", "Float64")
# An elevation model holds heights, which the network would read as brightness: HiRISE DTMs are
# named DTEEC_, DTEED_, DTEPC_ or DTEPD_, other tools' carry DEM or DTM as a word of the name.
ELEVATION_NAME = re.compile(r"^DTE[EP][CD]_|(^|[^A-Z0-9])(DEM|DTM)([^A-Z0-9]|$)", re.IGNORECASE)
ELEVATION_UNITS = ("m", "meter", "meters", "metre", "metres", "km", "kilometer", "kilometers", "kilometre", "kilometres")
# HiRISE map products are 0.25 to 2 m per pixel (RED RDRs 0.25 or 0.5 m, COLOR and reduced cubes
# 1-2 m); coarser pixels are a browse image, another instrument's or a mosaic.
HIRISE_COARSEST_PIXEL_M = 5.0
# Ground aspect of a pixel beyond which the network would see the ground squashed (squashed_pixel_warning):
# an image reprojected to degrees at HiRISE's latitudes, -40 to -70 deg, is 1.3 to 2.9 to 1.
SQUASH_TOLERANCE = 1.15
SUPPORTED_FORMATS = "a HiRISE image: GeoTIFF, JP2 with its .LBL, ISIS3 cube or PDS image"
# What GDAL's TIFF reader warns of a file cut short inside its header (it opens it all the same).
HEADER_DAMAGE = re.compile(r"IO error during reading|tags apparently corrupt|Read error|Incorrect count for", re.IGNORECASE)
# What a decoder warns of as it turns damaged compressed pixels into garbage or zeros, and goes on: a JPEG tile with
# 256 zeroed bytes was scored as terrain (two chunks' probabilities doubled), or dropped as no-data, without a word.
PIXEL_DAMAGE = re.compile(r"Corrupt JPEG data|premature end of data segment|Decoding error|Decode(r)? error", re.IGNORECASE)


def not_a_raster_error(path: str, gdal_message: str) -> RasterError:
    if os.path.isdir(path):  # GDAL opens few folders as rasters, and no HiRISE product
        return RasterError(missing_path_message(path, "raster"))
    label = pixels_label(path)
    if label:  # a PDS3 image's raw pixels, which GDAL reads only through the label that describes them
        kind = "ISIS3" if path.lower().endswith(".cub") else "PDS"
        return RasterError(f"'{path}' holds raw pixels that GDAL reads only through their {kind} label: give '{label}' instead.")
    return RasterError(f"'{path}' exists but is not a raster GDAL can read ({gdal_message.strip()}). Give {SUPPORTED_FORMATS}.")


def damaged_raster_error(path: str, gdal_message: str, opened: bool = True, pixels: str = "") -> DamagedRasterError:
    """``path`` damaged, or ``pixels``, the file it reads its pixels from (a VRT's one source, a label's data file),
    when GDAL names no other file."""
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
    sidecar = next((path + suffix for suffix in (".ovr", ".msk", ".aux") if gdal_message.strip().startswith(path + suffix)), "")
    if sidecar:  # the image itself may be whole: copying it again left the same error
        return DamagedRasterError(
            f"'{sidecar}' beside '{path}' is damaged (GDAL cannot decode it: {gdal_message.strip()}); it holds the image's "
            f"{'overviews' if sidecar.endswith('.ovr') else 'mask' if sidecar.endswith('.msk') else 'overviews or mask'}, cut short by an "
            f"interrupted Build Pyramids or copy. Delete '{os.path.basename(sidecar)}' (or rebuild it: gdaladdo -ro -r average IMAGE 2 4 8), then run again."
        )
    if "Recursion detected" in gdal_message:
        return DamagedRasterError(
            f"'{path}' refers to itself for its pixels, directly or through another VRT. Rebuild it from the image files "
            "(gdalbuildvrt, or Raster > Miscellaneous > Build Virtual Raster), then run again."
        )
    how = "GDAL opened it but cannot decode its pixels" if opened else "GDAL cannot read its header"
    named = f"'{pixels}' (which '{path}' reads)" if pixels and pixels != path else f"'{path}'"
    return DamagedRasterError(
        f"{named} is damaged: {how} ({gdal_message.strip()}). The file is probably "
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


def coloured_table(table) -> bool:
    """A colour table whose entries are not shades of grey rising with their index."""
    if table is None:
        return False
    entries = [table.GetColorEntry(index)[:3] for index in range(table.GetCount())]
    grey = all(red == green == blue for red, green, blue in entries)
    return not (grey and all(a[0] <= b[0] for a, b in zip(entries, entries[1:])))


def palette_warning(name: str, info: "RasterInfo") -> str:
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


def ground_size(crs_wkt: str, pixel_size: float, chunk_size: int) -> str:
    """' (256 m at 0.25 m/px)': a chunk's side on the ground, for the log; '' for an unknown CRS. The model's
    chunk size is in pixels, as the paper's: a 0.5 m product's chunks cover twice the ground of a 0.25 m one's."""
    metres = pixel_metres(crs_wkt, pixel_size)
    if not metres > 0:
        return ""
    side = metres * chunk_size

    def plain(value: float) -> str:  # 3 significant digits, never an exponent
        return f"{value:.3g}" if value < 100 else f"{value:,.0f}"

    return f" ({plain(side / 1000)} km at {plain(metres)} m/px)" if side >= 10_000 else f" ({side:.0f} m at {plain(metres)} m/px)"


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
