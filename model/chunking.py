"""Chunks with data: the grid, read window by window, minus chunks with no-data around their centre."""

import contextlib
import functools
import glob
import os
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
from osgeo import gdal

from . import files
from .errors import CancelledError, EngineError, RasterError
from .footprint import ValidityMosaic
from .grid import CENTRE_FRACTION, ChunkWindow, chunk_grid, chunk_wkt, edge_note, grid_shape, unscored_edges
from .imagechecks import check_claimed_size, ground_size
from .preprocess import valid_fractions
from .raster import VIEW_DOMAIN, RasterInfo, RasterSource, north_up_view, read_in_order

# The paper keeps chunks whose centre holds image data. Isolated DN-0 pixels inside the
# footprint (8-bit stretched products clip deep shadow to 0) must not drop a chunk, hence 0.95.
DEFAULT_MIN_VALID = 0.95
# Chunks per network call of detect: memory against speed.
DEFAULT_BATCH_SIZE = 16
# Scale at which the validity of a chunk is judged when no network sets one.
MASK_SIZE = 256


@dataclass
class ChunkSample:
    window: ChunkWindow
    valid_fraction: float
    centre_valid_fraction: float
    data: np.ndarray  # raw DNs at the network's scale, padded to input_size
    valid: np.ndarray


def check_grid_parameters(chunk_size: int, stride: int, min_valid: float) -> None:
    if chunk_size < 8:
        raise RasterError(f"A chunk size of {chunk_size} px is too small; use at least 8 (the paper uses 1024).")
    if stride < 1:
        raise RasterError(f"The stride must be at least 1 pixel, not {stride}.")
    if not 0.0 <= min_valid <= 1.0:
        raise RasterError(f"MIN_VALID must be a share between 0 and 1, not {min_valid}.")


def scale_warning(chunk_size: int, model_chunk_size: int, input_size: int) -> str:
    """A chunk size other than the model's by a factor of 2 or more: the network reads the ground at a
    scale it never learnt (a 256-px chunk of a 1024-px model is read at four times its resolution, and
    shaded regolith at 8 deg N scored 0.99). Said, not refused: a model retrained at that size records it."""
    factor = model_chunk_size / chunk_size
    if 0.5 < factor < 2.0:
        return ""
    return (f"CHUNK_SIZE {chunk_size} makes the network read the ground at {factor:.3g} times the scale it learnt (the model's chunks are "
            f"{model_chunk_size} px, read at {input_size} px): ice and shade look {'larger' if factor > 1 else 'smaller'} to it than in training, "
            "and its probabilities are not those its model card measured. Leave CHUNK_SIZE at 0 (the model's), or retrain the model at this "
            "chunk size (hiriseice:train records it).")


def gap_warning(chunk_size: int, stride: int) -> str:
    """A grid whose stride exceeds its chunk leaves strips no chunk covers: said, not refused (a
    sparse sample of a huge image may be what the user wants)."""
    if stride <= chunk_size:
        return ""
    unscored = 1.0 - (chunk_size / stride) ** 2
    return (f"STRIDE {stride} is larger than the chunk size {chunk_size}: a strip of {stride - chunk_size} px between neighbouring chunks "
            f"is never looked at (about {unscored:.0%} of the image), and ice there is not found. Give a STRIDE of at most {chunk_size} "
            "(or 0, the chunk size) to cover the whole image.")


def iter_chunks(source: RasterSource, chunk_size: int, stride: int, min_valid: float, input_size: int = MASK_SIZE, mosaic: Optional[ValidityMosaic] = None,
                readers: int = 1, passed: Optional[Callable[[ChunkWindow], None]] = None) -> Iterator[ChunkSample]:
    """Every chunk whose central region is at least min_valid valid, in grid order; every chunk
    read, kept or not, pastes its validity into the mosaic if one is given, and ``passed`` hears of
    each one left out (a long stretch of no-data is progress too). With readers > 1, that many
    threads read ahead, each through its own handle (raster.read_in_order)."""
    check_grid_parameters(chunk_size, stride, min_valid)
    info = source.info
    windows = list(chunk_grid(info.width, info.height, chunk_size, stride))
    with source.handles(readers) as sources:
        reads = [functools.partial(_read_chunk, handle, chunk_size, input_size) for handle in sources]
        for window, (data, valid) in read_in_order(windows, reads) if readers > 1 else ((w, reads[0](w)) for w in windows):
            used_width, used_height = window.scaled_size(chunk_size, input_size)
            if mosaic is not None:
                mosaic.paste(window.x_off, window.y_off, window.width, window.height, valid[:used_height, :used_width])
            whole, centre = valid_fractions(valid, (used_height, used_width), CENTRE_FRACTION)
            if centre >= min_valid and whole > 0:
                yield ChunkSample(window, whole, centre, data, valid)
            elif passed is not None:
                passed(window)


def paste_unscored_edges(source: RasterSource, mosaic: ValidityMosaic, chunk_size: int, stride: int, input_size: int) -> None:
    """Reads the validity of the east and south slivers no chunk covers into the mosaic, at its scale, so
    the image's outline reaches its edge without a second read of the whole image."""
    scale = chunk_size / input_size
    for x_off, y_off, width, height in unscored_edges(source.info.width, source.info.height, chunk_size, stride):
        _, valid = source.read(x_off, y_off, width, height, max(1, round(width / scale)), max(1, round(height / scale)))
        mosaic.paste(x_off, y_off, width, height, valid)


def _read_chunk(source: RasterSource, chunk_size: int, input_size: int, window: ChunkWindow):
    return source.read_chunk(window, chunk_size, input_size)


def chunk_count(source: RasterSource, chunk_size: int, stride: int) -> int:
    rows, cols = grid_shape(source.info.width, source.info.height, chunk_size, stride)
    return rows * cols


def grid_row(info, window: ChunkWindow, whole: float, centre: float) -> Dict:
    """A chunk of the grid as a row of schema.CHUNK_GRID_FIELDS (detect's rows add its scores)."""
    return {"image_id": info.image_id, "chunk_id": window.chunk_id, "row": window.row, "col": window.col, "x_off": window.x_off,
            "y_off": window.y_off, "width": window.width, "height": window.height, "valid_fraction": round(whole, 4),
            "centre_valid_fraction": round(centre, 4), "wkt": chunk_wkt(info.geotransform, window)}


@dataclass
class ImageGrid:
    info: RasterInfo  # of what was cut: the image, or its north-up view where its north turns far from up
    viewed: bool  # whether that was the view (its CRS is then the view's)
    total: int  # grid chunks, before MIN_VALID
    rows: List[Dict]


def image_grid(path: str, band: int, chunk_size: int, stride: int, min_valid: float, say: Callable[[str], None],
               export: Optional["ChunkExport"] = None, progress: Callable[[float], None] = lambda share: None,
               cancelled: Callable[[], bool] = lambda: False) -> ImageGrid:
    """The grid detect scores, for hiriseice:chunk and the command line alike (the command line's had cut a
    south-up file from its south edge, where detect numbers chunks from the north): cut through the north-up
    view, its chunks that hold data around their centre, each exported as it is read. CancelledError
    where ``cancelled`` says so before a chunk."""
    with north_up_view(path, band, say) as read, RasterSource(read, band) as source:
        info = source.info
        # a damaged header's claim of 2e9 px square had the grid of windows built for ever (detect refuses it too)
        check_claimed_size(info.given_path, info.width, info.height)
        total = chunk_count(source, chunk_size, stride)
        say(f"{info.image_id}: {info.width} x {info.height} px; {total} grid chunks of {chunk_size} px"
            f"{ground_size(info.crs_wkt, info.pixel_size, chunk_size)}, stride {stride}")
        if unscored := edge_note(info.width, info.height, chunk_size, stride):
            say(unscored)
        rows = []
        grid = f"CHUNK_SIZE {chunk_size}, STRIDE {stride}, MIN_VALID {min_valid:g}"
        for sample in iter_chunks(source, chunk_size, stride, min_valid):
            if cancelled():
                raise CancelledError("Cancelled by the user; no chunk layer was written, and no chunk was exported (those staged were "
                                     "removed; an earlier export is as it was).")
            rows.append(grid_row(info, sample.window, sample.valid_fraction, sample.centre_valid_fraction))
            if export is not None:
                export.add(read, sample.window, info.image_id, path, grid)
            progress((sample.window.chunk_id + 1) / total)
    say(f"{len(rows)} of {total} chunks hold data around their centre (minimum valid share {min_valid})")
    return ImageGrid(info, read != path, total, rows)


# The file an exported chunk was cut from, and the grid it was cut on, in its GeoTIFF metadata.
SOURCE_TAG = "HIRISEICE_SOURCE"
GRID_TAG = "HIRISEICE_GRID"
# What GDAL may write beside an exported chunk: an ISIS3 cube's mask band, metadata GeoTIFF cannot hold.
CHUNK_SIDECARS = (".msk", ".aux.xml")


class ChunkExport:
    """Chunks at full resolution as georeferenced GeoTIFFs, for labelling in other tools; from a north-up
    view (raster.north_up_view), in the pixel type of the file it views. Each is written under a hidden
    staged name (files.partial_path) and all are renamed into place by commit(): a run stopped midway
    removes what it staged and leaves an earlier export's chunks as they were (it had overwritten some of
    them and then deleted them). Use as a context manager; leaving it without commit() discards."""

    def __init__(self, folder: str):
        self.folder = folder
        self.paths: List[str] = []
        self._checked: set = set()  # image IDs whose earlier chunks in the folder were checked (_check_not_anothers)

    def __enter__(self) -> "ChunkExport":
        return self

    def __exit__(self, *exc_info) -> None:
        self.discard()

    def add(self, source_path: str, window: ChunkWindow, image_id: str, original: str = "", grid: str = "") -> str:
        """``source_path``'s window as a chunk GeoTIFF, staged; ``original``: the file it views, and ``grid``: the grid's settings
        (both recorded in the GeoTIFF)."""
        original = os.path.abspath(original or source_path)
        if image_id not in self._checked:
            self._check_not_anothers(image_id, original, grid)
            self._checked.add(image_id)
        path = os.path.join(self.folder, f"{image_id}_r{window.row:03d}_c{window.col:03d}.tif")
        staged = files.partial_path(path)
        self.paths.append(path)
        source = gdal.Open(source_path)
        viewed_type = source.GetMetadataItem("SOURCE_TYPE", VIEW_DOMAIN)
        try:
            gdal.Translate(  # the copy it returns is closed, and so flushed, at once
                staged,
                source,
                srcWin=[window.x_off, window.y_off, window.width, window.height],
                format="GTiff",
                outputType=gdal.GetDataTypeByName(viewed_type) if viewed_type else gdal.GDT_Unknown,
                creationOptions=["COMPRESS=DEFLATE", "TILED=YES"],
                metadataOptions=[f"{SOURCE_TAG}={original}"] + ([f"{GRID_TAG}={grid}"] if grid else []),
            )
        except (OSError, RuntimeError) as exc:
            raise EngineError(files.write_failure("The chunk GeoTIFF", path, exc)) from None
        return path

    def _check_not_anothers(self, image_id: str, original: str, grid: str) -> None:
        """EngineError where the folder holds chunks of ``image_id`` cut from another file that still exists (another date of a
        site under the same file name), or on another grid (their names are row and column, and a chunk the new grid leaves out
        stays): the export would replace some of them and leave the rest mixed with its own."""
        earlier = glob.glob(os.path.join(glob.escape(self.folder), f"{glob.escape(image_id)}_r[0-9][0-9][0-9]_c[0-9][0-9][0-9].tif"))
        if not earlier:
            return
        try:
            dataset = gdal.Open(min(earlier))
            cut_from, cut_on = (dataset.GetMetadataItem(tag) for tag in (SOURCE_TAG, GRID_TAG)) if dataset is not None else (None, None)
        except RuntimeError:  # a damaged earlier chunk: replaced like any other
            cut_from, cut_on = None, None
        dataset = None
        if cut_from and cut_from != original and os.path.exists(cut_from) and not os.path.samefile(cut_from, original):
            raise EngineError(f"{self.folder} holds chunks of '{image_id}' cut from {cut_from}, another file of that name: exporting "
                              f"{original} there would replace some of them and leave the rest mixed with its own. Export into another "
                              "folder, or give each file its own name (its product ID).")
        if cut_on and grid and cut_on != grid:
            raise EngineError(f"{self.folder} holds chunks of '{image_id}' cut on another grid ({cut_on}; this run's {grid}): exporting "
                              "there would replace those of the same row and column and leave the rest mixed with its own. Export into "
                              "another folder, or remove that image's chunks from it first.")

    def commit(self) -> List[str]:
        """Every staged chunk renamed into place, with the sidecars GDAL wrote beside it; the paths. The earlier
        export's files of those chunks are moved aside first and removed only once all are in place: one that cannot
        be moved (on Windows, a chunk open as a layer in QGIS) leaves that export whole, not mixed with this one."""
        moved: List[Tuple[str, str]] = []  # (aside, name) of the earlier export's files
        placed: List[str] = []
        name = ""
        try:
            for path in self.paths:
                for name in (path + suffix for suffix in ("",) + CHUNK_SIDECARS):
                    if os.path.lexists(name):
                        aside = files.partial_path(name) + ".earlier"
                        os.replace(name, aside)
                        moved.append((aside, name))
            for path in self.paths:
                staged = files.partial_path(path)
                for suffix in ("",) + CHUNK_SIDECARS:
                    name = path + suffix
                    if suffix == "" or os.path.exists(staged + suffix):
                        os.replace(staged + suffix, name)
                        placed.append(name)
        except OSError as exc:
            files.remove_quietly(placed)
            for aside, earlier in reversed(moved):
                with contextlib.suppress(OSError):
                    os.replace(aside, earlier)
            raise EngineError(f"The chunk GeoTIFF {name} could not be replaced ({exc.strerror or exc}): another program holds it open "
                              f"(on Windows, a layer of it in QGIS), or it is protected. The chunks exported there before were left as they were; "
                              "remove their layers from QGIS, or export into another folder.") from None
        files.remove_quietly([aside for aside, _name in moved])
        committed, self.paths = self.paths, []
        return committed

    def discard(self) -> None:
        """The staged chunks not committed, and their sidecars, removed."""
        for path in self.paths:
            staged = files.partial_path(path)
            for name in (staged,) + tuple(staged + sidecar for sidecar in CHUNK_SIDECARS):
                with contextlib.suppress(OSError):
                    os.remove(name)
        self.paths = []