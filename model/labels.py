"""Label values as geologists write them, and turning label geometries into training chunks."""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from osgeo import ogr

from .chunking import iter_chunks
from .errors import LabelError
from .grid import ChunkWindow, chunk_wkt, map_to_pixel
from .raster import RasterSource

ICY_WORDS = {"1", "icy", "ice", "yes", "y", "true", "t"}
NOT_ICY_WORDS = {"0", "not icy", "not_icy", "no ice", "no", "n", "false", "f", "noticy"}
# -1 is what the labelling helper writes for "unclear"; such chunks are left out, as the paper
# left out its 252 unclear chunks.
UNUSED_WORDS = {"", "-1", "unclear", "null", "none", "hard to identify", "?"}


def parse_label(value) -> Optional[int]:
    """1 (icy), 0 (not icy) or None (not used). Raises LabelError for values it cannot read."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and np.isnan(value):
            return None
        if value in (0, 1):
            return int(value)
        if value == -1:
            return None
    text = str(value).strip().lower()
    if text in ICY_WORDS:
        return 1
    if text in NOT_ICY_WORDS:
        return 0
    if text in UNUSED_WORDS:
        return None
    raise LabelError(
        f"The label value {value!r} is not understood. Use 1 / 0, icy / not icy or yes / no; leave it empty (NULL), -1 or 'unclear' to leave a chunk out."
    )


@dataclass
class LabelledChunk:
    image_id: str
    window: ChunkWindow
    label: int
    image: np.ndarray  # uint8, input_size x input_size, normalised


def _geometries(items: Sequence[str]) -> List[ogr.Geometry]:
    out = []
    for wkt in items:
        geometry = ogr.CreateGeometryFromWkt(wkt)
        if geometry is None or geometry.IsEmpty():
            continue
        out.append(geometry)
    return out


def _raster_polygon(source: RasterSource) -> ogr.Geometry:
    info = source.info
    whole = ChunkWindow(0, 0, 0, 0, 0, info.width, info.height)
    return ogr.CreateGeometryFromWkt(chunk_wkt(info.geotransform, whole))


def chunks_from_polygons(source: RasterSource, labels: Sequence[Dict], chunk_size: int, input_size: int, normalisation: Dict) -> List[LabelledChunk]:
    """Mode (a): each labelled polygon (e.g. a filled detect output) is one chunk read at its footprint."""
    from .preprocess import normalise, to_uint8

    info = source.info
    footprint = _raster_polygon(source)
    samples = []
    labelled = [(item, parse_label(item.get("label"))) for item in labels]
    usable = [(item, label) for item, label in labelled if label is not None]
    if not usable:
        raise LabelError(f"No feature over {info.image_id} has a usable label (1/0, icy/not icy, yes/no). Fill the label field, e.g. with the labelling tools.")
    for index, (item, label) in enumerate(usable):
        geometry = ogr.CreateGeometryFromWkt(item["wkt"])
        if geometry is None or not geometry.Intersects(footprint):
            continue
        envelope = geometry.GetEnvelope()  # (minx, maxx, miny, maxy)
        corners = [(envelope[0], envelope[2]), (envelope[1], envelope[2]), (envelope[1], envelope[3]), (envelope[0], envelope[3])]
        pixels = [map_to_pixel(info.geotransform, x, y) for x, y in corners]
        x0 = max(0, int(round(min(p[0] for p in pixels))))
        y0 = max(0, int(round(min(p[1] for p in pixels))))
        x1 = min(info.width, int(round(max(p[0] for p in pixels))))
        y1 = min(info.height, int(round(max(p[1] for p in pixels))))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        window = ChunkWindow(index, -1, -1, x0, y0, x1 - x0, y1 - y0)
        # A polygon larger than a chunk is read whole, shrunk to the network's input.
        data, valid = source.read_chunk(window, max(chunk_size, window.width, window.height), input_size)
        if not valid.any():
            continue
        samples.append(LabelledChunk(info.image_id, window, label, to_uint8(normalise(data, valid, normalisation))))
    if not samples:
        raise LabelError(
            f"None of the {len(usable)} labelled polygons lies on image data of {info.image_id}. Check that the label layer belongs to this raster "
            "(its CRS and extent) and that the polygons are not on the no-data border."
        )
    return samples


def chunks_from_outlines(source: RasterSource, outlines: Sequence[Dict], exclude: Sequence[str], chunk_size: int, input_size: int, min_valid: float, normalisation: Dict) -> List[LabelledChunk]:
    """Mode (b): grid chunks containing an ice-patch outline are icy, the others not icy; chunks touching EXCLUDE polygons are left out."""
    from .preprocess import normalise, to_uint8

    info = source.info
    icy_shapes = []
    for item in outlines:
        label = parse_label(item.get("label", 1))
        if label == 0:
            continue  # an outline marked "not icy" is no ice patch
        icy_shapes.extend(_geometries([item["wkt"]]))
    footprint = _raster_polygon(source)
    if icy_shapes and not any(g.Intersects(footprint) for g in icy_shapes):
        raise LabelError(f"None of the ice-patch outlines lies within {info.image_id}. Check the label layer's CRS and that it belongs to this raster.")
    excluded = _geometries(exclude)
    samples = []
    for sample in iter_chunks(source, chunk_size, chunk_size, min_valid, input_size):
        polygon = ogr.CreateGeometryFromWkt(chunk_wkt(info.geotransform, sample.window))
        if any(polygon.Intersects(g) for g in excluded):
            continue
        label = int(any(polygon.Intersects(g) for g in icy_shapes))
        samples.append(LabelledChunk(info.image_id, sample.window, label, to_uint8(normalise(sample.data, sample.valid, normalisation))))
    return samples
