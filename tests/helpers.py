"""Small helpers shared by the tests: generated GeoTIFFs, label polygons, worker runs and a local web server.

Nothing here imports TensorFlow (the test process is Debian's Python, where it must never be
loaded); everything that needs it runs in the worker through run_worker().
"""

import json
import math
import os
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from osgeo import gdal, ogr, osr

# No gdal.UseExceptions() here: GDAL's error mode is global, and the engine must work in the
# mode QGIS leaves it in (model.gdalstate.gdal_exceptions scopes its own).

REPO_ROOT = Path(__file__).resolve().parent.parent
MARS_RADIUS_M = 3396190.0
GDAL_TYPES = {"Byte": gdal.GDT_Byte, "UInt16": gdal.GDT_UInt16, "Int16": gdal.GDT_Int16, "Int32": gdal.GDT_Int32, "Float32": gdal.GDT_Float32}
NUMPY_TYPES = {"Byte": np.uint8, "UInt16": np.uint16, "Int16": np.int16, "Int32": np.int32, "Float32": np.float32}

# The tiny network every TensorFlow test trains: seconds on a CPU.
TINY_WIDTHS = [4, 8, 8, 16]
TINY_INPUT_SIZE = 32
TINY_CHUNK_SIZE = 64


def mars_equirectangular_wkt(standard_parallel: float = -55.0, central_meridian: float = 0.0) -> str:
    """A HiRISE-RDR-like custom CRS: equirectangular on the Mars sphere, non-zero standard parallel."""
    srs = osr.SpatialReference()
    srs.SetGeogCS("Mars 2000 sphere", "D_Mars_2000_Sphere", "Mars_2000_Sphere", MARS_RADIUS_M, 0.0, "Reference_Meridian", 0.0)
    srs.SetEquirectangular2(0.0, central_meridian, standard_parallel, 0.0, 0.0)
    srs.SetProjCS("Equirectangular Mars (tests)")
    srs.SetLinearUnits("metre", 1.0)
    return srs.ExportToWkt()


def default_geotransform(width: int, height: int, pixel: float = 0.5, standard_parallel: float = -55.0):
    top = MARS_RADIUS_M * math.radians(standard_parallel) + height / 2.0 * pixel
    return (-width / 2.0 * pixel, pixel, 0.0, top, 0.0, -pixel)


def rotated_footprint(width: int, height: int, angle_deg: float = 12.0, shrink: float = 0.72) -> np.ndarray:
    """True inside a rotated rectangle centred in the raster (the swath of an RDR), False in the DN-0 border."""
    th = math.radians(angle_deg)
    y = (np.arange(height) + 0.5 - height / 2.0)[:, None]
    x = (np.arange(width) + 0.5 - width / 2.0)[None, :]
    u = x * math.cos(th) + y * math.sin(th)
    v = -x * math.sin(th) + y * math.cos(th)
    return (np.abs(u) <= shrink * width / 2.0) & (np.abs(v) <= shrink * height / 2.0)


def south_polar_stereographic(longitude: float, latitude: float = -67.0, width: int = 256, height: int = 256, pixel: float = 0.5,
                              central_meridian: float = 0.0, radius: float = MARS_RADIUS_M):
    """(WKT, geotransform) of a north-up-stored image centred at (latitude, longitude) in the south polar
    stereographic map HiRISE uses poleward of 65 deg (central meridian 0): north there points ``longitude``
    degrees from the image's up (longitude - central_meridian for another meridian). HiRISE's polar products
    are drawn on Mars's polar radius (``radius`` 3376200)."""
    srs = osr.SpatialReference()
    srs.ImportFromProj4(f"+proj=stere +lat_0=-90 +lon_0={central_meridian:g} +k=1 +R={radius} +units=m")
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    degrees = srs.CloneGeogCS()
    degrees.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    x, y = osr.CoordinateTransformation(degrees, srs).TransformPoint(longitude, latitude)[:2]
    return srs.ExportToWkt(), (x - pixel * width / 2, pixel, 0.0, y + pixel * height / 2, 0.0, -pixel)


def textured(height: int, width: int, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """Smooth-ish terrain with grain, float64 in [low, high]."""
    coarse = rng.random((height // 8 + 2, width // 8 + 2))
    terrain = np.kron(coarse, np.ones((8, 8)))[:height, :width]
    terrain = 0.7 * terrain + 0.3 * rng.random((height, width))
    return low + (high - low) * terrain


# ISIS3's special pixels of a 32-bit float cube: the null (GDAL's declared no-data) and high instrument saturation.
ISIS_NULL = -3.4028226550889045e38  # a float32 value, kept a Python float for GDAL's SetNoDataValue
ISIS_HIGH_INSTRUMENT_SATURATION = np.frombuffer(np.uint32(0xFF7FFFFE).tobytes(), np.float32)[0]


def isis_i_over_f(dns: np.ndarray) -> np.ndarray:
    """DNs as an image calibrated in ISIS3 holds them: 32-bit float I/F, DN 0 (no-data) as ISIS's null."""
    dns = dns.astype(np.float32)
    return np.where(dns == 0, np.float32(ISIS_NULL), dns * np.float32(2.4e-5) - np.float32(0.001))


def write_geotiff(path, bands, data_type: str = "UInt16", geotransform=None, crs_wkt: Optional[str] = "", nodata=None) -> str:
    """Write arrays (one 2-D array, or a list of them for several bands) as a GeoTIFF."""
    arrays = [bands] if isinstance(bands, np.ndarray) and bands.ndim == 2 else list(bands)
    height, width = arrays[0].shape
    ds = gdal.GetDriverByName("GTiff").Create(str(path), width, height, len(arrays), GDAL_TYPES[data_type], ["TILED=YES", "BLOCKXSIZE=64", "BLOCKYSIZE=64"])
    assert ds is not None, f"GDAL cannot create {path}: {gdal.GetLastErrorMsg()}"
    if geotransform is not None:
        ds.SetGeoTransform(list(geotransform))
    if crs_wkt:
        ds.SetProjection(crs_wkt)
    for i, array in enumerate(arrays, start=1):
        band = ds.GetRasterBand(i)
        if nodata is not None:
            band.SetNoDataValue(nodata)
        band.WriteArray(np.asarray(array).astype(NUMPY_TYPES[data_type]))
    ds.FlushCache()
    ds = None
    return str(path)


@dataclass
class GeneratedRaster:
    path: str
    width: int
    height: int
    data_type: str
    geotransform: tuple
    crs_wkt: str
    nodata: Optional[float]
    bands: List[np.ndarray]  # the DNs written, one array per band
    valid: np.ndarray  # where the footprint holds data
    icy_windows: List[tuple] = field(default_factory=list)  # (x_off, y_off, size) of chunks given a bright patch


def generate_raster(
    folder,
    name: str = "scene.tif",
    width: int = 256,
    height: int = 256,
    data_type: str = "UInt16",
    nodata=0,
    crs="mars",
    rotated_border: bool = False,
    band_count: int = 1,
    seed: int = 0,
    geotransform=None,
    icy_chunk_size: Optional[int] = None,
    icy_pattern=None,
) -> GeneratedRaster:
    """A HiRISE-like GeoTIFF. DN 0 outside the rotated footprint when rotated_border.

    crs: "mars" (custom Mars equirectangular WKT), None (no CRS) or a WKT string.
    icy_chunk_size: grid of chunks of this size; a chunk (row, col) with icy_pattern(row, col)
    true gets a bright blob (the stand-in for an ice patch) at its centre.
    """
    rng = np.random.default_rng(seed)
    top = 1023 if data_type == "UInt16" else 255
    crs_wkt = mars_equirectangular_wkt() if crs == "mars" else (crs or "")
    geotransform = tuple(geotransform or default_geotransform(width, height))
    valid = rotated_footprint(width, height) if rotated_border else np.ones((height, width), bool)
    icy_windows = []
    bands = []
    for b in range(band_count):
        image = textured(height, width, rng, 0.25 * top, 0.55 * top)
        if b == 0 and icy_chunk_size:
            yy, xx = np.mgrid[0:height, 0:width]
            for row in range(height // icy_chunk_size):
                for col in range(width // icy_chunk_size):
                    if icy_pattern is None or not icy_pattern(row, col):
                        continue
                    cy = row * icy_chunk_size + icy_chunk_size / 2.0
                    cx = col * icy_chunk_size + icy_chunk_size / 2.0
                    radius = icy_chunk_size / 5.0
                    blob = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2)))
                    image = np.maximum(image, 0.95 * top * blob)
                    icy_windows.append((col * icy_chunk_size, row * icy_chunk_size, icy_chunk_size))
        dn = np.clip(np.rint(image), 1, top)
        dn[~valid] = 0
        bands.append(dn.astype(NUMPY_TYPES[data_type]))
    path = os.path.join(str(folder), name)
    write_geotiff(path, bands, data_type, geotransform, crs_wkt, nodata)
    return GeneratedRaster(path, width, height, data_type, geotransform, crs_wkt, nodata, bands, valid, icy_windows)


def gcp_copy(source: str, target, corners_map, crs_wkt) -> str:
    """A copy of ``source`` georeferenced by four ground control points alone (no geotransform), as
    QGIS's Georeferencer saves a file it did not warp: ``corners_map`` are the map coordinates of
    its top-left, top-right, bottom-left and bottom-right pixel corners."""
    dataset = gdal.Open(source)
    width, height = dataset.RasterXSize, dataset.RasterYSize
    pixels = [(0, 0), (width, 0), (0, height), (width, height)]
    gcps = [gdal.GCP(x, y, 0.0, float(px), float(py)) for (x, y), (px, py) in zip(corners_map, pixels)]
    gdal.Translate(str(target), dataset, GCPs=gcps, outputSRS=crs_wkt)
    return str(target)


def window_ring_gdal(geotransform, x_off, y_off, width, height):
    """The window's corner ring computed by GDAL itself (the oracle for model.grid)."""
    corners = [(x_off, y_off), (x_off + width, y_off), (x_off + width, y_off + height), (x_off, y_off + height), (x_off, y_off)]
    return [tuple(gdal.ApplyGeoTransform(list(geotransform), float(x), float(y))) for x, y in corners]


def polygon_wkt(ring: Sequence) -> str:
    return "POLYGON ((" + ", ".join(f"{x!r} {y!r}" for x, y in ring) + "))"


def window_wkt(geotransform, x_off, y_off, width, height) -> str:
    return polygon_wkt(window_ring_gdal(geotransform, x_off, y_off, width, height))


def chunk_labels(raster: GeneratedRaster, chunk_size: int, label_of) -> List[Dict]:
    """One labelled polygon per full chunk: label_of(row, col) -> value written in the label field."""
    labels = []
    for row in range(raster.height // chunk_size):
        for col in range(raster.width // chunk_size):
            value = label_of(row, col)
            if value is None:
                continue
            labels.append({"wkt": window_wkt(raster.geotransform, col * chunk_size, row * chunk_size, chunk_size, chunk_size), "label": value})
    return labels


def assert_rings_equal(got, want, rel=1e-14, abs_tol=1e-7):
    """Two closed rings of (x, y) map coordinates, vertex by vertex."""
    import pytest

    assert len(got) == len(want), (got, want)
    flat_got = [v for point in got for v in point[:2]]
    flat_want = [v for point in want for v in point[:2]]
    assert flat_got == pytest.approx(flat_want, rel=rel, abs=abs_tol), (got, want)


def ring_of_geometry(wkt: str):
    geometry = ogr.CreateGeometryFromWkt(wkt)
    ring = geometry.GetGeometryRef(0)
    return [ring.GetPoint_2D(i) for i in range(ring.GetPointCount())]


# --- the worker --------------------------------------------------------------------------


def worker_python_path() -> str:
    return os.environ.get("HIRISEICE_WORKER_PYTHON") or str(REPO_ROOT / ".venv" / "bin" / "python")


def worker_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # The worker must run the checkout's engine, whatever PYTHONPATH the caller has.
    env.pop("PYTHONPATH", None)
    return env


@dataclass
class WorkerRun:
    args: List[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def messages(self) -> List[Dict]:
        """stdout of a --jsonl run, one parsed object per line (fails the test on a non-JSON line)."""
        out = []
        for number, line in enumerate(self.stdout.splitlines(), start=1):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"stdout line {number} of {self.args} is not JSON: {line!r}\nstderr:\n{self.stderr[-3000:]}") from None
        return out

    @property
    def result(self) -> Dict:
        messages = self.messages
        assert messages and messages[-1]["type"] == "result", f"{self.args} did not end with a result:\n{self.stdout[-2000:]}\n{self.stderr[-3000:]}"
        return messages[-1]

    @property
    def errors(self) -> List[Dict]:
        return [m for m in self.messages if m["type"] == "error"]

    def check(self) -> "WorkerRun":
        assert self.returncode == 0, f"worker {self.args} exited {self.returncode}\nstdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-5000:]}"
        return self


def run_worker(python: str, *args, jsonl: bool = True, timeout: float = 300) -> WorkerRun:
    """`python -m model [--jsonl] ARGS` from the repository root, as the plugin starts it."""
    command = [str(python), "-m", "model"] + (["--jsonl"] if jsonl else []) + [str(a) for a in args]
    done = subprocess.run(command, cwd=str(REPO_ROOT), env=worker_env(), capture_output=True, text=True, timeout=timeout)
    return WorkerRun(command, done.returncode, done.stdout, done.stderr)


def run_worker_snippet(python: str, code: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    """A small Python program in the worker (for checks that need TensorFlow or the venv's state); args become sys.argv[1:]."""
    command = [str(python), "-c", code] + [str(a) for a in args]
    return subprocess.run(command, cwd=str(REPO_ROOT), env=worker_env(), capture_output=True, text=True, timeout=timeout)


def write_job(path, job: Dict) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(job, handle)
    return str(path)


def tiny_job(raster_path: str, labels: List[Dict], output_model: str, **overrides) -> Dict:
    job = {
        "rasters": [{"path": raster_path, "band": 0, "labels": labels}],
        "label_mode": "chunks",
        "chunk_size": TINY_CHUNK_SIZE,
        "input_size": TINY_INPUT_SIZE,
        "widths": TINY_WIDTHS,
        "epochs": 2,
        "batch_size": 8,
        "validation_fraction": 0.25,
        "learning_rate": 0.003,
        "patience": 5,
        "augment": "none",
        "seed": 7,
        "name": "tiny-test-model",
        "output_model": output_model,
    }
    job.update(overrides)
    return job


def checkerboard(row: int, col: int) -> bool:
    return (row + col) % 2 == 0


ONE_WINDOW = r"""
import json, sys
import numpy as np
from model import modelfile, scoremap
from model.chunking import iter_chunks
from model.network import logit_model
from model.preprocess import network_input
from model.raster import RasterSource
raster, model_path = sys.argv[1], sys.argv[2]
network, meta = modelfile.load(model_path)
size, chunk = meta["input_size"], meta["chunk_size"]
mapper = scoremap.ScoreMapper(network, meta["architecture"])
with RasterSource(raster) as source:
    info = source.info
    samples = list(iter_chunks(source, chunk, chunk, 0.0, size))
    images = np.stack([network_input(s.data, s.valid, meta["normalisation"]) for s in samples])
    alone = np.asarray(logit_model(network).predict_on_batch(images[..., None])).reshape(-1)
    g = scoremap.MapGeometry(info.width, info.height, chunk, chunk, size, mapper.cell)
    tiles = scoremap.windows(g)
    m = scoremap.score_canvas(source, g, mapper, meta["normalisation"])
at = [(s.window.row, s.window.col) for s in samples]
print(json.dumps({"alone": alone.tolist(), "map": [m.chunk_logit(*rc) for rc in at], "runtime": mapper.run.name, "windows": len(tiles), "cells": list(m.logits.shape),
                  "whole": [[float(m.whole[rc]) for rc in at], [s.valid_fraction for s in samples]],
                  "centre": [[float(m.centre[rc]) for rc in at], [s.centre_valid_fraction for s in samples]]}))
"""


def one_window(worker_python, raster, model):
    """Score a raster's chunks alone and off the score map (ScoreMapper, at STRIDE = CHUNK) in the worker."""
    done = run_worker_snippet(worker_python, ONE_WINDOW, raster, model)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


class LocalWebServer:
    """A web server on 127.0.0.1, in a thread, for finding and downloading without the network:
    ``answer(request)`` handles each GET (``request`` is its BaseHTTPRequestHandler); ``port``
    is where it listens."""

    def __init__(self, answer, protocol_version: str = "HTTP/1.0"):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                answer(self)

        Handler.protocol_version = protocol_version
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.port = self.httpd.server_address[1]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def send_body(request, data: bytes, content_type: Optional[str] = None):
    """Answer ``request`` with 200 and ``data``."""
    request.send_response(200)
    if content_type:
        request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(data)))
    request.end_headers()
    request.wfile.write(data)


def no_data_layout():
    """256 x 192 px, a 3 x 4 grid of 64-px chunks: column 0 all no-data; chunk (1, 2) no-data in the
    left half of its centre; chunk (0, 3) no-data only in an 8-px ring outside its centre."""
    rng = np.random.default_rng(4)
    dn = rng.integers(200, 900, size=(192, 256)).astype(np.uint16)
    dn[:, :64] = 0
    dn[64 + 16: 64 + 48, 128 + 16: 128 + 32] = 0
    ring = np.zeros((64, 64), bool)
    ring[:8, :] = ring[-8:, :] = ring[:, :8] = ring[:, -8:] = True
    dn[0:64, 192:256][ring] = 0
    return dn
