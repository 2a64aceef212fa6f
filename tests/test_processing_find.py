"""hiriseice:find and hiriseice:download through processing.run: footprints in the Mars geographic
CRS from the bundled extract and the real index, a drawn area across 0/360, reports, and the
download of a find output's JP2/LBL from a local server on 127.0.0.1."""

import csv
import math
import os
import struct

import pytest
from osgeo import osr

import qgis_support as qs
from helpers import LocalWebServer, send_body
from model import download, files

FIND_FIELDS = [
    "product_id", "observation_id", "product_type", "centre_latitude", "centre_longitude", "minimum_latitude", "maximum_latitude",
    "westernmost_longitude", "easternmost_longitude", "solar_longitude", "incidence_angle", "emission_angle", "phase_angle",
    "local_time", "map_scale", "north_turn", "start_time", "year", "mars_year", "orbit_number", "mission_phase", "themes", "jp2_url", "lbl_url",
    "jp2_bytes", "lbl_bytes", "size_unit_bytes", "index_storage_bytes", "source",
]


def test_find_defaults_search_the_bundled_extract(qgis_app, tmp_path):
    out = tmp_path / "found.gpkg"
    results = qs.run_algorithm("hiriseice:find", {"OUTPUT": str(out), "REPORT": str(tmp_path / "r.html"), "REPORT_CSV": str(tmp_path / "r.csv")})
    assert results["COUNT"] == 235
    table = qs.read_ogr(out)
    assert table.field_names == FIND_FIELDS
    assert len(table.rows) == 235
    assert "+R=3396190" in table.srs_proj4.replace(" ", "") or "3396190" in table.srs_wkt
    assert "Mars" in table.srs_wkt
    for row in table.rows:
        assert -60 <= row["centre_latitude"] <= -40 and 140 <= row["solar_longitude"] <= 200
        assert row["product_type"] == "RED" and row["jp2_url"].endswith(row["product_id"] + ".JP2")
        ring = qs.outer_ring(row["_wkt"])
        lats = [p[1] for p in ring]
        assert min(lats) == pytest.approx(row["minimum_latitude"]) and max(lats) == pytest.approx(row["maximum_latitude"])
    log = results["_feedback"].text
    assert "bundled demo extract" in log and "By Ls bin" in log and "Found 235 products" in log
    assert "Found 235 products" in (tmp_path / "r.html").read_text()
    with open(tmp_path / "r.csv") as handle:
        assert next(csv.reader(handle)) == ["grouping", "bin", "products"]

    # Find's own output as the AREA of the next search: QGIS 3.22 reads its IAU CRS back as none
    again = qs.run_algorithm("hiriseice:find", {"AREA": str(out), "OUTPUT": str(tmp_path / "again.gpkg")})
    assert again["COUNT"] == 235, again["_feedback"].text


def test_find_wider_band_color_and_wrapping_ls(qgis_app, tmp_path, shared_data):
    index = shared_data / "hirise-index" / "hirise_rdr_index.csv.gz"
    if not index.is_file():
        pytest.skip(f"the real HiRISE index CSV is absent from the shared data ({index})")
    results = qs.run_algorithm("hiriseice:find", {"INDEX": str(index), "LAT_MIN": -70, "PRODUCT_TYPE": 1, "OUTPUT": str(tmp_path / "a.gpkg")})
    assert results["COUNT"] == 1660
    assert all(r["jp2_url"].endswith("_COLOR.JP2") for r in qs.read_ogr(tmp_path / "a.gpkg").rows)
    results = qs.run_algorithm("hiriseice:find", {"INDEX": str(index), "LS_START": 350, "LS_END": 10, "OUTPUT": str(tmp_path / "b.gpkg")})
    lss = [r["solar_longitude"] for r in qs.read_ogr(tmp_path / "b.gpkg").rows]
    assert results["COUNT"] == len(lss) > 0 and all(ls >= 350 or ls <= 10 for ls in lss)
    assert "Ls 350 to 10 (wraps through 360)" in results["_feedback"].text


def area_layer(tmp_path, wkts, authid="IAU_2015:49900"):
    from qgis.core import QgsCoordinateReferenceSystem, QgsFeature, QgsGeometry, QgsVectorLayer

    layer = QgsVectorLayer(f"Polygon?crs={authid}", "area", "memory")
    assert layer.crs() == QgsCoordinateReferenceSystem(authid)
    features = []
    for wkt in wkts:
        feature = QgsFeature()
        feature.setGeometry(QgsGeometry.fromWkt(wkt))
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    return layer


def test_find_by_area_across_the_prime_meridian(qgis_app, tmp_path, shared_data):
    index = shared_data / "hirise-index" / "hirise_rdr_index.csv.gz"
    if not index.is_file():
        pytest.skip(f"the real HiRISE index CSV is absent from the shared data ({index})")
    # A strip 2 degrees wide around the prime meridian, drawn in -180..180 longitudes.
    area = area_layer(tmp_path, ["POLYGON((-1 -90, 1 -90, 1 90, -1 90, -1 -90))"])
    parameters = {"INDEX": str(index), "AREA": area, "LAT_MIN": -90, "LAT_MAX": 90, "LS_START": None, "LS_END": None, "PRODUCT_TYPE": 1, "OUTPUT": str(tmp_path / "c.gpkg")}
    results = qs.run_algorithm("hiriseice:find", parameters)
    rows = qs.read_ogr(tmp_path / "c.gpkg").rows
    assert results["COUNT"] == len(rows) > 10
    for row in rows:
        lons = [p[0] for p in qs.outer_ring(row["_wkt"])]
        assert 0 <= min(lons) < 360
        near_zero = min(lons) <= 1.0 + 1e-9 or max(lons) >= 359.0 - 1e-9
        assert near_zero, row["product_id"]
    assert any(max(p[0] for p in qs.outer_ring(r["_wkt"])) > 360 for r in rows), "a footprint across 0/360 ends past 360"
    assert any(min(p[0] for p in qs.outer_ring(r["_wkt"])) < 1 for r in rows) and any(min(p[0] for p in qs.outer_ring(r["_wkt"])) > 359 for r in rows)


def test_footprints_draw_over_their_images_in_the_images_own_crs(qgis_app, tmp_path):
    """QGIS asks a layer for the features in the map's extent in the layer's CRS. From IAU_2015:49900 PROJ answers
    -180..180, so a footprint stored at 0..360 east past 180 was never drawn over its image in the image's own
    equirectangular CRS, and none was drawn in the polar-radius CRS of HiRISE's polar products, between which and
    IAU_2015:49900 QGIS finds no transformation."""
    out = tmp_path / "found.gpkg"
    qs.run_algorithm("hiriseice:find", {"OUTPUT": str(out)})
    rows = qs.read_ogr(out).rows
    east = max(rows, key=lambda row: row["centre_longitude"])
    west = min(rows, key=lambda row: row["centre_longitude"])
    assert east["centre_longitude"] > 270 and west["centre_longitude"] < 90
    for row in (east, west):
        ring = qs.outer_ring(row["_wkt"])
        lon0 = row["centre_longitude"]
        for crs_proj, radius in ((f"+proj=eqc +lat_ts=0 +lon_0={lon0} +R=3396190 +units=m +no_defs", 3396190.0),
                                 (f"+proj=stere +lat_0=-90 +lon_0={lon0} +k=1 +R=3376200 +units=m +no_defs", 3376200.0)):
            source, target = osr.SpatialReference(), osr.SpatialReference()
            source.ImportFromProj4(f"+proj=longlat +R={radius} +no_defs")
            target.ImportFromProj4(crs_proj)
            to_map = osr.CoordinateTransformation(source, target)
            corners = [to_map.TransformPoint(lon, lat)[:2] for lon, lat in ring]
            extent = (min(x for x, _ in corners), min(y for _, y in corners), max(x for x, _ in corners), max(y for _, y in corners))
            share = qs.drawn_share(f"{out}|layername={qs.read_ogr(out).name}", crs_proj, extent)
            assert share > 0.1, (row["product_id"], crs_proj, share)  # a strip, slanting across its bounding box


def test_find_errors(qgis_app, tmp_path):
    message = qs.processing_error("hiriseice:find", {"INDEX": str(tmp_path / "none.csv"), "OUTPUT": "memory:"})
    assert "does not exist" in message
    message = qs.processing_error("hiriseice:find", {"INDEX": str(tmp_path), "OUTPUT": "memory:"})
    assert f"is '{tmp_path}'; give a file, not a folder." in message, message
    os.mkfifo(tmp_path / "pipe.csv")  # said "does not exist"; reading it would have waited for a writer
    message = qs.processing_error("hiriseice:find", {"INDEX": str(tmp_path / "pipe.csv"), "OUTPUT": "memory:"})
    assert f"'{tmp_path / 'pipe.csv'}' is a named pipe, not a file" in message and "Give the index file itself." in message, message
    message = qs.processing_error("hiriseice:find", {"THEMES": "Polar Geology", "OUTPUT": "memory:"})
    assert "no themes file" in message
    message = qs.processing_error("hiriseice:find", {"SCALE_MIN": 0.2, "OUTPUT": "memory:"})
    assert "no MAP_SCALE" in message
    earth = area_layer(tmp_path, ["POLYGON((0 0, 1 0, 1 1, 0 0))"], "EPSG:4326")
    message = qs.processing_error("hiriseice:find", {"AREA": earth, "OUTPUT": "memory:"})
    assert "not a Mars CRS" in message


def test_find_ode_unreachable_is_one_clear_message(qgis_app):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    message = qs.processing_error("hiriseice:find", {"SOURCE": 1, "ODE_URL": f"http://127.0.0.1:{port}/live2/", "OUTPUT": "memory:"})
    assert "not reachable" in message and "local index" in message


class StaticServer(LocalWebServer):
    """Serves ``files`` (name -> bytes) under /PDS/."""

    def __init__(self, files):
        self.files = files
        self.requests = []
        super().__init__(self.answer)
        self.base = f"http://127.0.0.1:{self.port}/PDS/"

    def answer(self, request):
        self.requests.append(request.path)
        data = self.files.get(request.path.split("/")[-1])
        if data is None:
            request.send_error(404)
        else:
            send_body(request, data)


def test_download_selected_footprints(qgis_app, tmp_path, monkeypatch):
    """Find's output, its URLs pointed at a local server, selected features only; one file missing on the server."""
    from qgis.core import QgsProcessingFeatureSourceDefinition, QgsProject, QgsVectorLayer

    qs.run_algorithm("hiriseice:find", {"OUTPUT": str(tmp_path / "found.gpkg")})
    layer = QgsVectorLayer(str(tmp_path / "found.gpkg"), "found", "ogr")
    rows = list(layer.getFeatures())[:3]
    files = {}
    server = StaticServer(files)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    try:
        layer.startEditing()
        for i, feature in enumerate(rows):
            pid = feature["product_id"]
            files[pid + ".JP2"] = download.JP2_SIGNATURE + struct.pack(">I4s", 0, b"jp2c") + download.CODESTREAM_START + bytes([i]) * (1000 + i) + download.CODESTREAM_END
            files[pid + ".LBL"] = b"PDS_VERSION_ID = PDS3\r\nEND\r\n"
            layer.changeAttributeValue(feature.id(), layer.fields().indexOf("jp2_url"), server.base + pid + ".JP2")
            layer.changeAttributeValue(feature.id(), layer.fields().indexOf("lbl_url"), server.base + pid + ".LBL")
        del files[rows[2]["product_id"] + ".LBL"]  # missing on the server: a 404, not fatal
        assert layer.commitChanges()
        QgsProject.instance().addMapLayer(layer)
        layer.selectByIds([f.id() for f in rows])
        folder = tmp_path / "downloads"
        results = qs.run_algorithm("hiriseice:download", {
            "INPUT": QgsProcessingFeatureSourceDefinition(layer.id(), selectedFeaturesOnly=True), "FOLDER": str(folder), "RETRIES": 1,
        })
    finally:
        server.stop()
        if QgsProject.instance().mapLayer(layer.id()):
            QgsProject.instance().removeMapLayer(layer.id())
    assert results["DOWNLOADED"] == 5 and results["FAILED"] == 1
    for name, data in files.items():
        assert (folder / name).read_bytes() == data
    assert results["BYTES"] == sum(len(d) for d in files.values())
    assert "HTTP 404" in results["_feedback"].text
    assert all(path.startswith("/PDS/") for path in server.requests) and len(server.requests) == 6


@pytest.mark.parametrize("unit_field", ["size_unit_bytes", "size_unit_"])
def test_the_index_sizes_precision_is_read_from_a_shapefiles_shortened_field_too(qgis_app, unit_field):
    """Find's footprints saved as a shapefile name size_unit_bytes 'size_unit_' (10 characters): its sizes, in kB, were then
    taken as exact, and every product failed as 'the server declares 114174 bytes but the index says 113664'."""
    from qgis.core import QgsFeature, QgsVectorLayer

    layer = QgsVectorLayer(f"Polygon?crs=IAU_2015:49900&field=jp2_url:string&field=jp2_bytes:double&field={unit_field}:integer", "footprints", "memory")
    feature = QgsFeature(layer.fields())
    feature.setAttributes(["https://example.org/ESP_011111_1111_RED.JP2", 111 * 1024, 1024])
    assert layer.dataProvider().addFeatures([feature])
    download = qs.plugin_module("model.download")
    (item,) = download.footprint_items(layer.fields().names(), layer.getFeatures(), True, False)
    assert (item.expected_bytes, item.tolerance_bytes) == (111 * 1024, 1023)


def test_download_needs_find_output(qgis_app, tmp_path):
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer("Polygon?crs=IAU_2015:49900&field=name:string", "x", "memory")
    message = qs.processing_error("hiriseice:download", {"INPUT": layer, "FOLDER": str(tmp_path / "d")})
    assert "no jp2_url" in message


def test_a_download_where_nothing_arrives_says_each_failure_once(qgis_app, tmp_path):
    import socket

    from qgis.core import QgsFeature, QgsVectorLayer

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # a port nobody listens on
    layer = QgsVectorLayer("Polygon?crs=IAU_2015:49900&field=jp2_url:string&field=lbl_url:string", "found", "memory")
    feature = QgsFeature(layer.fields())
    feature["jp2_url"], feature["lbl_url"] = f"http://127.0.0.1:{port}/PDS/A_RED.JP2", f"http://127.0.0.1:{port}/PDS/A_RED.LBL"
    layer.dataProvider().addFeatures([feature])
    feedback = qs.recording_feedback()
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as raised:
        qs.run_algorithm("hiriseice:download", {"INPUT": layer, "FOLDER": str(tmp_path / "d"), "RETRIES": 0}, feedback=feedback)
    message = str(raised.value)
    assert message.startswith("No file could be downloaded (A_RED.JP2: ") and "1 more failed, as said above" in message and ".;" not in message, message
    assert not any("A_RED.JP2" in error for error in feedback.errors) and any("A_RED.LBL" in error for error in feedback.errors), feedback.errors
    assert feedback.text.count("A_RED.LBL: ") == 1, feedback.text  # not also in the log


def find_count(tmp_path, name, **parameters):
    values = {"LAT_MIN": -90, "LAT_MAX": 90, "LS_START": None, "LS_END": None, "OUTPUT": str(tmp_path / f"{name}.gpkg")}
    values.update(parameters)
    return qs.run_algorithm("hiriseice:find", values)["COUNT"]


def footprint_longitudes(tmp_path, name):
    return [[p[0] for p in qs.outer_ring(row["_wkt"])] for row in qs.read_ogr(tmp_path / f"{name}.gpkg").rows]


def test_areas_wider_than_half_the_planet_keep_their_width(qgis_app, tmp_path):
    """Edges of 200 and 360 degrees had been taken the short way round: a whole-planet strip found
    nothing, a 0-200 E strip found its complement."""
    everything = find_count(tmp_path, "all")
    assert find_count(tmp_path, "planet", AREA=area_layer(tmp_path, ["POLYGON((0 -90, 360 -90, 360 90, 0 90, 0 -90))"])) == everything
    wide = find_count(tmp_path, "wide", AREA=area_layer(tmp_path, ["POLYGON((0 -90, 200 -90, 200 0, 0 0, 0 -90))"]))
    expected = sum(1 for lons in footprint_longitudes(tmp_path, "all") if min(lons) % 360 <= 200 or max(lons) >= 360)
    assert wide == expected and 0 < wide < everything


def test_only_the_selected_polygons_of_the_area_when_asked(qgis_app, tmp_path):
    from qgis.core import QgsProject

    area = area_layer(tmp_path, ["POLYGON((0 -90, 120 -90, 120 0, 0 0, 0 -90))", "POLYGON((200 -90, 300 -90, 300 0, 200 0, 200 -90))"])
    QgsProject.instance().addMapLayer(area)
    try:
        area.selectByIds([next(area.getFeatures()).id()])
        selected = find_count(tmp_path, "selected", AREA=area, SELECTED_ONLY=True)
        both = find_count(tmp_path, "both", AREA=area)
        first = find_count(tmp_path, "first", AREA=area_layer(tmp_path, ["POLYGON((0 -90, 120 -90, 120 0, 0 0, 0 -90))"]))
        area.removeSelection()
        message = qs.processing_error("hiriseice:find", {"AREA": area, "SELECTED_ONLY": True, "OUTPUT": str(tmp_path / "none.gpkg")})
    finally:
        QgsProject.instance().removeMapLayer(area.id())
    assert selected == first and 0 < first < both
    assert "SELECTED_ONLY is set but no polygon of the area layer is selected" in message and not (tmp_path / "none.gpkg").exists()


def test_an_area_around_the_south_pole_holds_the_ground_inside_it(qgis_app, tmp_path, shared_data):
    """A disc drawn in the south polar stereographic CRS, out to -80 deg: in longitudes and latitudes
    a ring at -80 round the pole, which had enclosed nothing."""
    index = shared_data / "hirise-index" / "hirise_rdr_index.csv.gz"
    if not index.is_file():
        pytest.skip(f"the real HiRISE index CSV is absent from the shared data ({index})")
    radius = 2 * 3396190.0 * math.tan(math.radians(5.0))  # stereographic: -80 deg
    circle = ", ".join(f"{radius * math.cos(a):.1f} {radius * math.sin(a):.1f}" for a in [2 * math.pi * k / 64 for k in range(65)])
    polar = dict(INDEX=str(index), LAT_MIN=-90, LAT_MAX=-81)
    without = find_count(tmp_path, "polar_all", **polar)
    within = find_count(tmp_path, "polar_disc", AREA=area_layer(tmp_path, [f"POLYGON(({circle}))"], "IAU_2015:49935"), **polar)
    assert within == without > 1000


def test_a_hole_in_the_area_leaves_out_what_lies_in_it(qgis_app, tmp_path):
    box = find_count(tmp_path, "box", AREA=area_layer(tmp_path, ["POLYGON((100 -90, 150 -90, 150 0, 100 0, 100 -90))"]))
    frame = find_count(tmp_path, "frame", AREA=area_layer(tmp_path, ["POLYGON((100 -90, 150 -90, 150 0, 100 0, 100 -90), (101 -89, 149 -89, 149 -1, 101 -1, 101 -89))"]))
    inside = find_count(tmp_path, "inside", AREA=area_layer(tmp_path, ["POLYGON((101 -89, 149 -89, 149 -1, 101 -1, 101 -89))"]))
    crossing = sum(1 for lons in footprint_longitudes(tmp_path, "inside") if min(lons) % 360 < 101 or max(lons) % 360 > 149)
    assert 0 < frame < box and frame == box - (inside - crossing)


def test_limits_given_empty_in_qgis_process_are_not_applied(tmp_path):
    """qgis_process gives NAME= as a NULL value, which was read as the parameter's default: LAT_MIN= still searched
    -60 to -40, and INCIDENCE_MAX= searched incidence up to 0 (no product found, exit 0)."""
    run = qs.qgis_process("run", "hiriseice:find", "--", "LAT_MIN=", "LAT_MAX=", "LS_START=", "LS_END=", "INCIDENCE_MAX=", "SCALE_MAX=",
                          f"OUTPUT={tmp_path / 'all.gpkg'}")
    assert run.returncode == 0 and "Query: RED products; centre latitude any; Ls any" in run.stdout, run.stdout[-3000:]
    assert "incidence" not in run.stdout.split("Query: ", 1)[1].splitlines()[0] and "Found 0 products" not in run.stdout, run.stdout[-3000:]


def test_a_download_stopped_by_sigterm_says_what_it_kept(tmp_path):
    """The message of every algorithm stopped by a signal said 'no output was written': a download keeps what it finished."""
    import signal
    import subprocess
    import time

    from osgeo import ogr, osr

    body = download.JP2_SIGNATURE + struct.pack(">I4s", 0, b"jp2c") + download.CODESTREAM_START + b"\1" * 2_000_000 + download.CODESTREAM_END

    def slowly(request):
        request.send_response(200)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        for start in range(0, len(body), 20_000):
            request.wfile.write(body[start:start + 20_000])
            request.wfile.flush()
            time.sleep(0.2)

    server = LocalWebServer(slowly)
    footprints = tmp_path / "found.gpkg"
    dataset = ogr.GetDriverByName("GPKG").CreateDataSource(str(footprints))
    mars = osr.SpatialReference()
    mars.SetFromUserInput("IAU_2015:49900")
    layer = dataset.CreateLayer("found", mars, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("jp2_url", ogr.OFTString))
    feature = ogr.Feature(layer.GetLayerDefn())
    feature["jp2_url"] = f"http://127.0.0.1:{server.port}/PDS/B_RED.JP2"
    feature.SetGeometry(ogr.CreateGeometryFromWkt("POLYGON((10 -50,10.1 -50,10.1 -49.9,10 -50))"))
    layer.CreateFeature(feature)
    dataset = None
    folder = tmp_path / "downloads"
    partial = files.partial_path(str(folder / "B_RED.JP2"))
    process = subprocess.Popen(["bash", str(qs.QGIS_PROCESS), "run", "hiriseice:download", "--", f"INPUT={footprints}", f"FOLDER={folder}", "LABELS=false"],
                               env=qs.qgis_process_environment({"no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (os.path.isfile(partial) and os.path.getsize(partial) > 0) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
        server.stop()
    assert process.returncode == 1 and "Traceback" not in out, out[-3000:]
    assert "ERROR:\tStopped by SIGTERM: the files it had finished stay in the folder, and the next run resumes the one it was fetching." in out, out[-3000:]
    assert 0 < os.path.getsize(partial) < len(body) and not (folder / "B_RED.JP2").exists()
