"""Writes cut short as on a full disk: a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) fails every write past
it, as a disk without room does, without mounting one. GDAL 3.6's OGR returns its errors whatever
gdal.UseExceptions says: the command line's GeoPackage had been written on, broken, called written (exit 0),
and a survey's half-made GeoPackage was refused by every rerun as "not a survey's"."""

import resource
import shutil
import signal
import subprocess
import sys

import pytest
from osgeo import ogr

import helpers


def limited(limit_bytes: int):
    """A child's set-up: no file written past limit_bytes, and the write that would be fails instead of killing it."""
    def cap():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return cap


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return helpers.generate_raster(tmp_path_factory.mktemp("full_disk"), name="scene.tif", width=640, height=640, nodata=None)


def test_the_command_lines_chunk_layer_on_a_full_disk_fails_and_leaves_nothing(worker_python, scene, tmp_path):
    out = tmp_path / "grid.gpkg"
    done = subprocess.run([str(worker_python), "-m", "model", "chunk", scene.path, "--chunk-size", "16", "--out", str(out)],
                          cwd=str(helpers.REPO_ROOT), env=helpers.worker_env(), capture_output=True, text=True, timeout=300, preexec_fn=limited(100_000))
    assert done.returncode != 0, done.stdout[-2000:]
    assert f"The chunk layer could not be written to {out}" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # with room, the same command writes all 1,600 chunks
    done = subprocess.run([str(worker_python), "-m", "model", "chunk", scene.path, "--chunk-size", "16", "--out", str(out)],
                          cwd=str(helpers.REPO_ROOT), env=helpers.worker_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ogr.Open(str(out)).GetLayerByName("chunks").GetFeatureCount() == 1600


SURVEY_STORE = r"""
import sys
from model.surveystore import SurveyError, SurveyStore
try:
    SurveyStore(sys.argv[1]).close()
    print("MADE")
except SurveyError as exc:
    print("REFUSED", exc)
"""


def test_a_new_survey_on_a_full_disk_leaves_no_half_made_geopackage(tmp_path):
    out = tmp_path / "survey.gpkg"
    command = [sys.executable, "-c", SURVEY_STORE, str(out)]
    done = subprocess.run(command, cwd=str(helpers.REPO_ROOT), capture_output=True, text=True, timeout=120, preexec_fn=limited(40_000))
    assert done.stdout.startswith("REFUSED") and f"The survey's GeoPackage could not be written to {out}" in done.stdout, done.stdout + done.stderr[-2000:]
    assert "ERROR 1" not in done.stderr and not out.exists()
    done = subprocess.run(command, cwd=str(helpers.REPO_ROOT), capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("MADE"), done.stdout + done.stderr[-2000:]  # the rerun with room makes it


def test_a_new_survey_without_a_file_handle_left_is_told_the_limit_not_the_sql(tmp_path):
    """Out of open files, SQLite cannot open the new GeoPackage: the message had quoted 2,000 characters of GDAL's SQL,
    ending 'unable to open database file. Choose another folder or file name', and left the partial file behind."""
    out = tmp_path / "survey.gpkg"  # the limit set in the child once its imports have opened what they need
    body = SURVEY_STORE.replace("try:\n", "import resource, os\nresource.setrlimit(resource.RLIMIT_NOFILE, "
                                "(len(os.listdir('/proc/self/fd')), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\ntry:\n", 1)
    done = subprocess.run([sys.executable, "-c", body, str(out)], cwd=str(helpers.REPO_ROOT), capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("REFUSED"), done.stdout + done.stderr[-2000:]
    said = done.stdout
    assert f"The survey's GeoPackage could not be written to {out}: GDAL could not create a GeoPackage there: unable to open database file" in said, said
    assert "the process most likely ran out of open files (its limit is" in said and "Raise that limit (ulimit -n 4096)" in said, said
    assert "sqlite3_exec" not in said and len(said) < 500, said
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _limited_worker(tmp_path, limit_bytes: int, worker_python) -> str:
    """A worker Python whose files stop at limit_bytes (Python ignores SIGXFSZ, so the write fails instead); one
    path per limit, so that QGIS's warm worker of another is not reused."""
    wrapper = tmp_path / f"limited-python-{limit_bytes}"
    wrapper.write_text(f'#!/bin/sh\nexec prlimit --fsize={limit_bytes} "{worker_python}" "$@"\n', encoding="utf-8")
    wrapper.chmod(0o755)
    return str(wrapper)


def test_a_report_that_finds_the_disk_full_takes_the_probability_raster_with_it(worker_python, tiny_model, scene, tmp_path):
    """The probability raster, put in place while scoring, had stayed when the report after it could not be written."""
    raster, report = tmp_path / "p.tif", tmp_path / "r.html"
    done = subprocess.run([_limited_worker(tmp_path, 30_000, worker_python), "-m", "model", "detect", scene.path, "--model", tiny_model.path,
                           "--probability-raster", str(raster), "--report", str(report)],
                          cwd=str(helpers.REPO_ROOT), env=helpers.worker_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and f"The detection report could not be written to {report}" in done.stderr, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["limited-python-30000"]


def test_detect_in_qgis_removes_what_its_failed_worker_had_put_in_place(qgis_app, worker_python, tiny_model, scene, tmp_path, monkeypatch):
    """The same through Processing, whose message says no output was written; a raster of an earlier run that this
    run's worker never replaced is left alone."""
    import os

    import qgis_support as qs

    folder = tmp_path / "out"
    folder.mkdir()
    parameters = {"INPUT": scene.path, "MODEL": tiny_model.path, "OUTPUT": str(folder / "c.gpkg"), "PROBABILITY_RASTER": str(folder / "p.tif"),
                  "REPORT": str(folder / "r.html")}
    monkeypatch.setenv("HIRISEICE_WORKER_PYTHON", _limited_worker(tmp_path, 30_000, worker_python))
    message = qs.processing_error("hiriseice:detect", parameters)
    assert "The detection report could not be written" in message, message
    assert sorted(p.name for p in folder.iterdir()) == []

    earlier = folder / "p.tif"
    earlier.write_bytes(b"an earlier run's raster")
    os.utime(earlier, (1e9, 1e9))
    monkeypatch.setenv("HIRISEICE_WORKER_PYTHON", _limited_worker(tmp_path, 100, worker_python))  # not even the raster fits
    message = qs.processing_error("hiriseice:detect", parameters)
    assert "ice-probability raster could not be written" in message, message
    assert sorted(p.name for p in folder.iterdir()) == ["p.tif"] and earlier.read_bytes() == b"an earlier run's raster"


def test_detect_in_qgis_refuses_a_disk_without_room_for_the_style_it_stores_after_the_run(qgis_app, tiny_model, scene, tmp_path):
    """The style is stored after the run, where QGIS 3.22 can no longer fail it: a disk that filled just then had exited 0 with
    the rows left in the GeoPackage's -wal, the file unreadable alone. Room for it is asked for while the run can still fail."""
    import os

    import qgis_support as qs

    roomy = tmp_path / "roomy"
    roomy.mkdir()
    parameters = {"INPUT": scene.path, "MODEL": tiny_model.path, "OUTPUT": str(roomy / "c.gpkg"), "REPORT": str(roomy / "r.html")}
    qs.run_algorithm("hiriseice:detect", parameters)
    written = (roomy / "c.gpkg").stat().st_size + (roomy / "r.html").stat().st_size
    folder = tmp_path / "small-disk"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("a small disk needs root's mount of a tmpfs here")
    try:
        # room for the run's files, as the check before it reckons them, and 200 kB more: too little for the style stored after it
        filler = folder / "another program's file"
        filler.write_bytes(b"\0" * (shutil.disk_usage(folder).free - written - 200_000))
        message = qs.processing_error("hiriseice:detect", dict(parameters, OUTPUT=str(folder / "c.gpkg"), REPORT=str(folder / "r.html")))
        left = sorted(p.name for p in folder.iterdir())
    finally:
        subprocess.run(["umount", str(folder)], check=True)
    assert "too little room is left to store the layer's style" in message and "Free some space" in message, message
    assert left == ["another program's file"]
