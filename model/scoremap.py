"""The network's score map: every chunk of a dense grid for about the price of one pass over the image.

The network ends in global average pooling, dropout (an identity at inference) and one dense
unit, so a chunk's logit is the mean over its feature map of that dense unit applied at every
position (a class-activation map). Run fully convolutionally (network.score_map_model), the map
has one value per *cell* of network_stride input pixels (16 for the paper's widths, i.e. 128
raster pixels of a 1024-px chunk read at 128). Any chunk whose offset falls on a cell corner
then gets its logit as the mean of the map over its footprint, whatever the stride.

The map is made of *tiles*: the chunks of the grid with STRIDE = CHUNK, each read, stretched and
scored exactly as the per-chunk route scores that chunk (zero padding beyond the raster
included), so at STRIDE = CHUNK both routes agree to float rounding (tests/test_scoremap.py). A
chunk of a denser grid is the mean of the cells of the (up to four) tiles it overlaps. What
differs from scoring that chunk alone: each part of it was stretched with its tile and saw the
network's zero padding at the tile's edges, as every chunk does in training.

Measured against larger windows that overlap by a halo, stretched as a whole and seeing the
neighbouring terrain (benchmarks/dense_grid.py; scene.py): those ranked the planted ice worse
than scoring each chunk alone and cost 1.9x STRIDE = CHUNK at STRIDE = CHUNK/2 on a whole
observation (the halo and the no-data border), where tiles cost 1.2x. What tiles cannot see, a
patch cut by their edges, inference finds by scoring such chunks alone again (RESCORE_FROM).
"""

import functools
import math
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import calibration, files
from .errors import ModelFileError
from .footprint import ValidityMosaic
from .grid import CENTRE_FRACTION, centre_region, chunk_grid, grid_shape
from .preprocess import network_input
from .raster import read_in_order


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

    def on_tile(self, row: int, col: int) -> bool:
        """Whether grid chunk (row, col) is one of the map's tiles (the STRIDE = CHUNK grid's chunks)."""
        return (row * self.stride_net) % self.input_size == 0 and (col * self.stride_net) % self.input_size == 0

    def tiles_exact(self, row: int, col: int) -> bool:
        """Whether every tile under grid chunk (row, col) lies wholly inside the raster, so was read
        at exactly the grid's scale (a tile cut by the raster's edge is read at a rounded one)."""
        size, step = self.input_size, self.stride_net
        last_row, last_col = (row * step + size - 1) // size, (col * step + size - 1) // size
        return (last_col + 1) * self.chunk_size <= self.raster_width and (last_row + 1) * self.chunk_size <= self.raster_height

    def geotransform(self, geotransform) -> Tuple[float, ...]:
        """The raster's geotransform with pixels the size of a score-map cell."""
        g = geotransform
        k = self.factor * self.cell
        return (g[0], g[1] * k, g[2] * k, g[3], g[4] * k, g[5] * k)


def stride_off_cells(chunk_size: int, stride: int, input_size: int, cell: int) -> bool:
    """Does the stride fall between the score map's cells (it must be whole cells at the network's scale)?"""
    return bool((stride * input_size) % chunk_size or (stride * input_size // chunk_size) % cell)


def map_route_problem(chunk_size: int, stride: int, input_size: int, cell: int) -> str:
    """Why chunks of this grid cannot be read off the score map ('' when they can): every chunk
    must start on a cell corner and cover whole cells, and a cell must be whole raster pixels."""
    if input_size % cell:
        return f"the model's input ({input_size} px) is not a multiple of its {cell}-px score-map cell"
    if stride_off_cells(chunk_size, stride, input_size, cell):
        return f"the stride ({stride} px) is not a multiple of the score map's cell ({chunk_size * cell / input_size:g} raster px)"
    if (cell * chunk_size) % input_size:
        return f"a score-map cell is not a whole number of raster pixels ({chunk_size * cell / input_size:g})"
    return ""


@dataclass(frozen=True)
class Window:
    """A tile of the canvas (network pixels, [y0, y1) x [x0, x1)), which may reach past the
    canvas, and the part of the map it writes (owned: the tile within the canvas)."""

    y0: int
    y1: int
    x0: int
    x1: int
    owned_y: Tuple[int, int]
    owned_x: Tuple[int, int]

    def owned(self, array: np.ndarray) -> np.ndarray:
        """The owned part of an array read over this window."""
        return array[self.owned_y[0] - self.y0 : self.owned_y[1] - self.y0, self.owned_x[0] - self.x0 : self.owned_x[1] - self.x0]


def windows(geometry: MapGeometry) -> List[Window]:
    """The tiles: the input-sized windows of the STRIDE = CHUNK grid over the canvas."""
    size = geometry.input_size
    height, width = geometry.canvas
    return [
        Window(y0, y0 + size, x0, x0 + size, (y0, min(height, y0 + size)), (x0, min(width, x0 + size)))
        for y0 in range(0, height, size)
        for x0 in range(0, width, size)
    ]


def _raster_span(geometry: MapGeometry, window: Window) -> Optional[Tuple[int, int, int, int, int, int]]:
    """(x0, y0, x1, y1) of the raster under a canvas window and the (width, height) it is read
    to at the network's scale; None where the window lies beyond the raster."""
    height, width = window.y1 - window.y0, window.x1 - window.x0
    f = geometry.factor
    rx0, ry0 = int(round(window.x0 * f)), int(round(window.y0 * f))
    rx1, ry1 = min(geometry.raster_width, int(round(window.x1 * f))), min(geometry.raster_height, int(round(window.y1 * f)))
    if rx1 <= rx0 or ry1 <= ry0:
        return None
    return rx0, ry0, rx1, ry1, min(width, max(1, int(round((rx1 - rx0) / f)))), min(height, max(1, int(round((ry1 - ry0) / f))))


def read_window(source, geometry: MapGeometry, window: Window) -> Tuple[np.ndarray, np.ndarray]:
    """Raw values and validity of a canvas window at the network's scale; no-data (0) beyond the raster."""
    data = np.zeros((window.y1 - window.y0, window.x1 - window.x0), np.float32)
    valid = np.zeros(data.shape, bool)
    span = _raster_span(geometry, window)
    if span is not None:
        rx0, ry0, rx1, ry1, out_w, out_h = span
        data[:out_h, :out_w], valid[:out_h, :out_w] = source.read(rx0, ry0, rx1 - rx0, ry1 - ry0, out_w, out_h)
    return data, valid


def paste_validity(mosaic: ValidityMosaic, geometry: MapGeometry, window: Window, valid: np.ndarray) -> None:
    """The validity of the part of a window read by read_window that lies inside the raster, into the mosaic."""
    span = _raster_span(geometry, window)
    if span is not None:
        rx0, ry0, rx1, ry1, out_w, out_h = span
        mosaic.paste(rx0, ry0, rx1 - rx0, ry1 - ry0, valid[:out_h, :out_w])


EDITED_ARCHITECTURE = "its metadata was edited by hand or belongs to another network. Use the file as hiriseice:train wrote it, or retrain it."


class ScoreMapper:
    """The network's score map of images whose sides are multiples of the cell; with ``mirror``
    (test-time augmentation) the mean of the maps of the image and of its east-west mirror.
    Runs on ONNX Runtime where it matches Keras (model/runtime.py)."""

    def __init__(self, network, architecture: Dict, mirror: bool = False):
        from .network import network_stride
        from .runtime import map_scorer

        try:
            self.run = map_scorer(network, architecture)
        except ValueError as exc:  # the widths it names build another network than the file's weights fit
            raise ModelFileError(f"The model file's architecture ({exc}) does not describe its network: {EDITED_ARCHITECTURE}") from None
        self.cell = network_stride(architecture)
        self.mirror = mirror
        self.seconds = 0.0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W) float32 network inputs -> (N, H / cell, W / cell) logit maps."""
        import time

        t0 = time.monotonic()
        batch = np.asarray(images, np.float32)[..., None]
        maps = self.run(batch)[..., 0]
        if maps.shape[1:] != (batch.shape[1] // self.cell, batch.shape[2] // self.cell):
            raise ModelFileError(f"The model file's architecture gives its score map cells of {self.cell} input px, but its network's are "
                                 f"{batch.shape[1] / maps.shape[1]:g} px: {EDITED_ARCHITECTURE}")
        if self.mirror:
            mirrored = self.run(np.ascontiguousarray(batch[:, :, ::-1]))[..., 0]
            maps = (maps + mirrored[:, :, ::-1]) / 2.0
        self.seconds += time.monotonic() - t0
        return maps


def whole_chunk_logits(maps: np.ndarray) -> np.ndarray:
    """The logit of each chunk scored alone: the mean of its own score map (N, h, w) -> (N,)."""
    return maps.reshape(len(maps), -1).mean(axis=1, dtype=np.float64)


class TilePixels:
    """The raw values and validity the tiles read, kept by row of tiles until released. A chunk
    between tiles read at exactly the grid's scale is the same average of the same raster pixels
    as its own read (GDAL's average over aligned blocks), so scoring it alone needs no second read
    of the raster. A chunk spans at most two rows of tiles, so a caller that scores chunks as the
    rows under them are scored (score_canvas's rows_scored) and releases those rows holds a few
    rows, not the canvas (312 MB for a whole observation read at 256 px, issue 10)."""

    def __init__(self, geometry: MapGeometry):
        self.geometry = geometry
        self.rows: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}  # row of tiles -> its canvas rows' (data, valid)

    def paste(self, tile: Window, data: np.ndarray, valid: np.ndarray) -> None:
        (oy0, oy1), (ox0, ox1) = tile.owned_y, tile.owned_x
        row = oy0 // self.geometry.input_size
        if row not in self.rows:
            shape = (oy1 - oy0, self.geometry.canvas[1])
            self.rows[row] = (np.zeros(shape, np.float32), np.zeros(shape, bool))
        row_data, row_valid = self.rows[row]
        row_data[:, ox0:ox1] = tile.owned(data)
        row_valid[:, ox0:ox1] = tile.owned(valid)

    def chunk(self, row: int, col: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """Grid chunk (row, col) as its own read gives it, or None where a tile under it was cut
        by the raster's edge (MapGeometry.tiles_exact)."""
        if not self.geometry.tiles_exact(row, col):
            return None
        size, step = self.geometry.input_size, self.geometry.stride_net
        top, left = row * step, col * step
        parts = []
        for tile_row in range(top // size, (top + size - 1) // size + 1):
            start = tile_row * size
            y0, y1 = max(top, start) - start, min(top + size, start + size) - start
            parts.append(tuple(array[y0:y1, left : left + size] for array in self.rows[tile_row]))
        return np.concatenate([data for data, _ in parts]), np.concatenate([valid for _, valid in parts])

    def release_above(self, y: int) -> None:
        """Forget the rows of tiles that end at or above canvas row y: no chunk left to score reaches them."""
        size = self.geometry.input_size
        for row in [row for row in self.rows if (row + 1) * size <= y]:
            del self.rows[row]


@dataclass
class ScoreMap:
    """The logit map over the canvas, the valid share of each cell, each grid chunk's valid
    fractions (whole, centre), NaN where the chunk's window was never read, and the tiles'
    pixels when they were kept."""

    geometry: MapGeometry
    logits: np.ndarray  # (cells rows, cells cols) float32
    valid_share: np.ndarray  # same shape
    whole: np.ndarray  # (grid rows, grid cols)
    centre: np.ndarray
    pixels: Optional[TilePixels] = None

    def chunk_logit(self, row: int, col: int) -> float:
        rows, cols = self.geometry.chunk_cells(row, col)
        return float(self.logits[rows, cols].mean(dtype=np.float64))

    def cut_peak_logit(self, row: int, col: int) -> float:
        """The highest cell logit of a chunk between tiles along the tiles' edges that cross it (a cell on
        either side), where a patch they cut lies and lights a cell or two while every tile's mean stays
        low. Not the chunk's central half: at a quarter-chunk offset the edge runs along that half's border."""
        rows, cols = self.geometry.chunk_cells(row, col)
        per_tile = self.geometry.input_size // self.geometry.cell
        near = [np.zeros(span.stop - span.start, bool) for span in (rows, cols)]
        for mask, span in zip(near, (rows, cols)):
            for edge in range(span.start + 1, span.stop):  # a tile edge inside the chunk, between cells edge - 1 and edge
                if edge % per_tile == 0:
                    mask[[edge - 1 - span.start, edge - span.start]] = True
        region = near[0][:, None] | near[1][None, :]
        return float(self.logits[rows, cols][region].max()) if region.any() else -np.inf


def score_canvas(
    source,
    geometry: MapGeometry,
    mapper: ScoreMapper,
    normalisation: Dict,
    batch_size: int = 16,
    progress: Optional[Callable[[float], None]] = None,
    stop: Optional[Callable[[], bool]] = None,
    mosaic: Optional[ValidityMosaic] = None,
    keep_pixels: bool = False,
    readers: int = 1,
    rows_scored: Optional[Callable[[ScoreMap, int], None]] = None,
) -> ScoreMap:
    """Read, normalise and score every tile, batch_size at a time; returns the assembled ScoreMap.
    A tile without valid pixels gets the map of an empty tile. Every tile read pastes its
    validity into the mosaic if one is given, and its pixels into the map's TilePixels with
    keep_pixels. ``rows_scored(score_map, rows)`` is called each time more rows of tiles, counted
    from the top, are all read and scored, with the map so far (the chunks over those rows are
    final) while the tiles below are still being read; it may release the kept pixels it is done with.
    ``readers`` threads read tiles at once, each through its own handle (source.handles)."""
    cell = geometry.cell
    logits = np.zeros(geometry.cells, np.float32)
    valid_share = np.zeros(geometry.cells, np.float32)
    counts = ChunkValidity(geometry)
    tiles = windows(geometry)
    tiles_per_row = math.ceil(geometry.canvas[1] / geometry.input_size)
    empty_map: List[np.ndarray] = []
    pending: List[Tuple[int, Window, np.ndarray]] = []
    pixels = TilePixels(geometry) if keep_pixels else None
    reported_rows = 0

    def paste(tile: Window, score: np.ndarray) -> None:
        oy0, oy1 = tile.owned_y
        ox0, ox1 = tile.owned_x
        logits[oy0 // cell : oy1 // cell, ox0 // cell : ox1 // cell] = score[(oy0 - tile.y0) // cell : (oy1 - tile.y0) // cell, (ox0 - tile.x0) // cell : (ox1 - tile.x0) // cell]

    def flush() -> None:
        if pending:
            for (_, tile, _), score in zip(pending, mapper(np.stack([image for _, _, image in pending]))):
                paste(tile, score)
            pending.clear()

    def report_rows(processed: int) -> None:
        """rows_scored for the rows of tiles before the first tile still read or waiting for the network."""
        nonlocal reported_rows
        rows = (pending[0][0] if pending else processed) // tiles_per_row
        if rows_scored is not None and rows > reported_rows:
            reported_rows = rows
            rows_scored(ScoreMap(geometry, logits, valid_share, *counts.fractions(), pixels), rows)

    def score_tile(index: int, tile: Window, data: np.ndarray, valid: np.ndarray) -> None:
        if valid.any():
            pending.append((index, tile, network_input(data, valid, normalisation)))
            if len(pending) == batch_size:
                flush()
        else:
            if not empty_map:
                empty_map.append(mapper(np.zeros((1,) + data.shape, np.float32))[0])
            paste(tile, empty_map[0])
        if mosaic is not None:
            paste_validity(mosaic, geometry, tile, valid)
        oy0, oy1 = tile.owned_y
        ox0, ox1 = tile.owned_x
        owned_valid = tile.owned(valid)
        h, w = owned_valid.shape
        valid_share[oy0 // cell : oy1 // cell, ox0 // cell : ox1 // cell] = owned_valid.reshape(h // cell, cell, w // cell, cell).mean(axis=(1, 3))
        counts.add(oy0, ox0, owned_valid)
        if pixels is not None:
            pixels.paste(tile, data, valid)
        report_rows(index + 1)
        if progress is not None:
            progress((index + 1) / len(tiles))

    processed = 0
    with source.handles(readers) as sources:
        for index, (tile, (data, valid)) in enumerate(read_in_order(tiles, [functools.partial(read_window, s, geometry) for s in sources])):
            if stop is not None and stop():
                break
            score_tile(index, tile, data, valid)
            processed = index + 1
    flush()
    report_rows(processed)
    whole, centre = counts.fractions()
    return ScoreMap(geometry, logits, valid_share, whole, centre, pixels)


class ChunkValidity:
    """Each grid chunk's valid pixels at the network's scale, over its whole footprint and its
    central region, as chunking.iter_chunks judges them (preprocess.valid_fractions), summed
    from the tiles' owned parts, which cover the canvas once: a chunk may span several tiles."""

    def __init__(self, geometry: MapGeometry):
        rows, cols = geometry.grid
        step = geometry.stride_net
        top = np.arange(rows) * step
        left = np.arange(cols) * step
        # The part of the input a chunk fills (an edge chunk is partial), as iter_chunks reads it.
        sizes = [w.scaled_size(geometry.chunk_size, geometry.input_size) for w in chunk_grid(geometry.raster_width, geometry.raster_height, geometry.chunk_size, geometry.stride)]
        widths = np.array([width for width, _ in sizes[:cols]])
        heights = np.array([height for _, height in sizes[::cols]])
        centre_x = np.array([centre_region(w, 1, CENTRE_FRACTION)[::2] for w in widths])  # (x offset, width)
        centre_y = np.array([centre_region(1, h, CENTRE_FRACTION)[1::2] for h in heights])  # (y offset, height)
        # Boxes per region (whole, centre): rows' (start, end) and columns' (start, end) on the canvas.
        self.boxes = [
            ((top, top + heights), (left, left + widths)),
            ((top + centre_y[:, 0], top + centre_y[:, 0] + centre_y[:, 1]), (left + centre_x[:, 0], left + centre_x[:, 0] + centre_x[:, 1])),
        ]
        self.valid = np.zeros((2, rows, cols))
        self.seen = np.zeros((2, rows, cols))

    def add(self, y0: int, x0: int, valid: np.ndarray) -> None:
        """Count a canvas part whose top-left corner is (y0, x0)."""
        h, w = valid.shape
        integral = np.zeros((h + 1, w + 1))
        integral[1:, 1:] = valid.cumsum(0).cumsum(1)
        for region, ((ys, ye), (xs, xe)) in enumerate(self.boxes):
            r0, r1 = np.clip(ys - y0, 0, h)[:, None], np.clip(ye - y0, 0, h)[:, None]
            c0, c1 = np.clip(xs - x0, 0, w)[None, :], np.clip(xe - x0, 0, w)[None, :]
            self.valid[region] += integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
            self.seen[region] += (r1 - r0) * (c1 - c0)

    def fractions(self) -> Tuple[np.ndarray, np.ndarray]:
        """(whole, centre) valid fractions per chunk; NaN where part of the chunk was never read."""
        out = []
        for region, ((ys, ye), (xs, xe)) in enumerate(self.boxes):
            area = (ye - ys)[:, None] * (xe - xs)[None, :]
            with np.errstate(invalid="ignore", divide="ignore"):
                out.append(np.where(self.seen[region] == area, self.valid[region] / area, np.nan))
        return out[0], out[1]


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
# A cell mostly of no-data was read mostly as padding and, drawn whole, hangs past the image's edge.
MIN_CELL_IMAGE_SHARE = 0.5


def write_probability_raster(path: str, geometry: MapGeometry, logits: np.ndarray, valid_share: np.ndarray, calibration_spec: Optional[Dict], geotransform, crs_wkt: str,
                             kept: Sequence[Tuple[int, int]], before_commit: Optional[Callable[[], None]] = None, tags: Optional[Dict[str, str]] = None) -> str:
    """The calibrated ice probability of every score-map cell over the raster as a Float32 GeoTIFF
    (cells of chunk_size / input_size * cell raster pixels, the raster's CRS, origin and rotation);
    cells less than MIN_CELL_IMAGE_SHARE image data or under no kept chunk ((row, col) of each) are no-data (-1): the map
    route scores tiles whose chunk MIN_VALID drops, and their cells lit footprint borders that no
    chunk supports. ``tags``: GeoTIFF metadata (the model that scored it). Written to files.partial_path first and renamed
    when complete."""
    from osgeo import gdal, osr

    rows, cols = geometry.raster_cells  # the whole raster: cells past the map (an unscored edge sliver) are no-data
    part = np.full((rows, cols), np.nan)
    share = np.zeros((rows, cols))
    covered_rows, covered_cols = min(rows, logits.shape[0]), min(cols, logits.shape[1])
    under_chunks = np.zeros(logits.shape, bool)
    for row, col in kept:
        under_chunks[geometry.chunk_cells(row, col)] = True
    part[:covered_rows, :covered_cols] = np.where(under_chunks, logits, np.nan)[:covered_rows, :covered_cols]
    share[:covered_rows, :covered_cols] = valid_share[:covered_rows, :covered_cols]
    probability = calibration.apply(np.nan_to_num(part), calibration_spec).astype(np.float32)
    probability[(share < MIN_CELL_IMAGE_SHARE) | ~np.isfinite(part)] = PROBABILITY_NODATA
    with files.writing(path, "The ice-probability raster", before_commit) as partial:
        driver = gdal.GetDriverByName("GTiff")
        dataset = driver.Create(partial, cols, rows, 1, gdal.GDT_Float32, ["COMPRESS=DEFLATE", "TILED=YES"] if rows >= 16 and cols >= 16 else ["COMPRESS=DEFLATE"])
        try:
            dataset.SetGeoTransform(geometry.geotransform(geotransform))
            if crs_wkt:
                srs = osr.SpatialReference()
                srs.ImportFromWkt(crs_wkt)
                dataset.SetSpatialRef(srs)
            if tags:
                dataset.SetMetadata({key: str(value) for key, value in tags.items()})
            band = dataset.GetRasterBand(1)
            band.SetNoDataValue(PROBABILITY_NODATA)
            band.SetDescription("ice probability")
            band.WriteArray(probability)
            band = None
            dataset.FlushCache()  # a disk without room for the last blocks fails here, not unseen on closing
        finally:
            dataset = None  # closed now, even on a failure, while files.writing keeps GDAL quiet
        if os.path.exists(partial + ".aux.xml"):
            os.replace(partial + ".aux.xml", path + ".aux.xml")
    return path


def network_stride_of(architecture: Dict) -> int:
    from .network import network_stride

    return network_stride(architecture)
