"""Detection: a raster and a model file in, chunk probabilities and an image summary out.

A reader thread reads and normalises chunks (GDAL releases the GIL) while the network
runs on the previous batch; the queue between them is bounded, so memory stays flat
whatever the raster's size.
"""

import datetime
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import __version__, calibration, modelfile, pdslabel, review, rules
from . import runtime, scoremap
from .chunking import DEFAULT_BATCH_SIZE, DEFAULT_MIN_VALID, check_grid_parameters, chunk_count, gap_warning, grid_row, iter_chunks, paste_unscored_edges, scale_warning
from .errors import EngineError, NoValidChunksError
from .footprint import ValidityMosaic
from .gdalstate import block_cache, gdal_exceptions
from .georeference import check_north_up, north_turn_warning
from .grid import ChunkWindow, chunk_grid, edge_note
from .imagechecks import check_size, coarse_pixel_warning, ground_size, not_mars_warning, palette_warning, squashed_pixel_warning
from .network import has_score_map
from .preprocess import network_input
from .protocol import Reporter, SilentReporter
from .raster import RasterSource, reading_threads
from .schema import LABEL_SUMMARY_FIELDS

@dataclass
class DetectOptions:
    chunk_size: Optional[int] = None  # None: the model's
    stride: Optional[int] = None  # None: chunk_size
    min_valid: float = DEFAULT_MIN_VALID
    batch_size: int = DEFAULT_BATCH_SIZE
    icy_threshold: float = rules.ICY_THRESHOLD
    hard_low: float = rules.HARD_LOW
    band: int = 0
    category_rule: str = rules.DEFAULT_CATEGORY_RULE  # a key of rules.CATEGORY_RULES
    # "chunk": each chunk scored alone; "map": chunks read off the network's score map
    # (model/scoremap.py), those that may hide a cut patch scored alone again (RESCORE_FROM): as
    # good as "chunk" on benchmarks/dense_grid_held_out.py, for 2.3-2.8x the time of STRIDE = CHUNK against
    # chunk's 3.3-3.9x on a whole observation (benchmarks/scene.py); "auto": map
    # when the stride is shorter than the chunk and falls on the map's cells, else chunk.
    scoring: str = "auto"
    probability_raster: str = ""  # GeoTIFF of the calibrated score map to write; "" = none
    # Test-time augmentation: the mean logit of the image and its east-west mirror, which keeps the
    # sun's side; every kind of ice ranked 0.004-0.008 better at the same false alarms (benchmarks/mirror_tta.py).
    tta: bool = True
    readers: int = 0  # threads reading the raster at once; 0 = raster.reading_threads()


SCORING_ROUTES = ("auto", "map", "chunk")
# The map route's screen. A chunk between the map's tiles gets its map value from tiles that each
# saw only part of it, which hides a patch cut by the tiles' edges (0.14 from the map, 0.84 alone,
# in tests/test_default_model.py). Such a chunk reaching this probability is scored alone again,
# from the pixels the tiles read: on held-out mosaics (benchmarks/dense_grid_held_out.py) that
# finds 93 of the 95 cut groups scoring every chunk alone finds; asking also that it score above
# every tile under it rescored a quarter as many (benchmarks/scene.py) but found only 72.
RESCORE_FROM = 0.1
# ...or with a map cell this likely icy along a tile edge that crosses it: a patch the edge cuts can
# light a cell or two while every tile's mean stays low (a caster patch on a tile corner: the
# chunk's map mean 0.06, cells by the corner 0.5-0.9, alone 1.00).
RESCORE_PEAK = 0.5
# Through a long stretch of no-data (a sparse mosaic) the reader still says how far it got this often:
# the client acts on cancel at a progress line, and a worker whose client has gone stops at its next line.
PASSED_PROGRESS_SECONDS = 1.0


@dataclass
class Detection:
    raster: Dict
    chunks: List[Dict]
    summary: Dict
    quicklook: Dict = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)  # about the image as a whole, for its report too
    model: Dict = field(default_factory=dict)  # the metadata of the model file it scored with, read once: its report describes that model

    def as_message(self) -> Dict:
        return {"raster": self.raster, "chunks": self.chunks, "summary": self.summary}


@gdal_exceptions()
def detect(raster_path: str, model_path: str = "", options: DetectOptions = None, reporter: Reporter = None, loaded: Optional[Tuple[object, Dict]] = None) -> Detection:
    """loaded: the (network, metadata) of model_path a long-lived worker keeps (model/warm.py), else made here."""
    options = options or DetectOptions()
    reporter = reporter or SilentReporter()
    started = time.monotonic()
    rules.check_thresholds(options.icy_threshold, options.hard_low)
    rules.check_category_rule(options.category_rule)
    metadata = loaded[1] if loaded else modelfile.read_metadata(model_path)
    chunk_size = options.chunk_size or metadata["chunk_size"]
    stride = options.stride or chunk_size
    input_size = metadata["input_size"]
    architecture = metadata.get("architecture", {})
    route = scoring_route(options, chunk_size, stride, input_size, architecture)
    with RasterSource(raster_path, options.band) as source:
        info = source.info
        check_size(raster_path, info.width, info.height, chunk_size)
        check_north_up(raster_path, info.geotransform, info.crs_wkt, info.width, info.height)
        total = chunk_count(source, chunk_size, stride)
        cache_bytes = source.grid_cache_bytes(chunk_size, input_size)
        driver = source.driver
    warnings = image_warnings(info.given_path, info, chunk_size, stride, metadata["chunk_size"], input_size)
    for warning in warnings:
        reporter.warning(warning)
    label = label_fields(info.given_path, reporter)  # beside the file given, not its north-up view
    reporter.log(
        f"{info.image_id}: {info.width} x {info.height} px, {info.band_count} band(s) {info.data_type}{info.bands_read}; "
        f"{total} grid chunks of {chunk_size} px{ground_size(info.crs_wkt, info.pixel_size, chunk_size)}, stride {stride}, read at {input_size} px"
    )
    if unscored := edge_note(info.width, info.height, chunk_size, stride):
        reporter.log(unscored)

    # Loaded here only if no export of its weights is cached (runtime.SavedNetwork): TensorFlow's
    # import alone is seconds and half a gigabyte of a worker that runs one image.
    network, metadata = loaded if loaded else (runtime.SavedNetwork(model_path, metadata), metadata)
    reporter.log(f"model {modelfile.describe(metadata)}")
    if route == "map":
        reporter.log(
            f"chunks read off the network's score map (cells of {chunk_size * scoremap.network_stride_of(architecture) / input_size:g} px; "
            f"tiles: the chunks of stride {chunk_size}, see model/scoremap.py)" + ("; east-west mirror averaged" if options.tta else "")
        )
    mosaic = ValidityMosaic(info.width, info.height, chunk_size / input_size)
    readers = options.readers or reading_threads()
    with block_cache(cache_bytes) as cache_note:
        reporter.log(f"{cache_note}; {driver} read by {readers} thread(s)")
        if route == "map":
            chunks, score_map, network_seconds, rescored = _detect_by_map(raster_path, info, chunk_size, stride, input_size, network, metadata, architecture, options, reporter, mosaic, readers)
        else:
            rescored = 0
            chunks, score_map, network_seconds = _detect_by_chunk(raster_path, info, chunk_size, stride, total, input_size, network, metadata, architecture, options, reporter, mosaic, readers)
        footprint = image_footprint(raster_path, info, options.band, mosaic, chunk_size, stride, input_size)
    if not chunks:
        raise NoValidChunksError(
            f"No chunk of '{raster_path}' has image data around its centre (MIN_VALID {options.min_valid}): the image is all no-data "
            "or smaller than the no-data border. Check that it is the right product, or lower MIN_VALID / CHUNK_SIZE."
        )
    reporter.progress(1.0)
    device = runtime.compute_device() if "tensorflow" in sys.modules else "CPU"  # without TensorFlow, ONNX Runtime's CPU provider scored
    if options.probability_raster:
        geometry, logits, valid_share = score_map
        scoremap.write_probability_raster(options.probability_raster, geometry, logits, valid_share, metadata.get("calibration"), info.geotransform, info.crs_wkt,
                                          [(c["row"], c["col"]) for c in chunks], before_commit=lambda: reporter.written(options.probability_raster, f"ice probability raster: {os.path.abspath(options.probability_raster)} "
                                                                             f"({geometry.chunk_size * geometry.cell / geometry.input_size:g}-px cells)"),
                                          tags={"HIRISEICE_MODEL_NAME": metadata["name"], "HIRISEICE_MODEL_VERSION": metadata["version"],
                                                "HIRISEICE_CHUNK_SIZE": chunk_size, "HIRISEICE_TTA": int(bool(options.tta))})
    add_review_ranks(chunks, options.icy_threshold, review.neighbour_radius(chunk_size, stride))
    for chunk in chunks:
        chunk.update(model_name=metadata["name"], model_version=metadata["version"])
    elapsed = time.monotonic() - started
    stats = rules.image_stats([c["probability"] for c in chunks], options.icy_threshold, options.hard_low)
    summary = {
        "image_id": info.image_id,
        "chunks": stats.chunks,
        "icy_chunks": stats.icy_chunks,
        "hard_chunks": stats.hard_chunks,
        "mean_probability": round(stats.mean_probability, rules.PROBABILITY_DECIMALS),
        "max_probability": round(stats.max_probability, rules.PROBABILITY_DECIMALS),
        "category": rules.image_category(stats, options.category_rule),
        "model_name": metadata["name"],
        "model_version": metadata["version"],
        "runtime_s": round(elapsed, 2),
        "chunks_per_s": round(len(chunks) / max(network_seconds, 1e-9), 2),
        "device": device,
        "chunk_size": chunk_size,
        "stride": stride,
        "grid_chunks": total,
        "dropped_chunks": total - len(chunks),
        "footprint_wkt": footprint,
        "icy_threshold": options.icy_threshold,
        "hard_low": options.hard_low,
        "category_rule": options.category_rule,
        "min_valid": options.min_valid,
        "scoring": route,
        "rescored_chunks": rescored,  # map route: chunks between its tiles scored alone again
        "tta": bool(options.tta),
        "weights_sha256": metadata.get("weights_sha256"),
        "engine_version": __version__,
        "scored_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **label,
    }
    reporter.log(
        f"{len(chunks)} chunks scored ({total - len(chunks)} dropped for no-data) in {elapsed:.1f} s; "
        f"network {summary['chunks_per_s']} chunks/s on {device}; image category ({options.category_rule} rule): {summary['category']}"
    )
    raster = {"path": raster_path, "image_id": info.image_id, "width": info.width, "height": info.height, "geotransform": list(info.geotransform), "crs_wkt": info.crs_wkt}
    return Detection(raster=raster, chunks=chunks, summary=summary, warnings=warnings, model=metadata)


def image_warnings(raster_path: str, info, chunk_size: int, stride: int, model_chunk_size: int, input_size: int) -> List[str]:
    """What makes this image, or this grid of it, doubtful for the network: each with its fix."""
    return [warning for warning in (
        not_mars_warning(raster_path, info.crs_wkt), coarse_pixel_warning(raster_path, info.crs_wkt, info.pixel_size, chunk_size),
        squashed_pixel_warning(raster_path, info.crs_wkt, info.geotransform, info.width, info.height),
        north_turn_warning(raster_path, info.crs_wkt, info.geotransform, info.width, info.height),
        palette_warning(raster_path, info), gap_warning(chunk_size, stride), scale_warning(chunk_size, model_chunk_size, input_size)) if warning]


def image_footprint(raster_path: str, info, band: int, mosaic: ValidityMosaic, chunk_size: int, stride: int, input_size: int) -> Optional[str]:
    """The image's outline from the validity the chunks read; where a sliver at the edge or a grid with gaps
    (stride > chunk) left pixels unread, those are read for it, and failing that the whole raster is."""
    footprint = mosaic.footprint_wkt(info.geotransform, info.crs_wkt)
    if footprint is not None:
        return footprint
    with RasterSource(raster_path, band) as source:
        paste_unscored_edges(source, mosaic, chunk_size, stride, input_size)
        footprint = mosaic.footprint_wkt(info.geotransform, info.crs_wkt)
        return footprint if footprint is not None else source.footprint_wkt()


def scoring_route(options: DetectOptions, chunk_size: int, stride: int, input_size: int, architecture: Dict) -> str:
    """'map' or 'chunk' for options.scoring (see DetectOptions)."""
    if options.scoring not in SCORING_ROUTES:
        raise EngineError(f"Unknown scoring route {options.scoring!r}; choose one of {', '.join(SCORING_ROUTES)}.")
    check_grid_parameters(chunk_size, stride, options.min_valid)
    if options.scoring == "chunk":
        return "chunk"
    problem = scoremap.map_route_problem(chunk_size, stride, input_size, scoremap.network_stride_of(architecture)) if has_score_map(architecture) else "the model file does not name its widths"
    if options.scoring == "map":
        if problem:
            raise EngineError(f"The chunks cannot be read off the network's score map: {problem}. Use another stride, or the per-chunk route (scoring 'chunk').")
        return "map"
    return "map" if stride < chunk_size and not problem else "chunk"


def chunk_row(info, window, whole: float, centre: float, p: float, options: DetectOptions) -> Dict:
    probability = round(float(p), rules.PROBABILITY_DECIMALS)
    # the class of the probability the layer shows, as the summary counts it
    return dict(grid_row(info, window, whole, centre), probability=probability, **{"class": rules.chunk_class(probability, options.icy_threshold, options.hard_low)})


def _detect_by_map(raster_path, info, chunk_size, stride, input_size, network, metadata, architecture, options, reporter, mosaic, readers):
    """Every chunk of the grid as the mean of the score map over its footprint (model/scoremap.py);
    the chunks between the map's tiles that may hide a cut patch scored alone (RESCORE_FROM) as soon
    as the rows of tiles under them are scored (MapChunks)."""
    mapper = scoremap.ScoreMapper(network, architecture, mirror=options.tta)
    reporter.log(f"network runtime: {mapper.run.name} ({mapper.run.note})")
    geometry = scoremap.MapGeometry(info.width, info.height, chunk_size, stride, input_size, mapper.cell)
    # The tiles are read on score_canvas's handles meanwhile; a chunk over a tile cut by the raster's edge is read on its own.
    with RasterSource(raster_path, options.band) as source, RasterSource(raster_path, options.band) as chunk_source:
        chunks_of_map = MapChunks(geometry, options, mapper, metadata, lambda window: chunk_source.read_chunk(window, chunk_size, input_size))
        score_map = scoremap.score_canvas(source, geometry, mapper, metadata["normalisation"], batch_size=options.batch_size, progress=reporter.progress, mosaic=mosaic,
                                          keep_pixels=stride < chunk_size, readers=readers, rows_scored=chunks_of_map.rows_scored)
        kept, rescored = chunks_of_map.finish()
    reporter.log(f"{rescored} of the {chunks_of_map.between} chunks between the map's tiles scored alone again (map probability {RESCORE_FROM} or more, "
                 f"or a cell of {RESCORE_PEAK} or more along a tile edge across them)")
    chunks = [chunk_row(info, window, whole, centre, p, options) for window, whole, centre, p in kept]
    return chunks, (geometry, without_dropped_tiles(score_map.logits, score_map.valid_share, geometry, kept), score_map.valid_share), mapper.seconds, rescored


# A tile's valid share under which its stretch, made on its few valid pixels, is not to be shown.
STRETCHED_ON_TOO_FEW = 0.5


def without_dropped_tiles(logits: np.ndarray, valid_share: np.ndarray, geometry: scoremap.MapGeometry, kept) -> np.ndarray:
    """The map less the cells of tiles of mostly no-data whose own chunk MIN_VALID dropped: stretched on their few
    valid pixels, they lit cells (0.99 on plain terrain beside a chunk scoring 0.05 alone) that the probability
    raster showed under the kept chunks between tiles. A tile MIN_VALID dropped for its centre alone keeps its
    cells: blanked too, they had left holes under kept chunks."""
    kept_at = {(window.row, window.col) for window, *_ in kept}
    shown = logits.copy()
    rows, cols = geometry.grid
    for row in range(rows):
        for col in range(cols):
            if not geometry.on_tile(row, col) or (row, col) in kept_at:
                continue
            cells = geometry.chunk_cells(row, col)
            if valid_share[cells].mean() < STRETCHED_ON_TOO_FEW:
                shown[cells] = np.nan
    return shown


class MapChunks:
    """The map route's chunks, taken off the score map in grid order as score_canvas completes the
    rows of tiles under them (rows_scored). A chunk between tiles that the screen sends back
    (RESCORE_FROM, RESCORE_PEAK) is cut from the tiles' pixels (or read, where a tile under it was
    cut by the raster's edge) and scored alone, batch_size at a time in grid order; then the rows
    of tiles no chunk left needs are released, so memory holds two or three rows of tiles, not
    the canvas (312 MB for a whole observation read at 256 px, issue 10)."""

    def __init__(self, geometry: scoremap.MapGeometry, options: DetectOptions, mapper: scoremap.ScoreMapper, metadata: Dict, read_chunk):
        self.geometry = geometry
        self.options = options
        self.mapper = mapper
        self.normalisation = metadata["normalisation"]
        self.calibration = metadata.get("calibration")
        self.read_chunk = read_chunk
        rows, _ = geometry.grid
        self.grid_rows: List[List] = [[] for _ in range(rows)]
        for window in chunk_grid(geometry.raster_width, geometry.raster_height, geometry.chunk_size, geometry.stride):
            self.grid_rows[window.row].append(window)
        self.next_row = 0
        self.kept: List[List] = []  # [window, whole, centre, probability] in grid order
        self.between = 0
        self.again: List[List] = []  # the kept entries scored alone again
        self.waiting: List[np.ndarray] = []  # network inputs of the last entries of self.again
        self.logits: List[float] = []  # of self.again's entries scored so far

    def rows_scored(self, score_map: scoremap.ScoreMap, tile_rows: int) -> None:
        size, step = self.geometry.input_size, self.geometry.stride_net
        while self.next_row < len(self.grid_rows) and (self.next_row * step + size - 1) // size < tile_rows:
            for window in self.grid_rows[self.next_row]:
                self._take(score_map, window)
            self.next_row += 1
        if score_map.pixels is not None:
            score_map.pixels.release_above(self.next_row * step)

    def _take(self, score_map: scoremap.ScoreMap, window) -> None:
        whole, centre = score_map.whole[window.row, window.col], score_map.centre[window.row, window.col]
        if not (centre >= self.options.min_valid and whole > 0):
            return
        entry = [window, float(whole), float(centre), calibration.apply([score_map.chunk_logit(window.row, window.col)], self.calibration)[0]]
        self.kept.append(entry)
        if self.geometry.on_tile(window.row, window.col):
            return
        self.between += 1
        if entry[3] >= RESCORE_FROM or calibration.apply([score_map.cut_peak_logit(window.row, window.col)], self.calibration)[0] >= RESCORE_PEAK:
            cut = None if score_map.pixels is None else score_map.pixels.chunk(window.row, window.col)
            data, valid = cut if cut is not None else self.read_chunk(window)
            self.again.append(entry)
            self.waiting.append(network_input(data, valid, self.normalisation))
            if len(self.waiting) == self.options.batch_size:
                self._score_waiting()

    def _score_waiting(self) -> None:
        if self.waiting:
            self.logits.extend(scoremap.whole_chunk_logits(self.mapper(np.stack(self.waiting))))
            self.waiting.clear()

    def finish(self) -> Tuple[List[List], int]:
        """The kept entries, those scored alone with their own probability, and how many those are."""
        self._score_waiting()
        # Calibrated all at once, as one array, whatever the batches.
        for entry, p in zip(self.again, calibration.apply(self.logits, self.calibration) if self.again else []):
            entry[3] = p
        return self.kept, len(self.again)


class _ReadingStopped(Exception):
    """Scoring has stopped: the reader thread ends."""


def _detect_by_chunk(raster_path, info, chunk_size, stride, total, input_size, network, metadata, architecture, options, reporter, mosaic, readers):
    """Each chunk read and scored alone; its score map kept too where a probability raster is wanted."""
    want_map = bool(options.probability_raster)
    if want_map:
        check_probability_raster(architecture, chunk_size, stride, input_size)
    mapper = scoremap.ScoreMapper(network, architecture, mirror=options.tta) if want_map else None
    scorer = None if want_map else runtime.logit_scorer(network)
    runner = mapper.run if want_map else scorer
    reporter.log(f"network runtime: {runner.name} ({runner.note})")
    pasted = []
    batches: "queue.Queue" = queue.Queue(maxsize=2)
    failure: List[BaseException] = []
    stop = threading.Event()

    said_at = [time.monotonic()]

    def passed(window):
        """A chunk left out (no-data): the grid's progress, at most once a PASSED_PROGRESS_SECONDS; the
        reading stops here too when scoring has (cancel, a failure), not after the stretch."""
        if stop.is_set():
            raise _ReadingStopped()
        if time.monotonic() - said_at[0] >= PASSED_PROGRESS_SECONDS:
            said_at[0] = time.monotonic()
            try:
                batches.put_nowait(window.chunk_id + 1)
            except queue.Full:  # batches are waiting: their progress is said
                pass

    read_last: List = []  # the chunk read last, and whether it was still being prepared: to place a failure

    def read_batches():
        try:
            with RasterSource(raster_path, options.band) as reader:
                batch = []
                for sample in iter_chunks(reader, chunk_size, stride, options.min_valid, input_size, mosaic, readers, passed):
                    if stop.is_set():
                        return
                    read_last[:] = [sample.window, "at"]
                    batch.append((sample.window, sample.valid_fraction, sample.centre_valid_fraction, network_input(sample.data, sample.valid, metadata["normalisation"]), sample.valid))
                    read_last[1] = "after"  # a failure now is in reading the grid's next chunk
                    if len(batch) == options.batch_size:
                        batches.put(batch)
                        batch = []
                if batch:
                    batches.put(batch)
        except _ReadingStopped:
            pass
        except BaseException as exc:  # handed to the main thread, which reports it
            where = f"{read_last[1]} chunk {read_last[0].chunk_id} ({_pixels(read_last[0])})" if read_last else "at the grid's first chunk"
            failure.append(_placed(exc, f"reading {raster_path} {where}", read_last[0] if read_last else None, raster_path, chunk_size, stride))
        finally:
            batches.put(None)

    reader_thread = threading.Thread(target=read_batches, name="chunk-reader", daemon=True)
    reader_thread.start()
    chunks: List[Dict] = []
    network_seconds = 0.0
    furthest = 0  # chunks of the grid passed, scored or not
    try:
        while True:
            batch = batches.get()
            if batch is None:
                break
            if isinstance(batch, int):  # chunks passed over: how far the grid got
                furthest = max(furthest, batch)
                reporter.progress(furthest / total)
                continue
            images = np.stack([item[3] for item in batch])
            t0 = time.monotonic()
            try:
                if mapper is not None:
                    maps = mapper(images)
                    logits = scoremap.whole_chunk_logits(maps)
                    pasted.extend((item[0].row, item[0].col, m, item[4]) for item, m in zip(batch, maps))
                else:
                    logits = runtime.chunk_logits(scorer, images[..., None], options.tta)
            except Exception as exc:
                raise _placed(exc, f"scoring chunks {batch[0][0].chunk_id}-{batch[-1][0].chunk_id} of {raster_path}, the first at {_pixels(batch[0][0])}",
                              batch[0][0], raster_path, chunk_size, stride)
            network_seconds += time.monotonic() - t0
            probabilities = calibration.apply(logits, metadata.get("calibration"))
            for (window, whole, centre, _, _), p in zip(batch, probabilities):
                chunks.append(chunk_row(info, window, whole, centre, p, options))
            furthest = max(furthest, batch[-1][0].chunk_id + 1)
            reporter.progress(furthest / total)
    finally:
        stop.set()
        # Unblock a reader waiting on a full queue, then let it finish.
        while reader_thread.is_alive():
            try:
                batches.get_nowait()
            except queue.Empty:
                reader_thread.join(0.05)
    if failure:
        raise failure[0]
    score_map = None
    if mapper is not None:
        geometry = scoremap.MapGeometry(info.width, info.height, chunk_size, stride, input_size, mapper.cell)
        logits_map, share = scoremap.paste_chunk_maps(geometry, pasted)
        score_map = (geometry, logits_map, share)
    return chunks, score_map, network_seconds


def _pixels(window: ChunkWindow) -> str:
    return f"pixels x {window.x_off}, y {window.y_off}, {window.width} x {window.height}"


def _placed(exc: BaseException, doing: str, window: Optional[ChunkWindow], path: str, chunk_size: int, stride: int) -> BaseException:
    """An unforeseen failure with a note of what was being done where (Python 3.11's notes end its traceback), and a crop of
    the image around it, so that a bug report can be cut down to a small file. The engine's own errors say what is wrong already.
    The crop starts on the grid (a whole number of strides before the chunk), so that detect on it, at the same CHUNK_SIZE and
    STRIDE, reads the failing chunk as the image's grid did."""
    if not isinstance(exc, (EngineError, KeyboardInterrupt, _ReadingStopped)) and hasattr(exc, "add_note"):
        crop = ""
        if window is not None:
            back = -(-chunk_size // stride) * stride  # a neighbour's worth of the grid before it
            x, y = max(0, window.x_off - back), max(0, window.y_off - back)
            quoted = subprocess.list2cmdline([path]) if os.name == "nt" else shlex.quote(path)  # cmd.exe reads no single quotes
            crop = (f"; a crop around it to reproduce it on (detect it with CHUNK_SIZE {chunk_size} and STRIDE {stride}): gdal_translate -srcwin {x} {y} "
                    f"{window.x_off + 2 * chunk_size - x} {window.y_off + 2 * chunk_size - y} {quoted} crop.tif")
        exc.add_note(f"hiriseice: while {doing}{crop}")
    return exc


def check_probability_raster(architecture: Dict, chunk_size: int, stride: int, input_size: int) -> None:
    """Refuse a probability raster the per-chunk route cannot lay on the raster's grid, with the fix."""
    if not has_score_map(architecture):
        raise EngineError("This model file does not name its network's widths, so it cannot write a probability raster. Retrain it with hiriseice:train.")
    cell = scoremap.network_stride_of(architecture)
    if input_size % cell:  # its last cell would be part of one, and the chunks' maps would overlap by it
        raise EngineError(f"This model reads a chunk at {input_size} px, not a multiple of its {cell}-px score-map cell, so its cells cannot be laid on the "
                          f"raster's grid and no probability raster can be written. Leave PROBABILITY_RASTER empty, or train a model whose input size is a multiple of {cell}.")
    if scoremap.stride_off_cells(chunk_size, stride, input_size, cell):
        # its chunks' maps would be pasted up to half a cell from where they lie
        cell_px = chunk_size * cell / input_size
        def fits(step: int) -> bool:
            return not scoremap.stride_off_cells(chunk_size, step, input_size, cell)

        smallest = next(step for step in range(1, chunk_size + 1) if fits(step))  # the chunk itself fits at the latest
        # only strides that fit: a 1001-px chunk's half does not
        examples = " or ".join(str(step) for step in sorted({chunk_size, chunk_size // 2, smallest}, reverse=True) if fits(step))
        raise EngineError(f"STRIDE {stride} is not a multiple of the probability raster's cell ({cell_px:g} raster px at CHUNK_SIZE {chunk_size}), so the "
                          f"chunks' score maps cannot be laid on its grid where they lie. Give a STRIDE whose chunks start on its cells (e.g. {examples}), "
                          "or leave PROBABILITY_RASTER empty.")


def label_fields(raster_path: str, reporter: Reporter) -> Dict:
    """The summary's fields from the PDS3 label beside the raster; a label that cannot be read is a
    warning, since the image itself is still worth scoring."""
    without_label = dict.fromkeys(name for name, _ in LABEL_SUMMARY_FIELDS)
    path = pdslabel.label_beside(raster_path)
    if path is None:
        return without_label
    try:
        fields = pdslabel.summary_fields(path)
    except (OSError, UnicodeError) as exc:
        reporter.warning(f"The label {path} cannot be read ({exc}); the summary goes without Ls, incidence and latitude.")
        return without_label
    if all(value is None for value in fields.values()) and pdslabel.is_isis3_label(path):
        reporter.log(f"{os.path.basename(path)} is an ISIS3 cube's label, which gives no Ls, incidence or latitude: the summary goes without them.")
        return without_label
    if all(value is None for value in fields.values()):
        reporter.warning(f"{path} beside the image holds none of a HiRISE PDS3 label's keywords (is it damaged?); the summary goes "
                         "without Ls, incidence and latitude. Download the label again to have them.")
        return without_label
    for name in pdslabel.implausible(fields):
        low, high = pdslabel.PLAUSIBLE[name]
        reporter.warning(f"The label {os.path.basename(path)} gives {name} {fields[name]:g}, outside {low:g}-{high:g}; it is left out of the summary.")
        fields[name] = None
    reporter.log(
        f"label {os.path.basename(path)}: observation {fields['observation_id']}, Ls {fields['solar_longitude']}, "
        f"incidence {fields['incidence_angle']}, latitude {fields['centre_latitude']}"
    )
    return fields


def add_review_ranks(chunks: List[Dict], icy_threshold: float, radius: int) -> None:
    """Give every chunk its review_rank (model/review.py), from the rounded probability the tables show."""
    ranks = review.review_ranks([c["probability"] for c in chunks], [c["row"] for c in chunks], [c["col"] for c in chunks], icy_threshold, radius)
    for chunk, rank in zip(chunks, ranks):
        chunk["review_rank"] = int(rank)
