"""model/catalog.py: the PDS cumulative index (a generated RDRCUMINDEX.LBL/.TAB pair in the real
format), the real CSV index and its bundled extract, the ODE client against a local server on
127.0.0.1 answering in ODE's JSON shape, the query's windows (Ls and local time wrap), drawn areas
across 0/360, and the report."""

import gzip
import json
import re
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from helpers import LocalWebServer, send_body
from model import catalog, ode, productindex, products
from model.products import Query

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "resources" / "index" / "hirise_rdr_paper_window.csv.gz"

# --- a generated RDRCUMINDEX.LBL/.TAB pair --------------------------------------------------------

# (name, data type, bytes): a subset of the real index's columns, in its layout: quoted
# CHARACTER fields, comma-separated, fixed width, CRLF rows.
TAB_COLUMNS = [
    ("VOLUME_ID", "CHARACTER", 10),
    ("FILE_NAME_SPECIFICATION", "CHARACTER", 72),
    ("INSTRUMENT_HOST_ID", "CHARACTER", 3),
    ("OBSERVATION_ID", "CHARACTER", 15),
    ("PRODUCT_ID", "CHARACTER", 21),
    ("ORBIT_NUMBER", "ASCII_INTEGER", 6),
    ("MISSION_PHASE_NAME", "CHARACTER", 24),
    ("START_TIME", "TIME", 23),
    ("EMISSION_ANGLE", "ASCII_REAL", 8),
    ("INCIDENCE_ANGLE", "ASCII_REAL", 8),
    ("PHASE_ANGLE", "ASCII_REAL", 8),
    ("SOLAR_LONGITUDE", "ASCII_REAL", 8),
    ("LOCAL_TIME", "ASCII_REAL", 8),
    ("MINIMUM_LATITUDE", "ASCII_REAL", 10),
    ("MAXIMUM_LATITUDE", "ASCII_REAL", 10),
    ("MINIMUM_LONGITUDE", "ASCII_REAL", 10),
    ("MAXIMUM_LONGITUDE", "ASCII_REAL", 10),
    ("MAP_SCALE", "ASCII_REAL", 8),
    ("CORNER1_LATITUDE", "ASCII_REAL", 10),
    ("CORNER1_LONGITUDE", "ASCII_REAL", 10),
    ("CORNER2_LATITUDE", "ASCII_REAL", 10),
    ("CORNER2_LONGITUDE", "ASCII_REAL", 10),
    ("CORNER3_LATITUDE", "ASCII_REAL", 10),
    ("CORNER3_LONGITUDE", "ASCII_REAL", 10),
    ("CORNER4_LATITUDE", "ASCII_REAL", 10),
    ("CORNER4_LONGITUDE", "ASCII_REAL", 10),
]

# observation, phase, orbit, time, ls, incidence, local time, scale, corners (lon, lat) x 4
TAB_OBSERVATIONS = [
    ("ESP_011605_1170", "EXTENDED SCIENCE PHASE", 11605, "2009-01-21T10:00:00.000", 192.6, 72.0, 15.2, 0.25,
     [(53.0, -62.9), (53.7, -62.9), (53.7, -62.2), (53.0, -62.2)]),  # -62.55: in -70..-40, not -60..-40
    ("ESP_020000_1300", "EXTENDED SCIENCE PHASE", 20000, "2010-11-02T10:00:00.000", 150.0, 65.0, 14.5, 0.5,
     [(359.7, -50.3), (0.4, -50.3), (0.4, -49.7), (359.7, -49.7)]),  # crosses the prime meridian
    ("PSP_005000_1400", "PRIMARY SCIENCE PHASE", 5000, "2007-08-20T10:00:00.000", 175.0, 60.0, 15.0, 0.25,
     [(120.0, -45.3), (120.4, -45.3), (120.4, -44.8), (120.0, -44.8)]),
    ("ESP_030000_1350", "EXTENDED SCIENCE PHASE", 30000, "2012-12-24T10:00:00.000", 355.0, 55.0, 15.5, 1.0,
     [(200.0, -50.2), (200.3, -50.2), (200.3, -49.8), (200.0, -49.8)]),  # Ls 355: only in a wrapping window
]


def _format(kind, value, width):
    if kind in ("CHARACTER", "TIME"):
        return f'"{str(value):<{width}}"'
    if isinstance(value, float):
        return f"{value:{width}.4f}"
    return f"{value:{width}d}"


def write_pds_index(folder: Path, lowercase_table=False):
    rows = []
    for obs, phase, orbit, time, ls, inc, lt, scale, corners in TAB_OBSERVATIONS:
        orbit_folder = f"ORB_{orbit // 100 * 100:06d}_{orbit // 100 * 100 + 99:06d}"
        for kind in ("RED", "COLOR"):
            lats = [c[1] for c in corners]
            unwrapped = products.unwrap_ring(corners)
            values = {
                "VOLUME_ID": "MROHR_0001", "INSTRUMENT_HOST_ID": "MRO", "OBSERVATION_ID": obs, "PRODUCT_ID": f"{obs}_{kind}",
                "FILE_NAME_SPECIFICATION": f"RDR/{obs[:3]}/{orbit_folder}/{obs}/{obs}_{kind}.LBL",
                "ORBIT_NUMBER": orbit, "MISSION_PHASE_NAME": phase, "START_TIME": time, "EMISSION_ANGLE": 3.5, "INCIDENCE_ANGLE": inc,
                "PHASE_ANGLE": inc + 2.0, "SOLAR_LONGITUDE": ls, "LOCAL_TIME": lt, "MAP_SCALE": scale,
                "MINIMUM_LATITUDE": min(lats), "MAXIMUM_LATITUDE": max(lats),
                "MINIMUM_LONGITUDE": min(c[0] for c in unwrapped) % 360.0, "MAXIMUM_LONGITUDE": max(c[0] for c in unwrapped) % 360.0,
            }
            for i, (lon, lat) in enumerate(corners, 1):
                values[f"CORNER{i}_LATITUDE"], values[f"CORNER{i}_LONGITUDE"] = lat, lon
            fields = [_format(kind_, values[name], width) for name, kind_, width in TAB_COLUMNS]
            assert all(len(f) == w + (2 if f.startswith('"') else 0) for f, (_, _, w) in zip(fields, TAB_COLUMNS)), fields
            rows.append(",".join(fields) + "\r\n")
    row_bytes = len(rows[0])
    assert all(len(r) == row_bytes for r in rows)
    label = [
        "PDS_VERSION_ID = PDS3", "RECORD_TYPE = FIXED_LENGTH", f"RECORD_BYTES = {row_bytes}", f"FILE_RECORDS = {len(rows)}",
        '^INDEX_TABLE = "RDRCUMINDEX.TAB"', "DATA_SET_ID = \"MRO-M-HIRISE-3-RDR-V1.1\"", "OBJECT = INDEX_TABLE",
        "  INTERCHANGE_FORMAT = ASCII", f"  ROWS = {len(rows)}", f"  COLUMNS = {len(TAB_COLUMNS)}", f"  ROW_BYTES = {row_bytes}",
        "  INDEX_TYPE = CUMULATIVE",
    ]
    start = 1
    for number, (name, kind, width) in enumerate(TAB_COLUMNS, 1):
        quoted = kind in ("CHARACTER", "TIME")
        label += [
            "  OBJECT = COLUMN", f"    COLUMN_NUMBER = {number}", f"    NAME = {name}", f"    DATA_TYPE = {kind}",
            f"    START_BYTE = {start + (1 if quoted else 0)}", f"    BYTES = {width}",
            '    DESCRIPTION = "A description that spans', '      two lines, as the real label\'s do."', "  END_OBJECT = COLUMN",
        ]
        start += width + (2 if quoted else 0) + 1
    label += ["END_OBJECT = INDEX_TABLE", "END"]
    (folder / "RDRCUMINDEX.LBL").write_text("\r\n".join(label) + "\r\n", encoding="ascii")
    (folder / ("rdrcumindex.tab" if lowercase_table else "RDRCUMINDEX.TAB")).write_text("".join(rows), encoding="ascii", newline="")
    return folder / "RDRCUMINDEX.LBL"


def test_label_columns_parsed(tmp_path):
    layout = productindex.parse_index_label(write_pds_index(tmp_path).read_text())
    assert layout.table_file == "RDRCUMINDEX.TAB" and layout.rows == 8
    assert [c.name for c in layout.columns] == [c[0] for c in TAB_COLUMNS]
    assert (layout.columns[0].start_byte, layout.columns[0].nbytes) == (2, 10)
    assert (layout.columns[1].start_byte, layout.columns[1].nbytes) == (15, 72)


def test_pds_index_paper_window_red(tmp_path):
    label = write_pds_index(tmp_path, lowercase_table=True)
    result = catalog.find(str(label), Query())
    ids = [p.product_id for p in result.products]
    assert ids == ["ESP_020000_1300_RED", "PSP_005000_1400_RED"]
    p = result.products[1]
    assert p.jp2_url == "https://hirise-pds.lpl.arizona.edu/PDS/RDR/PSP/ORB_005000_005099/PSP_005000_1400/PSP_005000_1400_RED.JP2"
    assert p.lbl_url.endswith("PSP_005000_1400_RED.LBL") and p.map_scale == 0.25 and p.local_time == 15.0
    assert p.year == 2007 and p.orbit_number == 5000 and p.mission_phase == "PRIMARY SCIENCE PHASE"
    # The corners make the footprint; one across 0/360 is unwrapped eastward past 360.
    crossing = result.products[0]
    assert crossing.ring() == [(359.7, -50.3), (360.4, -50.3), (360.4, -49.7), (359.7, -49.7), (359.7, -50.3)]
    assert crossing.centre_longitude == pytest.approx(0.05)
    assert result.scanned == 8
    # The TAB given instead of the LBL finds its label.
    assert [x.product_id for x in catalog.find(str(tmp_path / "rdrcumindex.tab"), Query()).products] == ids


def test_pds_index_filters(tmp_path):
    label = str(write_pds_index(tmp_path))
    ids = lambda **kw: [p.product_id for p in catalog.find(label, Query(**kw)).products]  # noqa: E731
    assert ids(latitude_min=-70) == ["ESP_011605_1170_RED", "ESP_020000_1300_RED", "PSP_005000_1400_RED"]
    # latitudes given north to south are the same band, and the query's echo says it took them so
    assert ids(latitude_min=-40, latitude_max=-70) == ids(latitude_min=-70, latitude_max=-40)
    assert "centre latitude -70 to -40 (given from -40 to -70: taken south to north)" in catalog.describe_query(Query(latitude_min=-40, latitude_max=-70))
    assert "given from" not in catalog.describe_query(Query(latitude_min=-70, latitude_max=-40))
    assert ids(product_type="COLOR") == ["ESP_020000_1300_COLOR", "PSP_005000_1400_COLOR"]
    assert ids(ls_start=350, ls_end=10) == ["ESP_030000_1350_RED"]  # wraps through 360
    assert ids(ls_start=None, ls_end=None, incidence_min=58, incidence_max=70) == ["ESP_020000_1300_RED", "PSP_005000_1400_RED"]
    # an incidence window given high to low had found nothing without a word; it does not wrap, so it is the band between
    assert ids(ls_start=None, ls_end=None, incidence_min=70, incidence_max=58) == ["ESP_020000_1300_RED", "PSP_005000_1400_RED"]
    assert "incidence 58 to 70 (given from 70 to 58: taken low to high)" in catalog.describe_query(Query(incidence_min=70, incidence_max=58))
    assert ids(local_time_start=14.9, local_time_end=15.6, ls_start=None, ls_end=None) == ["ESP_030000_1350_RED", "PSP_005000_1400_RED"]
    assert ids(local_time_start=15.4, local_time_end=14.6, ls_start=None, ls_end=None) == ["ESP_020000_1300_RED", "ESP_030000_1350_RED"]
    assert ids(scale_min=0.4, scale_max=0.6) == ["ESP_020000_1300_RED"]


def test_pds_index_errors(tmp_path):
    with pytest.raises(products.CatalogError, match="needs its label"):
        (tmp_path / "X.TAB").write_text("")
        catalog.find(str(tmp_path / "X.TAB"), Query())
    (tmp_path / "Y.LBL").write_text("PDS_VERSION_ID = PDS3\nEND\n")
    with pytest.raises(products.CatalogError, match="no table columns"):
        catalog.find(str(tmp_path / "Y.LBL"), Query())
    with pytest.raises(products.CatalogError, match="does not exist"):
        catalog.find(str(tmp_path / "nothing.csv"), Query())
    with pytest.raises(products.CatalogError, match="RED or COLOR"):
        Query(product_type="IRB")
    with pytest.raises(products.CatalogError, match="outside 0 to 360"):
        Query(ls_start=-10)


def test_a_cut_or_corrupted_compressed_index_is_named_damaged(tmp_path):
    """gzip finds the damage only mid-read (EOFError, a CRC error): named as the index's, with the fix."""
    whole = BUNDLED.read_bytes()
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(products.CatalogError, match=rf"The index {cut} is damaged \(.*\): it was probably cut short .* Download it again."):
        catalog.find(str(cut), Query())
    flipped = bytearray(whole)
    flipped[-6] ^= 0xFF  # inside the trailing CRC
    corrupt = tmp_path / "corrupt.csv.gz"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(products.CatalogError, match=rf"The index {corrupt} is damaged \(CRC check failed"):
        catalog.find(str(corrupt), Query())


# --- areas ---------------------------------------------------------------------------------------


def test_areas_across_the_prime_meridian(tmp_path):
    label = str(write_pds_index(tmp_path))
    ids = lambda *areas: [p.product_id for p in catalog.find(label, Query(areas=areas)).products]  # noqa: E731
    square = lambda w, e, s, n: [(w, s), (e, s), (e, n), (w, n)]  # noqa: E731
    assert ids(square(-1, 1, -51, -49)) == ["ESP_020000_1300_RED"]  # -180..180 domain
    assert ids(square(359.9, 360.5, -51, -49)) == ["ESP_020000_1300_RED"]  # 0..360, past 360
    assert ids(square(0.1, 2, -51, -49)) == ["ESP_020000_1300_RED"]  # only the footprint's part east of 0
    assert ids(square(-3, -0.5, -51, -49)) == []
    assert ids(square(119, 121, -46, -44)) == ["PSP_005000_1400_RED"]
    assert ids(square(-241, -239, -46, -44)) == ["PSP_005000_1400_RED"]  # 120 E written as -240
    assert ids(square(119, 121, -46, -44), square(-1, 1, -51, -49)) == ["ESP_020000_1300_RED", "PSP_005000_1400_RED"]
    # An area inside a footprint (no vertex of the footprint inside it, no edges crossing).
    assert ids(square(120.1, 120.2, -45.1, -45.0)) == ["PSP_005000_1400_RED"]


def test_rings_intersect_and_bounding_box():
    foot = [(355.0, -50.0), (365.0, -50.0), (365.0, -49.0), (355.0, -49.0)]
    assert products.rings_intersect(foot, [(2, -49.5), (3, -49.5), (3, -49.4)])
    assert not products.rings_intersect(foot, [(6, -49.5), (7, -49.5), (7, -49.4)])
    q = Query(areas=[[(-10, -50), (10, -50), (10, -45), (-10, -45)]])
    assert q.bounding_box() == (-50, -45, [(350.0, 360.0), (0.0, 10.0)])
    assert Query().bounding_box() == (-60.0, -40.0, [(0.0, 360.0)])
    assert Query(areas=[[(0, -39.95), (5, -39.95), (5, -30)]]).bounding_box()[2] == []  # north of the band: no query at all


def test_mars_years():
    assert products.mars_year("2006-09-29T00:00:00") == 28  # MRO's science phase began in MY 28
    assert products.mars_year("2007-12-09T12:00:00", 0.2) == 29
    assert products.mars_year("2007-12-07T12:00:00", 359.5) == 28
    assert products.mars_year("2007-12-11T12:00:00", 359.9) == 28  # Ls settles the boundary days
    assert products.mars_year("2022-12-26T00:00:00", 0.1) == 37
    assert products.mars_year("") is None


# --- the real CSV index -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_index(shared_data):
    path = shared_data / "hirise-index" / "hirise_rdr_index.csv.gz"
    if not path.is_file():
        pytest.skip(f"the real HiRISE index CSV is absent from the shared data ({path})")
    return path


def test_real_index_paper_window_counts(real_index, shared_data):
    themes = shared_data / "hirise-index" / "hirise_themes.csv.gz"
    result = catalog.find(str(real_index), Query(), themes_path=str(themes))
    assert result.scanned == 83672 and result.without_metadata == 2193
    counts = catalog.window_counts(result.products)
    # Measured on the real index (README): the paper's "roughly 1,400 candidate images".
    assert counts["total"] == {"products": 1409, "observations": 1409}
    assert counts["solar_longitude"] == {"140-150": 111, "150-160": 226, "160-170": 292, "170-180": 311, "180-190": 259, "190-200": 210}
    assert counts["year"]["2016"] == 316 and counts["mars_year"]["MY33"] == 316
    assert sum(counts["year"].values()) == 1409
    for p in result.products:
        assert -60 <= p.centre_latitude <= -40 and 140 <= p.solar_longitude <= 200
        assert p.jp2_url.endswith(p.product_id + ".JP2") and p.product_id.endswith("_RED")
        assert p.lbl_url == p.jp2_url[:-4] + ".LBL"
    assert sum(1 for p in result.products if p.themes) > 1000
    wide = catalog.find(str(real_index), Query(latitude_min=-70))
    assert len(wide.products) == 1660
    color = catalog.find(str(real_index), Query(product_type="COLOR"))
    assert {p.observation_id for p in color.products} == {p.observation_id for p in result.products}
    assert all(p.jp2_url.endswith("_COLOR.JP2") for p in color.products)


def test_products_that_circle_the_pole_are_found_at_every_longitude_round_it(real_index):
    """Two north-polar rows run from -180 (or -179.99) to 314-354 E, the index's way of saying all longitudes: their footprints
    were 180-354 E only, and an area on their ground at 90-100 E found neither."""
    area = [(90.0, 89.8), (100.0, 89.8), (100.0, 89.9), (90.0, 89.9)]
    found = catalog.find(str(real_index), Query(product_type="COLOR", latitude_min=80, latitude_max=90, ls_start=0, ls_end=360, areas=[area]))
    assert sorted(p.product_id for p in found.products) == ["PSP_010545_2700_COLOR", "PSP_010586_2700_COLOR"]
    assert all([lon for lon, _ in p.ring()] == [0, 90, 180, 270, 360, 360, 270, 180, 90, 0, 0] for p in found.products)


def test_north_turn_follows_hirise_maps_and_the_index_north_azimuth(real_index):
    """HiRISE maps a product poleward of 65 deg in polar stereographic on the 0 meridian: north turns from up by
    its longitude. The rule gives the index's own NORTH_AZIMUTH (270 for north up) for every product centred
    between 40 and 70 deg S but one; the paper's wide window holds 84 products turned more than 45 deg."""
    import csv

    from model.orientation import hirise_north_turn

    assert hirise_north_turn(-50.0, 150.0) == 0.0
    assert hirise_north_turn(-67.0, 150.0) == 150.0 and hirise_north_turn(-67.0, 240.0) == -120.0
    assert hirise_north_turn(83.5, 346.2) == pytest.approx(13.8)  # the north polar cube of hirise-georef (its CRS: 13.77)
    agree = disagree = 0
    with gzip.open(real_index, "rt", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            try:
                south, north = float(row["MINIMUM_LATITUDE"]), float(row["MAXIMUM_LATITUDE"])
                west, east = products.unwrapped_span(float(row["WESTERNMOST_LONGITUDE"]), float(row["EASTERNMOST_LONGITUDE"]))
                azimuth = float(row["NORTH_AZIMUTH"])
            except ValueError:
                continue
            if -70 <= (south + north) / 2 <= -40:
                off = (hirise_north_turn((south + north) / 2, ((west + east) / 2) % 360) - (azimuth - 270) + 180) % 360 - 180
                agree, disagree = agree + (abs(off) < 0.01), disagree + (abs(off) >= 0.01)
    assert (agree, disagree) == (9588, 1)
    wide = catalog.find(str(real_index), Query(latitude_min=-70))
    assert sum(abs(p.north_turn) > 45 for p in wide.products) == 84
    assert "84 of them are polar stereographic maps whose north turns more than 45 deg from up" in " ".join(catalog.report_lines(wide, Query(latitude_min=-70)))
    assert not any("polar stereographic" in line for line in catalog.report_lines(catalog.find(str(real_index), Query()), Query()))


def test_real_index_themes_and_prime_meridian(real_index, shared_data):
    themes = str(shared_data / "hirise-index" / "hirise_themes.csv.gz")
    seasonal = catalog.find(str(real_index), Query(themes=("seasonal processes",)), themes_path=themes).products
    assert 0 < len(seasonal) < 1409 and all("Seasonal Processes" in p.themes for p in seasonal)
    with pytest.raises(products.CatalogError, match="no themes file"):
        catalog.find(str(real_index), Query(themes=("Polar Geology",)))
    with pytest.raises(products.CatalogError, match="no MAP_SCALE"):
        catalog.find(str(real_index), Query(scale_min=0.2, scale_max=0.3))
    # Footprints the index writes with a negative western longitude (-4.7 to 0.07) cross 0/360.
    everything = Query(latitude_min=None, latitude_max=None, ls_start=None, ls_end=None, product_type="COLOR",
                       areas=[[(-0.5, -90), (0.5, -90), (0.5, 90), (-0.5, 90)]])
    found = catalog.find(str(real_index), everything).products
    crossing = [p for p in found if p.westernmost_longitude < 0 < p.easternmost_longitude < p.westernmost_longitude + 360]  # not those circling a pole
    assert crossing, "the real index has footprints across the prime meridian"
    for p in crossing:
        ring = p.ring()
        assert 0 <= min(x for x, _ in ring) < 360 < max(x for x, _ in ring)


def test_bundled_extract_is_real_and_small(real_index):
    assert BUNDLED.stat().st_size < 60_000
    real_rows = set(gzip.open(real_index, "rt", encoding="utf-8-sig").read().splitlines()[1:])
    bundled = gzip.open(BUNDLED, "rt", encoding="utf-8-sig").read().splitlines()
    assert 200 <= len(bundled) - 1 <= 400
    assert all(line in real_rows for line in bundled[1:])
    result = catalog.find(str(BUNDLED), Query())
    assert len(result.products) == 235


# --- ODE ------------------------------------------------------------------------------------------

# ODE's JSON as we know it from its REST documentation (written without access to the live service):
# {"ODEResults": {"Status": "Success", "Products": {"Product": [ {...}, ... ]}}}, a single product as a
# dict rather than a list, and "No Products Found" in place of Products when a page is empty.


def ode_product(obs, kind, lat, lon, ls, inc=60.0, scale=0.25, kbytes=123456):
    base = f"https://hirise-pds.lpl.arizona.edu/PDS/RDR/{obs[:3]}/ORB_0/{obs}/{obs}_{kind}"
    return {
        "pdsid": f"{obs}_{kind}", "ihid": "MRO", "iid": "HIRISE", "pt": "RDRV11", "Data_Set_Id": "MRO-M-HIRISE-3-RDR-V1.1",
        "Center_latitude": str(lat), "Center_longitude": str(lon), "Minimum_latitude": str(lat - 0.3), "Maximum_latitude": str(lat + 0.3),
        "Westernmost_longitude": str((lon - 0.2) % 360), "Easternmost_longitude": str((lon + 0.2) % 360),
        "Emission_angle": "2.1", "Incidence_angle": str(inc), "Phase_angle": "61.0", "Solar_longitude": str(ls), "Map_scale": str(scale),
        "UTC_start_time": "2016-05-01T10:00:00.000", "Observation_time": "2016-05-01T10:00:00.000",
        "LabelURL": base + ".LBL",
        "Product_files": {"Product_file": [
            {"Description": "PRODUCT DATA FILE", "FileName": f"{obs}_{kind}.JP2", "KBytes": str(kbytes), "Type": "Product", "URL": base + ".JP2"},
            {"Description": "PRODUCT LABEL FILE", "FileName": f"{obs}_{kind}.LBL", "KBytes": "12", "Type": "Label", "URL": base + ".LBL"},
        ]},
    }


class OdeServer(LocalWebServer):
    """ODE's REST API over ``products``, paged by its limit and offset."""

    def __init__(self, products):
        self.products = products
        self.requests = []
        super().__init__(self.answer)
        self.url = f"http://127.0.0.1:{self.port}/live2/"

    def answer(self, request):
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(request.path).query))
        self.requests.append(params)
        if "force_error" in params:
            body = {"ODEResults": {"Status": "ERROR", "Error": "iid required"}}
        else:
            west, east = float(params["westernlon"]), float(params["easternlon"])
            south, north = float(params["minlat"]), float(params["maxlat"])
            hits = [p for p in self.products if west <= float(p["Center_longitude"]) <= east and south <= float(p["Center_latitude"]) <= north]
            offset, limit = int(params["offset"]), int(params["limit"])
            page = hits[offset: offset + limit]
            products = "No Products Found" if not page else {"Product": page[0] if len(page) == 1 else page}
            body = {"ODEResults": {"Status": "Success", "Products": products}}
        send_body(request, json.dumps(body).encode(), "application/json")


NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def ode_server():
    products = [ode_product(f"ESP_0{40000 + i}_1300", kind, -50.0 + (i % 5), (i * 37.0) % 360, 140 + i % 70)
                for i in range(23) for kind in ("RED", "COLOR")]
    products.append(ode_product("ESP_050000_1300", "RED", -50.0, 359.9, 160))  # across 0/360
    server = OdeServer(products)
    yield server
    server.stop()


def test_ode_paged_query_and_local_filters(ode_server, monkeypatch):
    monkeypatch.setattr(catalog, "ode_pages", _small_pages(ode.ode_pages))
    result = catalog.find("ode", Query(), ode_url=ode_server.url, opener=NO_PROXY)
    first = ode_server.requests[0]
    assert {k: first[k] for k in ("query", "output", "ihid", "iid", "pt", "minlat", "maxlat", "westernlon", "easternlon", "limit", "offset")} == {
        "query": "product", "output": "JSON", "ihid": "MRO", "iid": "HIRISE", "pt": "RDRV11", "minlat": "-60", "maxlat": "-40",
        "westernlon": "0", "easternlon": "360", "limit": "10", "offset": "0",
    }
    assert [r["offset"] for r in ode_server.requests] == ["0", "10", "20", "30", "40"]
    expected = sorted(f"ESP_0{40000 + i}_1300_RED" for i in range(23) if 140 + i % 70 <= 200) + ["ESP_050000_1300_RED"]
    assert sorted(p.product_id for p in result.products) == sorted(expected)
    p = next(p for p in result.products if p.product_id == "ESP_040001_1300_RED")
    assert p.jp2_url.endswith("ESP_040001_1300_RED.JP2") and p.lbl_url.endswith("ESP_040001_1300_RED.LBL")
    assert p.jp2_bytes == 123456 * 1024 and p.lbl_bytes == 12 * 1024 and p.size_unit_bytes == 1024
    assert p.map_scale == 0.25 and p.source == "ODE"
    assert (p.incidence_angle, p.emission_angle, p.phase_angle, p.solar_longitude) == (60.0, 2.1, 61.0, 141.0)
    assert p.start_time == "2016-05-01T10:00:00.000" and p.year == 2016
    crossing = next(p for p in result.products if p.product_id == "ESP_050000_1300_RED")
    assert crossing.ring()[0][0] == pytest.approx(359.7) and max(x for x, _ in crossing.ring()) == pytest.approx(360.1)


def _small_pages(original):
    def pages(query, base_url, **kw):
        kw.setdefault("page_size", 10)
        return original(query, base_url, **kw)

    return pages


def test_ode_area_across_zero_asks_two_longitude_spans(ode_server):
    area = [(-1.0, -51.0), (1.0, -51.0), (1.0, -49.0), (-1.0, -49.0)]
    result = catalog.find("ode", Query(areas=[area]), ode_url=ode_server.url, opener=NO_PROXY)
    assert [p.product_id for p in result.products] == ["ESP_040000_1300_RED", "ESP_050000_1300_RED"]  # at 0.0 and 359.9 E
    spans = [(r["westernlon"], r["easternlon"], r["minlat"], r["maxlat"]) for r in ode_server.requests]
    assert spans == [("359", "360", "-51", "-49"), ("0", "1", "-51", "-49")]


def test_ode_unreachable_is_a_clear_message():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nobody listens there now
    with pytest.raises(products.OdeUnavailableError, match="not reachable.*search a local index"):
        catalog.find("ode", Query(), ode_url=f"http://127.0.0.1:{port}/live2/", opener=NO_PROXY)


@pytest.mark.parametrize("url", ["oderest.rsl.wustl.edu/live2/", "ftp://oderest.rsl.wustl.edu/live2/", "https://"])
def test_an_ode_url_that_is_no_web_address_is_named_with_the_fix(url):
    """ODE_URL without https:// ended in urllib's ValueError, a traceback."""
    with pytest.raises(products.CatalogError, match=f"The ODE REST URL '{re.escape(url)}' is not a web address: give it whole, with https://"):
        catalog.find("ode", Query(), ode_url=url, opener=NO_PROXY)


def test_ode_error_status_and_non_json(ode_server):
    with pytest.raises(products.OdeUnavailableError, match="ODE refused the query: iid required"):
        list(ode.ode_pages(Query(), ode_server.url + "?force_error=1", opener=NO_PROXY))


# --- report --------------------------------------------------------------------------------------


def test_reports_written(tmp_path):
    result = catalog.find(str(BUNDLED), Query())
    catalog.write_report_html(str(tmp_path / "r.html"), result, Query())
    catalog.write_report_csv(str(tmp_path / "r.csv"), result)
    catalog.write_products_csv(str(tmp_path / "p.csv"), result.products)
    html_text = (tmp_path / "r.html").read_text()
    assert "Found 235 products" in html_text and "By Mars year" in html_text
    rows = (tmp_path / "r.csv").read_text().splitlines()
    assert rows[:2] == ["grouping,bin,products", "total,all,235"]
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 236
    lines = catalog.report_lines(result, Query())
    assert any(line.startswith("By Ls bin") for line in lines)
    assert not [n for n in (tmp_path).iterdir() if ".partial" in n.name]


def test_command_line(tmp_path, capsys):
    assert catalog.main([str(BUNDLED), "--csv", str(tmp_path / "p.csv")]) == 0
    assert "Found 235 products" in capsys.readouterr().out
    assert catalog.main([str(tmp_path / "missing.csv")]) == 2


def test_an_ode_record_without_a_map_scale_has_none_rather_than_its_pixels_per_degree():
    record = ode_product("ESP_040000_1300", "RED", -50.0, 10.0, 160)
    del record["Map_scale"]
    record["Map_resolution"] = "236936.0"  # pixels per degree
    assert ode.product_from_ode(record).map_scale is None


def test_an_ode_answer_cut_off_is_said_to_be_unavailable_not_a_traceback():
    def cut_off(request):
        request.send_response(200)
        request.send_header("Content-Length", "5000")
        request.end_headers()
        request.wfile.write(b'{"ODEResults": {"Status": "Success", "Products": {"Product": [')
        request.close_connection = True

    server = LocalWebServer(cut_off)
    try:
        with pytest.raises(products.OdeUnavailableError, match="is not reachable \\(IncompleteRead"):
            catalog.find("ode", Query(), ode_url=f"http://127.0.0.1:{server.port}/live2/", opener=NO_PROXY)
    finally:
        server.stop()


def test_a_csv_whose_field_no_index_holds_is_named_unreadable(tmp_path):
    bad = tmp_path / "index.csv"
    bad.write_text("MINIMUM_LATITUDE,MAXIMUM_LATITUDE,WESTERNMOST_LONGITUDE,EASTERNMOST_LONGITUDE,IMG_URL\n\"" + "x" * 200_000 + "\",1,2,3,4\n")
    with pytest.raises(products.CatalogError, match=rf"The index {bad} is not a readable CSV \(field larger than field limit"):
        catalog.find(str(bad), Query())
