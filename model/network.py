"""The paper's network: the small Xception of Keras's "image classification from scratch"; and
how a model file names its network (``architecture``), which may instead be the
EfficientNet-Lite0 trunk of efficientnet.py.

Widths and input size are parameters so tests can train a tiny copy in seconds; the
defaults are the paper's. The single output unit is split into a linear ``logit`` layer and
a sigmoid, so inference can read logits for calibration. Keras is imported inside the
functions, so the constants here are usable where TensorFlow must not load.
"""

from typing import Dict, Sequence

from . import efficientnet

SMALL_XCEPTION = "small_xception"
# The trunks a network is built on: the paper's (at random) or EfficientNet-Lite0 (from ImageNet).
TRUNKS = (SMALL_XCEPTION, efficientnet.NAME)
PAPER_WIDTHS = (128, 256, 512, 728, 1024)
# Keras's default 0.99 lets the moving statistics trail the weights by hundreds of steps;
# with the few hundred steps of a geologist's label set, inference then sees stale
# statistics and every chunk scores alike. 0.9 follows the weights within tens of steps.
BN_MOMENTUM = 0.9


def build_network(input_size: int = 256, widths: Sequence[int] = PAPER_WIDTHS, dropout: float = 0.5, seed: int = None):
    """Entry Conv2D(w0, stride 2); residual separable blocks w1..w(n-2); SeparableConv2D(w_last); pool; dropout; 1 sigmoid unit."""
    import keras
    from keras import layers

    _check_widths(widths)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(input_size, input_size, 1), name="chunk")
    x = layers.GlobalAveragePooling2D()(_features(inputs, widths))
    x = layers.Dropout(dropout)(x)
    logit = layers.Dense(1, name="logit")(x)
    probability = layers.Activation("sigmoid", name="probability")(logit)
    return keras.Model(inputs, probability, name=SMALL_XCEPTION)


def build_multi_scale_network(input_size: int, widths: Sequence[int], scales: Sequence[int], dropout: float = 0.5, seed: int = None):
    """One small Xception per scale, each reading the chunk averaged over scale x scale input pixels
    (scale 2 of a 256-px input sees the chunk as a 128-px network does), each ending in its own
    pooled logit ``logit_<scale>``; a dense unit ``logit`` weighs them, starting at their mean. A
    coarse trunk sees a crater wall whole, a fine one the spots of a stone field."""
    import keras
    from keras import layers

    _check_widths(widths)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(input_size, input_size, 1), name="chunk")
    branch_logits = []
    for scale in scales:
        trunk_input = keras.Input(shape=(None, None, 1))
        trunk = keras.Model(trunk_input, _features(trunk_input, widths), name=f"trunk_{scale}")
        x = inputs if scale == 1 else layers.AveragePooling2D(scale, name=f"average_{scale}")(inputs)
        x = layers.GlobalAveragePooling2D()(trunk(x))
        x = layers.Dropout(dropout)(x)
        branch_logits.append(layers.Dense(1, name=f"logit_{scale}")(x))
    combined = layers.Concatenate()(branch_logits)
    logit = layers.Dense(1, name="logit", kernel_initializer=keras.initializers.Constant(1.0 / len(scales)), bias_initializer="zeros")(combined)
    probability = layers.Activation("sigmoid", name="probability")(logit)
    return keras.Model(inputs, probability, name="multi_scale_xception")


def _check_widths(widths: Sequence[int]) -> None:
    if len(widths) < 3:
        raise ValueError("widths needs an entry width, at least one block width and an exit width")


def _features(inputs, widths: Sequence[int]):
    """The trunk: the last feature map, before pooling."""
    from keras import layers

    entry, blocks, exit_width = widths[0], widths[1:-1], widths[-1]
    x = layers.Conv2D(entry, 3, strides=2, padding="same")(inputs)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = layers.Activation("relu")(x)
    previous = x

    for width in blocks:
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(width, 3, padding="same")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(width, 3, padding="same")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = layers.Conv2D(width, 1, strides=2, padding="same")(previous)
        x = layers.add([x, residual])
        previous = x

    x = layers.SeparableConv2D(exit_width, 3, padding="same")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    return layers.Activation("relu")(x)


def build_from(architecture: Dict, input_size: int = None, seed: int = None):
    """A fresh network of this architecture (its own input size unless given)."""
    size = architecture["input_size"] if input_size is None else input_size
    if architecture.get("name") == efficientnet.NAME:
        return efficientnet.build_lite0_network(size, seed=seed)
    if architecture.get("scales"):
        return build_multi_scale_network(size, architecture["widths"], architecture["scales"], seed=seed)
    return build_network(size, architecture["widths"], seed=seed)


def architecture(input_size: int, widths: Sequence[int], scales: Sequence[int] = (), trunk: str = SMALL_XCEPTION) -> Dict:
    """The model file's description of a network; ``scales`` only for a multi-scale one, ``widths``
    only for the small Xception."""
    if trunk not in TRUNKS:
        raise ValueError(f"unknown trunk {trunk!r}; choose one of {', '.join(TRUNKS)}")
    if trunk == efficientnet.NAME:
        return {"name": trunk, "input_size": int(input_size)}
    if scales:
        return {"name": "multi_scale_xception", "widths": list(widths), "scales": [int(s) for s in scales], "input_size": int(input_size)}
    return {"name": SMALL_XCEPTION, "widths": list(widths), "input_size": int(input_size)}


def architecture_widths(architecture: Dict) -> Sequence[int]:
    """The small Xception's widths; none for another trunk (prepare_tensorflow's argument)."""
    return architecture.get("widths") or ()


def has_score_map(architecture: Dict) -> bool:
    """Whether the file names its network well enough to rebuild it for any input size (the score
    map's route); files from before the widths were recorded do not."""
    return architecture.get("name") == efficientnet.NAME or bool(architecture.get("widths"))


def logit_model(network):
    """The same network ending at the logit, for calibrated inference."""
    import keras

    return keras.Model(network.inputs, network.get_layer("logit").output)


def score_map_side(input_size: int, architecture: Dict) -> int:
    """Cells across the score map of an input_size-px input; 0 where the input is not a whole
    number of cells."""
    stride = network_stride(architecture)
    return 0 if input_size % stride else input_size // stride


def network_stride(architecture: Dict) -> int:
    """Input pixels per position of the score map: the entry convolution and every block halve,
    and a multi-scale map has the cells of its coarsest trunk."""
    if architecture.get("name") == efficientnet.NAME:
        return efficientnet.STRIDE
    return 2 ** (len(architecture["widths"]) - 1) * max(architecture.get("scales") or [1])


def score_map_model(network, architecture: Dict):
    """The same network run fully convolutionally on any input size that is a multiple of
    network_stride(architecture): its last feature map (before global average pooling) with the
    ``logit`` dense unit applied at every position. Dropout is an identity at inference, so the
    mean of this map over one chunk's input is that chunk's logit. A multi-scale network's trunk
    maps are averaged to its coarsest cells first, which keeps every chunk's mean."""
    import keras
    from keras import layers

    if architecture.get("scales"):
        return _multi_scale_map(network, architecture["scales"])
    free = efficientnet.build_lite0_network(None) if architecture.get("name") == efficientnet.NAME else build_network(None, architecture["widths"])
    free.set_weights(network.get_weights())
    pooling = next(layer for layer in free.layers if isinstance(layer, layers.GlobalAveragePooling2D))
    score = free.get_layer("logit")(pooling.input)
    return keras.Model(free.inputs, score, name="score_map")


def cell_logits(network, architecture: Dict):
    """The score map on the network's own graph (its layers and its one pass shared, unlike
    score_map_model's copy), so training can supervise each cell beside the chunk's output.
    Dropout sits after pooling, so it is not in the map."""
    from keras import layers

    features = [layer.input for layer in network.layers if isinstance(layer, layers.GlobalAveragePooling2D)]
    if not architecture.get("scales"):
        (trunk,) = features
        return network.get_layer("logit")(trunk)
    by_trunk = {tensor._keras_history.operation.name: tensor for tensor in features}
    return _combined_map(network, {scale: by_trunk[f"trunk_{scale}"] for scale in architecture["scales"]})


def _multi_scale_map(network, scales: Sequence[int]):
    import keras

    inputs = keras.Input(shape=(None, None, 1), name="window")
    trunks = {scale: network.get_layer(f"trunk_{scale}")(inputs if scale == 1 else network.get_layer(f"average_{scale}")(inputs)) for scale in scales}
    return keras.Model(inputs, _combined_map(network, trunks), name="score_map")


def _combined_map(network, trunks: Dict[int, object]):
    """A multi-scale network's score map from each scale's trunk features ({scale: tensor}): each
    scale's ``logit_<scale>`` unit at every position, averaged to the coarsest cells, weighed by
    ``logit``. Its own layers are named, so it can join the network's graph (cell_logits)."""
    from keras import layers

    coarsest = max(trunks)
    maps = []
    for scale, features in trunks.items():
        score = network.get_layer(f"logit_{scale}")(features)
        maps.append(score if scale == coarsest else layers.AveragePooling2D(coarsest // scale, name=f"map_average_{scale}")(score))
    return network.get_layer("logit")(layers.Concatenate(name="map_concatenate")(maps))


def multi_scale_from(members: Dict[int, object], input_size: int, widths: Sequence[int]):
    """A multi-scale network whose trunk of each scale carries the weights of a trained network of
    these widths ({scale: network}), weighed at first by the mean of their logits."""
    scales = sorted(members, reverse=True)
    combined = build_multi_scale_network(input_size, widths, scales)
    for scale in scales:
        weights = members[scale].get_weights()
        combined.get_layer(f"trunk_{scale}").set_weights(weights[:-2])
        combined.get_layer(f"logit_{scale}").set_weights(weights[-2:])
    return combined
