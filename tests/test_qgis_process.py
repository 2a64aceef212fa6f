"""The real qgis_process command line: scripts/qgis_process (the checkout as plugin, isolated
profile), and qgis_process with the plugin installed but no worker set up."""

import json
import os
import re
import shutil
import subprocess

import pytest

import qgis_support as qs
from model import rules


@pytest.fixture(scope="module")
def scene(session_raster):
    return qs.detect_scene(session_raster)


def results_section(output: str) -> dict:
    """qgis_process's 'Results' block as {name: text}."""
    block = output.split("Results\n----------------", 1)
    assert len(block) == 2, output[-3000:]
    return dict(m.groups() for m in re.finditer(r"^([A-Z_]+):\t(.*)$", block[1], re.M))


def test_list_shows_the_algorithms():
    done = qs.qgis_process("list")
    assert done.returncode == 0, done.stdout[-3000:]
    provider = done.stdout.split("HiRISE Ice Patches\n", 1)
    assert len(provider) == 2, "the provider is not listed:\n" + done.stdout[:3000]
    listed = re.findall(r"^\t(hiriseice:\w+)\t(.+)$", provider[1], re.M)
    assert sorted(listed) == [("hiriseice:chunk", "Chunk grid of a HiRISE image"), ("hiriseice:detect", "Detect ice patches"),
                              ("hiriseice:download", "Download HiRISE products"), ("hiriseice:find", "Find HiRISE observations"), ("hiriseice:survey", "Survey many images"),
                              ("hiriseice:train", "Train ice-patch model")]


def test_help_explains_detect():
    done = qs.qgis_process("help", "hiriseice:detect")
    out = done.stdout
    assert done.returncode == 0, out[-3000:]
    assert "Detect ice patches" in out
    for name in ("INPUT", "MODEL", "CHUNK_SIZE", "STRIDE", "MIN_VALID", "BATCH_SIZE", "ICY_THRESHOLD", "HARD_LOW", "CATEGORY_RULE", "BAND", "OUTPUT", "SUMMARY", "REPORT", "CATEGORY"):
        assert re.search(rf"^{name}:", out, re.M), f"{name} missing from the help:\n{out}"
    assert "0.6" in out and "0.4" in out and "scripts/install" in out  # thresholds and what to do without a worker
    assert re.search(r"CATEGORY_RULE: .*\n\tArgument type:\tenum\n\tAvailable values:\n\t\t- 0: paper\n\t\t- 1: conservative", out)


def test_run_detect_writes_a_styled_geopackage(tiny_model, scene):
    run = qs.qgis_process_detect(tiny_model.path, scene.path)
    out = run.process.stdout
    assert run.process.returncode == 0, out[-4000:]
    table = qs.read_ogr(run.output)
    assert table.field_names == qs.DETECTION_FIELD_NAMES and len(table.rows) == 20
    styles = qs.layer_styles(run.output)
    assert [(s["f_table_name"], s["styleName"], s["useAsDefault"]) for s in styles] == [(table.name, "HiRISE ice probability", 1)]
    assert 'attr="probability"' in styles[0]["styleQML"]
    results = results_section(out)
    stats = rules.image_stats([r["probability"] for r in table.rows])
    assert results["CATEGORY"] == rules.image_category(stats, "paper") and "--category-rule paper" in out  # the default
    assert int(results["CHUNKS"]) == 20 and int(results["ICY_CHUNKS"]) == stats.icy_chunks
    assert results["OUTPUT"] == run.output and results["REPORT"] == run.report
    with open(run.report, encoding="utf-8") as handle:
        assert "detect_scene" in handle.read()


@pytest.mark.parametrize("given, meant", [("off", "--no-tta"), ("No", "--no-tta"), ("yes", "--tta"), ("maybe", None)])
def test_a_yes_or_no_parameter_takes_the_words_for_it_and_refuses_others(tiny_model, scene, tmp_path, given, meant):
    """QGIS reads any word but 0 and false as true: TTA=no and TTA=off ran with the mirror, twice the network's time."""
    done = qs.qgis_process("run", "hiriseice:detect", "--", f"INPUT={scene.path}", f"MODEL={tiny_model.path}", "CHUNK_SIZE=64", f"TTA={given}",
                           f"OUTPUT={tmp_path / 'chunks.gpkg'}")
    if meant:
        assert done.returncode == 0 and re.search(rf"^.* -m model .*{meant}$", done.stdout, re.M), done.stdout[-3000:]
    else:
        assert done.returncode == 1 and "TTA (Mirror test-time augmentation (average with the east-west mirror)) is 'maybe'; give true or false" in done.stdout
        assert not (tmp_path / "chunks.gpkg").exists()


def test_an_error_of_a_json_run_is_said_once(tiny_model, scene, tmp_path):
    """With --json, QGIS 3.22 kept a failed run's error in a JSON log it never printed: exit 1 and not a word."""
    done = subprocess.run(["bash", str(qs.QGIS_PROCESS), "--json", "run", "hiriseice:detect", "--", f"INPUT={scene.path}",
                           f"MODEL={tmp_path / 'none.hiriseice'}", f"OUTPUT={tmp_path / 'chunks.gpkg'}"],
                          cwd=str(qs.REPO_ROOT), env=qs.qgis_process_environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    said = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert said == [f"ERROR:\tThe model file '{tmp_path / 'none.hiriseice'}' (MODEL) does not exist. Choose another, leave MODEL empty for the "
                    "bundled default model, or train one with hiriseice:train."], done.stderr[-3000:]


def test_category_rule_reaches_the_worker_and_the_summary(tiny_model, scene, tmp_path):
    """Given by the number qgis_process's help offers for it ("Number of selected option"), which QGIS alone refuses."""
    gpkg = tmp_path / "conservative.gpkg"
    done = qs.qgis_process(
        "run", "hiriseice:detect", "--", f"INPUT={scene.path}", f"MODEL={tiny_model.path}", "CHUNK_SIZE=64",
        f"CATEGORY_RULE={list(rules.CATEGORY_RULES).index('conservative')}",
        f"OUTPUT={qs.gpkg_destination(gpkg, 'chunks')}", f"SUMMARY={qs.gpkg_destination(gpkg, 'summary')}", f"REPORT={tmp_path / 'r.html'}",
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "--category-rule conservative" in done.stdout
    stats = rules.image_stats([r["probability"] for r in qs.read_ogr(gpkg, "chunks").rows])
    expected = rules.image_category(stats, "conservative")
    assert qs.read_ogr(gpkg, "summary").rows[0]["category"] == results_section(done.stdout)["CATEGORY"] == expected
    assert f": {expected} (conservative rule) - " in done.stdout
    assert f"<tr><th>category</th><td>{expected} (conservative rule)</td></tr>" in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_bad_input_exits_non_zero_with_the_reason(tiny_model, make_raster, tmp_path):
    raster = make_raster(name="no_crs.tif", crs=None)
    output = tmp_path / "never.gpkg"
    done = qs.qgis_process("run", "hiriseice:detect", "--", f"INPUT={raster.path}", f"MODEL={tiny_model.path}", "CHUNK_SIZE=64", f"OUTPUT={output}", f"REPORT={tmp_path / 'r.html'}")
    assert done.returncode != 0
    assert "has no coordinate reference system" in done.stdout and "Assign" in done.stdout, done.stdout[-3000:]
    assert not output.exists()


def test_a_misspelt_parameter_stops_the_run_naming_the_right_one(tiny_model, scene, tmp_path):
    """qgis_process itself passes over a name the algorithm lacks, so PROBABILITY= would run detect
    without the probability raster the user asked for."""
    output, probability = tmp_path / "never.gpkg", tmp_path / "p.tif"
    done = qs.qgis_process("run", "hiriseice:detect", "--", f"INPUT={scene.path}", f"MODEL={tiny_model.path}", "CHUNK_SIZE=64", f"OUTPUT={output}", f"PROBABILITY={probability}")
    assert done.returncode == 1, done.stdout[-3000:]
    assert "hiriseice:detect has no parameter PROBABILITY. Did you mean PROBABILITY_RASTER?" in done.stdout, done.stdout[-3000:]
    assert "Traceback" not in done.stdout
    assert not output.exists() and not probability.exists()


def test_a_number_out_of_range_or_an_unknown_option_is_told_what_it_takes(tiny_model, scene, tmp_path):
    """QGIS alone says "Incorrect parameter value for ANCHOR"; the message gives the range (the
    options) and the default."""
    output = tmp_path / "never.hiriseice"
    done = qs.qgis_process("run", "hiriseice:train", "--", f"RASTERS={scene.path}", f"LABELS={tmp_path / 'labels.gpkg'}", f"BASE_MODEL={tiny_model.path}",
                           "ANCHOR=2", f"OUTPUT_MODEL={output}")
    assert done.returncode == 1, done.stdout[-3000:]
    assert "ANCHOR (Pull back toward the base model per step (fine-tuning; 0 = none: learns most, forgets most)) is '2'; give a number from 0 to 1 (default 0.02)." in done.stdout, done.stdout[-3000:]
    assert "Incorrect parameter value" not in done.stdout and "Traceback" not in done.stdout
    assert not output.exists()
    done = qs.qgis_process("run", "hiriseice:train", "--", f"RASTERS={scene.path}", f"LABELS={tmp_path / 'labels.gpkg'}", "LABEL_MODE=2", f"OUTPUT_MODEL={output}")
    assert done.returncode == 1, done.stdout[-3000:]
    assert ("LABEL_MODE (The label layers hold) is '2'; give one of 0 (chunk polygons (e.g. a filled detect output)); 1 (ice-patch outlines) (default 0)."
            in done.stdout), done.stdout[-3000:]
    assert not output.exists()


def test_train_writes_relative_names_in_the_folder_it_was_started_in(tiny_model, training_data, tmp_path):
    """The worker runs in the plugin folder: a relative OUTPUT_MODEL had landed there (which a plugin update
    replaces), and a relative BASE_MODEL that QGIS had read was missing to the worker."""
    labels_layer(training_data, tmp_path / "labels.gpkg")
    (tmp_path / "models").mkdir()
    shutil.copyfile(tiny_model.path, tmp_path / "models" / "base.hiriseice")
    done = qs.qgis_process("run", "hiriseice:train", "--", f"RASTERS={training_data.raster.path}", "LABELS=labels.gpkg", "BASE_MODEL=models/base.hiriseice",
                           "EPOCHS=1", "OUTPUT_MODEL=tuned.hiriseice", "REPORT=tuned.html", "HISTORY=history.gpkg", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    assert {"tuned.hiriseice", "tuned.html", "history.gpkg"} <= set(os.listdir(tmp_path)), os.listdir(tmp_path)
    assert not (qs.REPO_ROOT / "tuned.hiriseice").exists() and not (qs.REPO_ROOT / "tuned.html").exists()


def test_a_training_without_report_keeps_its_report_beside_the_model(tiny_model, training_data, tmp_path):
    """Without REPORT the report, where the guard says whether the new model is worse, went to a temporary folder that
    qgis_process deletes as it exits, while the results still named it."""
    labels_layer(training_data, tmp_path / "labels.gpkg")
    done = subprocess.run(["bash", str(qs.QGIS_PROCESS), "--json", "run", "hiriseice:train", "--", f"RASTERS={training_data.raster.path}",
                           f"LABELS={tmp_path / 'labels.gpkg'}", f"BASE_MODEL={tiny_model.path}", "EPOCHS=1", f"OUTPUT_MODEL={tmp_path / 'tuned.hiriseice'}"],
                          cwd=str(tmp_path), env=qs.qgis_process_environment(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)["results"]
    assert results["REPORT"] == str(tmp_path / "tuned.report.html") and os.path.isfile(results["REPORT"])


def copy_of_the_checkout(checkout):
    """The tracked files but the models ('list' needs none) copied to ``checkout``."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=str(qs.REPO_ROOT), capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if not name.startswith("resources/models/"):
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(qs.REPO_ROOT / name, checkout / name)
    return checkout


def test_a_checkout_its_user_cannot_write_lists_the_algorithms_from_its_own_folder(tmp_path):
    """Installed read-only for its users (by IT), the checkout's scripts/qgis_process stopped at 'mkdir: cannot create
    directory .../build', HIRISEICE_QGIS_CONFIG_PATH or not."""
    checkout = copy_of_the_checkout(tmp_path / "site" / "hirise_ice_patches")
    (tmp_path / "home").mkdir()
    env = dict(qs.qgis_process_environment(), HOME=str(tmp_path / "home"))
    env.pop("XDG_CACHE_HOME", None)
    env.pop("XDG_RUNTIME_DIR", None)
    with qs.read_only_folder(checkout):
        done = subprocess.run(["bash", str(checkout / "scripts" / "qgis_process"), "list"], env=env, capture_output=True, text=True, timeout=300)
    assert "hiriseice:detect" in done.stdout, (done.stdout + done.stderr)[-3000:]
    assert not (checkout / "build").exists() and list((tmp_path / "home" / ".cache" / "hiriseice").glob("checkout-*/plugins"))


def test_a_checkout_under_a_folder_whose_name_holds_a_semicolon_is_loaded(tmp_path):
    """QGIS splits QGIS_PLUGINPATH at ';': 'list' showed no hiriseice algorithm, and 'run' said only 'Algorithm not found!'."""
    checkout = copy_of_the_checkout(tmp_path / "maps;2026" / "hirise_ice_patches")
    done = subprocess.run(["bash", str(checkout / "scripts" / "qgis_process"), "list"], env=qs.qgis_process_environment(), capture_output=True,
                          text=True, timeout=300)
    assert "hiriseice:detect" in done.stdout, (done.stdout + done.stderr)[-3000:]


def test_a_temporary_folder_qgis_cannot_make_is_said_before_the_worker_starts(training_data, tmp_path):
    """TMPDIR naming a file (or a read-only disk): QGIS's temporary folder is "", so Train wrote its job into the folder
    qgis_process was started in, and the worker, started in the plugin's folder, stopped with a FileNotFoundError traceback."""
    (tmp_path / "not_a_folder").write_text("")
    labels_layer(training_data, tmp_path / "labels.gpkg")
    done = qs.qgis_process("run", "hiriseice:train", "--", f"RASTERS={training_data.raster.path}", f"LABELS={tmp_path / 'labels.gpkg'}", "EPOCHS=1",
                           f"OUTPUT_MODEL={tmp_path / 'm.hiriseice'}", env={"TMPDIR": str(tmp_path / "not_a_folder")}, cwd=tmp_path)
    assert done.returncode == 1, done.stdout[-3000:]
    assert "QGIS has no temporary folder it can write (it could make none; TMPDIR is " in done.stdout and "Traceback" not in done.stdout, done.stdout[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["labels.gpkg", "not_a_folder"]


@pytest.mark.parametrize("algorithm", ["detect", "survey"])
def test_thresholds_of_ones_own_without_a_temporary_folder_are_said_before_the_worker_starts(tiny_model, scene, tmp_path, algorithm):
    """The styles that follow other thresholds are made in QGIS's temporary folder: without one, detect and a whole survey
    ended after their work with a PermissionError traceback (or left the styles in the current folder)."""
    (tmp_path / "not_a_folder").write_text("")
    given = [f"INPUT={scene.path}", f"OUTPUT={tmp_path / 'c.gpkg'}"] if algorithm == "detect" else [f"RASTERS={scene.path}", f"OUTPUT={tmp_path / 's.gpkg'}"]
    done = qs.qgis_process("run", f"hiriseice:{algorithm}", "--", *given, f"MODEL={tiny_model.path}", "CHUNK_SIZE=64", "ICY_THRESHOLD=0.7",
                           env={"TMPDIR": str(tmp_path / "not_a_folder")}, cwd=tmp_path)
    assert done.returncode == 1, done.stdout[-3000:]
    assert "QGIS has no temporary folder it can write (it could make none; TMPDIR is " in done.stdout and "Traceback" not in done.stdout, done.stdout[-3000:]
    assert "-m model --jsonl" not in done.stdout and sorted(os.listdir(tmp_path)) == ["not_a_folder"]


def test_a_temporary_report_without_a_temporary_folder_names_tmpdir(tiny_model, scene, tmp_path):
    """QGIS names a temporary report '/<id>/REPORT.html' where it has no temporary folder: the run was refused for a missing
    folder no user can create, with no word of TMPDIR."""
    (tmp_path / "not_a_folder").write_text("")
    done = qs.qgis_process("run", "hiriseice:detect", "--", f"INPUT={scene.path}", f"MODEL={tiny_model.path}", "CHUNK_SIZE=64", "OUTPUT=TEMPORARY_OUTPUT",
                           "REPORT=TEMPORARY_OUTPUT", env={"TMPDIR": str(tmp_path / "not_a_folder")}, cwd=tmp_path)
    assert done.returncode == 1, done.stdout[-3000:]
    assert "QGIS has no temporary folder it can write (it could make none; TMPDIR is " in done.stdout and "Create it" not in done.stdout, done.stdout[-3000:]


def labels_layer(training_data, path):
    from osgeo import ogr, osr

    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer("labels", osr.SpatialReference(wkt=training_data.raster.crs_wkt), ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("label", ogr.OFTInteger))
    for item in training_data.labels:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkt(item["wkt"]))
        if item["label"] in (0, 1):
            feature.SetField("label", int(item["label"]))
        layer.CreateFeature(feature)


# --- installed without scripts/install -------------------------------------------------------------


@pytest.fixture(scope="module")
def bare_install(qgis_app, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bare_install")
    plugins = qs.plugin_without_worker(folder)
    return qs.environment_without_worker(plugins, folder / "config")


def bare_qgis_process(env, *args):
    import subprocess

    return subprocess.run(["/usr/bin/qgis_process.bin"] + [str(a) for a in args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)


def test_without_worker_the_algorithms_are_listed_and_chunk_runs(bare_install, make_raster, tmp_path):
    listed = bare_qgis_process(bare_install, "list")
    assert listed.returncode == 0 and "hiriseice:detect\tDetect ice patches" in listed.stdout, listed.stdout[-3000:]
    raster = make_raster(width=128, height=128)
    output = tmp_path / "grid.gpkg"
    done = bare_qgis_process(bare_install, "run", "hiriseice:chunk", "--", f"INPUT={raster.path}", "CHUNK_SIZE=64", f"OUTPUT={output}")
    assert done.returncode == 0, done.stdout[-3000:]
    assert len(qs.read_ogr(output).rows) == 4


def test_without_worker_detect_names_the_installer_and_scripts_install(bare_install, tiny_model, make_raster, tmp_path):
    raster = make_raster(width=128, height=128)
    output = tmp_path / "detected.gpkg"
    done = bare_qgis_process(bare_install, "run", "hiriseice:detect", "--", f"INPUT={raster.path}", f"MODEL={tiny_model.path}", "CHUNK_SIZE=64",
                             f"OUTPUT={output}", f"REPORT={tmp_path / 'r.html'}")
    assert done.returncode != 0
    assert "found none" in done.stdout and "Worker settings… > Reinstall…" in done.stdout, done.stdout[-3000:]
    assert "outlives the plugin's upgrades" in done.stdout and "`bash scripts/install`" in done.stdout
    assert os.path.join(qs.PLUGIN_PACKAGE, ".venv", "bin", "python") in done.stdout
    assert not output.exists()
