"""The EfficientNet-Lite0 trunk (model/efficientnet.py): its ImageNet weights read without PyTorch
still see a cat, a training job builds on them, and its model file scores through the engine like
the small Xception's, the score map's route included."""

import json
import os
import pickle

import pytest

import helpers
from model import efficientnet, modelfile
from model.errors import LabelError

CAT = os.path.join(os.path.dirname(__file__), "data", "chelsea_grey_224.jpg")
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat

CLASSIFY = r"""
import json, sys
import numpy as np
import keras
from keras import layers
from PIL import Image
from model import efficientnet
weights = efficientnet.imagenet_weights()
inputs = keras.Input((224, 224, 1))
x = layers.Rescaling(255.0 / 128.0, offset=-127.0 / 128.0)(inputs)
x = layers.GlobalAveragePooling2D()(efficientnet.lite0_features(x))
classifier = keras.Model(inputs, layers.Dense(1000, name="imagenet_classes")(x))
efficientnet.load_imagenet(classifier, weights)
classifier.get_layer("imagenet_classes").set_weights([weights["_fc.weight"].T, weights["_fc.bias"]])
image = np.asarray(Image.open(sys.argv[1]), np.float32)[None, ..., None] / 255.0
scores = np.asarray(classifier.predict_on_batch(image))[0]
print(json.dumps({"top5": np.argsort(scores)[::-1][:5].tolist(), "tensors": len(weights)}))
"""


def test_imagenet_weights_read_without_pytorch_still_see_a_cat(worker_python):
    """The legacy PyTorch file read into the Keras trunk, its stem folded to one grey band, and the
    package's own ImageNet classifier on top: a grey photograph of a cat comes out a cat. A
    transposed kernel, a depthwise kernel read as a dense one, padding unlike TensorFlow's or a
    wrong input range gives another class."""
    done = helpers.run_worker_snippet(worker_python, CLASSIFY, CAT)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["tensors"] == 296
    assert out["top5"][0] in IMAGENET_CATS and sum(c in IMAGENET_CATS for c in out["top5"]) >= 3, out


def test_a_file_that_is_not_legacy_pytorch_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    path.write_bytes(pickle.dumps({"weights": 1}))
    with open(path, "rb") as handle, pytest.raises(ValueError, match="not a legacy PyTorch file"):
        efficientnet.read_legacy_torch(handle)
    path.write_bytes(pickle.dumps(print))  # a header that names code: refused, not loaded
    with open(path, "rb") as handle, pytest.raises(pickle.UnpicklingError, match="builtins.print is not part of a state dict"):
        efficientnet.read_legacy_torch(handle)


@pytest.fixture(scope="module")
def lite0_model(worker_python, training_data, tmp_path_factory):
    """A `python -m model train` job on the tiny model's scene with the Lite0 trunk (64-px input)."""
    folder = tmp_path_factory.mktemp("lite0_model")
    path = str(folder / "lite0.hiriseice")
    job = helpers.tiny_job(training_data.raster.path, training_data.labels, path, trunk=efficientnet.NAME, input_size=64, epochs=1, learning_rate=1e-4)
    run = helpers.run_worker(worker_python, "train", helpers.write_job(folder / "job.json", job)).check()
    return path, run


def test_a_training_job_builds_the_trunk_on_imagenet_weights(lite0_model):
    path, run = lite0_model
    logs = [m["message"] for m in run.messages if m["type"] == "log"]
    assert "the EfficientNet-Lite0 trunk starts from its ImageNet weights" in logs
    meta = modelfile.read_metadata(path)
    assert meta["architecture"] == {"name": efficientnet.NAME, "input_size": 64} and meta["input_size"] == 64


STEM = r"""
import json, sys
import numpy as np
from model import efficientnet, modelfile
network, _ = modelfile.load(sys.argv[1])
imagenet = efficientnet.imagenet_weights()["_conv_stem.weight"].transpose(2, 3, 1, 0).sum(axis=2, keepdims=True)
stem = network.get_layer("lite0_stem").get_weights()[0]
print(json.dumps({"moved": float(np.abs(stem - imagenet).max()), "scale": float(np.abs(imagenet).max())}))
"""


def test_one_epoch_at_a_low_rate_keeps_the_trunk_near_imagenet(worker_python, lite0_model):
    """The trained stem is ImageNet's, moved a little: the weights were loaded, not left at random."""
    done = helpers.run_worker_snippet(worker_python, STEM, lite0_model[0])
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 < out["moved"] < 0.1 * out["scale"], out


def test_the_score_map_of_a_lite0_model_gives_each_chunk_its_logit_alone(worker_python, lite0_model, make_raster):
    """Cells of 32 input px: a 64-px chunk read at 64 px is 2 x 2 cells, and a window of one chunk
    gives the chunk's own logit through ONNX Runtime."""
    raster = make_raster(width=64, height=64, nodata=0, seed=3, icy_chunk_size=64, icy_pattern=lambda r, c: True)
    out = helpers.one_window(worker_python, raster.path, lite0_model[0])
    assert out["windows"] == 1 and out["cells"] == [2, 2] and out["runtime"] == "ONNX Runtime"
    assert abs(out["alone"][0] - out["map"][0]) < 1e-4, out


def test_an_unknown_trunk_is_refused_before_anything_is_read(worker_python, training_data, tmp_path):
    job = helpers.tiny_job(training_data.raster.path, training_data.labels, str(tmp_path / "m.hiriseice"), trunk="resnet")
    from model import trainingjob

    with pytest.raises(LabelError, match="Unknown network trunk 'resnet'; choose one of small_xception, efficientnet_lite0"):
        trainingjob._check_job(job)
