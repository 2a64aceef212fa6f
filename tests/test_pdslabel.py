"""HiRISE PDS3 labels beside the image (model/pdslabel.py), on the labels tests/test_formats.py
generates after a real RED RDR label: the fields read, and the summary that detect writes with them."""

import pytest
from osgeo import osr

import helpers
from model import pdslabel
from model.schema import LABEL_SUMMARY_FIELDS
from test_formats import EQUIRECTANGULAR_ID, HEIGHT, POLAR_ID, PRODUCTS, VIEWING, WIDTH, make_product

LABEL_FIELD_NAMES = [
    "observation_id", "solar_longitude", "incidence_angle", "centre_latitude", "scaling_factor", "scaling_offset",
    "nodata_dn", "low_saturation_dn", "high_saturation_dn",
]


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labelled_products")
    return {name: make_product(folder, name) for name in sorted(PRODUCTS)}


def image_centre_latitude(product) -> float:
    """The latitude of the image's centre, from its geotransform and CRS (independent of the label's text)."""
    srs = osr.SpatialReference(wkt=product.raster.crs_wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    geographic = srs.CloneGeogCS()
    geographic.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    g = product.raster.geotransform
    x, y = g[0] + g[1] * WIDTH / 2, g[3] + g[5] * HEIGHT / 2
    return osr.CoordinateTransformation(srs, geographic).TransformPoint(x, y)[1]


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_the_label_gives_the_observation_scaling_special_dns_and_geometry(products, name):
    product = products[name]
    fields = pdslabel.summary_fields(product.lbl)
    assert list(fields) == LABEL_FIELD_NAMES == [n for n, _ in LABEL_SUMMARY_FIELDS]
    assert fields["observation_id"] == name[:15]
    assert (fields["solar_longitude"], fields["incidence_angle"]) == (VIEWING["solar_longitude"], VIEWING["incidence_angle"])
    assert (fields["scaling_factor"], fields["scaling_offset"]) == (1.83e-04, -0.0112)
    assert (fields["nodata_dn"], fields["low_saturation_dn"], fields["high_saturation_dn"]) == (0, 2, 1022)
    assert fields["centre_latitude"] == pytest.approx(image_centre_latitude(product), abs=0.01)


def test_a_polar_products_latitude_is_the_images_not_the_projections(products):
    """CENTER_LATITUDE = 90 in a polar stereographic label is the projection's pole."""
    assert PRODUCTS[POLAR_ID]["center_latitude"] == 90.0
    assert 83.0 < pdslabel.summary_fields(products[POLAR_ID].lbl)["centre_latitude"] < 84.0


def test_the_label_is_found_beside_the_image_by_its_stem(products, tmp_path):
    product = products[EQUIRECTANGULAR_ID]
    assert pdslabel.label_beside(product.jp2) == product.lbl
    assert pdslabel.label_beside(product.lbl) == product.lbl
    assert pdslabel.label_beside(helpers.generate_raster(tmp_path, name="unlabelled.tif").path) is None


def test_comments_nesting_and_multi_line_values():
    text = (
        'PDS_VERSION_ID = PDS3\r\n/* OFFSET = 99 in a comment */\r\nDATA_SET_NAME = "TWO\r\n  LINES"\r\n'
        "OBJECT = IMAGE\r\n  OFFSET = -0.5\r\n  GROUP = INNER\r\n    SOLAR_LONGITUDE = 12.5 <DEG>\r\n  END_GROUP = INNER\r\nEND_OBJECT = IMAGE\r\n"
        "OFFSET = 7\r\nEND\r\n"
    )
    statements = pdslabel.parse(text)
    assert statements == [
        ((), "PDS_VERSION_ID", "PDS3"), ((), "DATA_SET_NAME", '"TWO\r\n  LINES"'), (("IMAGE",), "OFFSET", "-0.5"),
        (("IMAGE", "INNER"), "SOLAR_LONGITUDE", "12.5 <DEG>"), ((), "OFFSET", "7"),
    ]


def test_a_comment_left_open_runs_to_the_end_and_a_file_far_larger_than_a_label_is_not_read(tmp_path):
    """A comment pattern sought the end of every comment left open to the end of the file: a 1 MB 'label' of them
    stalled a detect for hours. Comments are stripped in one pass now, and a file of more than 256 kB is no label."""
    assert pdslabel.without_comments("A = 1 /* x */ B = 2 /* open\nC = 3") == "A = 1  B = 2 "
    assert pdslabel.parse("A = 1\n" + "B = /*\n" * 1000 + "C = 3\n") == [((), "A", "1"), ((), "B", "")]
    huge = tmp_path / "ESP_000001_1234_RED.LBL"
    huge.write_text("A = /*\n" * 150000, encoding="latin-1")
    with pytest.raises(OSError, match=r"it is 1,050,000 bytes, where a HiRISE label is about 10 kB: not a label"):
        pdslabel.summary_fields(str(huge))


def test_detect_writes_the_labels_fields_into_the_summary(products, tiny_model, worker_python, tmp_path):
    from qgis_support import read_ogr

    product = products[EQUIRECTANGULAR_ID]
    gpkg = tmp_path / "labelled.gpkg"
    run = helpers.run_worker(worker_python, "detect", product.jp2, "--model", tiny_model.path, "--out", gpkg).check()
    expected = pdslabel.summary_fields(product.lbl)
    assert {name: run.result["summary"][name] for name in LABEL_FIELD_NAMES} == expected
    written = read_ogr(gpkg, "summary").rows[0]
    assert {name: written[name] for name in LABEL_FIELD_NAMES} == pytest.approx(expected)
    assert f"label {product.name}.LBL: observation {product.name[:15]}, Ls {VIEWING['solar_longitude']}" in run.stdout


def test_without_a_label_the_fields_are_null(tiny_model, worker_python, tmp_path):
    from qgis_support import read_ogr

    raster = helpers.generate_raster(tmp_path, name="unlabelled.tif", width=128, height=128)
    gpkg = tmp_path / "unlabelled.gpkg"
    helpers.run_worker(worker_python, "detect", raster.path, "--model", tiny_model.path, "--out", gpkg).check()
    written = read_ogr(gpkg, "summary").rows[0]
    assert [written[name] for name in LABEL_FIELD_NAMES] == [None] * len(LABEL_FIELD_NAMES)


def test_a_damaged_label_or_an_impossible_angle_is_a_warning_not_a_silent_summary(products, tiny_model, worker_python, tmp_path):
    import re
    import shutil

    product = products[EQUIRECTANGULAR_ID]
    text = open(product.lbl, encoding="latin-1").read()
    cases = {"noise": None, "edited": re.sub(r"SOLAR_LONGITUDE\s*=\s*[\d.]+", "SOLAR_LONGITUDE = 999", text)}
    for case, label in cases.items():
        jp2 = tmp_path / f"{case}.JP2"
        shutil.copyfile(product.jp2, jp2)
        if label is None:
            (tmp_path / f"{case}.LBL").write_bytes(bytes(range(256)) * 8)
        else:
            (tmp_path / f"{case}.LBL").write_text(label, encoding="latin-1")
        run = helpers.run_worker(worker_python, "detect", jp2, "--model", tiny_model.path).check()
        warnings = [m["message"] for m in run.messages if m["type"] == "warning"]
        if case == "noise":
            assert any("holds none of a HiRISE PDS3 label's keywords" in w for w in warnings), warnings
            assert all(run.result["summary"][name] is None for name in LABEL_FIELD_NAMES)
        else:
            assert any("gives solar_longitude 999, outside 0-360; it is left out of the summary." in w for w in warnings), warnings
            assert run.result["summary"]["solar_longitude"] is None and run.result["summary"]["observation_id"] == product.name[:15]
