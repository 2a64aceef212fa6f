"""The chunk grid: which pixel windows of a raster become chunks, and where they lie.

Pure geometry, no I/O, so the same grid serves detection, chunk export, training and the
QGIS side that draws the polygons.
"""

from dataclasses import dataclass
from typing import Iterator, List, Sequence, Tuple

GeoTransform = Sequence[float]

# The paper deletes "the chunks with black pixels around the centre of the image": we read it as
# no-data near the chunk's own centre and test the central half of the chunk in each direction
# (a quarter of its area).
CENTRE_FRACTION = 0.5


@dataclass(frozen=True)
class ChunkWindow:
    """One chunk: a pixel window of the raster. Edge chunks may be smaller than the grid's size."""

    chunk_id: int
    row: int
    col: int
    x_off: int
    y_off: int
    width: int
    height: int

    def scaled_size(self, chunk_size: int, input_size: int) -> Tuple[int, int]:
        """(width, height) of this window at the network's scale, where chunk_size pixels become input_size."""
        scale = input_size / chunk_size
        return max(1, int(round(self.width * scale))), max(1, int(round(self.height * scale)))


def centre_region(width: int, height: int, fraction: float = CENTRE_FRACTION) -> Tuple[int, int, int, int]:
    """(x_off, y_off, width, height) of the central fraction of a width x height window."""
    cw = max(1, int(round(width * fraction)))
    ch = max(1, int(round(height * fraction)))
    return (width - cw) // 2, (height - ch) // 2, cw, ch


def overlap_inset(chunk_size: int, stride: int) -> float:
    """Image pixels inside each edge of a chunk where the report's quicklook draws it, so that chunks on a grid
    denser than they are (stride < chunk_size) tile the picture: each the ground nearest its centre, instead of
    see-through fills stacked into colours no legend shows. (The map draws whole footprints: QGIS selects by them.)"""
    return max(0.0, (chunk_size - stride) / 2.0)


def grid_shape(raster_width: int, raster_height: int, chunk_size: int, stride: int) -> Tuple[int, int]:
    """(rows, cols) of the grid. The last row/column may be partial, at least narrowest_edge wide, and always
    starts inside the raster."""
    if chunk_size < 1 or stride < 1:
        raise ValueError("chunk size and stride must be positive")
    cols = _steps(raster_width, chunk_size, stride)
    rows = _steps(raster_height, chunk_size, stride)
    return rows, cols


def narrowest_edge(chunk_size: int) -> int:
    """The narrowest partial window at the raster's edge that is a chunk: an eighth of one, a cell of the
    network's score map at the default reading scale. A narrower one is a sliver, read as a strip of terrain
    in a chunk of padding, and weighed in the image's category like a whole chunk: a 1-px strip beside one
    icy chunk made a 'good' image 'bad'."""
    return max(1, chunk_size // 8)


def _steps(length: int, chunk_size: int, stride: int) -> int:
    if length <= chunk_size:
        return 1
    # Windows start every `stride` pixels inside the raster; a final partial window covers what
    # is left, and none starts where the previous window already reached the end. A stride
    # longer than the chunk leaves gaps, and no window may start at or past the raster's end.
    steps = 1 + min(-(-(length - chunk_size) // stride), (length - 1) // stride)
    # A final sliver is left unscored (the README says so): under an eighth of a chunk at the edge.
    if length - (steps - 1) * stride < narrowest_edge(chunk_size):
        steps -= 1
    return steps


def edge_note(raster_width: int, raster_height: int, chunk_size: int, stride: int) -> str:
    """What the grid leaves unscored at the east and south edges, said in the log; '' when nothing. A strip
    beyond a stride longer than the chunk is the gap warning's (chunking.gap_warning), not a sliver."""
    narrowest = narrowest_edge(chunk_size)
    sides = [f"{width} px along the east edge" if x_off else f"{height} px along the south edge"  # the south sliver starts at x 0
             for x_off, _, width, height in unscored_edges(raster_width, raster_height, chunk_size, stride)
             if (width if x_off else height) < narrowest]
    if not sides:
        return ""
    return (f"{' and '.join(sides)} lie in no chunk: a partial chunk narrower than an eighth of one ({narrowest} px) "
            "is not scored (README, Rules).")


def unscored_edges(raster_width: int, raster_height: int, chunk_size: int, stride: int) -> List[Tuple[int, int, int, int]]:
    """(x_off, y_off, width, height) of the east and south slivers no chunk covers (narrower than narrowest_edge)."""
    rows, cols = grid_shape(raster_width, raster_height, chunk_size, stride)
    east = min(raster_width, (cols - 1) * stride + chunk_size)
    south = min(raster_height, (rows - 1) * stride + chunk_size)
    return ([(east, 0, raster_width - east, raster_height)] if east < raster_width else []) + \
        ([(0, south, raster_width, raster_height - south)] if south < raster_height else [])


def chunk_grid(raster_width: int, raster_height: int, chunk_size: int, stride: int) -> Iterator[ChunkWindow]:
    """All windows of the grid, row by row. chunk_id = row * cols + col, stable across runs."""
    rows, cols = grid_shape(raster_width, raster_height, chunk_size, stride)
    for row in range(rows):
        y_off = row * stride
        height = min(chunk_size, raster_height - y_off)
        for col in range(cols):
            x_off = col * stride
            width = min(chunk_size, raster_width - x_off)
            yield ChunkWindow(row * cols + col, row, col, x_off, y_off, width, height)


def pixel_to_map(geotransform: GeoTransform, x: float, y: float) -> Tuple[float, float]:
    """Map coordinates of pixel position (x, y) (pixel corners at integer positions)."""
    g = geotransform
    return g[0] + x * g[1] + y * g[2], g[3] + x * g[4] + y * g[5]


def map_to_pixel(geotransform: GeoTransform, mx: float, my: float) -> Tuple[float, float]:
    """Inverse of pixel_to_map, for rotated geotransforms too."""
    g = geotransform
    det = g[1] * g[5] - g[2] * g[4]
    if det == 0:
        raise ValueError("the geotransform is singular")
    dx, dy = mx - g[0], my - g[3]
    return (g[5] * dx - g[2] * dy) / det, (-g[4] * dx + g[1] * dy) / det


def window_ring(geotransform: GeoTransform, x_off: float, y_off: float, width: float, height: float) -> List[Tuple[float, float]]:
    """Closed ring of the window's outer pixel edges in map coordinates, clockwise in pixel space."""
    corners = [(x_off, y_off), (x_off + width, y_off), (x_off + width, y_off + height), (x_off, y_off + height), (x_off, y_off)]
    return [pixel_to_map(geotransform, x, y) for x, y in corners]


def ring_wkt(ring: Sequence[Tuple[float, float]]) -> str:
    return "POLYGON ((" + ", ".join(f"{x!r} {y!r}" for x, y in ring) + "))"


def chunk_wkt(geotransform: GeoTransform, chunk: ChunkWindow) -> str:
    return ring_wkt(window_ring(geotransform, chunk.x_off, chunk.y_off, chunk.width, chunk.height))


def pixel_bounds_of_map_points(geotransform: GeoTransform, points: Sequence[Tuple[float, float]]) -> Tuple[float, float, float, float]:
    """(x_min, y_min, x_max, y_max) in pixel space of map points, e.g. a label polygon's vertices."""
    pixels = [map_to_pixel(geotransform, x, y) for x, y in points]
    xs = [p[0] for p in pixels]
    ys = [p[1] for p in pixels]
    return min(xs), min(ys), max(xs), max(ys)
