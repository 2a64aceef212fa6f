"""An overnight batch through the toolbox's batch mechanism (what QGIS's BatchAlgorithmDialog does
for each row: preprocessParameters, a fresh context, algorithm.run, handleAlgorithmResults, and
on to the next row after a failure): 20 rasters, 2 of them bad, and one image rerun into the
same GeoPackage tables. 18 correct results, 2 clear errors, no stall.

A stall (a dialog, a worker that never answers) ends this test process with a traceback after
STALL_S instead of hanging the suite. The per-image time is printed (pytest -s), not asserted.
"""

import faulthandler

import pytest
from osgeo import ogr

import helpers
import qgis_support as qs

CHUNK = helpers.TINY_CHUNK_SIZE
STALL_S = 900


def batch_row(raster_path, gpkg, name, model_path):
    return {"INPUT": str(raster_path), "MODEL": model_path, "CHUNK_SIZE": CHUNK,
            "OUTPUT": qs.gpkg_destination(gpkg, f"chunks_{name}"), "SUMMARY": qs.gpkg_destination(gpkg, f"summary_{name}")}


def run_batch(rows):
    """Each row as the batch dialog runs it; returns [(ok, results, errors)]. The dialog
    first checks every row's parameters (checkParameterValues; it warns of and skips a row that
    fails), then runs the others; here both end in the row's outcome."""
    from processing.gui.Postprocessing import handleAlgorithmResults
    from processing.tools import dataobjects
    from qgis.core import QgsApplication

    algorithm = QgsApplication.processingRegistry().algorithmById("hiriseice:detect")
    outcomes = []
    for parameters in rows:
        feedback = qs.recording_feedback()
        context = dataobjects.createContext(feedback)
        checked, message = algorithm.checkParameterValues(parameters, context)
        if not checked:
            outcomes.append((False, {}, [message]))
            continue
        parameters = algorithm.preprocessParameters(parameters)
        results, ok = algorithm.run(parameters, context, feedback)
        if ok:
            handleAlgorithmResults(algorithm, context, feedback, False, parameters)
        outcomes.append((ok, results, feedback.errors))
    return outcomes


def test_twenty_rasters_two_bad_one_rerun(qgis_app, tiny_model, tmp_path):
    rasters = [helpers.generate_raster(tmp_path, name=f"img{i:02d}.tif", width=128 + 32 * (i % 4), height=128 + 32 * (i % 3), seed=i)
               for i in range(18)]
    not_a_raster = tmp_path / "notes.tif"
    not_a_raster.write_text("field notes, not an image\n")
    truncated = tmp_path / "cut.tif"
    whole = helpers.generate_raster(tmp_path, name="whole.tif", width=256, height=256, seed=99)
    with open(whole.path, "rb") as handle:
        truncated.write_bytes(handle.read()[:40_000])
    gpkg = tmp_path / "night.gpkg"
    rows = [batch_row(r.path, gpkg, f"img{i:02d}", tiny_model.path) for i, r in enumerate(rasters)]
    rows.insert(5, batch_row(not_a_raster, gpkg, "notes", tiny_model.path))
    rows.insert(12, batch_row(truncated, gpkg, "cut", tiny_model.path))
    rows.append(batch_row(rasters[0].path, gpkg, "img00", tiny_model.path))  # the rerun

    faulthandler.dump_traceback_later(STALL_S, exit=True)
    try:
        outcomes = run_batch(rows)
    finally:
        faulthandler.cancel_dump_traceback_later()

    failed = [(row["INPUT"], errors) for row, (ok, _, errors) in zip(rows, outcomes) if not ok]
    assert [path for path, _ in failed] == [str(not_a_raster), str(truncated)], failed
    for path, errors in failed:
        assert len(errors) == 1 and path in errors[0] and "Traceback" not in errors[0], errors
    assert "is not a raster GDAL can read" in failed[0][1][0] and "is damaged" in failed[1][1][0]

    dataset = ogr.Open(str(gpkg))
    tables = {dataset.GetLayer(i).GetName() for i in range(dataset.GetLayerCount())}
    dataset = None
    assert tables - {"layer_styles"} == {f"{kind}_img{i:02d}" for kind in ("chunks", "summary") for i in range(18)}
    for i, raster in enumerate(rasters):
        chunks = qs.read_ogr(gpkg, f"chunks_img{i:02d}")
        assert len(chunks.rows) == len(qs.expected_grid(raster.width, raster.height, CHUNK)), f"img{i:02d}"
        assert {r["image_id"] for r in chunks.rows} == {f"img{i:02d}"}
        assert len(qs.read_ogr(gpkg, f"summary_img{i:02d}").rows) == 1


@pytest.fixture(autouse=True)
def _no_project_layers_left(qgis_app):
    """handleAlgorithmResults may load outputs into the project, as the dialog does; clear them."""
    yield
    from qgis.core import QgsProject

    QgsProject.instance().removeAllMapLayers()
