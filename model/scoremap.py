"""The network's score map: every chunk of a dense grid for about the price of one pass over the image.

The network ends in global average pooling, dropout (an identity at inference) and one dense
unit, so a chunk's logit is the mean over its feature map of that dense unit applied at every
position (a class-activation map). Run fully convolutionally (network.score_map_model) over
large windows read at the model's scale (chunk_size raster pixels to input_size), the map has one
value per *cell* of network_stride input pixels (16 for the paper's widths, i.e. 128 raster
pixels of a 1024-px chunk read at 128). Any chunk whose offset falls on a cell corner then gets
its logit as the mean of the map over its footprint, whatever the stride.

What differs from scoring each chunk alone (inference's per-chunk route):
- context: a chunk alone sees zero padding at its edges in every layer; inside a window the
  layers see the neighbouring terrain. Windows overlap by ``halo`` network pixels, so a cell's
  value comes from a window that holds at least that much terrain around it;
- normalisation: each window is stretched between the percentiles of its own valid pixels
  (preprocess.network_input), not each chunk by its own.
Where a window is exactly one chunk (an image of one chunk) both routes hand the network the
same array, and the logits agree to float rounding (tests/test_scoremap.py).
The pixels outside the raster that a chunk at the image's edge covers are no-data (0), as
the per-chunk route pads them.
"""

import math
import os
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from . import calibration, files
from .footprint import ValidityMosaic
from .grid import CENTRE_FRACTION, grid_shape
from .preprocess import network_input, valid_fractions

# The windows' side at the network's scale (pixels) before the halo: 512 px of the paper's
# 128-px input is 4 x 4 chunks, about 0.6 GB of activations with the paper's widths.
WINDOW_SIZE = 512


@dataclass(frozen=True)
class MapGeometry:
    """A dense grid's chunks at the network's scale and the score map's cells under them."""

    raster_width: int
    raster_height: int
    chunk_size: int
    stride: int
    input_size: int
    cell: int  # network pixels per score-map value (network.network_stride)

    @property
    def factor(self) -> float:
        """Raster pixels per network pixel."""
        return self.chunk_size / self.input_size

    @property
    def stride_net(self) -> int:
        return self.stride * self.input_size // self.chunk_size

    @property
    def grid(self) -> Tuple[int, int]:
        return grid_shape(self.raster_width, self.raster_height, self.chunk_size, self.stride)

    @property
    def canvas(self) -> Tuple[int, int]:
        """(height, width) at the network's scale of the area the grid's chunks cover."""
        rows, cols = self.grid
        return (rows - 1) * self.stride_net + self.input_size, (cols - 1) * self.stride_net + self.input_size

    @property
    def cells(self) -> Tuple[int, int]:
        height, width = self.canvas
        return height // self.cell, width // self.cell

    @property
    def raster_cells(self) -> Tuple[int, int]:
        """(rows, cols) of score-map cells that hold part of the raster."""
        per_cell = self.factor * self.cell
        return math.ceil(self.raster_height / per_cell - 1e-9), math.ceil(self.raster_width / per_cell - 1e-9)

    def chunk_cells(self, row: int, col: int) -> Tuple[slice, slice]:
        """The score-map cells under grid chunk (row, col)."""
        n = self.input_size // self.cell
        top, left = row * self.stride_net // self.cell, col * self.stride_net // self.cell
        return slice(top, top + n), slice(left, left + n)

    def geotransform(self, geotransform) -> Tuple[float, ...]:
        """The raster's geotransform with pixels the size of a score-map cell."""
        g = geotransform
        k = self.factor * self.cell
        return (g[0], g[1] * k, g[2] * k, g[3], g[4] * k, g[5] * k)


def map_route_problem(chunk_size: int, stride: int, input_size: int, cell: int) -> str:
    """Why chunks of this grid cannot be read off the score map ('' when they can): every chunk
    must start on a cell corner and cover whole cells, and a cell must be whole raster pixels."""
    if input_size % cell:
        return f"the model's input ({input_size} px) is not a multiple of its {cell}-px score-map cell"
    if (stride * input_size) % chunk_size or (stride * input_size // chunk_size) % cell:
        return f"the stride ({stride} px) is not a multiple of the score map's cell ({chunk_size * cell / input_size:g} raster px)"
    if (cell * chunk_size) % input_size:
        return f"a score-map cell is not a whole number of raster pixels ({chunk_size * cell / input_size:g})"
    return ""


@dataclass(frozen=True)
class Window:
    """A window of the canvas (network pixels, [y0, y1) x [x0, x1)), the cells it writes to the map
    (owned, also network pixels) and the grid chunks whose footprint it holds (rows, cols)."""

    y0: int
    y1: int
    x0: int
    x1: int
    owned_y: Tuple[int, int]
    owned_x: Tuple[int, int]
    rows: Tuple[int, int]
    cols: Tuple[int, int]


def _spans(count: int, step: int, input_size: int, extent: int, per_window: int, halo: int) -> List[Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]]:
    """Along one axis: ((start, end), (owned start, owned end), (first chunk, end chunk)) of each window."""
    spans = []
    for first in range(0, count, per_window):
        last = min(first + per_window, count)
        owned = (first * step, extent if last == count else last * step)
        start = max(0, owned[0] - halo)
        end = min(extent, max(owned[1], (last - 1) * step + input_size) + halo)
        spans.append(((start, end), owned, (first, last)))
    return spans


def windows(geometry: MapGeometry, window_size: int = WINDOW_SIZE, halo: Optional[int] = None) -> List[Window]:
    """Windows that tile the canvas: each owns about window_size network pixels of the map and
    reads ``halo`` more on every side (inside the canvas); default halo: a quarter of the input."""
    cell = geometry.cell
    if halo is None:
        halo = geometry.input_size // 4
    halo = -(-halo // cell) * cell
    step = geometry.stride_net
    per_window = max(1, window_size // step)
    rows, cols = geometry.grid
    height, width = geometry.canvas
    out = []
    for (y0, y1), owned_y, chunk_rows in _spans(rows, step, geometry.input_size, height, per_window, halo):
        for (x0, x1), owned_x, chunk_cols in _spans(cols, step, geometry.input_size, width, per_window, halo):
            out.append(Window(y0, y1, x0, x1, owned_y, owned_x, chunk_rows, chunk_cols))
    return out


def read_window(source, geometry: MapGeometry, window: Window, mosaic: Optional[ValidityMosaic] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Raw values and validity of a canvas window at the network's scale; no-data (0) beyond the
    raster. The validity of the part inside the raster goes into the mosaic if one is given."""
    height, width = window.y1 - window.y0, window.x1 - window.x0
    data = np.zeros((height, width), np.float32)
    valid = np.zeros((height, width), bool)
    f = geometry.factor
    rx0, ry0 = int(round(window.x0 * f)), int(round(window.y0 * f))
    rx1, ry1 = min(geometry.raster_width, int(round(window.x1 * f))), min(geometry.raster_height, int(round(window.y1 * f)))
    if rx1 <= rx0 or ry1 <= ry0:
        return data, valid
    out_w = min(width, max(1, int(round((rx1 - rx0) / f))))
    out_h = min(height, max(1, int(round((ry1 - ry0) / f))))
    part, part_valid = source.read(rx0, ry0, rx1 - rx0, ry1 - ry0, out_w, out_h)
    data[:out_h, :out_w] = part
    valid[:out_h, :out_w] = part_valid
    if mosaic is not None:
        mosaic.paste(rx0, ry0, rx1 - rx0, ry1 - ry0, part_valid)
    return data, valid


class ScoreMapper:
    """The network's score map of images whose sides are multiples of the cell; with ``mirror``
    (test-time augmentation) the mean of the maps of the image and of its east-west mirror.
    Runs on ONNX Runtime where it matches Keras (model/runtime.py)."""

    def __init__(self, network, widths, mirror: bool = False):
        from .network import network_stride
        from .runtime import map_scorer

        self.run = map_scorer(network, widths)
        self.cell = network_stride(widths)
        self.mirror = mirror
        self.seconds = 0.0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W) float32 network inputs -> (N, H / cell, W / cell) logit maps."""
        import time

        t0 = time.monotonic()
        batch = np.asarray(images, np.float32)[..., None]
        maps = self.run(batch)[..., 0]
        if self.mirror:
            mirrored = self.run(np.ascontiguousarray(batch[:, :, ::-1]))[..., 0]
            maps = (maps + mirrored[:, :, ::-1]) / 2.0
        self.seconds += time.monotonic() - t0
        return maps


@dataclass
class ScoreMap:
    """The logit map over the canvas, the valid share of each cell, and each grid chunk's valid
    fractions (whole, centre), NaN where the chunk's window was never read."""

    geometry: MapGeometry
    logits: np.ndarray  # (cells rows, cells cols) float32
    valid_share: np.ndarray  # same shape
    whole: np.ndarray  # (grid rows, grid cols)
    centre: np.ndarray

    def chunk_logit(self, row: int, col: int) -> float:
        rows, cols = self.geometry.chunk_cells(row, col)
        return float(self.logits[rows, cols].mean(dtype=np.float64))


def score_canvas(
    source,
    geometry: MapGeometry,
    mapper: ScoreMapper,
    normalisation: Dict,
    window_size: int = WINDOW_SIZE,
    halo: Optional[int] = None,
    progress: Optional[Callable[[float], None]] = None,
    stop: Optional[Callable[[], bool]] = None,
    mosaic: Optional[ValidityMosaic] = None,
) -> ScoreMap:
    """Read, normalise (per window) and score every window; returns the assembled ScoreMap. Every
    window read pastes its validity into the mosaic if one is given."""
    cell = geometry.cell
    logits = np.zeros(geometry.cells, np.float32)
    valid_share = np.zeros(geometry.cells, np.float32)
    rows, cols = geometry.grid
    whole = np.full((rows, cols), np.nan)
    centre = np.full((rows, cols), np.nan)
    tiles = windows(geometry, window_size, halo)
    empty_maps: Dict[Tuple[int, int], np.ndarray] = {}
    for index, window in enumerate(_prefetch(tiles, lambda w: read_window(source, geometry, w, mosaic))):
        if stop is not None and stop():
            break
        tile, (data, valid) = window
        if valid.any():
            score = mapper(network_input(data, valid, normalisation)[None])[0]
        else:  # all no-data: the map of an empty window of this shape, computed once
            if data.shape not in empty_maps:
                empty_maps[data.shape] = mapper(np.zeros((1,) + data.shape, np.float32))[0]
            score = empty_maps[data.shape]
        oy0, oy1 = tile.owned_y
        ox0, ox1 = tile.owned_x
        logits[oy0 // cell : oy1 // cell, ox0 // cell : ox1 // cell] = score[(oy0 - tile.y0) // cell : (oy1 - tile.y0) // cell, (ox0 - tile.x0) // cell : (ox1 - tile.x0) // cell]
        owned_valid = valid[oy0 - tile.y0 : oy1 - tile.y0, ox0 - tile.x0 : ox1 - tile.x0]
        h, w = owned_valid.shape
        valid_share[oy0 // cell : oy1 // cell, ox0 // cell : ox1 // cell] = owned_valid.reshape(h // cell, cell, w // cell, cell).mean(axis=(1, 3))
        _chunk_fractions(geometry, tile, valid, whole, centre)
        if progress is not None:
            progress((index + 1) / len(tiles))
    return ScoreMap(geometry, logits, valid_share, whole, centre)


def _prefetch(tiles: List[Window], read: Callable) -> Iterator[Tuple[Window, Tuple[np.ndarray, np.ndarray]]]:
    """(window, read(window)) in order, the next window read in a thread while the network runs
    (GDAL releases the GIL); at most two windows in memory."""
    import queue
    import threading

    pending: "queue.Queue" = queue.Queue(maxsize=1)
    done = threading.Event()

    def reader():
        try:
            for tile in tiles:
                if done.is_set():
                    return
                pending.put((tile, read(tile), None))
        except BaseException as exc:  # handed to the consumer
            pending.put((None, None, exc))
            return
        pending.put(None)

    thread = threading.Thread(target=reader, name="window-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = pending.get()
            if item is None:
                return
            tile, arrays, failure = item
            if failure is not None:
                raise failure
            yield tile, arrays
    finally:
        done.set()
        while thread.is_alive():
            try:
                pending.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def _chunk_fractions(geometry: MapGeometry, tile: Window, valid: np.ndarray, whole: np.ndarray, centre: np.ndarray) -> None:
    """Valid fractions of the window's own chunks, as chunking.iter_chunks judges them."""
    step, size, f = geometry.stride_net, geometry.input_size, geometry.factor
    for row in range(*tile.rows):
        top = row * step - tile.y0
        height = min(geometry.chunk_size, geometry.raster_height - row * geometry.stride)
        for col in range(*tile.cols):
            left = col * step - tile.x0
            width = min(geometry.chunk_size, geometry.raster_width - col * geometry.stride)
            used = (max(1, int(round(height / f))), max(1, int(round(width / f))))
            whole[row, col], centre[row, col] = valid_fractions(valid[top : top + size, left : left + size], used, CENTRE_FRACTION)


def paste_chunk_maps(geometry: MapGeometry, entries) -> Tuple[np.ndarray, np.ndarray]:
    """A logit map assembled from per-chunk maps ((row, col, map, valid) each): overlapping
    chunks averaged, the map's cells placed at the nearest cell; (logits, valid share), NaN where
    no chunk lies."""
    total = np.zeros(geometry.cells, np.float64)
    count = np.zeros(geometry.cells, np.float64)
    share = np.zeros(geometry.cells, np.float64)
    cell = geometry.cell
    for row, col, score, valid in entries:
        top = int(round(row * geometry.stride * geometry.input_size / geometry.chunk_size / cell))
        left = int(round(col * geometry.stride * geometry.input_size / geometry.chunk_size / cell))
        h = min(score.shape[0], total.shape[0] - top)
        w = min(score.shape[1], total.shape[1] - left)
        if h <= 0 or w <= 0:
            continue
        total[top : top + h, left : left + w] += score[:h, :w]
        count[top : top + h, left : left + w] += 1
        n = valid.shape[0] // score.shape[0]
        cells_valid = valid[: score.shape[0] * n, : score.shape[1] * n].reshape(score.shape[0], n, score.shape[1], n).mean(axis=(1, 3))
        share[top : top + h, left : left + w] += cells_valid[:h, :w]
    with np.errstate(invalid="ignore"):
        return (total / count).astype(np.float32), np.where(count > 0, share / np.maximum(count, 1), 0.0).astype(np.float32)


PROBABILITY_NODATA = -1.0


def write_probability_raster(path: str, geometry: MapGeometry, logits: np.ndarray, valid_share: np.ndarray, calibration_spec: Optional[Dict], geotransform, crs_wkt: str) -> str:
    """The calibrated ice probability of every score-map cell over the raster as a Float32 GeoTIFF
    (cells of chunk_size / input_size * cell raster pixels, the raster's CRS, origin and rotation);
    cells without image data or without a chunk are no-data (-1). Written to files.partial_path
    first and renamed when complete."""
    from osgeo import gdal, osr

    rows, cols = geometry.raster_cells
    rows, cols = min(rows, logits.shape[0]), min(cols, logits.shape[1])
    part = logits[:rows, :cols].astype(np.float64)
    probability = calibration.apply(np.nan_to_num(part), calibration_spec).astype(np.float32)
    probability[(valid_share[:rows, :cols] <= 0) | ~np.isfinite(part)] = PROBABILITY_NODATA
    partial = files.prepare(path)
    driver = gdal.GetDriverByName("GTiff")
    dataset = driver.Create(partial, cols, rows, 1, gdal.GDT_Float32, ["COMPRESS=DEFLATE", "TILED=YES"] if rows >= 16 and cols >= 16 else ["COMPRESS=DEFLATE"])
    dataset.SetGeoTransform(geometry.geotransform(geotransform))
    if crs_wkt:
        srs = osr.SpatialReference()
        srs.ImportFromWkt(crs_wkt)
        dataset.SetSpatialRef(srs)
    band = dataset.GetRasterBand(1)
    band.SetNoDataValue(PROBABILITY_NODATA)
    band.SetDescription("ice probability")
    band.WriteArray(probability)
    band.FlushCache()
    dataset = None
    files.commit(partial, path)
    if os.path.exists(partial + ".aux.xml"):
        os.replace(partial + ".aux.xml", path + ".aux.xml")
    return path


def network_stride_of(widths) -> int:
    from .network import network_stride

    return network_stride(widths)
