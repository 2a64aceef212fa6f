"""Rasters as HiRISE ships them: a JPEG2000 RDR (.JP2: GeoJP2 georeferencing, UInt16 holding 10-bit
DNs, DN 0 outside the rotated footprint, wavelet resolution levels) and its detached PDS3 label (.LBL)
that GDAL's PDS driver opens.

The products are generated here: a HiRISE-like GeoTIFF (helpers.generate_raster) translated to a
lossless JP2 (GDAL's JP2OpenJPEG needs QUALITY=100 as well as REVERSIBLE=YES, or it truncates the
reversible code-stream), and a label with the keywords of a real RED RDR label (COMPRESSED_FILE
pointing to the JP2, UNCOMPRESSED_FILE with its IMAGE, IMAGE_MAP_PROJECTION). Two products: one
equirectangular on the local radius at CENTER_LATITUDE (what HiRISE uses within +-65 deg) and one
polar stereographic on the polar radius (beyond). The JP2 keeps only what HiRISE distributes: its
PAM sidecar (.aux.xml, where GDAL would put a no-data value) is removed, so DN 0 is undeclared.
"""

import math
import os
import re
import shutil

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from model.chunking import iter_chunks
from model.errors import RasterError
from model.grid import chunk_grid, chunk_wkt
from model.raster import RasterSource

import helpers

WIDTH, HEIGHT = 512, 384  # 8 x 6 chunks of 64 px
MAP_SCALE = 0.5  # metres per pixel (HiRISE RDRs: 0.25, 0.5 or 1)
EQUATORIAL_RADIUS_KM, POLAR_RADIUS_KM = 3396.19, 3376.2  # the Mars ellipsoid of the HiRISE DSMAP.CAT
CHUNK, INPUT = helpers.TINY_CHUNK_SIZE, helpers.TINY_INPUT_SIZE
JP2_OPTIONS = ["REVERSIBLE=YES", "QUALITY=100", "NBITS=10", "RESOLUTIONS=4"]


def local_radius_km(latitude: float) -> float:
    """The radius HiRISE writes into A/B/C_AXIS_RADIUS of an equirectangular RDR (DSMAP.CAT)."""
    re_, rp, lat = EQUATORIAL_RADIUS_KM, POLAR_RADIUS_KM, math.radians(latitude)
    return re_ * rp / math.hypot(rp * math.cos(lat), re_ * math.sin(lat))


# name -> projection parameters of the label, and the upper-left corner of the image in map metres
PRODUCTS = {
    "ESP_012345_1235_RED": dict(projection="EQUIRECTANGULAR", center_latitude=-56.5, center_longitude=352.4,
                                radius_km=round(local_radius_km(-56.5), 6), upper_left=None),
    "ESP_012346_2635_RED": dict(projection="POLAR STEREOGRAPHIC", center_latitude=90.0, center_longitude=0.0,
                                radius_km=POLAR_RADIUS_KM, upper_left=(-91202.5, -371800.0)),
}
EQUIRECTANGULAR_ID, POLAR_ID = sorted(PRODUCTS)
VIEWING = {"incidence_angle": 71.426468, "solar_longitude": 218.346}  # the labels' VIEWING_PARAMETERS


def require_driver(name: str):
    if gdal.GetDriverByName(name) is None:
        pytest.skip(f"this GDAL ({gdal.__version__}) has no {name} driver, so HiRISE {'JP2' if name.startswith('JP2') else 'PDS3 label'}s cannot be read here")


def mars_crs(spec) -> osr.SpatialReference:
    """The CRS the label describes, built independently of GDAL's PDS driver (for the JP2's GeoJP2 box)."""
    radius_m = spec["radius_km"] * 1000.0
    srs = osr.SpatialReference()
    srs.SetGeogCS("Mars sphere", "D_Mars", "Mars_sphere", radius_m, 0.0, "Reference_Meridian", 0.0)
    if spec["projection"] == "EQUIRECTANGULAR":
        srs.SetEquirectangular2(0.0, spec["center_longitude"], spec["center_latitude"], 0.0, 0.0)
    else:
        srs.SetPS(spec["center_latitude"], spec["center_longitude"], 1.0, 0.0, 0.0)
    srs.SetProjCS(f"HiRISE {spec['projection'].lower()} (tests)")
    srs.SetLinearUnits("metre", 1.0)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def label_offsets(spec):
    """(SAMPLE_PROJECTION_OFFSET, LINE_PROJECTION_OFFSET) for the product's position, half-integers as in real labels."""
    if spec["upper_left"] is None:  # equirectangular: the image centred on CENTER_LONGITUDE and CENTER_LATITUDE
        top = spec["radius_km"] * 1000.0 * math.radians(spec["center_latitude"]) + HEIGHT / 2.0 * MAP_SCALE
        x_ul, y_ul = -WIDTH / 2.0 * MAP_SCALE, round(top / MAP_SCALE) * MAP_SCALE
    else:
        x_ul, y_ul = spec["upper_left"]
    return -x_ul / MAP_SCALE - 0.5, y_ul / MAP_SCALE - 0.5


def geotransform_of_label(sample_offset, line_offset, scale):
    """The PDS3 convention GDAL documents (PDS_SampleProjOffset_Shift = PDS_LineProjOffset_Shift = 0.5 by default):
    the offsets locate the projection origin from the centre of the first pixel, so the upper-left corner is
    x = -(SAMPLE_PROJECTION_OFFSET + 0.5) * MAP_SCALE, y = (LINE_PROJECTION_OFFSET + 0.5) * MAP_SCALE."""
    return (-(sample_offset + 0.5) * scale, scale, 0.0, (line_offset + 0.5) * scale, 0.0, -scale)


def write_label(path, name, spec, sample_offset, line_offset, map_projection=True) -> str:
    """A detached PDS3 label modelled on a HiRISE RED RDR's (MRO-M-HIRISE-3-RDR-V1.1)."""
    srs = mars_crs(spec)
    geographic = srs.CloneGeogCS()
    geographic.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_geographic = osr.CoordinateTransformation(srs, geographic)
    gt = geotransform_of_label(sample_offset, line_offset, MAP_SCALE)
    corners = [to_geographic.TransformPoint(x, y)[:2] for x, y in helpers.window_ring_gdal(gt, 0, 0, WIDTH, HEIGHT)[:4]]
    lons = [lon % 360.0 for lon, _ in corners]
    lats = [lat for _, lat in corners]
    pixels_per_degree = math.radians(spec["radius_km"] * 1000.0) / MAP_SCALE
    projection = f"""
OBJECT                        = IMAGE_MAP_PROJECTION
  ^DATA_SET_MAP_PROJECTION    = "DSMAP.CAT"
  MAP_PROJECTION_TYPE         = "{spec['projection']}"
  PROJECTION_LATITUDE_TYPE    = PLANETOCENTRIC
  A_AXIS_RADIUS               = {spec['radius_km']:.6f} <KM>
  B_AXIS_RADIUS               = {spec['radius_km']:.6f} <KM>
  C_AXIS_RADIUS               = {spec['radius_km']:.6f} <KM>
  COORDINATE_SYSTEM_NAME      = PLANETOCENTRIC
  POSITIVE_LONGITUDE_DIRECTION = EAST
  KEYWORD_LATITUDE_TYPE       = PLANETOCENTRIC
  CENTER_LATITUDE             = {spec['center_latitude']:.1f} <DEG>
  CENTER_LONGITUDE            = {spec['center_longitude']:.1f} <DEG>
  LINE_FIRST_PIXEL            = 1
  LINE_LAST_PIXEL             = {HEIGHT}
  SAMPLE_FIRST_PIXEL          = 1
  SAMPLE_LAST_PIXEL           = {WIDTH}
  MAP_PROJECTION_ROTATION     = 0.0 <DEG>
  MAP_RESOLUTION              = {pixels_per_degree:.3f} <PIX/DEG>
  MAP_SCALE                   = {MAP_SCALE} <METERS/PIXEL>
  MAXIMUM_LATITUDE            = {max(lats):.8f} <DEG>
  MINIMUM_LATITUDE            = {min(lats):.8f} <DEG>
  LINE_PROJECTION_OFFSET      = {line_offset:.1f} <PIXEL>
  SAMPLE_PROJECTION_OFFSET    = {sample_offset:.1f} <PIXEL>
  EASTERNMOST_LONGITUDE       = {max(lons):.8f} <DEG>
  WESTERNMOST_LONGITUDE       = {min(lons):.8f} <DEG>
END_OBJECT                    = IMAGE_MAP_PROJECTION
"""
    text = f"""PDS_VERSION_ID            = PDS3

/* Identification Information */
NOT_APPLICABLE_CONSTANT   = -9998
DATA_SET_ID               = "MRO-M-HIRISE-3-RDR-V1.1"
DATA_SET_NAME             = "MRO MARS HIGH RESOLUTION IMAGING SCIENCE
                            EXPERIMENT RDR V1.1"
PRODUCER_INSTITUTION_NAME = "UNIVERSITY OF ARIZONA"
PRODUCER_ID               = "UA"
OBSERVATION_ID            = "{name[:15]}"
PRODUCT_ID                = "{name}"
PRODUCT_VERSION_ID        = "1.0"
INSTRUMENT_HOST_NAME      = "MARS RECONNAISSANCE ORBITER"
INSTRUMENT_HOST_ID        = "MRO"
INSTRUMENT_NAME           = "HIGH RESOLUTION IMAGING SCIENCE EXPERIMENT"
INSTRUMENT_ID             = "HIRISE"
TARGET_NAME               = "MARS"
SOFTWARE_NAME             = "tests/test_formats.py"

/* Time Parameters */
GROUP                     = TIME_PARAMETERS
  MRO:OBSERVATION_START_TIME = 2013-03-02T11:42:18.497
  START_TIME              = 2013-03-02T11:42:18.610
  STOP_TIME               = 2013-03-02T11:42:21.346
  PRODUCT_CREATION_TIME   = 2013-03-19T21:34:15
END_GROUP                 = TIME_PARAMETERS

/* Viewing and Illumination Geometry (at the observation's centre) */
GROUP                     = VIEWING_PARAMETERS
  INCIDENCE_ANGLE         = {VIEWING['incidence_angle']} <DEG>
  EMISSION_ANGLE          = 2.812104 <DEG>
  PHASE_ANGLE             = 73.117641 <DEG>
  LOCAL_TIME              = 15.19 <LOCALDAY/24>
  SOLAR_LONGITUDE         = {VIEWING['solar_longitude']} <DEG>
  SUB_SOLAR_AZIMUTH       = 185.41 <DEG>
  NORTH_AZIMUTH           = 270.0 <DEG>
END_GROUP                 = VIEWING_PARAMETERS

/* File, image and map projection */
OBJECT                        = COMPRESSED_FILE
  FILE_NAME                   = "{name}.JP2"
  RECORD_TYPE                 = UNDEFINED
  ENCODING_TYPE               = "JP2"
  ENCODING_TYPE_VERSION_NAME  = "ISO/IEC15444-1:2004"
  INTERCHANGE_FORMAT          = BINARY
  UNCOMPRESSED_FILE_NAME      = "{name}.IMG"
  REQUIRED_STORAGE_BYTES      = {WIDTH * HEIGHT * 2} <BYTES>
  ^DESCRIPTION                = "JP2INFO.TXT"
END_OBJECT                    = COMPRESSED_FILE

OBJECT                        = UNCOMPRESSED_FILE
  FILE_NAME                   = "{name}.IMG"
  RECORD_TYPE                 = FIXED_LENGTH
  RECORD_BYTES                = {WIDTH * 2} <BYTES>
  FILE_RECORDS                = {HEIGHT}
  ^IMAGE                      = "{name}.IMG"

  OBJECT                      = IMAGE
    DESCRIPTION               = "HiRISE projected and mosaicked product"
    LINES                     = {HEIGHT}
    LINE_SAMPLES              = {WIDTH}
    BANDS                     = 1
    SAMPLE_TYPE               = MSB_UNSIGNED_INTEGER
    SAMPLE_BITS               = 16
    SAMPLE_BIT_MASK           = 2#0000001111111111#
    SCALING_FACTOR            = 1.83e-04
    OFFSET                    = -0.0112
    BAND_STORAGE_TYPE         = BAND_SEQUENTIAL
    CORE_NULL                 = 0
    CORE_LOW_REPR_SATURATION  = 1
    CORE_LOW_INSTR_SATURATION = 2
    CORE_HIGH_REPR_SATURATION = 1023
    CORE_HIGH_INSTR_SATURATION = 1022
    CENTER_FILTER_WAVELENGTH  = 700 <NM>
    FILTER_NAME               = "RED"
  END_OBJECT                  = IMAGE
END_OBJECT                    = UNCOMPRESSED_FILE
{projection if map_projection else ""}
END
"""
    with open(path, "w", encoding="ascii", newline="\r\n") as handle:  # PDS3 labels use CR LF
        handle.write(text)
    return str(path)


class Product:
    def __init__(self, name, spec, raster: helpers.GeneratedRaster, jp2: str, lbl: str, offsets):
        self.name, self.spec, self.raster, self.jp2, self.lbl = name, spec, raster, jp2, lbl
        self.sample_offset, self.line_offset = offsets
        self.tif = raster.path


def make_product(folder, name) -> Product:
    require_driver("JP2OpenJPEG")
    spec = PRODUCTS[name]
    offsets = label_offsets(spec)
    gt = geotransform_of_label(*offsets, MAP_SCALE)
    raster = helpers.generate_raster(folder, name=f"{name}.tif", width=WIDTH, height=HEIGHT, data_type="UInt16",
                                     nodata=None, crs=mars_crs(spec).ExportToWkt(), geotransform=gt, rotated_border=True,
                                     seed=5, icy_chunk_size=CHUNK, icy_pattern=lambda row, col: (row + 2 * col) % 3 == 0)
    jp2 = os.path.join(str(folder), f"{name}.JP2")
    gdal.PushErrorHandler("CPLQuietErrorHandler")  # GMLJP2 cannot encode these Mars CRSs ("Unhandled projection method"); GeoJP2 can
    try:
        out = gdal.Translate(jp2, raster.path, format="JP2OpenJPEG", creationOptions=JP2_OPTIONS)
    finally:
        gdal.PopErrorHandler()
    assert out is not None, f"GDAL could not write {jp2}: {gdal.GetLastErrorMsg()}"
    out = None
    if os.path.exists(jp2 + ".aux.xml"):
        os.remove(jp2 + ".aux.xml")  # HiRISE distributes the .JP2 and .LBL only
    lbl = write_label(os.path.join(str(folder), f"{name}.LBL"), name, spec, *offsets)
    return Product(name, spec, raster, jp2, lbl, offsets)


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hirise_products")
    cache = {}

    def get(name) -> Product:
        if name not in cache:
            cache[name] = make_product(folder, name)
        return cache[name]

    return get


@pytest.fixture(params=sorted(PRODUCTS))
def product(request, products) -> Product:
    return products(request.param)


def open_gdal(path, **kwargs):
    ds = gdal.OpenEx(str(path), gdal.OF_RASTER, **kwargs)
    assert ds is not None, gdal.GetLastErrorMsg()
    return ds


def assert_equivalent_crs(got_wkt: str, want: osr.SpatialReference, gt):
    """Same Mars radius and the same projected coordinates (a polar stereographic CRS may come back as the
    equivalent variant B, so equality of WKT is too strict there; equirectangular ones must be IsSame)."""
    assert got_wkt, "no CRS"
    got = osr.SpatialReference(wkt=got_wkt)
    got.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    want = want.Clone()
    want.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    assert got.GetSemiMajor() == pytest.approx(want.GetSemiMajor(), rel=1e-12)
    assert got.GetSemiMinor() == pytest.approx(want.GetSemiMinor(), rel=1e-12)
    corners = helpers.window_ring_gdal(gt, 0, 0, WIDTH, HEIGHT)[:4]
    for a, b in ((got, want), (want, got)):
        transform = osr.CoordinateTransformation(a, b)
        for x, y in corners:
            assert transform.TransformPoint(x, y)[:2] == pytest.approx((x, y), abs=1e-6, rel=0)
    if want.GetAttrValue("PROJECTION") == "Equirectangular":
        assert got.IsSame(want)


def read_all_chunks(path, chunk_size, input_size):
    with RasterSource(path) as source:
        return [source.read_chunk(w, chunk_size, input_size) for w in chunk_grid(WIDTH, HEIGHT, chunk_size, chunk_size)]


# --- 1. the JP2 -------------------------------------------------------------------------------


def test_jp2_is_a_hirise_like_jpeg2000_with_resolution_levels(product):
    ds = open_gdal(product.jp2)
    assert ds.GetDriver().ShortName.startswith("JP2"), ds.GetDriver().ShortName
    band = ds.GetRasterBand(1)
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (WIDTH, HEIGHT, 1)
    assert gdal.GetDataTypeName(band.DataType) == "UInt16"
    assert band.GetMetadataItem("NBITS", "IMAGE_STRUCTURE") == "10"
    assert band.GetNoDataValue() is None  # DN 0 is undeclared, as in a downloaded RDR
    assert band.GetOverviewCount() > 0, "the JP2 exposes no resolution levels as overviews"
    for level in range(band.GetOverviewCount()):
        overview = band.GetOverview(level)
        assert (overview.XSize, overview.YSize) == (WIDTH >> (level + 1), HEIGHT >> (level + 1))
    assert not os.path.exists(product.jp2 + ".aux.xml")
    # The georeferencing is inside the JP2 (its GeoJP2 box), not in a sidecar.
    geojp2 = open_gdal(product.jp2, open_options=["GEOREF_SOURCES=GEOJP2"])
    assert geojp2.GetGeoTransform() == pytest.approx(product.raster.geotransform, rel=1e-15, abs=0)
    assert_equivalent_crs(geojp2.GetProjection(), mars_crs(product.spec), product.raster.geotransform)


def test_jp2_raster_source_keeps_size_geotransform_and_crs(product):
    with RasterSource(product.jp2) as source:
        info = source.info
    assert (info.width, info.height, info.band_count, info.bands, info.data_type) == (WIDTH, HEIGHT, 1, (1,), "UInt16")
    assert info.nodata is None
    assert info.image_id == product.name  # ".JP2" stripped, whatever its case
    assert info.geotransform == pytest.approx(product.raster.geotransform, rel=1e-15, abs=0)
    assert info.pixel_size == pytest.approx(MAP_SCALE)
    assert_equivalent_crs(info.crs_wkt, mars_crs(product.spec), info.geotransform)


def test_jp2_full_resolution_chunks_equal_the_geotiffs_lossless(product):
    """read_chunk at full scale (chunk = input, partial edge chunks included): the JP2 is bit-exact, and the
    undeclared DN-0 border is no-data in both."""
    for chunk_size in (CHUNK, 100):  # 100 px leaves partial edge chunks (padded with no-data)
        jp2 = read_all_chunks(product.jp2, chunk_size, chunk_size)
        tif = read_all_chunks(product.tif, chunk_size, chunk_size)
        for (dj, vj), (dt, vt) in zip(jp2, tif):
            np.testing.assert_array_equal(dj, dt)
            np.testing.assert_array_equal(vj, vt)
    with RasterSource(product.jp2) as source:
        data, valid = source.read(0, 0, WIDTH, HEIGHT, WIDTH, HEIGHT)
    np.testing.assert_array_equal(valid, product.raster.valid)
    np.testing.assert_array_equal(data, np.where(product.raster.valid, product.raster.bands[0], 0).astype(np.float32))


def test_jp2_decimated_reads_come_from_its_resolution_levels(product):
    """A read at 1/2 or 1/4 scale returns the JP2's wavelet resolution level itself (GDAL decodes fewer
    pixels), not an average of the full-resolution pixels: equal to the level, different from the mean."""
    ds = open_gdal(product.jp2)
    band = ds.GetRasterBand(1)
    full = band.ReadAsArray().astype(np.float64)
    with RasterSource(product.jp2) as source:
        for level in range(min(2, band.GetOverviewCount())):
            factor = 2 ** (level + 1)
            level_data = band.GetOverview(level).ReadAsArray().astype(np.float32)
            data, valid = source.read(0, 0, WIDTH, HEIGHT, WIDTH // factor, HEIGHT // factor)
            np.testing.assert_array_equal(data, level_data)
            np.testing.assert_array_equal(valid, level_data != 0)
            # The same picture at the same place: it tracks the block mean of the full-resolution pixels
            # (a one-pixel shift would drop the correlation to ~0.7), but is not that mean.
            mean = full.reshape(HEIGHT // factor, factor, WIDTH // factor, factor).mean(axis=(1, 3))
            inner = full.reshape(HEIGHT // factor, factor, WIDTH // factor, factor).min(axis=(1, 3)) > 0
            rows, cols = np.nonzero(inner)
            box = (slice(rows.min() + 4, rows.max() - 3), slice(cols.min() + 4, cols.max() - 3))
            interior = inner[box] & (data[box] > 0)
            assert np.corrcoef(data[box][interior], mean[box][interior])[0, 1] > 0.9
            assert not np.array_equal(data[valid & inner], mean[valid & inner].astype(np.float32))
        # The network-scale chunk read (64 px chunk at 32 px) is the level-1 window of each chunk.
        level_1 = band.GetOverview(0).ReadAsArray().astype(np.float32)
        for window in chunk_grid(WIDTH, HEIGHT, CHUNK, CHUNK):
            data, valid = source.read_chunk(window, CHUNK, INPUT)
            want = level_1[window.y_off // 2 : (window.y_off + window.height) // 2, window.x_off // 2 : (window.x_off + window.width) // 2]
            np.testing.assert_array_equal(data, want)
            np.testing.assert_array_equal(valid, want != 0)


def test_jp2_chunk_polygons_are_gdals_geotransform_corners(product):
    ds = open_gdal(product.jp2)
    gt = ds.GetGeoTransform()
    with RasterSource(product.jp2) as source:
        assert source.info.geotransform == tuple(gt)
    for chunk_size, stride in [(CHUNK, CHUNK), (100, 72)]:  # incl. an overlapping grid with partial edges
        windows = list(chunk_grid(WIDTH, HEIGHT, chunk_size, stride))
        assert len(windows) > 4
        for w in windows:
            helpers.assert_rings_equal(helpers.ring_of_geometry(chunk_wkt(gt, w)), helpers.window_ring_gdal(gt, w.x_off, w.y_off, w.width, w.height))


def test_jp2_keeps_the_same_chunks_as_the_geotiff(product):
    """The DN-0 rule drops the border chunks of the JP2 as of the GeoTIFF, at the network's scale too."""
    for input_size in (CHUNK, INPUT):
        with RasterSource(product.jp2) as jp2, RasterSource(product.tif) as tif:
            kept_jp2 = [s.window.chunk_id for s in iter_chunks(jp2, CHUNK, CHUNK, 0.95, input_size)]
            kept_tif = [s.window.chunk_id for s in iter_chunks(tif, CHUNK, CHUNK, 0.95, input_size)]
        assert kept_jp2 == kept_tif
        assert 0 < len(kept_jp2) < (WIDTH // CHUNK) * (HEIGHT // CHUNK)


# --- 2. the PDS3 label ----------------------------------------------------------------------------


def test_label_opens_with_gdals_pds_driver_and_reads_the_jp2(product):
    require_driver("PDS")
    ds = open_gdal(product.lbl)
    assert ds.GetDriver().ShortName == "PDS"
    assert os.path.basename(product.jp2) in [os.path.basename(f) for f in ds.GetFileList()]
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (WIDTH, HEIGHT, 1)
    band = ds.GetRasterBand(1)
    assert gdal.GetDataTypeName(band.DataType) == "UInt16"
    assert band.GetOverviewCount() == open_gdal(product.jp2).GetRasterBand(1).GetOverviewCount() > 0


def test_label_geotransform_is_what_the_label_says(product):
    """MAP_SCALE and the projection offsets of the label, by GDAL's PDS3 convention; and they put the image
    exactly where the JP2's own GeoJP2 box does."""
    require_driver("PDS")
    gt = open_gdal(product.lbl).GetGeoTransform()
    text = open(product.lbl, encoding="ascii").read()

    def keyword(name):
        return float(re.search(rf"^\s*{name}\s*=\s*([-+0-9.eE]+)", text, re.M).group(1))

    assert keyword("MAP_SCALE") == MAP_SCALE
    assert (keyword("SAMPLE_PROJECTION_OFFSET"), keyword("LINE_PROJECTION_OFFSET")) == (product.sample_offset, product.line_offset)
    want = geotransform_of_label(keyword("SAMPLE_PROJECTION_OFFSET"), keyword("LINE_PROJECTION_OFFSET"), keyword("MAP_SCALE"))
    assert gt == pytest.approx(want, rel=1e-15, abs=0)
    assert gt == pytest.approx(open_gdal(product.jp2).GetGeoTransform(), rel=1e-15, abs=0)


def test_label_crs_is_what_the_label_says_and_the_engine_keeps_it(product):
    require_driver("PDS")
    spec = product.spec
    with RasterSource(product.lbl) as source:
        info = source.info
    assert info.image_id == product.name
    assert info.geotransform == tuple(open_gdal(product.lbl).GetGeoTransform())
    srs = osr.SpatialReference(wkt=info.crs_wkt)
    assert srs.IsProjected()
    assert srs.GetSemiMajor() == srs.GetSemiMinor() == pytest.approx(spec["radius_km"] * 1000.0, rel=1e-12)  # A_AXIS_RADIUS <KM>
    if spec["projection"] == "EQUIRECTANGULAR":
        assert srs.GetAttrValue("PROJECTION") == "Equirectangular"
        assert srs.GetProjParm(osr.SRS_PP_STANDARD_PARALLEL_1) == spec["center_latitude"]
        assert srs.GetProjParm(osr.SRS_PP_CENTRAL_MERIDIAN) == spec["center_longitude"]
    else:
        assert srs.GetAttrValue("PROJECTION") == "Polar_Stereographic"
        assert srs.GetProjParm(osr.SRS_PP_LATITUDE_OF_ORIGIN) == spec["center_latitude"]
        assert srs.GetProjParm(osr.SRS_PP_CENTRAL_MERIDIAN) == spec["center_longitude"]
    # The same CRS as the JP2's GeoJP2 box: chunk polygons from the label and from the JP2 coincide.
    assert_equivalent_crs(info.crs_wkt, mars_crs(spec), info.geotransform)
    for w in chunk_grid(WIDTH, HEIGHT, CHUNK, CHUNK):
        helpers.assert_rings_equal(helpers.ring_of_geometry(chunk_wkt(info.geotransform, w)), helpers.window_ring_gdal(product.raster.geotransform, w.x_off, w.y_off, w.width, w.height))


def test_label_pixels_are_the_jp2s(product):
    require_driver("PDS")
    for chunk_size, input_size in [(CHUNK, CHUNK), (CHUNK, INPUT), (100, 100)]:
        for (dl, vl), (dj, vj) in zip(read_all_chunks(product.lbl, chunk_size, input_size), read_all_chunks(product.jp2, chunk_size, input_size)):
            np.testing.assert_array_equal(dl, dj)
            np.testing.assert_array_equal(vl, vj)
    with RasterSource(product.lbl) as source:
        data, valid = source.read(0, 0, WIDTH, HEIGHT, WIDTH, HEIGHT)
    np.testing.assert_array_equal(data, np.where(product.raster.valid, product.raster.bands[0], 0).astype(np.float32))


def test_a_label_reads_its_jp2s_resolution_levels_as_the_jp2_does(products, tmp_path):
    """Through the label (the PDS driver), the JP2's levels of a smooth image were judged pyramids that pick
    pixels: skipped, so a whole RDR was decoded at full resolution, with the wrong fix in the log."""
    require_driver("PDS")
    product = products(EQUIRECTANGULAR_ID)
    smooth = (300 + 200 * np.sin(np.arange(WIDTH) / 20.0))[None, :].repeat(HEIGHT, axis=0).astype(np.uint16)
    tif = helpers.write_geotiff(tmp_path / "smooth.tif", smooth, geotransform=product.raster.geotransform, crs_wkt=mars_crs(product.spec).ExportToWkt())
    jp2 = str(tmp_path / f"{product.name}.JP2")
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        gdal.Translate(jp2, tif, format="JP2OpenJPEG", creationOptions=JP2_OPTIONS)
    finally:
        gdal.PopErrorHandler()
    lbl = write_label(tmp_path / f"{product.name}.LBL", product.name, product.spec, product.sample_offset, product.line_offset)
    with RasterSource(jp2) as from_jp2, RasterSource(lbl) as from_label:
        assert from_label.reads_resolution_levels and from_label.info.overviews_skipped == ""
        window = next(iter(chunk_grid(WIDTH, HEIGHT, CHUNK, CHUNK)))
        np.testing.assert_array_equal(from_label.read_chunk(window, CHUNK, INPUT)[0], from_jp2.read_chunk(window, CHUNK, INPUT)[0])


def test_a_jp2_without_georeferencing_is_told_to_be_given_as_its_label(products, tmp_path):
    """An RDR's JP2 copied without its GeoJP2 box was called an EDR, though its label beside it holds the map projection."""
    require_driver("PDS")
    product = products(EQUIRECTANGULAR_ID)
    jp2 = str(tmp_path / f"{product.name}.JP2")
    gdal.Translate(jp2, product.jp2, format="JP2OpenJPEG", creationOptions=JP2_OPTIONS + ["GeoJP2=NO", "GMLJP2=NO"])
    if os.path.exists(jp2 + ".aux.xml"):
        os.remove(jp2 + ".aux.xml")  # where GDAL kept the georeferencing the JP2 was written without
    lbl = write_label(tmp_path / f"{product.name}.LBL", product.name, product.spec, product.sample_offset, product.line_offset)
    with pytest.raises(RasterError) as error:
        RasterSource(jp2)
    assert f"but its PDS label beside it, {lbl}, holds its map projection: give that label as the input instead" in str(error.value)
    with RasterSource(lbl) as source:
        assert source.info.crs_wkt


def test_label_without_map_projection_is_refused_as_not_map_projected(products, tmp_path):
    """GDAL's PDS driver takes the georeferencing from the label only: without IMAGE_MAP_PROJECTION it reports
    neither CRS nor geotransform, although the JP2 it opens has a GeoJP2 box. The engine then says so, both at
    once, instead of drawing chunks nowhere."""
    require_driver("PDS")
    product = products(EQUIRECTANGULAR_ID)
    shutil.copyfile(product.jp2, tmp_path / os.path.basename(product.jp2))
    lbl = write_label(tmp_path / f"{product.name}.LBL", product.name, product.spec, product.sample_offset, product.line_offset, map_projection=False)
    ds = open_gdal(lbl)
    assert ds.GetDriver().ShortName == "PDS" and ds.GetProjection() == ""
    with pytest.raises(RasterError, match="has neither a coordinate reference system nor a geotransform") as error:
        RasterSource(lbl)
    assert lbl in str(error.value) and "Give the map-projected product (an RDR)" in str(error.value)
    with RasterSource(lbl, require_georeferencing=False) as source:  # the pixels are still readable (e.g. for a summary)
        assert (source.info.width, source.info.height) == (WIDTH, HEIGHT)


# --- 3. the worker on HiRISE formats ---------------------------------------------------------------


def worker_has_drivers(worker_python, *names):
    run = helpers.run_worker_snippet(worker_python, "import sys\nfrom osgeo import gdal\nprint(' '.join(n for n in sys.argv[1:] if gdal.GetDriverByName(n) is None))", *names)
    assert run.returncode == 0, run.stderr
    missing = run.stdout.split()
    if missing:
        pytest.skip(f"the worker's GDAL lacks the {', '.join(missing)} driver(s)")


def test_detect_on_a_jp2_through_the_worker(products, tiny_model, worker_python, tmp_path):
    """`python -m model detect X.JP2` with the tiny model (64 px chunks read at 32 px, i.e. from the JP2's
    first resolution level): exit 0, the chunks the engine keeps, in the JP2's CRS, on GDAL's corners."""
    product = products(EQUIRECTANGULAR_ID)
    worker_has_drivers(worker_python, "JP2OpenJPEG")
    gpkg = tmp_path / "chunks.gpkg"
    run = helpers.run_worker(worker_python, "detect", product.jp2, "--model", tiny_model.path, "--out", gpkg, "--batch-size", 8).check()
    result = run.result
    assert result["summary"]["image_id"] == product.name
    with RasterSource(product.jp2) as source:
        want_ids = [s.window.chunk_id for s in iter_chunks(source, CHUNK, CHUNK, 0.95, INPUT)]
    got = {c["chunk_id"]: c for c in result["chunks"]}
    assert sorted(got) == want_ids and want_ids
    assert all(0.0 <= c["probability"] <= 1.0 for c in got.values())

    jp2 = open_gdal(product.jp2)
    gt, srs = jp2.GetGeoTransform(), jp2.GetSpatialRef()
    vector = ogr.Open(str(gpkg))
    for name in ("chunks", "summary"):
        assert vector.GetLayerByName(name).GetSpatialRef().IsSame(srs), f"the {name} layer lost the JP2's CRS"
    layer = vector.GetLayerByName("chunks")
    assert layer.GetFeatureCount() == len(got)
    for feature in layer:
        c = got[feature.GetField("chunk_id")]
        helpers.assert_rings_equal(helpers.ring_of_geometry(feature.GetGeometryRef().ExportToWkt()), helpers.window_ring_gdal(gt, c["x_off"], c["y_off"], c["width"], c["height"]))


def test_chunk_grid_of_a_label_through_the_worker(products, worker_python, tmp_path):
    """`python -m model chunk X.LBL --out`: the worker reads the label, and the polygons carry the label's CRS."""
    require_driver("PDS")
    product = products(POLAR_ID)
    worker_has_drivers(worker_python, "JP2OpenJPEG", "PDS")
    out = tmp_path / "chunks.gpkg"
    run = helpers.run_worker(worker_python, "chunk", product.lbl, "--chunk-size", CHUNK, "--out", out).check()
    reported = {c["chunk_id"]: c for c in run.result["chunks"]}
    with RasterSource(product.lbl) as source:
        assert sorted(reported) == [s.window.chunk_id for s in iter_chunks(source, CHUNK, CHUNK, 0.95)]
        crs_wkt, gt = source.info.crs_wkt, source.info.geotransform
    vector = ogr.Open(str(out))  # kept alive while its layer is read (the bindings would crash otherwise)
    layer = vector.GetLayerByName("chunks")
    assert_equivalent_crs(layer.GetSpatialRef().ExportToWkt(), mars_crs(product.spec), gt)
    assert layer.GetSpatialRef().IsSame(osr.SpatialReference(wkt=crs_wkt))
    assert layer.GetFeatureCount() == len(reported) > 0
    for feature in layer:
        w = reported[feature.GetField("chunk_id")]
        helpers.assert_rings_equal(helpers.ring_of_geometry(feature.GetGeometryRef().ExportToWkt()), helpers.window_ring_gdal(gt, w["x_off"], w["y_off"], w["width"], w["height"]))
