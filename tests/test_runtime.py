"""The worker's network runtime (model/runtime.py): ONNX Runtime only where it matches Keras.

Real HiRISE crops go through the exported network and through Keras in the worker; their
calibrated probabilities must agree within 1e-4, for a tiny model trained in this session and
for the bundled default model. Detect then gives the same chunk probabilities whether ONNX
Runtime or (with onnxruntime made unimportable) Keras scores them.
"""

import json
import os

import pytest

import helpers
import qgis_support as qs

MATCH = 1e-4

MATCH_SNIPPET = r"""
import glob, json, os, sys
import numpy as np
from osgeo import gdal
from model import calibration, modelfile, runtime
from model.network import logit_model
from model.preprocess import network_input, resize
model_path, tiles = sys.argv[1], sys.argv[2]
network, metadata = modelfile.load(model_path)
size = metadata["input_size"]
images = []
for path in sorted(glob.glob(os.path.join(tiles, "*.jpg")))[::20][:40]:
    data = resize(gdal.Open(path).ReadAsArray().astype(np.float32), size)
    images.append(network_input(data, np.ones(data.shape, bool), metadata["normalisation"]))
images = np.stack(images)[..., None]
first = runtime.logit_scorer(network)
folder = os.path.join(runtime.cache_folder(), "onnx")
mtimes = {name: os.path.getmtime(os.path.join(folder, name)) for name in os.listdir(folder)}
second = runtime.logit_scorer(modelfile.load(model_path)[0])  # the same weights loaded again: the cached export
same = runtime.logit_scorer(network) is first  # a warm worker's next image
def probabilities(logits):
    return calibration.apply(logits, metadata.get("calibration"))
keras = probabilities(runtime.KerasScorer(logit_model(network))(images))
print(json.dumps({"chunks": len(images), "first": first.name, "note": first.note, "second": second.name, "same": same,
                  "difference": float(np.max(np.abs(probabilities(first(images)) - keras))),
                  "difference_second": float(np.max(np.abs(probabilities(second(images)) - keras))),
                  "spread": float(np.ptp(keras)), "cache_unchanged": mtimes == {name: os.path.getmtime(os.path.join(folder, name)) for name in os.listdir(folder)},
                  "cached": sorted(mtimes)}))
"""

DETECT_SNIPPET = r"""
import io, json, sys
from model.inference import DetectOptions, detect
from model.protocol import Reporter
raster, model_path = sys.argv[1], sys.argv[2]
def run():
    stream = io.StringIO()
    detection = detect(raster, model_path, DetectOptions(), Reporter(jsonl=True, stream=stream))
    logs = [m["message"] for m in map(json.loads, stream.getvalue().splitlines()) if m["type"] == "log"]
    return {c["chunk_id"]: c["probability"] for c in detection.chunks}, [line for line in logs if line.startswith("network runtime")]
onnx, onnx_log = run()
sys.modules["onnxruntime"] = None  # a worker without onnxruntime: the import fails, Keras scores
keras, keras_log = run()
print(json.dumps({"onnx": onnx, "keras": keras, "onnx_log": onnx_log, "keras_log": keras_log}))
"""


def run_match(worker_python, model_path, shared_data) -> dict:
    tiles = shared_data / "hirise-terrain" / "tiles"
    if not tiles.is_dir():
        pytest.skip(f"real HiRISE crops absent from the shared data ({tiles})")
    done = helpers.run_worker_snippet(worker_python, MATCH_SNIPPET, model_path, tiles, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("HIRISEICE_CACHE_DIR", str(folder))
    return folder


def check_match(result: dict) -> None:
    assert result["first"] == "ONNX Runtime", result["note"]
    assert result["chunks"] == 40 and result["spread"] > 0, "the crops must not all score alike, or the comparison says nothing"
    assert result["difference"] <= MATCH, result
    # The same weights loaded again reuse the export: same files, untouched; the same network, its scorer.
    assert result["second"] == "ONNX Runtime" and result["difference_second"] <= MATCH and result["same"]
    assert result["cache_unchanged"] and len(result["cached"]) == 2 and {os.path.splitext(n)[1] for n in result["cached"]} == {".onnx", ".json"}


def test_onnx_runtime_matches_keras_on_real_chunks_with_a_tiny_model(worker_python, tiny_model, shared_data, empty_cache):
    check_match(run_match(worker_python, tiny_model.path, shared_data))


def test_onnx_runtime_matches_keras_on_real_chunks_with_the_default_model(worker_python, shared_data, empty_cache):
    check_match(run_match(worker_python, "", shared_data))


def test_a_failed_match_is_remembered_and_keras_scores(worker_python, tiny_model, shared_data, empty_cache):
    """The guard's verdict is cached with the export: a network whose export did not match stays on Keras."""
    first = run_match(worker_python, tiny_model.path, shared_data)
    record_path = next(empty_cache.glob("onnx/*.json"))
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps(dict(record, matches=False, max_difference=3e-3)))
    again = run_match(worker_python, tiny_model.path, shared_data)
    assert first["first"] == "ONNX Runtime"
    assert again["first"] == "Keras" and "3.0e-03" in again["note"], again


def test_detect_gives_the_same_probabilities_on_onnx_runtime_and_on_keras(worker_python, tiny_model, make_raster, empty_cache):
    raster = make_raster(width=helpers.TINY_CHUNK_SIZE * 6, height=helpers.TINY_CHUNK_SIZE * 5, rotated_border=True, seed=3)
    done = helpers.run_worker_snippet(worker_python, DETECT_SNIPPET, raster.path, tiny_model.path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["onnx_log"][0].startswith("network runtime: ONNX Runtime")
    assert result["keras_log"][0].startswith("network runtime: Keras") and "not installed" in result["keras_log"][0]
    assert result["onnx"].keys() == result["keras"].keys() and len(result["onnx"]) >= 10
    worst = max(abs(result["onnx"][k] - result["keras"][k]) for k in result["onnx"])
    assert worst <= MATCH, worst


NO_TENSORFLOW_SNIPPET = r"""
import io, json, sys
from model.inference import DetectOptions, detect
from model.protocol import Reporter
raster, model_path = sys.argv[1], sys.argv[2]
stream = io.StringIO()
detection = detect(raster, model_path, DetectOptions(), Reporter(jsonl=True, stream=stream))
logs = [m["message"] for m in map(json.loads, stream.getvalue().splitlines()) if m["type"] == "log"]
print(json.dumps({"tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules, "device": detection.summary["device"],
                  "runtime": [line for line in logs if line.startswith("network runtime")],
                  "chunks": {c["chunk_id"]: c["probability"] for c in detection.chunks}}))
"""


@pytest.mark.parametrize("stride_chunks", [1, 0.5])
def test_no_worker_loads_tensorflow_to_score_a_model_file(worker_python, tiny_model, make_raster, empty_cache, stride_chunks):
    """The first worker has a child process export the model file's network (TensorFlow loads there,
    and leaves with it); that worker and the next find the export by the file's weights digest and
    score without importing TensorFlow, with the same probabilities; the per-chunk route and the
    score-map route alike."""
    raster = make_raster(width=helpers.TINY_CHUNK_SIZE * 6, height=helpers.TINY_CHUNK_SIZE * 5, rotated_border=True, seed=4)
    snippet = NO_TENSORFLOW_SNIPPET.replace("DetectOptions()", f"DetectOptions(stride={int(helpers.TINY_CHUNK_SIZE * stride_chunks)})")
    runs = []
    for _ in range(2):
        done = helpers.run_worker_snippet(worker_python, snippet, raster.path, tiny_model.path, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first, second = runs
    # one child exports both networks, whichever route asked first: one TensorFlow start, not two
    assert sorted(path.name.rsplit("-", 1)[1] for path in empty_cache.glob("onnx/*-*.json")) == ["logit.json", "map.json"]
    for run in runs:
        assert not run["tensorflow"] and not run["keras"], run["runtime"]
        assert run["runtime"][0].startswith("network runtime: ONNX Runtime") and "TensorFlow not loaded" in run["runtime"][0]
        assert run["device"] == "CPU"
    assert "child process" in first["runtime"][0] and "child process" not in second["runtime"][0]
    assert second["chunks"] == first["chunks"] and len(first["chunks"]) >= 10


def test_a_damaged_record_of_the_export_is_made_again(worker_python, tiny_model, make_raster, empty_cache):
    """A cache file cut short (a full disk, a killed worker) costs an export check in a child
    process, not the run."""
    raster = make_raster(width=helpers.TINY_CHUNK_SIZE * 4, height=helpers.TINY_CHUNK_SIZE * 3, seed=5)
    runs = []
    for damage in (False, True, False):
        if damage:
            for record in empty_cache.glob("onnx/*-logit.json"):
                record.write_text('{"path": ')
        done = helpers.run_worker_snippet(worker_python, NO_TENSORFLOW_SNIPPET, raster.path, tiny_model.path, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert [run["tensorflow"] for run in runs] == [False, False, False]
    assert ["child process" in run["runtime"][0] for run in runs] == [True, True, False]
    assert runs[0]["chunks"] == runs[1]["chunks"] == runs[2]["chunks"]


def test_an_unwritable_cache_folder_leaves_detect_on_keras(worker_python, tiny_model, make_raster, tmp_path, monkeypatch):
    """Where the child cannot record its export, the worker loads Keras itself and says why."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HIRISEICE_CACHE_DIR", str(blocker / "cache"))  # no folder can be made there, not even by root
    raster = make_raster(width=helpers.TINY_CHUNK_SIZE * 4, height=helpers.TINY_CHUNK_SIZE * 3, seed=6)
    done = helpers.run_worker_snippet(worker_python, NO_TENSORFLOW_SNIPPET, raster.path, tiny_model.path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads(done.stdout.strip().splitlines()[-1])
    assert run["tensorflow"] and run["runtime"][0].startswith("network runtime: Keras"), run["runtime"]
    assert "HIRISEICE_CACHE_DIR" in run["runtime"][0] and len(run["chunks"]) >= 6
    # nor does a child load TensorFlow first to export what the cache cannot take (18 s and 1 GB a run, with the worker's own start)
    done = helpers.run_worker_snippet(worker_python, CHILDREN_STARTED, tiny_model.path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    started = json.loads(done.stdout.strip().splitlines()[-1])
    assert started["children"] == 0 and started["runtime"] == "Keras" and "cache" in started["refusal"], started


CHILDREN_STARTED = r"""
import json, sys
from model import modelfile, runtime
started = []
export_in_child = runtime._export_in_child
runtime._export_in_child = lambda *given: started.append(given) or export_in_child(*given)
saved = runtime.SavedNetwork(sys.argv[1], modelfile.read_metadata(sys.argv[1]))
scorer = runtime.logit_scorer(saved)
print(json.dumps({"children": len(started), "runtime": scorer.name, "refusal": runtime.cache_refusal()}))
"""


def test_the_cache_folder_is_absolute_and_a_relative_xdg_cache_home_ignored(monkeypatch, tmp_path, qgis_app):
    """A relative HIRISEICE_CACHE_DIR was taken inside the plugin folder, where the worker runs (and an update deletes it);
    the XDG rules ignore a relative XDG_CACHE_HOME."""
    from model import runtime

    worker = qs.plugin_module("processing_provider.worker")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HIRISEICE_CACHE_DIR", "mycache")
    assert worker.worker_environment()["HIRISEICE_CACHE_DIR"] == str(tmp_path / "mycache") == runtime.cache_folder()
    monkeypatch.delenv("HIRISEICE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    assert runtime.cache_folder() == os.path.join(os.path.expanduser("~"), ".cache", "hiriseice")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert runtime.cache_folder() == str(tmp_path / "xdg" / "hiriseice")


def test_a_damaged_cached_export_is_made_again_not_a_traceback_on_every_run(worker_python, tiny_model, make_raster, empty_cache):
    """An .onnx cut short in the cache, its record still saying it matched Keras: every detect of that model failed in
    onnxruntime (InvalidProtobuf), until someone found and deleted the cache folder."""
    raster = make_raster(width=helpers.TINY_CHUNK_SIZE * 4, height=helpers.TINY_CHUNK_SIZE * 3, seed=7)
    runs = []
    for damage in (False, True, False):
        if damage:
            for export in empty_cache.glob("onnx/*.onnx"):
                export.write_bytes(export.read_bytes()[:100])
        done = helpers.run_worker_snippet(worker_python, NO_TENSORFLOW_SNIPPET, raster.path, tiny_model.path, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert runs[0]["chunks"] == runs[1]["chunks"] == runs[2]["chunks"] and len(runs[0]["chunks"]) >= 6
    assert all(run["runtime"][0].startswith("network runtime: ONNX Runtime") for run in (runs[0], runs[2])), [run["runtime"] for run in runs]


def test_an_export_that_fills_the_cache_disk_leaves_no_partial_file(worker_python, tiny_model, make_raster, small_disk, monkeypatch):
    """A full cache disk kept each failed export's partial file, so it stayed full."""
    cache = small_disk(12)  # a few kB: less than the network's export
    monkeypatch.setenv("HIRISEICE_CACHE_DIR", str(cache))
    raster = make_raster(width=helpers.TINY_CHUNK_SIZE * 4, height=helpers.TINY_CHUNK_SIZE * 3, seed=8)
    done = helpers.run_worker_snippet(worker_python, NO_TENSORFLOW_SNIPPET, raster.path, tiny_model.path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads(done.stdout.strip().splitlines()[-1])
    assert run["runtime"][0].startswith("network runtime: Keras") and len(run["chunks"]) >= 6, run["runtime"]
    assert "the cache's disk is full; free some space there" in run["runtime"][0], run["runtime"]  # not "set it to a writable folder"
    assert not [path.name for path in cache.rglob("*") if "partial" in path.name]


NO_ROOM_FOR_ONNX_RUNTIME = r"""
import json, resource, sys
from model import modelfile, runtime
path = sys.argv[1]
saved = runtime.SavedNetwork(path, modelfile.read_metadata(path))
with open("/proc/self/status") as status:  # a few MB more than mapped now: too few to map onnxruntime's library
    mapped = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (mapped + 4 * 2 ** 20, resource.RLIM_INFINITY))
try:
    runtime.logit_scorer(saved)
    print(json.dumps({"failed": None}))
except BaseException as exc:
    print(json.dumps({"failed": type(exc).__name__}))
"""


def test_running_out_of_memory_keeps_the_cached_export(worker_python, tiny_model, make_raster, empty_cache):
    """onnxruntime's library failing to map for want of memory was taken for a damaged export, which was
    deleted: every later run then paid a TensorFlow export."""
    raster = make_raster(width=helpers.TINY_CHUNK_SIZE * 4, height=helpers.TINY_CHUNK_SIZE * 3, seed=9)
    first = helpers.run_worker_snippet(worker_python, NO_TENSORFLOW_SNIPPET, raster.path, tiny_model.path, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    cached = sorted(path.name for path in empty_cache.glob("onnx/*"))
    assert len(cached) >= 2
    squeezed = helpers.run_worker_snippet(worker_python, NO_ROOM_FOR_ONNX_RUNTIME, tiny_model.path, timeout=600)
    assert json.loads(squeezed.stdout.strip().splitlines()[-1])["failed"] in ("ImportError", "MemoryError"), squeezed.stderr[-3000:]
    assert sorted(path.name for path in empty_cache.glob("onnx/*")) == cached


REPLACED_SNIPPET = r"""
import json, shutil, sys
from model import modelfile, runtime
from model.errors import ModelFileError
path, other = sys.argv[1], sys.argv[2]
saved = runtime.SavedNetwork(path, modelfile.read_metadata(path))
shutil.copyfile(other, path)  # a retrained model saved over it, once detect had checked it
try:
    saved.keras()
    print(json.dumps({"said": None}))
except ModelFileError as exc:
    print(json.dumps({"said": str(exc)}))
"""


def test_a_model_file_saved_over_while_detect_starts_is_not_scored_or_cached_as_the_one_checked(worker_python, tiny_model, tiny_two_scale_model, tmp_path, empty_cache):
    """Its digest was taken from the old file and its network loaded from the new one: that run scored with the retrained
    network under the old model's name, and cached that export under the old weights' digest, for every later run of it."""
    mine = tmp_path / "mine.hiriseice"
    mine.write_bytes(open(tiny_model.path, "rb").read())
    done = helpers.run_worker_snippet(worker_python, REPLACED_SNIPPET, mine, tiny_two_scale_model, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])["said"]
    assert said == (f"'{mine}' changed while it was being read (a model was saved over it): nothing was scored with it. Run again, once the other "
                    "program has finished writing it.")


EDITED_INPUT_SIZE = r"""
import json, sys
from model.errors import ModelFileError
from model.inference import DetectOptions, detect
raster, model_path = sys.argv[1], sys.argv[2]
try:
    detect(raster, model_path, DetectOptions())
    print(json.dumps({"said": None}))
except ModelFileError as exc:
    print(json.dumps({"said": str(exc)}))
"""


def test_metadata_edited_to_another_input_size_is_said_clearly_where_its_export_is_cached(worker_python, tiny_model, make_raster, tmp_path, empty_cache):
    """The export is found by the weights' digest alone: with it cached, an input size edited into the metadata met
    onnxruntime's INVALID_ARGUMENT at the first chunk (without it, modelfile.load's clear message)."""
    import zipfile

    from model import modelfile

    raster = make_raster(width=helpers.TINY_CHUNK_SIZE * 4, height=helpers.TINY_CHUNK_SIZE * 3, seed=8)
    first = helpers.run_worker_snippet(worker_python, NO_TENSORFLOW_SNIPPET, raster.path, tiny_model.path, timeout=600)  # caches the export
    assert first.returncode == 0, first.stderr[-3000:]
    edited = tmp_path / "edited.hiriseice"
    with zipfile.ZipFile(tiny_model.path) as source, zipfile.ZipFile(edited, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == modelfile.METADATA_MEMBER:
                metadata = json.loads(data)
                metadata["input_size"] = 2 * metadata["input_size"]
                data = json.dumps(metadata).encode()
            target.writestr(item, data)
    done = helpers.run_worker_snippet(worker_python, EDITED_INPUT_SIZE, raster.path, edited, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])["said"]
    assert said == (f"The network in '{edited}' (MODEL) expects {tiny_model.metadata['input_size']} px input, but its metadata says "
                    f"{2 * tiny_model.metadata['input_size']} px grayscale. Retrain it with hiriseice:train."), said
