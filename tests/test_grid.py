"""model.grid: the chunk grid and pixel/map geometry, against brute force and GDAL's own geotransform math."""

import itertools

import pytest
from osgeo import gdal

from model import grid
from model.grid import ChunkWindow, chunk_grid, grid_shape, map_to_pixel, pixel_to_map, window_ring

import helpers


def expected_starts(length, chunk_size, stride):
    """Brute force: a window starts every stride pixels, inside the raster, unless the previous one already reached the end
    or it would be a sliver narrower than an eighth of a chunk."""
    starts = [0]
    while starts[-1] + chunk_size < length and length - (starts[-1] + stride) >= max(1, chunk_size // 8):
        starts.append(starts[-1] + stride)
    return starts


@pytest.mark.parametrize(
    "width, height, chunk_size, stride, rows, cols",
    [
        (1024, 1024, 1024, 1024, 1, 1),
        (4096, 3072, 1024, 1024, 3, 4),
        (4097, 3072, 1024, 1024, 3, 4),  # one pixel more: a 1-px sliver, left unscored
        (4224, 3072, 1024, 1024, 3, 5),  # an eighth of a chunk more: a last column of its own
        (4095, 3073, 1024, 1024, 3, 4),  # a 1-px sliver of a row, left unscored
        (4095, 3200, 1024, 1024, 4, 4),
        (100, 50, 32, 32, 2, 4),
        (100, 50, 32, 16, 3, 6),  # overlap
        (10, 10, 64, 64, 1, 1),  # raster smaller than a chunk
    ],
)
def test_grid_shape(width, height, chunk_size, stride, rows, cols):
    assert grid_shape(width, height, chunk_size, stride) == (rows, cols)
    assert len(list(chunk_grid(width, height, chunk_size, stride))) == rows * cols


@pytest.mark.parametrize("length", [1, 7, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 1000])
@pytest.mark.parametrize("chunk_size, stride", [(32, 32), (32, 16), (32, 8), (32, 31), (32, 5), (64, 64), (64, 48)])
def test_windows_match_brute_force(length, chunk_size, stride):
    """Every window start and size along both axes, against an independent enumeration."""
    windows = list(chunk_grid(length, length // 2 + 1, chunk_size, stride))
    xs = sorted({w.x_off for w in windows})
    ys = sorted({w.y_off for w in windows})
    assert xs == expected_starts(length, chunk_size, stride)
    assert ys == expected_starts(length // 2 + 1, chunk_size, stride)
    for w in windows:
        assert w.width == min(chunk_size, length - w.x_off) > 0
        assert w.height == min(chunk_size, length // 2 + 1 - w.y_off) > 0
    # together the windows cover the raster, but for a final sliver narrower than an eighth of a chunk
    for end, side in ((max(w.x_off + w.width for w in windows), length), (max(w.y_off + w.height for w in windows), length // 2 + 1)):
        assert 0 <= side - end < max(1, chunk_size // 8)


def test_last_partial_row_and_column():
    windows = list(chunk_grid(2500, 1200, 1024, 1024))
    assert [(w.row, w.col, w.x_off, w.y_off, w.width, w.height) for w in windows] == [
        (0, 0, 0, 0, 1024, 1024),
        (0, 1, 1024, 0, 1024, 1024),
        (0, 2, 2048, 0, 452, 1024),
        (1, 0, 0, 1024, 1024, 176),
        (1, 1, 1024, 1024, 1024, 176),
        (1, 2, 2048, 1024, 452, 176),
    ]
    # 76 rows more would be a sliver under an eighth of a chunk: not a row of its own
    assert [(w.x_off, w.y_off, w.width, w.height) for w in chunk_grid(2500, 1100, 1024, 1024)] == [(0, 0, 1024, 1024), (1024, 0, 1024, 1024), (2048, 0, 452, 1024)]


@pytest.mark.parametrize("width, height, said", [
    (2048, 1100, "76 px along the south edge lie in no chunk"),
    (2100, 1100, "52 px along the east edge and 76 px along the south edge lie in no chunk"),
    (2048, 2048, ""),
    (2500, 1200, ""),  # partial chunks of 452 and 176 px: chunks, nothing left out
])
def test_the_log_says_which_edge_pixels_lie_in_no_chunk(width, height, said):
    """The sliver left unscored had been said nowhere but the README."""
    note = grid.edge_note(width, height, 1024, 1024)
    assert grid.edge_note(2000, 2000, 256, 512) == ""  # the strips of a stride over the chunk: the gap warning's, no sliver
    assert note.startswith(said) and ("narrower than an eighth of one (128 px)" in note) == bool(said)


def test_overlapping_stride_keeps_full_chunks_and_covers_the_end():
    windows = list(chunk_grid(100, 32, 32, 16))
    assert [(w.x_off, w.width) for w in windows] == [(0, 32), (16, 32), (32, 32), (48, 32), (64, 32), (80, 20)]
    assert all(w.height == 32 for w in windows)


def test_no_window_starts_where_the_previous_one_already_ended():
    # 96 = 64 + 2 * 16: the window at 64 reaches the end, so none starts at 80.
    assert [w.x_off for w in chunk_grid(96, 32, 32, 16)] == [0, 16, 32, 48, 64]


def test_raster_smaller_than_a_chunk_is_one_partial_chunk():
    assert list(chunk_grid(50, 40, 1024, 1024)) == [ChunkWindow(0, 0, 0, 0, 0, 50, 40)]


def test_chunk_ids_are_row_major_and_stable():
    first = list(chunk_grid(1000, 700, 128, 96))
    second = list(chunk_grid(1000, 700, 128, 96))
    assert first == second
    rows, cols = grid_shape(1000, 700, 128, 96)
    assert [w.chunk_id for w in first] == list(range(rows * cols))
    for w in first:
        assert w.chunk_id == w.row * cols + w.col
        assert (w.x_off, w.y_off) == (w.col * 96, w.row * 96)


@pytest.mark.parametrize("chunk_size, stride", [(0, 1), (1, 0), (-4, 4)])
def test_invalid_grid_parameters(chunk_size, stride):
    with pytest.raises(ValueError):
        grid_shape(100, 100, chunk_size, stride)


GEOTRANSFORMS = [
    (-1750165.875, 25.027372262773724, 0.0, -4240.625, 0.0, -25.035552193645991),  # ESP_037156_1800 (north up)
    (1000.0, 0.25, 0.0, -3260000.0, 0.0, -0.25),
    (500.0, 0.9659258262890683, 0.25881904510252074, 2000.0, 0.25881904510252074, -0.9659258262890683),  # rotated 15 deg
    (-20.0, 2.0, -0.7, 50.0, 0.3, -1.5),  # rotated and sheared
]


@pytest.mark.parametrize("gt", GEOTRANSFORMS)
def test_pixel_to_map_is_gdals_geotransform(gt):
    for x, y in itertools.product([0, 0.5, 1, 17.25, 1023, 4096], [0, 0.5, 3, 661, 2048.75]):
        assert pixel_to_map(gt, x, y) == pytest.approx(tuple(gdal.ApplyGeoTransform(list(gt), x, y)), rel=1e-15, abs=1e-9)


@pytest.mark.parametrize("gt", GEOTRANSFORMS)
def test_map_to_pixel_inverts_pixel_to_map(gt):
    inverse = gdal.InvGeoTransform(list(gt))
    for x, y in itertools.product([0, 0.5, 17.25, 1023, 4096], [0, 3, 661, 2048.75]):
        mx, my = pixel_to_map(gt, x, y)
        assert map_to_pixel(gt, mx, my) == pytest.approx((x, y), abs=1e-6)
        assert map_to_pixel(gt, mx, my) == pytest.approx(tuple(gdal.ApplyGeoTransform(inverse, mx, my)), abs=1e-6)


def test_map_to_pixel_rejects_a_singular_geotransform():
    with pytest.raises(ValueError):
        map_to_pixel((0, 1, 2, 0, 2, 4), 1.0, 1.0)


@pytest.mark.parametrize("gt", GEOTRANSFORMS)
def test_window_ring_corners_are_gdals(gt):
    for w in chunk_grid(2500, 1100, 1024, 1024):
        ring = window_ring(gt, w.x_off, w.y_off, w.width, w.height)
        assert len(ring) == 5 and ring[0] == ring[-1]
        expected = helpers.window_ring_gdal(gt, w.x_off, w.y_off, w.width, w.height)
        helpers.assert_rings_equal(ring, expected, rel=1e-15, abs_tol=1e-9)
        # the WKT carries the same coordinates
        helpers.assert_rings_equal(helpers.ring_of_geometry(grid.chunk_wkt(gt, w)), expected, rel=1e-15, abs_tol=1e-9)


def test_window_ring_is_clockwise_in_pixel_space_and_closes_the_outer_pixel_edges():
    gt = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # map = pixel
    assert window_ring(gt, 2, 3, 4, 5) == [(2, 3), (6, 3), (6, 8), (2, 8), (2, 3)]


@pytest.mark.parametrize(
    "width, height, fraction, expected",
    [
        (1024, 1024, 0.5, (256, 256, 512, 512)),
        (1024, 76, 0.5, (256, 19, 512, 38)),
        (100, 60, 0.5, (25, 15, 50, 30)),
        (101, 61, 0.5, (25, 15, 50, 30)),  # round(50.5) == 50: the odd pixel goes to the right/bottom margin
        (3, 3, 0.5, (0, 0, 2, 2)),  # round(1.5) == 2
        (1, 1, 0.5, (0, 0, 1, 1)),  # never empty
        (64, 64, 1.0, (0, 0, 64, 64)),
    ],
)
def test_centre_region(width, height, fraction, expected):
    x, y, w, h = grid.centre_region(width, height, fraction)
    assert (x, y, w, h) == expected
    assert 0 <= x and x + w <= width and 0 <= y and y + h <= height


def test_pixel_bounds_of_map_points_for_a_rotated_raster():
    gt = GEOTRANSFORMS[2]
    points = [pixel_to_map(gt, x, y) for x, y in [(10, 20), (30, 25), (12, 40)]]
    assert grid.pixel_bounds_of_map_points(gt, points) == pytest.approx((10, 20, 30, 40), abs=1e-9)
