"""Raster access through GDAL: windowed reads only, so memory never grows with the image. A window
is decimated by GDAL, or read at full resolution and averaged here where that is faster (averaging.block_mean).

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
import threading
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Set, Tuple

import numpy as np
from osgeo import gdal

from .averaging import (MAX_AVERAGED_HERE_PIXELS, RESAMPLING, RESOLUTION_LEVEL_DRIVERS, WHOLE_AVERAGE_TYPES, averaged_by_gdal, averaged_here,
                        block_mean, overviews_not_to_read, whole_shrink)
from .errors import DamagedRasterError, EngineError, RasterError
from .files import is_utf8, missing_path_message, shown, special_file_message, special_kind, unreadable_file_message
from .footprint import FOOTPRINT_MAX_SIDE, footprint_from_mask
from .gdalstate import gdal_exceptions, gdal_messages, gdal_returning_none
from .georeference import georeferencing, north_turn
from .grid import ChunkWindow
from .imagechecks import HEADER_DAMAGE, PIXEL_DAMAGE, SUPPORTED_FORMATS, check_pixel_type, coloured_table, damaged_raster_error, not_a_raster_error
from .orientation import NORTH_FAR_DEG


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
# SOURCE_TYPE, the file's pixel type, and SOURCE_PATH, the file. In a domain of its own, which no GDAL copy carries on.
VIEW_DOMAIN = "HIRISEICE_VIEW"
# Neighbouring windows one reading thread takes in turn: GDAL 3.6 gives a north-up view's overviews
# blocks 512 px wide whatever the view's own, so two chunks at the network's scale share each; read
# by two threads, each thread's handle warped that block again (twice the work, no gain from the second thread).
READ_RUN = 2

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".cub", ".img", ".lbl", ".vrt")


def image_id_of(path: str) -> str:
    """The HiRISE product ID when the file name carries one, else the file's stem (a GeoPackage raster
    table's, 'GPKG:/data/mosaics.gpkg:red', is the file's stem and the table's name: 'mosaics_red')."""
    file = connection_file(path)
    if file:
        return f"{os.path.splitext(os.path.basename(file))[0]}_{path.rpartition(':')[2]}"
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
    source_path: str = ""  # the file the user gave where this is its north-up view (north_up_view); "" otherwise

    @property
    def given_path(self) -> str:
        """The file as the user gave it: what messages name and where its PDS label lies beside it."""
        return self.source_path or self.path

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


def pixels_file(path: str, dataset) -> str:
    """The file that holds the pixels of the opened ``path``: a detached label's data file (PDS3 .LBL and .IMG), a
    VRT's one source (its damage had been blamed on the 1-kB VRT, with advice to download the VRT again), else ``path``."""
    kind = os.path.splitext(path)[1].lower()
    if kind not in (".lbl", ".vrt"):
        return path
    data = [f for f in (dataset.GetFileList() or [])[1:] if os.path.splitext(f)[1].lower() not in (".lbl", ".xml", ".aux", ".vrt", ".ovr", ".msk")]
    return data[0] if len(data) == 1 or (data and kind == ".lbl") else path


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
    except EngineError as exc:  # a message names the file the user gave, not the view in GDAL's memory
        if view not in str(exc):
            raise
        raise type(exc)(str(exc).replace(view, path)) from None
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
    warped.SetMetadataItem("SOURCE_PATH", path, VIEW_DOMAIN)
    warped = None  # writes the VRT
    return True


# Files GDAL opens beside a raster when it opens it (PAM's statistics, a mask, external overviews).
SIDECARS = (".aux.xml", ".msk", ".ovr", ".aux")
VRT_DEPTH = 8


def connection_file(path: str) -> str:
    """The file a GDAL connection string of the form DRIVER:file:name reads (a GeoPackage's raster table,
    'GPKG:/data/mosaics.gpkg:red', as QGIS gives a layer of one); '' for a plain path."""
    prefix, _, rest = path.partition(":")
    if not rest or len(prefix) < 2 or gdal.GetDriverByName(prefix) is None:  # "C:" is a drive, not a driver
        return ""
    return (rest.rpartition(":")[0] or rest).strip('"')  # NETCDF:"file.nc":variable quotes its file


def several_rasters_message(path: str, subdatasets) -> str:
    """A file of several rasters (a GeoPackage's raster tables, a NetCDF's variables) names none of them to read."""
    names = [name for name, _description in subdatasets]
    shown = ", ".join(f"'{name}'" for name in names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return (f"'{path}' holds {len(names)} rasters, not one image: give one of them, {shown} (in QGIS, add the one you want as a "
            "layer and choose it).")


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
        if not is_utf8(path):  # GDAL's bindings would call it "not a string", and the file unreadable
            raise RasterError(f"'{shown(path)}': its name is not UTF-8 text, which GDAL's Python bindings cannot pass. Rename it (e.g. with only "
                              "letters, digits, '_' and '-') and run again.")
        if not path.strip():
            raise RasterError("No raster was given (its path is empty). Give the image file: a GeoTIFF, a JP2 with its .LBL, an ISIS3 cube or a PDS image.")
        if not os.path.exists(path) and not path.startswith("/vsi") and not os.path.exists(connection_file(path)):
            within = os.path.abspath(connection_file(path) or path)  # DRIVER:file:name names a file of its own
            said = missing_path_message(within, "raster")
            raise RasterError(f"'{path}' reads the file '{within}', which {said[len(within) + 3:]}" if within != os.path.abspath(path) else said)
        special = waiting_file_message(path) or unreadable_file_message(path)
        if special:
            raise RasterError(special)
        try:
            with gdal_exceptions(), gdal_messages() as said:
                self._ds = gdal.Open(path, gdal.GA_ReadOnly)
        except RuntimeError as exc:
            # a GeoTIFF cut inside its first directory fails to open at all: a damaged copy, not some other kind of file
            if HEADER_DAMAGE.search(str(exc)) or "Failed to read directory" in str(exc):
                raise damaged_raster_error(path, str(exc), opened=False) from None
            raise not_a_raster_error(path, str(exc)) from None
        damage = next((message for message in said if HEADER_DAMAGE.search(message)), "")
        if damage:
            # GDAL opens a file cut inside its header and only warns, so the lost tags would be
            # blamed on the file (no CRS) instead of on the copy that cut it.
            raise damaged_raster_error(path, damage, pixels=pixels_file(path, self._ds))
        try:
            self._describe(path, band, require_georeferencing)
            why = overviews_skipped
            if why is None:
                why = "" if self.reads_resolution_levels else overviews_not_to_read(self._ds.GetRasterBand(self.info.bands[0]), self.info.data_type)
            if why:
                with gdal_exceptions():
                    self._ds = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY, open_options=["OVERVIEW_LEVEL=NONE"])
                self.info = dataclasses.replace(self.info, overviews_skipped=why)
        except RuntimeError as exc:  # a tag GDAL reads only on demand is cut off
            raise damaged_raster_error(path, str(exc), pixels=pixels_file(path, self._ds)) from None

    def _describe(self, path: str, band: int, require_georeferencing: bool) -> None:
        """self.info, once the file is known to open whole."""
        ds = self._ds
        if ds.RasterCount == 0 and ds.GetSubDatasets():
            raise RasterError(several_rasters_message(path, ds.GetSubDatasets()))
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
            coloured_palette=any(coloured_table(ds.GetRasterBand(b).GetRasterColorTable()) for b in bands),
            alpha_band=alpha_band if alpha_band not in bands else 0,
            source_path=ds.GetMetadataItem("SOURCE_PATH", VIEW_DOMAIN) or "",
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

    @property
    def reads_resolution_levels(self) -> bool:
        """Whether the overviews are a JPEG2000's resolution levels: the file's own, or those of the JP2
        that a PDS label (HiRISE's RDR .LBL) or a VRT holds the pixels of. Judged as picking pixels, they
        had been skipped, and a whole RDR decoded at full resolution."""
        return self.driver in RESOLUTION_LEVEL_DRIVERS or any(
            name.lower().endswith((".jp2", ".j2k", ".jpx")) for name in (self._ds.GetFileList() or [])[1:])

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
            with gdal_messages() as said:
                if full_resolution:
                    data = band.ReadAsArray(*window)
                else:
                    data = band.ReadAsArray(*window, buf_xsize=out_width, buf_ysize=out_height, buf_type=gdal.GDT_Float32, resample_alg=RESAMPLING)
        except RuntimeError as exc:
            raise self._damaged(str(exc)) from None
        if data is None:
            raise self._damaged(gdal.GetLastErrorMsg())
        damage = next((message for message in said if PIXEL_DAMAGE.search(message)), "")
        if damage:  # decoded all the same, into garbage or zeros
            raise self._damaged(damage)
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

    def _damaged(self, gdal_message: str) -> DamagedRasterError:
        return damaged_raster_error(self.info.path, gdal_message, pixels=pixels_file(self.info.path, self._ds))

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


def usable_cores() -> int:
    """The cores this process may run on: under `taskset` or a container's CPU set, fewer than the machine has."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def reading_threads() -> int:
    """How many threads should read a raster at once. GDAL decodes a window's blocks one after
    another on one core, DEFLATE GeoTIFF and JPEG2000 alike: on 2 cores a second reading thread
    made a whole observation's detect 1.2x (GeoTIFF) and 1.25x (JPEG2000) as fast, where GDAL's
    own GDAL_NUM_THREADS gained nothing measurable (benchmarks/scene.py). Up to MAX_READERS on
    larger machines, where the network needs cores too (not measured here)."""
    return max(1, min(MAX_READERS, usable_cores() // 2 + 1))

