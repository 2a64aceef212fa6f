"""Outputs an overnight batch can rely on, through the real qgis_process: reruns into the same
GeoPackage tables, a plain GeoPackage replaced as QGIS always does, relative paths, destinations
checked before the worker starts, an optional report, and no file beside the input raster."""

import contextlib
import os
import shutil
import subprocess
import sys

import pytest
from osgeo import gdal, ogr

import helpers
import qgis_support as qs

# The worker's command line, which the algorithm logs as it starts the worker.
WORKER_STARTED = "-m model --jsonl detect"
CHUNKS = 20  # the detect scene's 4 x 5 grid at CHUNK_SIZE 64


def worker_of(raster) -> str:
    """The command line of a worker detecting on raster: this test's own, not another run's on the same machine."""
    return f"{WORKER_STARTED} {raster}"


@pytest.fixture(scope="module")
def scene(session_raster):
    return qs.detect_scene(session_raster)


def detect(*parameters, cwd=qs.REPO_ROOT):
    """hiriseice:detect through qgis_process; a run that waits on a dialog fails at the timeout."""
    return qs.qgis_process("run", "hiriseice:detect", "--", *parameters, cwd=cwd, timeout=240)


def results_section(output: str) -> dict:
    block = output.split("Results\n----------------", 1)
    assert len(block) == 2, output[-3000:]
    return dict(line.split(":\t", 1) for line in block[1].splitlines() if ":\t" in line)


def add_users_style(gpkg, table: str, name: str) -> None:
    """A style the geologist saved on the table, not the default, which a rerun must keep."""
    import sqlite3

    con = sqlite3.connect(str(gpkg))
    with con:
        con.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, owner, ui) "
            "SELECT f_table_catalog, f_table_schema, f_table_name, f_geometry_column, ?, styleQML, styleSLD, 0, '', '', '' FROM layer_styles WHERE f_table_name = ?",
            (name, table),
        )
    con.close()


def write_vector_layers(path, names) -> None:
    driver = ogr.GetDriverByName("GPKG")
    dataset = driver.CreateDataSource(str(path))
    for name in names:
        dataset.CreateLayer(name, geom_type=ogr.wkbPoint)
    dataset = None


# --- reruns -------------------------------------------------------------------------------------


def test_rerun_into_the_same_tables_replaces_them_and_their_styles(tiny_model, scene, tmp_path):
    gpkg = tmp_path / "batch.gpkg"
    parameters = (
        f"INPUT={scene.path}", f"MODEL={tiny_model.path}", "CHUNK_SIZE=64",
        f"OUTPUT={qs.gpkg_destination(gpkg, 'chunks')}", f"SUMMARY={qs.gpkg_destination(gpkg, 'summary')}", f"REPORT={tmp_path / 'report.html'}",
    )
    first = detect(*parameters)
    assert first.returncode == 0, first.stdout[-3000:]
    assert "replacing" not in first.stdout
    add_users_style(gpkg, "chunks", "my review style")

    second = detect(*parameters)  # QGIS asked in a modal dialog whether to overwrite the style: it never ended
    assert second.returncode == 0, second.stdout[-3000:]
    assert f"OUTPUT: replacing the table 'chunks' in {gpkg}" in second.stdout
    assert f"SUMMARY: replacing the table 'summary' in {gpkg}" in second.stdout
    assert len(qs.read_ogr(gpkg, "chunks").rows) == CHUNKS and len(qs.read_ogr(gpkg, "summary").rows) == 1
    styles = sorted((s["f_table_name"], s["styleName"], s["useAsDefault"]) for s in qs.layer_styles(gpkg))
    assert styles == [("chunks", "HiRISE ice probability", 1), ("chunks", "my review style", 0), ("summary", "HiRISE image category", 1)]


@pytest.fixture(scope="module")
def plain_file_run(tiny_model, scene, tmp_path_factory):
    """OUTPUT=existing.gpkg (a file name without a table) over a GeoPackage with two layers, no REPORT."""
    folder = tmp_path_factory.mktemp("plain_file")
    gpkg = folder / "existing.gpkg"
    write_vector_layers(gpkg, ["old_chunks", "notes"])
    done = detect(f"INPUT={scene.path}", f"MODEL={tiny_model.path}", "CHUNK_SIZE=64", f"OUTPUT={gpkg}")
    return folder, gpkg, done


def test_a_plain_geopackage_is_replaced_as_qgis_does_and_the_log_names_its_layers(plain_file_run):
    folder, gpkg, done = plain_file_run
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"OUTPUT: replacing the file {gpkg}, with its layer(s) old_chunks, notes (QGIS replaces a file named without a table; to add a table instead: ogr:dbname=" in done.stdout
    dataset = gdal.OpenEx(str(gpkg), gdal.OF_VECTOR)
    layers = [dataset.GetLayer(i).GetName() for i in range(dataset.GetLayerCount())]
    assert layers == ["existing", "layer_styles"]  # QGIS names the layer after the file; the style table is its own
    assert len(qs.read_ogr(gpkg, "existing").rows) == CHUNKS


def test_report_is_optional(plain_file_run):
    folder, gpkg, done = plain_file_run
    assert done.returncode == 0, done.stdout[-3000:]
    assert "REPORT" not in results_section(done.stdout)
    worker_command = next(line for line in done.stdout.splitlines() if WORKER_STARTED in line)
    assert "--report" not in worker_command
    assert not list(folder.glob("*.html")) and not list(qs.REPO_ROOT.glob("*.html"))


# --- paths --------------------------------------------------------------------------------------


def test_relative_paths_mean_the_callers_folder(tiny_model, scene, tmp_path):
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    (work / "reports").mkdir()
    shutil.copyfile(scene.path, work / "scene.tif")
    shutil.copyfile(tiny_model.path, work / "models" / "tiny.hiriseice")
    done = detect("INPUT=scene.tif", "MODEL=models/tiny.hiriseice", "CHUNK_SIZE=64", "OUTPUT=out.gpkg", "REPORT=reports/r.html", cwd=work)
    assert done.returncode == 0, done.stdout[-3000:]
    worker_command = next(line for line in done.stdout.splitlines() if WORKER_STARTED in line)
    for absolute in (work / "scene.tif", work / "models" / "tiny.hiriseice", work / "reports" / "r.html"):
        assert str(absolute) in worker_command  # the worker runs in the plugin folder
    assert (work / "reports" / "r.html").is_file() and "scene" in (work / "reports" / "r.html").read_text(encoding="utf-8")
    assert len(qs.read_ogr(work / "out.gpkg").rows) == CHUNKS
    assert results_section(done.stdout)["REPORT"] == str(work / "reports" / "r.html")
    assert not (qs.REPO_ROOT / "reports").exists() and not (qs.REPO_ROOT / "out.gpkg").exists()


# --- destinations checked before the worker starts ----------------------------------------------


def unwritable_cases():
    """(case, {parameter: destination under tmp_path}, the message's end)"""
    missing = "does not exist. Create it or choose another destination; nothing was run or written."
    read_only = "is read-only. Choose another destination; nothing was run or written."
    return [
        ("OUTPUT in a missing folder", {"OUTPUT": "missing/out.gpkg"}, f"the folder {{tmp}}/missing {missing}"),
        ("REPORT in a missing folder", {"REPORT": "missing/r.html"}, f"the folder {{tmp}}/missing {missing}"),
        ("SUMMARY in a read-only folder", {"SUMMARY": "ogr:dbname='{tmp}/locked/s.gpkg' table=\"summary\" (geom)"}, f"the folder {{tmp}}/locked {read_only}"),
        ("REPORT in a read-only folder", {"REPORT": "locked/r.html"}, f"the folder {{tmp}}/locked {read_only}"),
        ("SUMMARY replacing OUTPUT's file", {"OUTPUT": "ogr:dbname='{tmp}/one.gpkg' table=\"chunks\" (geom)", "SUMMARY": "one.gpkg"},
         "SUMMARY names the file without a table, so QGIS would replace the whole file and lose OUTPUT."),
        ("REPORT on OUTPUT's file", {"OUTPUT": "same.gpkg", "REPORT": "same.gpkg"},
         "OUTPUT and REPORT are both {tmp}/same.gpkg: the one written last would replace the other. Give each its own file name; nothing was run or written."),
        ("two layers in one table", {"OUTPUT": "ogr:dbname='{tmp}/one.gpkg' table=\"chunks\" (geom)", "SUMMARY": "ogr:dbname='{tmp}/one.gpkg' table=\"chunks\" (geom)"},
         "OUTPUT and SUMMARY are both {tmp}/one.gpkg (table chunks): the one written last would replace the other."),
    ]


@pytest.mark.parametrize("case, destinations, message", unwritable_cases(), ids=[c[0] for c in unwritable_cases()])
def test_unwritable_destinations_fail_before_the_worker_starts(tiny_model, scene, tmp_path, case, destinations, message):
    (tmp_path / "locked").mkdir()
    parameters = {"INPUT": scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": "64", "OUTPUT": "out.gpkg"}
    parameters.update({name: value.replace("{tmp}", str(tmp_path)) for name, value in destinations.items()})
    with qs.read_only_folder(tmp_path / "locked"):
        done = detect(*(f"{name}={value}" for name, value in parameters.items()), cwd=tmp_path)
    message = message.replace("{tmp}", str(tmp_path))
    assert done.returncode == 1, done.stdout[-3000:]
    assert done.stdout.count(message) == 1, done.stdout[-3000:]
    assert WORKER_STARTED not in done.stdout
    assert sorted(os.listdir(tmp_path)) == ["locked"] and not os.listdir(tmp_path / "locked")


@contextlib.contextmanager
def held_by_another_process(path, lock: str):
    """Another process has ``path`` (a GeoPackage) open and has read it, inside an open "BEGIN EXCLUSIVE"
    (a writer with changes not yet saved) or with no transaction ("", a viewer), until the block ends."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys\n"
        f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
        + (f"c.execute({lock!r})\n" if lock else "") +
        "c.execute('SELECT count(*) FROM gpkg_contents').fetchall()\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.communicate("", timeout=30)


@pytest.mark.parametrize("table", ["", "chunks"])
def test_a_geopackage_another_program_writes_is_refused_before_the_worker_starts_and_left_as_it_was(tiny_model, scene, tmp_path, table):
    """QGIS's writer met the lock only after the network had run, waited, then failed; the output
    is refused up front, whether the file is replaced or a table added to it. A program that only
    shows it holds nothing back."""
    target = tmp_path / "shared.gpkg"
    before = helpers.generate_raster(tmp_path, name="before.tif", width=64, height=64)
    assert qs.qgis_process("run", "native:polygonfromlayerextent", "--", f"INPUT={before.path}", f"OUTPUT={target}", timeout=240).returncode == 0
    content = target.read_bytes()
    destination = f"ogr:dbname='{target}' table=\"{table}\" (geom)" if table else str(target)
    parameters = [f"INPUT={scene.path}", f"MODEL={tiny_model.path}", "CHUNK_SIZE=64", f"OUTPUT={destination}"]
    with held_by_another_process(target, "BEGIN EXCLUSIVE"):
        done = detect(*parameters, cwd=tmp_path)
    assert done.returncode == 1, done.stdout[-3000:]
    assert done.stdout.count(f"OUTPUT cannot be written to {target}: another program holds a write lock on that GeoPackage") == 1, done.stdout[-3000:]
    assert "Save or undo the changes there, or wait for that run, or choose another destination; nothing was run or written." in done.stdout
    assert WORKER_STARTED not in done.stdout and "Traceback" not in done.stdout
    assert target.read_bytes() == content
    with held_by_another_process(target, ""):
        done = detect(*parameters, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]


def edited(path, layer):
    """The geologist's own edit of an output (labels are refused as something a rerun would replace: not this)."""
    from osgeo import ogr

    dataset = ogr.Open(str(path), update=1)
    dataset.ExecuteSQL(f"UPDATE \"{layer}\" SET review_rank = -7", dialect="SQLite" if str(path).endswith(".shp") else "")
    dataset = None


def failed_detect(folder, parameters, meanwhile=lambda: None):
    """Runs detect while another program takes a write lock on folder/summary.gpkg once the worker runs (after meanwhile())."""
    import threading
    import time

    release = threading.Event()
    worker = worker_of(next(p[len("INPUT="):] for p in parameters if p.startswith("INPUT=")))

    def lock_once_the_worker_runs():
        deadline = time.monotonic() + 120
        while not qs.processes_with(worker) and time.monotonic() < deadline:
            time.sleep(0.01)
        meanwhile()
        with held_by_another_process(folder / "summary.gpkg", "BEGIN EXCLUSIVE"):
            release.wait(240)

    locker = threading.Thread(target=lock_once_the_worker_runs)
    locker.start()
    try:
        return detect(*parameters, cwd=folder)
    finally:
        release.set()
        locker.join()


@pytest.mark.parametrize("name", ["ice.gpkg", "ice.shp"])
def test_a_run_that_fails_on_its_last_output_leaves_the_earlier_ones_as_they_were(tiny_model, scene, tmp_path, name):
    """The summary's GeoPackage locked while the network ran: the run failed saying 'a run is kept whole or not at all',
    yet OUTPUT had been replaced, and with it the labels the geologist had put in it; a shapefile it had created left
    its .dbf, .shx, .prj and .cpg behind."""
    summary = f"SUMMARY=ogr:dbname='{tmp_path / 'summary.gpkg'}' table=\"summary\" (geom)"
    parameters = [f"INPUT={scene.path}", f"MODEL={tiny_model.path}", "CHUNK_SIZE=64", f"OUTPUT={tmp_path / name}", summary, f"REPORT={tmp_path / 'report.html'}"]
    assert detect(*parameters, cwd=tmp_path).returncode == 0
    edited(tmp_path / name, "ice")
    before = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path) if f != "summary.gpkg"}
    assert {".gpkg"} <= {os.path.splitext(f)[1] for f in before} or {".shp", ".dbf", ".shx", ".prj"} <= {os.path.splitext(f)[1] for f in before}

    done = failed_detect(tmp_path, parameters)
    assert done.returncode == 1 and "SUMMARY: the summary layer could not be written" in done.stdout and "Traceback" not in done.stdout, done.stdout[-3000:]
    assert {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path) if f != "summary.gpkg"} == before
    # An output the failed run created is gone with all its parts.
    done = failed_detect(tmp_path, [p.replace(name, "new" + name[3:]) if p.startswith("OUTPUT=") else p for p in parameters])
    assert done.returncode == 1, done.stdout[-3000:]
    assert sorted(f for f in os.listdir(tmp_path) if f != "summary.gpkg") == sorted(before)


def test_a_failed_run_into_a_table_of_a_shared_geopackage_keeps_what_others_saved_there_meanwhile(tiny_model, scene, tmp_path):
    """The whole GeoPackage was put back as it was before the run: labels a geologist saved in another of its tables while
    the run worked were undone with it."""
    from osgeo import ogr

    project = tmp_path / "project.gpkg"
    dataset = ogr.GetDriverByName("GPKG").CreateDataSource(str(project))
    mine = dataset.CreateLayer("mine", geom_type=ogr.wkbNone)
    mine.CreateField(ogr.FieldDefn("label", ogr.OFTInteger))
    dataset = None

    def save_a_label():
        dataset = ogr.Open(str(project), update=1)
        layer = dataset.GetLayerByName("mine")
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("label", 1)
        layer.CreateFeature(feature)
        dataset = None

    summary = f"SUMMARY=ogr:dbname='{tmp_path / 'summary.gpkg'}' table=\"summary\" (geom)"
    assert detect(f"INPUT={scene.path}", f"MODEL={tiny_model.path}", "CHUNK_SIZE=64", f"OUTPUT={tmp_path / 'first.gpkg'}", summary, cwd=tmp_path).returncode == 0
    done = failed_detect(tmp_path, [f"INPUT={scene.path}", f"MODEL={tiny_model.path}", "CHUNK_SIZE=64",
                                    f"OUTPUT=ogr:dbname='{project}' table=\"chunks\" (geom)", summary], meanwhile=save_a_label)
    assert done.returncode == 1 and "SUMMARY: the summary layer could not be written" in done.stdout, done.stdout[-3000:]
    dataset = ogr.Open(str(project))
    assert [feature.GetField("label") for feature in dataset.GetLayerByName("mine")] == [1]
    assert not [name for name in os.listdir(tmp_path) if ".before-run" in name]


def test_a_run_stopped_while_its_worker_scores_leaves_what_another_run_wrote_meanwhile(tiny_model, tmp_path):
    """Two runs into one new GeoPackage: the first finished, and the second, stopped while its worker scored, removed
    the file (it had not existed when the second started) and the first's table with it; a report both name went back
    to the one there before both."""
    import signal
    import time

    raster = helpers.generate_raster(tmp_path, name="large.tif", width=2048, height=2048, seed=6)
    shared, report = tmp_path / "ice.gpkg", tmp_path / "r.html"
    report.write_text("the report there before both runs")
    process = subprocess.Popen(["bash", str(qs.QGIS_PROCESS), "run", "hiriseice:detect", "--", f"INPUT={raster.path}", f"MODEL={tiny_model.path}",
                                "CHUNK_SIZE=64", "BATCH_SIZE=1", f"OUTPUT=ogr:dbname='{shared}' table=\"img_b\" (geom)", f"REPORT={report}"],
                               env=qs.qgis_process_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not qs.processes_with(worker_of(raster.path)) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        dataset = ogr.GetDriverByName("GPKG").CreateDataSource(str(shared))  # the other run, finished meanwhile
        table = dataset.CreateLayer("img_a", geom_type=ogr.wkbNone)
        table.CreateField(ogr.FieldDefn("label", ogr.OFTInteger))
        feature = ogr.Feature(table.GetLayerDefn())
        feature.SetField("label", 1)
        table.CreateFeature(feature)
        dataset = None
        report.write_text("the other run's report")
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1 and "Stopped by SIGTERM" in out, out[-3000:]
    dataset = ogr.Open(str(shared))
    assert dataset is not None and [f.GetField("label") for f in dataset.GetLayerByName("img_a")] == [1]
    assert report.read_text() == "the other run's report"


def test_the_copies_a_killed_run_left_are_removed_by_the_next_run_of_that_output(tiny_model, scene, tmp_path):
    """A run killed with SIGKILL cannot remove the copies it made of its outputs (.NAME.before-run-PID, up to a GB each);
    no later run did, and an overnight batch of such nights piled them up."""
    output, report = tmp_path / "ice.gpkg", tmp_path / "r.html"
    parameters = [f"INPUT={scene.path}", f"MODEL={tiny_model.path}", "CHUNK_SIZE=64", f"OUTPUT={output}", f"REPORT={report}"]
    assert detect(*parameters, cwd=tmp_path).returncode == 0
    dead = next(pid for pid in range(4_000_000, 3_000_000, -1) if not os.path.exists(f"/proc/{pid}"))
    left = [tmp_path / f".ice.gpkg.before-run-{dead}", tmp_path / f".r.html.before-run-{dead}"]
    for copy in left:
        copy.write_bytes(b"a copy")
    alive = tmp_path / f".ice.gpkg.before-run-{os.getpid()}"  # a run still going: its copy stays
    alive.write_bytes(b"a copy")
    done = detect(*parameters, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    assert not any(copy.exists() for copy in left) and alive.exists()
    assert f"Removed {left[0]}, the copy of ice.gpkg a run killed before it ended (process {dead}) had kept." in done.stdout


@pytest.mark.parametrize("name, field", [("chunks.gpkg", "label"), ("chunks.shp", "label"), ("table", "label"), ("chunks.gpkg", "ice"), ("chunks.shp", "ice")])
def test_a_rerun_into_labelled_chunks_is_refused_before_anything_runs(tiny_model, scene, tmp_path, name, field):
    """Detect again into the labelled chunks.gpkg wiped the geologist's labels, with a line in the log saying a file was replaced;
    and labels in a field of the geologist's own ('ice', read by train's LABEL_FIELD) went without even a refusal."""
    from osgeo import ogr

    output = f"ogr:dbname='{tmp_path / 'project.gpkg'}' table=\"chunks\" (geom)" if name == "table" else str(tmp_path / name)
    path = tmp_path / ("project.gpkg" if name == "table" else name)
    parameters = [f"INPUT={scene.path}", f"MODEL={tiny_model.path}", "CHUNK_SIZE=64", f"OUTPUT={output}"]
    assert detect(*parameters, cwd=tmp_path).returncode == 0
    dataset = ogr.Open(str(path), update=1)
    layer = dataset.GetLayer(0)
    if field != "label":
        layer.CreateField(ogr.FieldDefn(field, ogr.OFTString))
    dataset.ExecuteSQL(f"UPDATE \"{layer.GetName()}\" SET {field} = '1' WHERE chunk_id < 3", dialect="SQLite" if name.endswith(".shp") else "")
    dataset = None
    before = path.read_bytes()
    done = detect(*parameters, cwd=tmp_path)
    assert done.returncode == 1 and done.stdout.count("ERROR:") == 1 and "Traceback" not in done.stdout, done.stdout[-3000:]
    assert f"holds 3 chunk(s) you marked (in {field}): they would be lost. Give another file" in done.stdout, done.stdout[-3000:]
    assert not qs.processes_with(worker_of(scene.path)) and path.read_bytes() == before


# --- nothing beside the input -------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["hiriseice:detect", "hiriseice:chunk"])
def test_no_file_is_written_beside_the_input_raster(tiny_model, tmp_path, algorithm):
    """QGIS used to save the statistics it computes for a UInt16 layer as scene.tif.aux.xml."""
    archive = tmp_path / "archive"
    archive.mkdir()
    raster = helpers.generate_raster(archive, name="scene.tif", width=128, height=128, data_type="UInt16")
    os.chmod(raster.path, 0o444)  # as HiRISE archive copies often are
    parameters = [f"INPUT={raster.path}", "CHUNK_SIZE=64", f"OUTPUT={tmp_path / 'out.gpkg'}"]
    if algorithm == "hiriseice:detect":
        parameters.append(f"MODEL={tiny_model.path}")
    done = qs.qgis_process("run", algorithm, "--", *parameters, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:]
    assert os.listdir(archive) == ["scene.tif"]


def test_a_style_that_cannot_be_stored_is_a_warning_not_an_error(qgis_app):
    """qgis_process prints a non-fatal reportError twice; a warning once."""
    from qgis.core import QgsVectorLayer

    styling = qs.plugin_module("processing_provider.styling")
    feedback = qs.recording_feedback()
    layer = QgsVectorLayer("Polygon", "chunks", "memory")
    assert styling.store_style(layer, "/nonexistent/chunks.qml", feedback) is None
    assert feedback.warnings == ["Could not apply the style /nonexistent/chunks.qml."] and feedback.errors == []


def test_a_folder_gone_read_only_mid_run_is_told_so_not_to_free_space(qgis_app, tmp_path):
    """A folder remounted read-only while detect ran (on a disk with under 2 GB free) had been told to free some space."""
    import os
    import subprocess

    destinations = qs.plugin_module("processing_provider.destinations")
    folder = tmp_path / "mounted"
    folder.mkdir()
    if os.geteuid() == 0:  # root writes through a folder's mode: only a read-only file system refuses it
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("root here cannot mount a read-only tmpfs")
    else:
        folder.chmod(0o555)
    try:
        error = destinations.not_written(destinations.FileDestination("OUTPUT", str(folder / "c.gpkg")), "chunk", "the layer could not be created")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(folder)], check=True)
        else:
            folder.chmod(0o755)
    assert "Its folder cannot be written to (read-only, or not yours): choose another destination" in str(error) and "Free some space" not in str(error)


def test_outputs_whose_names_differ_in_case_only_are_one_file_where_the_file_system_ignores_case(qgis_app, tiny_model, scene, tmp_path, monkeypatch):
    """On Windows (NTFS) and macOS (APFS) Ice.gpkg and ice.gpkg are one file, and the summary had replaced the chunk layer;
    os.path.normcase folds case on Windows only. This system's file systems keep case: the check is run as theirs."""
    monkeypatch.setattr(qs.plugin_module("model.files"), "CASE_INSENSITIVE", True)
    message = qs.processing_error("hiriseice:detect", {"INPUT": scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": 64,
                                                      "OUTPUT": str(tmp_path / "Ice.gpkg"), "SUMMARY": str(tmp_path / "ice.gpkg")})
    assert "the one written last would replace the other" in message or "QGIS would replace the whole file" in message, message
    message = qs.processing_error("hiriseice:detect", {"INPUT": scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": 64,
                                                      "OUTPUT": f"ogr:dbname='{tmp_path / 'ice.gpkg'}' table=\"chunks\" (geom)", "SUMMARY": str(tmp_path / "ICE.gpkg")})
    assert "so QGIS would replace the whole file and lose OUTPUT" in message, message
    assert not list(tmp_path.glob("*.gpkg"))


def test_a_replaced_output_that_cannot_be_put_back_is_kept_beside_it_and_named(qgis_app, tmp_path):
    """On Windows a file open in another program cannot be replaced: putting an output back after a failed run failed
    silently, and the only copy of what it held was deleted."""
    destinations = qs.plugin_module("processing_provider.destinations")
    report = tmp_path / "r.html"
    report.write_text("the report there before")
    said = []
    with contextlib.ExitStack() as held, pytest.raises(RuntimeError, match="the run failed"):
        with destinations.kept_whole([destinations.FileDestination("REPORT", str(report), existed=True)], said.append):
            destinations.replacing_outputs()
            report.write_text("half-written by the failed run")
            held.enter_context(qs.held_file(report))  # until kept_whole has tried to put it back
            raise RuntimeError("the run failed")
    kept = tmp_path / "r (before a failed run).html"
    assert kept.read_text() == "the report there before", os.listdir(tmp_path)
    assert said == [f"{report} could not be put back as it was before this run (Operation not permitted); that file is kept as {kept}."]
    assert not [name for name in os.listdir(tmp_path) if ".before-run" in name]


def test_the_addresses_messages_suggest_read_back_as_the_file_they_name(qgis_app):
    """A path with an apostrophe had been put into a suggested ogr:dbname='...' unescaped, which the plugin's own check refused."""
    from qgis.core import QgsDataSourceUri

    destinations = qs.plugin_module("processing_provider.destinations")
    for path in ("/data/O'Neil/ice.gpkg", "C:\\data\\Mars's ice\\ice.gpkg", "/plain/ice.gpkg"):
        address = destinations.ogr_address(path, "chunks_2")
        uri = QgsDataSourceUri(address[len("ogr:"):])
        assert (uri.database(), uri.table()) == (path, "chunks_2"), address


def test_a_table_name_holding_a_pipe_is_refused_before_the_run(tiny_model, scene, tmp_path):
    """GDAL makes such a table but QGIS reads '|' as an address's options: the run had failed after the whole detect,
    with a message about locks and disk space."""
    message = qs.processing_error("hiriseice:detect", {"INPUT": scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": 64,
                                                      "OUTPUT": f"ogr:dbname='{tmp_path / 't.gpkg'}' table=\"ch|unks\" (geom)"})
    assert "QGIS cannot load the table 'ch|unks'" in message and "nothing was run or written" in message, message
    assert not (tmp_path / "t.gpkg").exists()
