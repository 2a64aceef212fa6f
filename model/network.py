"""The paper's network: the small Xception of Keras's "image classification from scratch".

Widths and input size are parameters so tests can train a tiny copy in seconds; the
defaults are the paper's. The single output unit is split into a linear ``logit`` layer and
a sigmoid, so inference can read logits for calibration. Keras is imported inside the
functions, so the constants here are usable where TensorFlow must not load.
"""

from typing import Dict, Sequence

PAPER_WIDTHS = (128, 256, 512, 728, 1024)
# Keras's default 0.99 lets the moving statistics trail the weights by hundreds of steps;
# with the few hundred steps of a geologist's label set, inference then sees stale
# statistics and every chunk scores alike. 0.9 follows the weights within tens of steps.
BN_MOMENTUM = 0.9


def build_network(input_size: int = 256, widths: Sequence[int] = PAPER_WIDTHS, dropout: float = 0.5, seed: int = None):
    """Entry Conv2D(w0, stride 2); residual separable blocks w1..w(n-2); SeparableConv2D(w_last); pool; dropout; 1 sigmoid unit."""
    import keras
    from keras import layers

    if len(widths) < 3:
        raise ValueError("widths needs an entry width, at least one block width and an exit width")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    entry, blocks, exit_width = widths[0], widths[1:-1], widths[-1]
    inputs = keras.Input(shape=(input_size, input_size, 1), name="chunk")

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
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    logit = layers.Dense(1, name="logit")(x)
    probability = layers.Activation("sigmoid", name="probability")(logit)
    return keras.Model(inputs, probability, name="small_xception")


def architecture(input_size: int, widths: Sequence[int]) -> Dict:
    return {"name": "small_xception", "widths": list(widths), "input_size": int(input_size)}


def logit_model(network):
    """The same network ending at the logit, for calibrated inference."""
    import keras

    return keras.Model(network.inputs, network.get_layer("logit").output)


def network_stride(widths: Sequence[int]) -> int:
    """Input pixels per position of the last feature map: the entry convolution and every block halve."""
    return 2 ** (len(widths) - 1)


def score_map_model(network, widths: Sequence[int]):
    """The same network run fully convolutionally on any input size that is a multiple of
    network_stride(widths): its last feature map (before global average pooling) with the
    ``logit`` dense unit applied at every position. Dropout is an identity at inference, so the
    mean of this map over one chunk's input is that chunk's logit."""
    import keras
    from keras import layers

    free = build_network(None, widths)
    free.set_weights(network.get_weights())
    pooling = next(layer for layer in free.layers if isinstance(layer, layers.GlobalAveragePooling2D))
    score = free.get_layer("logit")(pooling.input)
    return keras.Model(free.inputs, score, name="score_map")
