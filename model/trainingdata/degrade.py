"""Whole-chunk degradations, drawn at random so that no family is learnt with one look:
0.25 or 0.5 m products, blur, noise, JPEG and JPEG2000 artefacts, stretch and gamma."""

import io
import uuid

import numpy as np

from .imaging import check_rng, gauss_blur


def _compress(image, codec, quality):
    """``image`` through a lossy JPEG or JPEG2000 ("JP2") codec and back, in memory: GDAL's
    drivers, or Pillow's (the same libjpeg and OpenJPEG) where GDAL is absent. JPEG ``quality``
    is libjpeg's 1-100; JPEG2000's is GDAL's: the file's size in percent of the raw pixels."""
    pixels = np.round(image * 255).astype(np.uint8)
    try:
        from osgeo import gdal
    except ImportError:
        return _compress_with_pillow(pixels, codec, quality)
    h, w = pixels.shape
    source = gdal.GetDriverByName("MEM").Create("", w, h, 1, gdal.GDT_Byte)
    source.GetRasterBand(1).WriteArray(pixels)
    path = f"/vsimem/degrade-{uuid.uuid4().hex}"
    driver, options = ("JPEG", [f"QUALITY={quality}"]) if codec == "JPEG" else ("JP2OpenJPEG", [f"QUALITY={quality}", "REVERSIBLE=NO"])
    copy = gdal.GetDriverByName(driver).CreateCopy(path, source, options=options)
    data = copy.ReadAsArray().astype(np.float32) / 255.0
    copy = None
    gdal.Unlink(path)
    return data


def _compress_with_pillow(pixels, codec, quality):
    from PIL import Image

    buffer = io.BytesIO()
    if codec == "JPEG":
        Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    else:
        Image.fromarray(pixels).save(buffer, "JPEG2000", quality_mode="rates", quality_layers=[100.0 / quality], irreversible=True)
    buffer.seek(0)
    return np.asarray(Image.open(buffer), np.float32) / 255.0


def _coarser_product(image, rng):
    """A 0.5 m product seen at 0.25 m: detail lost by shrinking and enlarging again."""
    from ..preprocess import resize

    h, w = image.shape
    factor = rng.uniform(1.5, 2.5)
    small = resize(image, max(8, int(min(h, w) / factor)))
    return resize(small, min(h, w))[:h, :w] if h == w else image


def degrade(image, valid, rng):
    """A degraded copy of ``image`` (float32 in [0, 1]); no-data (``~valid``) stays 0."""
    check_rng(rng)
    out = np.asarray(image, np.float32).copy()
    if rng.random() < 0.3:
        out = _coarser_product(out, rng)
    if rng.random() < 0.3:
        out = gauss_blur(out, rng.uniform(0.3, 1.5))
    if rng.random() < 0.4:
        out = out + rng.normal(0.0, rng.uniform(0.003, 0.03), out.shape).astype(np.float32)
    if rng.random() < 0.5:
        low, high = np.percentile(out[valid], [rng.uniform(0, 5), rng.uniform(95, 100)]) if valid.any() else (0.0, 1.0)
        out = np.clip((out - low) / max(high - low, 1e-3), 0.0, 1.0) ** rng.uniform(0.6, 1.6)
    out = np.clip(out, 0.0, 1.0)
    kind = rng.random()
    if kind < 0.25:
        out = _compress(out, "JPEG", int(rng.integers(20, 86)))
    elif kind < 0.35:
        out = _compress(out, "JP2", int(rng.integers(8, 40)))
    return np.where(valid, out, 0.0).astype(np.float32)
