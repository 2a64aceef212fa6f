"""model.modelfile: model files written by the worker, read without TensorFlow; every way a file can be wrong."""

import hashlib
import json
import re
import shutil
import os
import sys
import zipfile

import numpy as np
import pytest

from model import modelfile
from model.errors import ModelFileError
from model.preprocess import DEFAULT_NORMALISATION

import helpers


def test_trained_model_metadata(tiny_model):
    """What `python -m model train` wrote, read here in QGIS's Python (no TensorFlow)."""
    metadata = modelfile.read_metadata(tiny_model.path)
    assert metadata["format"] == modelfile.FORMAT and metadata["format_version"] == modelfile.FORMAT_VERSION
    assert metadata["name"] == "tiny-test-model"
    assert (metadata["input_size"], metadata["chunk_size"]) == (helpers.TINY_INPUT_SIZE, helpers.TINY_CHUNK_SIZE)
    assert metadata["architecture"] == {"name": "small_xception", "widths": helpers.TINY_WIDTHS, "input_size": helpers.TINY_INPUT_SIZE}
    assert metadata["normalisation"] == DEFAULT_NORMALISATION
    assert metadata["thresholds"] == {"icy": 0.6, "hard_low": 0.4}
    # 9 validation chunks: too few to fit Platt scaling on (tests/test_processing_train.py fits one)
    assert metadata["calibration"] is None
    assert metadata["metrics"]["calibration"]["choice"] == "none" and "a fit needs 10 of each" in metadata["metrics"]["calibration"]["reason"]
    assert metadata["metrics"]["ece_calibrated"] == metadata["metrics"]["ece_uncalibrated"]
    training = metadata["training"]
    assert training["epochs_run"] == training["total_epochs"] == len(tiny_model.result["history"]) == 2 and training["base_epochs"] == 0
    assert (training["learning_rate"], training["warmup_steps"], training["frozen_batch_norm_layers"], training["replay"]) == (tiny_model.job["learning_rate"], 0, 0, None)
    assert training["chunks"] == 36 and training["icy_chunks"] == 18 and training["seed"] == tiny_model.job["seed"]
    assert training["data"] == {"label_mode": "chunks", "images": [{"image_id": "train_scene", "chunks": 36, "icy": 18}]}
    assert set(metadata["metrics"]) >= {"validation_chunks", "at_0.5", "at_icy_threshold", "ece_uncalibrated", "ece_calibrated", "best_epoch"}
    with zipfile.ZipFile(tiny_model.path) as archive:
        assert sorted(archive.namelist()) == sorted([modelfile.METADATA_MEMBER, modelfile.KERAS_MEMBER])
        assert metadata["weights_sha256"] == hashlib.sha256(archive.read(modelfile.KERAS_MEMBER)).hexdigest()
    assert modelfile.describe(metadata).startswith("tiny-test-model ")
    assert not [name for name in os.listdir(os.path.dirname(tiny_model.path)) if "partial" in name]


ROUND_TRIP = r"""
import json, sys
import numpy as np
from model import modelfile
from model.finetune import freeze_batch_norm
network, metadata = modelfile.load(sys.argv[1])
metadata = dict(metadata, name="renamed", notes={"ü": [1, 2.5, None]})
frozen = freeze_batch_norm(network)  # as a fine-tuning run leaves them
modelfile.save(network, metadata, sys.argv[2])
import time
time.sleep(2.1)  # past the zip dates' two seconds: Keras stamps the time of each save
modelfile.save(network, metadata, sys.argv[2] + ".again")
again, read = modelfile.load(sys.argv[2])
same = all(np.array_equal(a, b) for a, b in zip(network.get_weights(), again.get_weights()))
x = np.random.default_rng(0).random((3,) + tuple(network.input_shape[1:])).astype("float32")
print(json.dumps({"metadata": read, "same_weights": same, "input_shape": list(again.input_shape), "frozen": frozen,
                  "frozen_when_read": sum(not layer.trainable for layer in again.layers),
                  "same_output": bool(np.allclose(network.predict(x, verbose=0), again.predict(x, verbose=0))),
                  "same_weights_sha256": read["weights_sha256"] == modelfile.read_metadata(sys.argv[2] + ".again")["weights_sha256"]}))
"""


def test_metadata_and_network_round_trip_through_the_worker(tiny_model, worker_python, tmp_path):
    """load -> save -> load in the worker keeps network and metadata; QGIS's side reads the same metadata."""
    copy = tmp_path / "copy.hiriseice"
    done = helpers.run_worker_snippet(worker_python, ROUND_TRIP, tiny_model.path, copy)
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["same_weights"] and out["same_output"]
    assert out["same_weights_sha256"]  # the same weights saved twice are one model to the report, the benchmark rows and the ONNX cache
    assert out["frozen"] > 0 and out["frozen_when_read"] == 0  # the next fit's choice, not the last one's
    assert out["input_shape"] == [None, helpers.TINY_INPUT_SIZE, helpers.TINY_INPUT_SIZE, 1]
    original = modelfile.read_metadata(tiny_model.path)
    read_here = modelfile.read_metadata(str(copy))
    assert read_here == out["metadata"]
    assert read_here["name"] == "renamed" and read_here["notes"] == {"ü": [1, 2.5, None]}
    for key in ("format", "format_version", "version", "input_size", "chunk_size", "normalisation", "thresholds", "architecture", "calibration", "training", "metrics"):
        assert read_here[key] == original[key], key


REPLAY_ROUND_TRIP = r"""
import json, sys
import numpy as np
from model import modelfile
network, metadata = modelfile.load(sys.argv[1])
s = metadata["input_size"]
rng = np.random.default_rng(0)
replay = {"images": rng.integers(0, 256, (5, s, s), dtype=np.uint8), "labels": np.array([1, 0, 0, 1, 0]), "kinds": np.array(["ice", "terrain", "hard landform", "ice", "terrain"])}
modelfile.save(network, metadata, sys.argv[2], replay=replay)
np.savez(sys.argv[4], **replay)
modelfile.save(network, modelfile.read_metadata(sys.argv[2]), sys.argv[3])  # without: no stale replay metadata
try:
    modelfile.save(network, metadata, sys.argv[3] + ".bad", replay=dict(replay, images=replay["images"][:, :4, :4]))
    print(json.dumps("saved a replay set of the wrong size"))
except ValueError as exc:
    print(json.dumps(str(exc)))
"""


def test_a_replay_set_round_trips_and_old_readers_ignore_it(tiny_model, worker_python, tmp_path):
    """save(..., replay=) in the worker; load_replay here without TensorFlow; saving without one drops it."""
    with_replay, without, expected = tmp_path / "with.hiriseice", tmp_path / "without.hiriseice", tmp_path / "replay.npz"
    done = helpers.run_worker_snippet(worker_python, REPLAY_ROUND_TRIP, tiny_model.path, with_replay, without, expected)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "a replay set needs uint8 images (n, 32, 32)" in json.loads(done.stdout.strip().splitlines()[-1])
    replay, stored = modelfile.load_replay(str(with_replay)), np.load(expected)
    for key in ("images", "labels", "kinds"):
        assert np.array_equal(replay[key], stored[key]), key
    assert replay["images"].dtype == np.uint8 and replay["kinds"].tolist() == ["ice", "terrain", "hard landform", "ice", "terrain"]
    metadata = modelfile.read_metadata(str(with_replay))
    assert metadata["format_version"] == 1  # an older plugin reads it and ignores the extra member
    assert metadata["replay"] == {"examples": 5, "icy": 2, "kinds": {"hard landform": 1, "ice": 2, "terrain": 2}}
    with zipfile.ZipFile(with_replay) as archive:
        assert sorted(archive.namelist()) == sorted([modelfile.METADATA_MEMBER, modelfile.KERAS_MEMBER, modelfile.REPLAY_MEMBER])
        assert metadata["replay_sha256"] == hashlib.sha256(archive.read(modelfile.REPLAY_MEMBER)).hexdigest()
        assert metadata["weights_sha256"] == hashlib.sha256(archive.read(modelfile.KERAS_MEMBER)).hexdigest()
    assert modelfile.load_replay(str(without)) is None
    assert not {"replay", "replay_sha256"} & set(modelfile.read_metadata(str(without)))


def test_store_metadata_rewrites_only_the_metadata(tiny_model, tmp_path):
    """A new measurement goes into a model file without touching its network's bytes."""
    path = tmp_path / "measured.hiriseice"
    shutil.copy(tiny_model.path, path)
    with zipfile.ZipFile(path) as archive:
        network_bytes = archive.read(modelfile.KERAS_MEMBER)
    metadata = modelfile.read_metadata(str(path))
    modelfile.store_metadata(str(path), dict(metadata, metrics=dict(metadata["metrics"], test={"ece": 0.02})))
    assert modelfile.read_metadata(str(path))["metrics"]["test"] == {"ece": 0.02}
    with zipfile.ZipFile(path) as archive:
        assert archive.read(modelfile.KERAS_MEMBER) == network_bytes
    with pytest.raises(ValueError, match="the metadata's weights_sha256 is not the model file's"):
        modelfile.store_metadata(str(path), dict(metadata, weights_sha256="0" * 64))
    assert modelfile.read_metadata(str(path))["metrics"]["test"] == {"ece": 0.02}


def test_store_replay_replaces_the_replay_set_and_keeps_the_network(tiny_model, tmp_path):
    """Reference crops are added to a shipped model without touching its weights (scripts/default_model.py --add-reference)."""
    path = tmp_path / "with_reference.hiriseice"
    shutil.copy(tiny_model.path, path)
    with zipfile.ZipFile(path) as archive:
        network_bytes = archive.read(modelfile.KERAS_MEMBER)
    size = modelfile.read_metadata(str(path))["input_size"]
    replay = {"images": np.full((3, size, size), 7, np.uint8), "labels": np.array([1, 0, 0]), "kinds": np.array(["ice", "terrain", "reference terrain"])}
    modelfile.store_replay(str(path), replay)
    stored, metadata = modelfile.load_replay(str(path)), modelfile.read_metadata(str(path))
    assert stored["kinds"].tolist() == ["ice", "terrain", "reference terrain"] and np.array_equal(stored["images"], replay["images"])
    assert metadata["replay"] == {"examples": 3, "icy": 1, "kinds": {"ice": 1, "reference terrain": 1, "terrain": 1}}
    modelfile.store_replay(str(path), {key: value[:2] for key, value in replay.items()})  # replaced, not appended
    with zipfile.ZipFile(path) as archive:
        assert archive.read(modelfile.KERAS_MEMBER) == network_bytes and archive.namelist().count(modelfile.REPLAY_MEMBER) == 1
    assert modelfile.load_replay(str(path))["kinds"].tolist() == ["ice", "terrain"]
    metadata = modelfile.read_metadata(str(path))
    modelfile.store_replay(str(path), replay, dict(metadata, name="renamed"))  # with new metadata, in the same rewrite
    assert modelfile.read_metadata(str(path))["name"] == "renamed" and modelfile.read_metadata(str(path))["replay"]["examples"] == 3
    with pytest.raises(ValueError, match="the metadata's weights_sha256 is not the model file's"):
        modelfile.store_replay(str(path), replay, dict(metadata, weights_sha256="0" * 64))


# --- files that are not (good) model files ------------------------------------------------------


def write_model_zip(path, metadata=None, keras=b"not really keras", members=None, raw_metadata=None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        names = members if members is not None else [modelfile.METADATA_MEMBER, modelfile.KERAS_MEMBER]
        for name in names:
            if name == modelfile.METADATA_MEMBER:
                archive.writestr(name, raw_metadata if raw_metadata is not None else json.dumps(metadata))
            elif name == modelfile.KERAS_MEMBER:
                archive.writestr(name, keras)
            else:
                archive.writestr(name, "something else")
    return str(path)


def good_metadata(**changes):
    metadata = modelfile.new_metadata("m", 32, 64, DEFAULT_NORMALISATION, {"name": "small_xception", "widths": [4, 8, 16]}, {"icy": 0.6, "hard_low": 0.4})
    metadata.update(changes)
    return metadata


@pytest.mark.parametrize("parameter, advice", [("MODEL", "leave MODEL empty for the bundled default model"), ("BASE_MODEL", "leave BASE_MODEL empty to train from scratch")])
@pytest.mark.parametrize("content", ["missing", b"corrupt bytes", "members"])
def test_messages_name_the_parameter_that_gave_the_file(tmp_path, parameter, advice, content):
    path = tmp_path / "m.hiriseice"
    if content == "members":
        write_model_zip(path, good_metadata(), members=["model.h5"])
    elif content != "missing":
        path.write_bytes(content)
    with pytest.raises(ModelFileError) as caught:
        modelfile.read_metadata(str(path), parameter)
    message = str(caught.value)
    assert f"({parameter})" in message and advice in message
    assert parameter == "MODEL" or "MODEL empty for the bundled" not in message


def test_a_well_formed_file_is_accepted(tmp_path):
    path = write_model_zip(tmp_path / "ok.hiriseice", good_metadata())
    assert modelfile.read_metadata(path)["chunk_size"] == 64


def test_a_missing_file(tmp_path):
    path = str(tmp_path / "nowhere.hiriseice")
    with pytest.raises(ModelFileError, match="does not exist") as caught:
        modelfile.read_metadata(path)
    assert path in str(caught.value) and "hiriseice:train" in str(caught.value)


def test_a_folder_is_not_a_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        modelfile.read_metadata(str(tmp_path))


def test_a_named_pipe_is_not_a_model_file(tmp_path):
    os.mkfifo(tmp_path / "tuned.hiriseice")
    with pytest.raises(ModelFileError, match="is a named pipe, not a file: reading it would wait .* Give the model file itself"):
        modelfile.read_metadata(str(tmp_path / "tuned.hiriseice"))


@pytest.mark.parametrize("content", [b"", b"hello, I am a text file\n", b"PK\x03\x04 truncated zip"], ids=["empty", "text", "truncated-zip"])
def test_a_non_zip_file(tmp_path, content):
    path = tmp_path / "model.hiriseice"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="not a readable HiRISE Ice Patches model file .*corrupt"):
        modelfile.read_metadata(str(path))


@pytest.mark.parametrize(
    "members",
    [[], [modelfile.METADATA_MEMBER], [modelfile.KERAS_MEMBER], ["model.h5", "README.txt"]],
    ids=["empty-zip", "no-network", "no-metadata", "other-members"],
)
def test_a_zip_without_the_members(tmp_path, members):
    path = write_model_zip(tmp_path / "m.hiriseice", good_metadata(), members=members)
    with pytest.raises(ModelFileError, match=f"lacks {modelfile.METADATA_MEMBER} or {modelfile.KERAS_MEMBER}"):
        modelfile.read_metadata(path)


@pytest.mark.parametrize(
    "metadata",
    [{"format": "some-other-tool", "format_version": 1}, {"name": "no format key"}, ["a", "list"], "a string"],
    ids=["other-format", "no-format", "list", "string"],
)
def test_a_foreign_zip_with_the_same_member_names(tmp_path, metadata):
    path = write_model_zip(tmp_path / "m.hiriseice", metadata)
    with pytest.raises(ModelFileError, match="is a zip archive but not a HiRISE Ice Patches model file"):
        modelfile.read_metadata(path)


@pytest.mark.parametrize("raw", ["{not json", b"\xff\xfe\x00binary"], ids=["bad-json", "not-utf8"])
def test_unreadable_metadata(tmp_path, raw):
    path = write_model_zip(tmp_path / "m.hiriseice", raw_metadata=raw)
    with pytest.raises(ModelFileError, match="not a readable HiRISE Ice Patches model file"):
        modelfile.read_metadata(path)


def test_a_model_file_one_may_not_read_is_said_so_not_corrupt(tiny_model):
    """Another user's model file (mode 600) was called "not a readable model file; it may be corrupt. Copy it again"."""
    import subprocess
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("reading as another user (setpriv) needs root")
    shared = tempfile.mkdtemp(prefix="hiriseice-owner-")
    try:
        os.chmod(shared, 0o755)
        path = os.path.join(shared, "theirs.hiriseice")
        shutil.copyfile(tiny_model.path, path)
        os.chmod(path, 0o600)
        code = "import sys; from model import modelfile\ntry:\n    modelfile.read_metadata(sys.argv[1])\nexcept Exception as exc:\n    print(exc)"
        done = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", sys.executable, "-c", code, path],
                              cwd=str(helpers.REPO_ROOT), env=dict(os.environ, PYTHONPATH=str(helpers.REPO_ROOT)), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"The model file '{path}' (MODEL) is one you may not read (its owner's permissions)." in done.stdout, done.stdout
        assert "corrupt" not in done.stdout
    finally:
        shutil.rmtree(shared)


def test_damaged_compressed_metadata(tmp_path):
    """Flipped bytes inside the deflated metadata: zlib or CRC errors become a ModelFileError."""
    path = write_model_zip(tmp_path / "m.hiriseice", good_metadata(padding="x" * 20000))
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(modelfile.METADATA_MEMBER)
    data = bytearray(open(path, "rb").read())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 5, start + 40):
        data[i] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(ModelFileError, match="not a readable HiRISE Ice Patches model file"):
        modelfile.read_metadata(path)


@pytest.mark.parametrize("version", [modelfile.FORMAT_VERSION + 1, 99])
def test_a_newer_format_version(tmp_path, version):
    path = write_model_zip(tmp_path / "m.hiriseice", good_metadata(format_version=version))
    with pytest.raises(ModelFileError, match=f"format version {version}, newer than this plugin reads .*Update"):
        modelfile.read_metadata(path)


@pytest.mark.parametrize("version", [None, "1", 1.5, 0, True])
def test_a_format_version_that_is_not_a_whole_number(tmp_path, version):
    """0 was accepted, and True was called 'version True, newer than this plugin reads'."""
    path = write_model_zip(tmp_path / "m.hiriseice", good_metadata(format_version=version))
    with pytest.raises(ModelFileError, match=f"says it is of model format version {re.escape(repr(version))}, which no HiRISE Ice Patches plugin writes"):
        modelfile.read_metadata(path)


@pytest.mark.parametrize("missing", ["name", "version", "input_size", "chunk_size", "normalisation", "thresholds", "architecture"])
def test_missing_metadata_keys(tmp_path, missing):
    metadata = good_metadata()
    del metadata[missing]
    path = write_model_zip(tmp_path / "m.hiriseice", metadata)
    with pytest.raises(ModelFileError, match=f"lacks metadata {missing}; it is damaged"):
        modelfile.read_metadata(path)


@pytest.mark.parametrize("changes, said", [
    ({"chunk_size": "big"}, "chunk_size 'big', not a positive whole number of pixels"),
    ({"input_size": 0}, "input_size 0, not a positive whole number of pixels"),
    ({"normalisation": None}, "normalisation None, not a table"),
    ({"architecture": "x"}, "architecture 'x', not a table"),
    ({"architecture": {"name": "small_xception", "scales": [1, "2"]}}, "architecture scales [1, '2'], not a list of whole numbers"),
    # each of these ended in a worker traceback, a normalisation of percentiles the wrong way round in every chunk mid-grey
    ({"normalisation": {"method": "zscore"}}, "normalisation method 'zscore', not percentile_stretch"),
    ({"normalisation": {"method": "percentile_stretch", "low_percentile": 1.0, "high_percentile": 150}}, "normalisation percentiles 1.0 to 150, not two numbers rising within 0-100"),
    ({"normalisation": {"method": "percentile_stretch", "low_percentile": 99.5, "high_percentile": 1.0}}, "normalisation percentiles 99.5 to 1.0, not two numbers rising within 0-100"),
    ({"calibration": {"method": "platt", "a": "1.16", "b": 0.2}}, "calibration 'platt' with a '1.16' and b 0.2, not Platt scaling's two numbers"),
    ({"thresholds": {"icy": 60, "hard_low": 0.4}}, "threshold icy 60, not a probability"),
    # each of these was accepted, then ended in a traceback (detect, Train's check, the report) or scored with thresholds upside down
    ({"architecture": None}, "architecture None, not a table"),
    ({"base_model": "hiriseice-default"}, "base_model 'hiriseice-default', not a table"),
    ({"training": None}, "training None, not a table"),
    ({"training": {"split": None}}, "training split None, not a table"),
    ({"architecture": {"name": "small_xception", "widths": "4,8,16"}}, "architecture widths '4,8,16', not a list of whole numbers"),
    ({"architecture": {"name": "multi_scale_xception", "scales": [64, 1], "widths": [4, 8, 16]}}, "architecture scales [64, 1], which do not divide the 32 px input"),
    ({"architecture": {"name": "multi_scale_xception", "scales": [3, 1], "widths": [4, 8, 16]}}, "architecture scales [3, 1], which do not divide the 32 px input"),
    ({"thresholds": {"icy": 0.3, "hard_low": 0.8}}, "thresholds hard_low 0.8 above icy 0.3"),
])
def test_metadata_of_the_wrong_kind_is_a_damaged_file_not_a_traceback(tmp_path, changes, said):
    """Each of these passed the check of the keys and ended later in a traceback (a ZeroDivisionError for input_size 0),
    in the desktop's warm worker as its death."""
    path = write_model_zip(tmp_path / "m.hiriseice", good_metadata(**changes))
    with pytest.raises(ModelFileError) as caught:
        modelfile.read_metadata(path)
    assert f"has metadata of the wrong kind ({said}); it is damaged or was edited by hand" in str(caught.value), str(caught.value)


def bomb_zip(path, name, megabytes, metadata=None):
    """A model file whose ``name`` member unpacks to ``megabytes`` of zeros (a few hundred kB packed)."""
    metadata = metadata or good_metadata()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member in (modelfile.METADATA_MEMBER, modelfile.KERAS_MEMBER):
            if member != name:
                archive.writestr(member, json.dumps(metadata) if member == modelfile.METADATA_MEMBER else b"not really keras")
        with archive.open(name, "w", force_zip64=True) as handle:
            zeros = bytes(1 << 20)
            for _ in range(megabytes):
                handle.write(zeros)
    return str(path)


def test_a_member_declaring_more_than_a_model_file_holds_is_refused_unread(tmp_path):
    """A 2 MB file whose metadata unpacked to 470 MB took a gigabyte of QGIS's memory before it was found to be no model."""
    path = bomb_zip(tmp_path / "bomb.hiriseice", modelfile.METADATA_MEMBER, 17)
    assert os.path.getsize(path) < 100_000
    with pytest.raises(ModelFileError, match=r"declares its hiriseice.json 17 MB unpacked, more than any model file holds \(16 MB at most\)"):
        modelfile.read_metadata(path)
    path = bomb_zip(tmp_path / "network_bomb.hiriseice", modelfile.KERAS_MEMBER, 257)
    with pytest.raises(ModelFileError, match=r"declares its model.keras 257 MB unpacked, more than any model file holds \(256 MB at most\)"):
        modelfile.checked_network_bytes(path)


def replay_model(path, replay_bytes):
    metadata = good_metadata(replay_sha256=hashlib.sha256(replay_bytes).hexdigest())
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(modelfile.METADATA_MEMBER, json.dumps(metadata))
        archive.writestr(modelfile.KERAS_MEMBER, b"not really keras")
        archive.writestr(modelfile.REPLAY_MEMBER, replay_bytes)
    return str(path)


def npz_bytes(**arrays):
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize("replay, said", [
    (npz_bytes(images=np.array([{"x": 1}], dtype=object), labels=np.zeros(1), kinds=np.array(["a"])), "Object arrays cannot be loaded"),
    (npz_bytes(images=np.zeros((1, 32, 32), np.uint8), labels=np.zeros(1, np.int8)), "kinds is not a file in the archive"),
    (npz_bytes(images=np.zeros((1, 16, 16), np.uint8), labels=np.zeros(1, np.int8), kinds=np.array(["a"])), "a replay set needs uint8 images (n, 32, 32)"),
    (b"not an npz at all", "File is not a zip file"),
], ids=["pickled", "without-kinds", "wrong-shape", "not-npz"])
def test_damaged_replay_examples_are_a_damaged_file_not_a_traceback(tmp_path, replay, said):
    """Each ended in 'The worker stopped unexpectedly' and a traceback when Train read its BASE_MODEL."""
    with pytest.raises(ModelFileError) as caught:
        modelfile.load_replay(replay_model(tmp_path / "m.hiriseice", replay), "BASE_MODEL")
    message = str(caught.value)
    assert message.startswith(f"The replay examples inside '{tmp_path / 'm.hiriseice'}' (BASE_MODEL) are damaged (") and said in message, message
    assert message.endswith("leave BASE_MODEL empty to train from scratch.")


def test_the_measurements_of_a_model_are_those_of_its_very_weights(repo_root):
    """The report quoted the bundled model's measured AUC for any file of the same name and version, its
    weights replaced (NaN ones included)."""
    metadata = modelfile.read_metadata(str(repo_root / "resources" / "models" / "default.hiriseice"))
    measurements = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((repo_root / "resources" / "models" / "unseen").glob("*.json"))]
    assert len(modelfile.rows_measuring(metadata, measurements)) == 3
    assert modelfile.rows_measuring(dict(metadata, weights_sha256="0" * 64), measurements) == []
    assert modelfile.rows_measuring({k: v for k, v in metadata.items() if k != "weights_sha256"}, measurements) == []


def test_several_missing_keys_are_all_named(tmp_path):
    metadata = good_metadata()
    del metadata["input_size"], metadata["thresholds"]
    path = write_model_zip(tmp_path / "m.hiriseice", metadata)
    with pytest.raises(ModelFileError, match="lacks metadata input_size, thresholds"):
        modelfile.read_metadata(path)


# --- the default model ------------------------------------------------------------------------


def test_default_model_path_is_in_the_plugins_resources(repo_root):
    expected = str(repo_root / "resources" / "models" / "default.hiriseice")
    assert modelfile.default_model_path() == expected
    assert modelfile.resolve_model_path("") == expected
    assert modelfile.resolve_model_path(None) == expected
    assert modelfile.resolve_model_path("/some/where.hiriseice") == "/some/where.hiriseice"


def test_empty_model_reads_the_default_model(monkeypatch, tmp_path):
    """MODEL left empty means the bundled model: read from where default_model_path() points."""
    default = write_model_zip(tmp_path / "default.hiriseice", good_metadata(name="bundled"))
    monkeypatch.setattr(modelfile, "default_model_path", lambda: default)
    assert modelfile.read_metadata("")["name"] == "bundled"


def test_a_missing_default_model_is_named_as_such(monkeypatch, tmp_path):
    missing = str(tmp_path / "resources" / "models" / "default.hiriseice")
    monkeypatch.setattr(modelfile, "default_model_path", lambda: missing)
    with pytest.raises(ModelFileError) as caught:
        modelfile.read_metadata("")
    message = str(caught.value)
    assert "default model" in message and missing in message and "Leave MODEL empty" not in message


def test_the_bundled_default_model_if_present(repo_root):
    path = repo_root / "resources" / "models" / "default.hiriseice"
    if not path.is_file():
        pytest.skip("no bundled default model in this checkout (resources/models/default.hiriseice)")
    metadata = modelfile.read_metadata("")
    assert metadata["chunk_size"] == 1024  # the paper's chunks
    assert metadata["architecture"]["input_size"] == metadata["input_size"]


def test_a_model_is_described_by_the_sizes_it_reads_a_chunk_at():
    from model.network import architecture

    one = modelfile.new_metadata("m", 128, 1024, DEFAULT_NORMALISATION, architecture(128, [8, 16, 32]), {})
    two = modelfile.new_metadata("m", 256, 1024, DEFAULT_NORMALISATION, architecture(256, [8, 16, 32], [2, 1]), {})
    assert modelfile.describe(one).endswith("(1024 px chunks read at 128 px)")
    assert modelfile.describe(two).endswith("(1024 px chunks read at 128 and 256 px)")


# --- crafted network members, read in the worker ------------------------------------------------

CRAFTED = r"""
import io, json, os, shutil, sys, zipfile
import h5py, keras, numpy as np
from model import __main__ as cli, inference, modelfile, scoremap
from model.errors import ModelFileError

source, raster, folder = sys.argv[1:4]
network, meta = modelfile.load(source)
said = {}


def message(call):
    try:
        call()
        return "accepted"
    except ModelFileError as exc:
        return str(exc)


def with_network(name, network_bytes):
    path = os.path.join(folder, name + ".hiriseice")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(modelfile.METADATA_MEMBER, json.dumps({k: v for k, v in meta.items() if k != "weights_sha256"}))
        archive.writestr(modelfile.KERAS_MEMBER, network_bytes)
    return path


nan = os.path.join(folder, "nan.hiriseice")
broken = network.get_weights()
broken[0] = np.full_like(broken[0], np.nan)
copy = keras.Model.from_config(network.get_config())
copy.set_weights(broken)
modelfile.save(copy, meta, nan)
said["nan"] = message(lambda: modelfile.load(nan))

inputs = keras.Input((meta["input_size"], meta["input_size"], 1))
doubled = keras.layers.Lambda(lambda x: x * 2)(inputs)
keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(doubled))).save(os.path.join(folder, "lambda.keras"))
with open(os.path.join(folder, "lambda.keras"), "rb") as handle:
    said["lambda"] = message(lambda: modelfile.load(with_network("lambda", handle.read())))
said["not_a_keras_archive"] = message(lambda: modelfile.load(with_network("text", b"not really keras")))

weights = io.BytesIO()
with h5py.File(weights, "w") as h5:  # declared, never written: a few kB that Keras would allocate 1 GB for
    h5.create_dataset("layers/dense/vars/0", shape=(16384, 16384), dtype="float32")
network_bytes = io.BytesIO()
with zipfile.ZipFile(io.BytesIO(modelfile.checked_network_bytes(source))) as real, zipfile.ZipFile(network_bytes, "w") as crafted:
    for name in real.namelist():
        crafted.writestr(name, weights.getvalue() if name.endswith(".h5") else real.read(name))
said["declared_weights"] = message(lambda: modelfile.load(with_network("declared", network_bytes.getvalue())))

images = np.zeros((1, meta["input_size"], meta["input_size"]), np.float32)
scoremap.ScoreMapper(network, meta["architecture"])(images)  # the warm worker's scorer of these weights, made once
edited = dict(meta["architecture"], widths=meta["architecture"]["widths"][:-1])
said["fewer_widths"] = message(lambda: scoremap.ScoreMapper(network, edited)(images))
said["fewer_widths_fresh"] = message(lambda: scoremap.ScoreMapper(keras.Model.from_config(network.get_config()), edited))

model = os.path.join(folder, "replaced.hiriseice")
shutil.copy(source, model)
scoring = inference.detect


def detect_then_replaced(*args, **kwargs):  # another model saved over the file while the report is made
    detection = scoring(*args, **kwargs)
    shutil.copy(modelfile.default_model_path(), model)
    return detection


inference.detect = detect_then_replaced
cli.main(["detect", raster, "--model", model, "--report", os.path.join(folder, "report.html")])
print(json.dumps(said))
"""


def test_crafted_networks_are_refused_with_what_they_are(tiny_model, make_raster, worker_python, tmp_path):
    """NaN weights scored every chunk as nothing (exit 0) and made Train advise a lower learning rate; a Lambda layer was
    called damaged or of another Keras, with Keras's advice to pass safe_mode, which a user cannot; a weight declared at
    1 GB in a few kB took 5 GB of memory; metadata naming other widths than the network's ended in a broadcast traceback;
    and a model saved over the file mid-run had its description in the report of the one that scored."""
    raster = make_raster(width=128, height=128)
    done = helpers.run_worker_snippet(worker_python, CRAFTED, tiny_model.path, raster.path, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert "holds weights that are not numbers (NaN or infinite): it was saved from a training run that diverged" in said["nan"]
    assert "carries Python code (a Lambda layer or the like), which is not loaded, for safety" in said["lambda"] and "safe_mode" not in said["lambda"]
    assert "is not a Keras 3 archive: the file is damaged or of another kind" in said["not_a_keras_archive"]
    assert "declares more than 256 MB unpacked, more than any network of this plugin holds" in said["declared_weights"]
    for case in ("fewer_widths", "fewer_widths_fresh"):
        assert said[case].startswith("The model file's architecture") and "its metadata was edited by hand or belongs to another network" in said[case], said
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Labelled chunks: 36 (18 icy) of 1 image(s): train_scene; " in report and " were held out to validate it." in report
