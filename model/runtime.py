"""What runs the network in detect: ONNX Runtime where it matches Keras, else Keras.

benchmarks/runtimes.py --paired measured the bundled network on a 2-core CPU (docs/performance.md,
"The network's runtime"): taking turns in one process, ONNX Runtime scored the same chunks 1.4 times as fast
as Keras at batch 16 (OpenVINO in float32 1.26 times), its probabilities within 3e-7 of Keras's. So the logit network is exported to ONNX once per set of weights (Keras 3's
``model.export(format="onnx")``, through tf2onnx) into a cache folder, checked against Keras on
probe images, and used where the check passed. Without onnxruntime or tf2onnx, or where the check
failed, Keras scores as before. The score-map route's fully convolutional network (any window
size) goes the same way: on Keras it scored a dense grid at 2.4 times the per-chunk grid's time
(issue 10). Training stays in Keras.

A model file's export is also found by the file's own weights digest (``SavedNetwork``), so a
worker whose model was exported once scores without loading Keras or TensorFlow: 3.5-5.4 s and
540 MB of the worker's start on this 2-core machine (issue 10). A model file's first export is
made in a child process (``export_saved``), so that TensorFlow's half gigabyte leaves with it
instead of staying in a worker that then reads a whole observation.
"""

import contextlib
import errno
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import weakref
from typing import Dict, Optional

import numpy as np

from . import files
from .errors import ModelFileError, out_of_memory

# Largest difference in probability (sigmoid of the logit) from Keras a runtime may show on the probes.
MATCH_TOLERANCE = 1e-4
PROBE_COUNT = 8
# A child that exports longer than this is given up; the worker then loads Keras itself.
EXPORT_TIMEOUT_SECONDS = 900


def cache_folder() -> str:
    """HIRISEICE_CACHE_DIR, else $XDG_CACHE_HOME/hiriseice (an absolute one: the XDG rules ignore a relative one), else
    ~/.cache/hiriseice."""
    explicit = os.environ.get("HIRISEICE_CACHE_DIR")
    if explicit:
        return os.path.abspath(explicit)
    base = os.environ.get("XDG_CACHE_HOME", "")
    base = base if os.path.isabs(base) else os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hiriseice")


def cache_refusal() -> str:
    """Why ONNX exports cannot be cached ("" when they can), found by making the cache folder and a file in it: a child
    that exports loads TensorFlow for seconds and a gigabyte, for nothing where the cache cannot take its file."""
    folder = os.path.join(cache_folder(), "onnx")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        return f"{folder}: {exc.strerror or exc}"
    refused = files.write_refused_in(folder)
    return f"{folder}: {refused}" if refused else ""


def not_cached_note(exc: OSError, what: str = "the ONNX export could not be cached") -> str:
    """The note for an export the cache could not take, with a fix that fits why."""
    if getattr(exc, "errno", None) == errno.ENOSPC:
        return f"{what} ({exc}): the cache's disk is full; free some space there, or set HIRISEICE_CACHE_DIR to a folder on another disk"
    return f"{what} ({exc}); set HIRISEICE_CACHE_DIR to a writable folder"


class KerasScorer:
    name = "Keras"
    note = ""

    def __init__(self, logit_network):
        self.model = logit_network

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(n, size, size, 1) float32 network inputs -> (n,) float64 logits."""
        return np.asarray(self.model.predict_on_batch(images), np.float64).reshape(-1)


class KerasMapper:
    """The score-map network on Keras, called eagerly: its windows come in several sizes, and
    predict_on_batch would trace a graph for each."""

    name = "Keras"
    note = ""

    def __init__(self, map_network):
        self.model = map_network

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(n, h, w, 1) float32 network inputs -> (n, h / cell, w / cell, 1) float32 logit maps."""
        return np.asarray(self.model([images], training=False))


class OnnxScorer:
    name = "ONNX Runtime"
    note = ""

    def __init__(self, path: str):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # The chunk reader decodes and normalises in another thread meanwhile: idle inference
        # threads must sleep rather than spin on its cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # The memory pattern plans and keeps a block per input shape (a full batch, the last one, an
        # empty tile) on top of the arena: without it the two-scale network at batch 16 peaked 170 MB
        # lower, as fast, the same logits bit for bit (issue 10).
        options.enable_mem_pattern = False
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: np.ascontiguousarray(images, np.float32)})[0])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.run(images), np.float64).reshape(-1)


class OnnxMapper(OnnxScorer):
    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)


class SavedNetwork:
    """A model file's network, loaded with Keras (and TensorFlow) only when a runtime has to be made
    or checked from it: ``keras()``. ``digest`` names the file's weights (its metadata's
    weights_sha256), under which an export made from them is found again without loading them.
    The runtimes made from it are kept with it (``runners``), for a warm worker's next image.
    tensorflow_threads > 0 bounds TensorFlow's thread pool if it has to start (a survey's Dask
    workers share the cores)."""

    def __init__(self, model_path: str, metadata: Dict, tensorflow_threads: int = 0):
        from . import modelfile

        modelfile.checked_network_bytes(model_path, metadata=metadata)  # a damaged file is refused, export cached or not
        self.model_path = model_path
        self.input_size = int(metadata["input_size"])
        self.digest: Optional[str] = (metadata.get("weights_sha256") or "")[:32] or None
        self.tensorflow_threads = tensorflow_threads
        self.runners: Dict[str, object] = {}
        self._network = None

    @property
    def loaded(self) -> bool:
        """Whether keras() has loaded the network (and TensorFlow) in this process."""
        return self._network is not None

    def keras(self):
        if self._network is None:
            from . import modelfile

            if self.tensorflow_threads > 0:
                import tensorflow as tf

                with contextlib.suppress(RuntimeError):  # TensorFlow already started in this process
                    tf.config.threading.set_intra_op_parallelism_threads(self.tensorflow_threads)
                    tf.config.threading.set_inter_op_parallelism_threads(min(2, self.tensorflow_threads))
            network, metadata = modelfile.load(self.model_path)
            if ((metadata.get("weights_sha256") or "")[:32] or None) != self.digest:
                # scored and cached under the digest checked at the start, another network would be taken for this one's
                raise ModelFileError(f"'{self.model_path}' changed while it was being read (a model was saved over it): "
                                               "nothing was scored with it. Run again, once the other program has finished writing it.")
            self._network = network
        return self._network


def compute_device() -> str:
    """Where Keras runs the network: "GPU (its names)" or "CPU", under TensorFlow or JAX. Imports
    Keras: detect asks only where TensorFlow is already loaded."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        gpus = [str(device) for device in jax.devices() if device.platform == "gpu"]
    else:
        import tensorflow as tf

        gpus = [device.name for device in tf.config.list_physical_devices("GPU")]
    return f"GPU ({', '.join(gpus)})" if gpus else "CPU"


def weights_key(logit_network) -> str:
    """The exported file's name: a digest of the weights and the input shape, so a retrained or
    fine-tuned model (even one never saved) never meets another's export."""
    digest = hashlib.sha256(repr(logit_network.input_shape).encode())
    for weight in logit_network.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:32]


def probe_images(input_size: int) -> np.ndarray:
    """Chunk-like inputs: smooth terrain with grain, quantised to 8 bits as preprocess.network_input does."""
    rng = np.random.default_rng(0)
    coarse = rng.random((PROBE_COUNT, input_size // 8 + 1, input_size // 8 + 1))
    smooth = np.kron(coarse, np.ones((1, 8, 8)))[:, :input_size, :input_size]
    images = np.clip(0.8 * smooth + 0.2 * rng.random(smooth.shape), 0.0, 1.0)
    return (np.round(images * 255) / 255).astype(np.float32)[..., None]


def max_probability_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(1.0 / (1.0 + np.exp(-a)) - 1.0 / (1.0 + np.exp(-b)))))


def map_probe_images(input_size: int) -> np.ndarray:
    """The probes two by two, one above the other: windows taller than wide, unlike any chunk."""
    probes = probe_images(input_size)
    half = len(probes) // 2
    return np.concatenate([probes[:half], probes[half:]], axis=1)


def exported_onnx(keras_scorer, onnx_class=OnnxScorer, probes: np.ndarray = None) -> Dict:
    """{"path", "matches", "max_difference"} of the network's ONNX export, made and checked on first
    use. keras_scorer: a KerasScorer or KerasMapper; onnx_class: what runs the export alike;
    probes: the inputs they must agree on (default: chunk-like images of the network's input size)."""
    folder = os.path.join(cache_folder(), "onnx")
    stem = os.path.join(folder, weights_key(keras_scorer.model))
    record = _read_record(stem + ".json")
    if record is not None and (not record["matches"] or os.path.exists(record["path"])):
        return record
    if probes is None:
        probes = probe_images(keras_scorer.model.input_shape[1])
    expected = keras_scorer(probes)  # also marks the model as called, which Keras's export requires
    partial = files.prepare(stem + ".onnx")
    try:
        # tf2onnx prints its progress; the worker's stdout carries only its JSON lines.
        with contextlib.redirect_stdout(sys.stderr):
            keras_scorer.model.export(partial, format="onnx", verbose=False)
    except BaseException:
        files.remove_quietly([partial])  # a full cache disk kept it, and stayed full
        raise
    files.commit(partial, stem + ".onnx")
    difference = max_probability_difference(onnx_class(stem + ".onnx")(probes), expected)
    record = {"path": stem + ".onnx", "matches": difference <= MATCH_TOLERANCE, "max_difference": difference}
    if not record["matches"]:
        os.remove(record["path"])
    partial = files.prepare(stem + ".json")
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    files.commit(partial, stem + ".json")
    return record


# A warm worker scores image after image with one loaded network: its scorers (the Keras models,
# the weights' digest, the ONNX sessions) are made once.
_scorers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_mappers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def logit_scorer(network):
    """A callable from (n, size, size, 1) float32 inputs to (n,) logits, with a ``name`` and a ``note``
    saying why it was chosen: ONNX Runtime where installed and matching Keras, else Keras. Made
    once per Keras network object; from a SavedNetwork whose export is cached, without Keras."""
    if isinstance(network, SavedNetwork):
        return _from_saved(network, "logit", OnnxScorer, logit_scorer)
    if network not in _scorers:
        from .network import logit_model

        _scorers[network] = _fastest(KerasScorer(logit_model(network)), OnnxScorer, None)
    return _scorers[network]


def chunk_logits(scorer, images: np.ndarray, mirror: bool) -> np.ndarray:
    """Logits of (n, s, s, 1) chunk images; with mirror, the mean with their east-west mirrors (detect's TTA)."""
    logits = scorer(images)
    if mirror:
        logits = (logits + scorer(np.ascontiguousarray(images[:, :, ::-1]))) / 2.0
    return logits


def map_scorer(network, architecture: Dict):
    """As logit_scorer, for the network's score map: (n, h, w, 1) float32 inputs, h and w multiples
    of its cell, to (n, h / cell, w / cell, 1) logit maps."""
    if isinstance(network, SavedNetwork):
        return _from_saved(network, "map", OnnxMapper, lambda keras: map_scorer(keras, architecture))
    if network not in _mappers:
        from .network import score_map_model

        probes = map_probe_images(network.input_shape[1])
        _mappers[network] = _fastest(KerasMapper(score_map_model(network, architecture)), OnnxMapper, probes)
    return _mappers[network]


def _from_saved(saved: SavedNetwork, kind: str, onnx_class, from_keras):
    """The export recorded under the file's digest when it matched Keras, else ``from_keras`` on the
    loaded network (which exports and checks on first use), its export then recorded under the digest."""
    if kind not in saved.runners:
        saved.runners[kind] = _made_from_saved(saved, kind, onnx_class, from_keras)
    return saved.runners[kind]


def not_the_exports_fault(exc: Exception) -> bool:
    """onnxruntime's library failing to load (a broken install) or memory running out as it starts: no fault
    of a cached export, which had been deleted and then cost every later run a TensorFlow export."""
    return isinstance(exc, ImportError) or out_of_memory(exc)


def _made_from_saved(saved: SavedNetwork, kind: str, onnx_class, from_keras, child_may_export: bool = True):
    alias = os.path.join(cache_folder(), "onnx", f"{saved.digest}-{kind}.json") if saved.digest else None
    record = _read_record(alias) if alias else None
    note = "; TensorFlow not loaded"
    # Found without importing them: tf2onnx's import is TensorFlow's.
    if alias and record is None and child_may_export and not saved.loaded and _installed("onnxruntime", "tf2onnx") and not cache_refusal():
        _export_in_child(saved, kind)
        record = _read_record(alias)
        note = "; exported by a child process, TensorFlow not loaded here"
    if record and record["matches"] and os.path.exists(record["path"]) and _installed("onnxruntime"):
        try:
            runner = _onnx_runner(onnx_class, record, note)
        except Exception as exc:  # noqa: BLE001 - a cached export damaged since (onnxruntime raises its own kinds): made again below
            if not not_the_exports_fault(exc):
                files.remove_quietly([alias, record["path"]])
        else:
            _check_input_size(runner, saved)
            return runner
    runner = from_keras(saved.keras())
    record = getattr(runner, "record", None)
    if alias and record is not None:
        with contextlib.suppress(OSError):  # no record: the next worker loads Keras again, nothing worse
            partial = files.prepare(alias)
            with open(partial, "w", encoding="utf-8") as handle:
                json.dump(record, handle)
            files.commit(partial, alias)
    return runner


def _check_input_size(runner, saved: SavedNetwork) -> None:
    """A cached export is found by the weights' digest alone, so metadata edited to another input size meets it: said as
    modelfile.load says it, not as onnxruntime's shape error at the first chunk."""
    sides = runner.session.get_inputs()[0].shape[1:3]
    if all(isinstance(side, int) for side in sides) and tuple(sides) != (saved.input_size, saved.input_size):
        raise ModelFileError(f"The network in '{saved.model_path}' (MODEL) expects {sides[0]} px input, but its metadata says {saved.input_size} px "
                             "grayscale. Retrain it with hiriseice:train.")


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in modules)


def _export_in_child(saved: SavedNetwork, first_kind: str) -> None:
    """Runs export_saved in a process of its own (in the worker's process group, so a cancel ends
    it too). Whatever goes wrong there, the caller finds no record and loads Keras itself."""
    package = os.path.dirname(os.path.abspath(__file__))
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (os.path.dirname(package), os.environ.get("PYTHONPATH")))))
    code = f"import sys; from {os.path.basename(package)}.runtime import export_saved; export_saved(sys.argv[1], sys.argv[2], int(sys.argv[3]))"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([sys.executable, "-c", code, saved.model_path, first_kind, str(saved.tensorflow_threads)], env=environment,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=EXPORT_TIMEOUT_SECONDS, check=False)


def export_saved(model_path: str, first_kind: str, tensorflow_threads: int = 0) -> None:
    """Exports a model file's logit network and its score-map network, ``first_kind`` ("logit" or
    "map", the one its worker waits for) first, checks each against Keras and records it under the
    file's digest, where the worker that started this process finds it. Both in one process: the
    other is wanted sooner or later (a dense grid, a probability raster), and TensorFlow's start is
    most of the cost."""
    from . import modelfile

    metadata = modelfile.read_metadata(model_path)
    saved = SavedNetwork(model_path, metadata, tensorflow_threads)
    architecture = metadata.get("architecture", {})
    makers = {"logit": (OnnxScorer, logit_scorer), "map": (OnnxMapper, lambda keras: map_scorer(keras, architecture))}
    for kind in sorted(makers, key=lambda kind: kind != first_kind):
        _made_from_saved(saved, kind, *makers[kind], child_may_export=False)


def _read_record(path: str) -> Optional[Dict]:
    """A cached record, or None where it is missing or unreadable (a damaged cache is made again)."""
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"path", "matches", "max_difference"} <= record.keys() else None


def _onnx_runner(onnx_class, record: Dict, note: str = ""):
    """ONNX Runtime on the export a record names, the record and why it was chosen kept with it."""
    runner = onnx_class(record["path"])
    runner.record = record
    runner.note = f"matches Keras within {record['max_difference']:.1e}; export cached in {os.path.dirname(record['path'])}{note}"
    return runner


def _fastest(keras_scorer, onnx_class, probes):
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as exc:
        keras_scorer.note = f"onnxruntime or tf2onnx is not installed ({exc.name}); scripts/install adds them"
        return keras_scorer
    try:
        record = exported_onnx(keras_scorer, onnx_class, probes)
    except OSError as exc:  # an unwritable cache folder must not stop detection
        keras_scorer.note = not_cached_note(exc)
        return keras_scorer
    if record["matches"]:
        try:
            return _onnx_runner(onnx_class, record)
        except Exception as exc:  # noqa: BLE001 - an export damaged since it was cached (onnxruntime raises its own kinds): made again
            if not_the_exports_fault(exc):
                keras_scorer.note = f"ONNX Runtime could not start ({type(exc).__name__}: {exc}); the export is kept"
                return keras_scorer
            files.remove_quietly([record["path"]])
            try:
                record = exported_onnx(keras_scorer, onnx_class, probes)
            except OSError as exc:
                keras_scorer.note = not_cached_note(exc, "the cached ONNX export was damaged and could not be made again")
                return keras_scorer
            if record["matches"]:
                return _onnx_runner(onnx_class, record)
    keras_scorer.note = f"ONNX Runtime's probabilities differ from Keras's by {record['max_difference']:.1e} (> {MATCH_TOLERANCE:g})"
    return keras_scorer
