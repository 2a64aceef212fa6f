"""Chunk preprocessing: from raw DNs to the network's input.

Each chunk is stretched between low and high percentiles of its own valid pixels. That makes
8-bit browse crops, 8-bit stretched RDRs and 10-bit RED DNs look alike to the network, and an
ice patch stays what defines it: brighter than its surroundings. A few hot pixels cannot set
the stretch because they sit above the high percentile. No-data becomes 0 (black), as the
border of a rotated footprint looks in every HiRISE product.
"""

import functools
from typing import Dict, Tuple

import numpy as np

from .grid import centre_region

DEFAULT_NORMALISATION: Dict = {"method": "percentile_stretch", "low_percentile": 1.0, "high_percentile": 99.5}


def normalise(data: np.ndarray, valid: np.ndarray, spec: Dict = DEFAULT_NORMALISATION) -> np.ndarray:
    """float32 image in [0, 1] with no-data at 0."""
    if spec.get("method") != "percentile_stretch":
        raise ValueError(f"unknown normalisation {spec.get('method')!r}")
    out = np.zeros(data.shape, np.float32)
    values = data[valid]
    if values.size == 0:
        return out
    low, high = np.percentile(values, [spec["low_percentile"], spec["high_percentile"]])
    span = high - low
    if span <= 0:
        # A flat chunk (saturated or featureless) carries no contrast: mid-gray.
        out[valid] = 0.5
        return out
    # In the data's own float type (float64 for integers), as numpy 1 computed it and the models were
    # trained: numpy 2 would promote float32 data to float64 and round some pixels to another 8-bit value.
    work = values.dtype.type if np.issubdtype(values.dtype, np.floating) else np.float64
    out[valid] = np.clip((values - work(low)) / work(span), 0.0, 1.0)
    return out


def valid_fractions(valid: np.ndarray, used_shape: Tuple[int, int], centre_fraction: float) -> Tuple[float, float]:
    """(whole-chunk, central-region) shares of valid pixels, over the part of the array the chunk fills."""
    h, w = used_shape
    used = valid[:h, :w]
    left, top, cw, ch = centre_region(w, h, centre_fraction)
    centre = used[top : top + ch, left : left + cw]
    return float(used.mean()), float(centre.mean())


def to_uint8(normalised: np.ndarray) -> np.ndarray:
    """A normalised [0, 1] image stored in a quarter of the memory, as training keeps its chunks."""
    return np.round(normalised * 255).astype(np.uint8)


def network_input(data: np.ndarray, valid: np.ndarray, spec: Dict = DEFAULT_NORMALISATION) -> np.ndarray:
    """What the network is handed for a chunk: normalised and quantised to 8 bits, exactly as
    training stores its chunks (to_uint8) and feeds them (/ 255), so both see identical arrays."""
    return to_uint8(normalise(data, valid, spec)).astype(np.float32) / np.float32(255.0)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Image resampled to size x size float32 the way GDAL reads a chunk into a smaller or larger
    buffer: each output pixel the area-weighted average of the input pixels it covers when
    shrinking (GRIORA_Average), bilinear between pixel centres when enlarging (GRIORA_Bilinear).
    Written with numpy, equal to GDAL's RasterIO bit for bit (tests/test_trainingdata.py), so that
    training examples can be made where GDAL is absent."""
    h, w = image.shape
    return (_axis_weights(h, size) @ np.asarray(image, np.float64) @ _axis_weights(w, size).T).astype(np.float32)


@functools.lru_cache(maxsize=512)
def _axis_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) resampling weights along one axis, each row summing to 1 (read only: cached)."""
    weights = np.zeros((n_out, n_in), np.float64)
    scale = n_in / n_out
    for out in range(n_out):
        if n_out <= n_in:
            start, stop = out * scale, (out + 1) * scale
            for i in range(int(np.floor(start)), min(int(np.ceil(stop)), n_in)):
                weights[out, i] = min(stop, i + 1) - max(start, i)
        else:
            centre = (out + 0.5) * scale - 0.5
            left = int(np.floor(centre))
            for i, weight in ((left, 1.0 - (centre - left)), (left + 1, centre - left)):
                if 0 <= i < n_in and weight > 0:
                    weights[out, i] += weight
    weights /= weights.sum(axis=1, keepdims=True)
    weights.flags.writeable = False
    return weights
