"""Chunk preprocessing: from raw DNs to the network's input.

Each chunk is stretched between low and high percentiles of its own valid pixels. That makes
8-bit browse crops, 8-bit stretched RDRs and 10-bit RED DNs look alike to the network, and an
ice patch stays what defines it: brighter than its surroundings. A few hot pixels cannot set
the stretch because they sit above the high percentile. No-data becomes 0 (black), as the
border of a rotated footprint looks in every HiRISE product.
"""

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
    out[valid] = np.clip((values - low) / span, 0.0, 1.0)
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
    """Square float32 image resampled to size x size the way chunks are read: averaging when
    shrinking (as GDAL decimates a chunk), bilinear when enlarging."""
    from osgeo import gdal

    h, w = image.shape
    mem = gdal.GetDriverByName("MEM").Create("", w, h, 1, gdal.GDT_Float32)
    mem.GetRasterBand(1).WriteArray(image.astype(np.float32))
    resampling = gdal.GRIORA_Average if size <= min(h, w) else gdal.GRIORA_Bilinear
    return mem.GetRasterBand(1).ReadAsArray(0, 0, w, h, buf_xsize=size, buf_ysize=size, buf_type=gdal.GDT_Float32, resample_alg=resampling)
