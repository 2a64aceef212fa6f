"""Models kept by a long-lived worker process: a survey's Dask workers and ``python -m model
--jsonl serve`` (the QGIS client's warm worker) score image after image with the same network
runtime, made once (model/runtime.py: SavedNetwork, which loads TensorFlow only if no ONNX export
of the model is cached)."""

import os
from typing import Dict, Tuple

from . import modelfile
from .runtime import SavedNetwork

# One model per process, keyed by (path, mtime): the next image reuses it, and a model file
# rewritten in place (a retrained model) is taken up again.
_warm_model: Dict[Tuple[str, int], Tuple[SavedNetwork, Dict]] = {}


def warm_model(model_path: str, tensorflow_threads: int = 0) -> Tuple[SavedNetwork, Dict]:
    """(network, metadata) of model_path ("" for the bundled model), kept once per process.
    tensorflow_threads > 0 bounds TensorFlow's thread pool if it has to start (LocalCluster: the
    cores shared among the workers)."""
    path = modelfile.resolve_model_path(model_path)
    if not os.path.isfile(path):
        modelfile.read_metadata(model_path)  # raises the message that says what to do
    key = (path, os.stat(path).st_mtime_ns)
    if key not in _warm_model:
        _warm_model.clear()
        metadata = modelfile.read_metadata(path)
        _warm_model[key] = (SavedNetwork(path, metadata, tensorflow_threads), metadata)
    return _warm_model[key]
