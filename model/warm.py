"""Models kept loaded in a long-lived worker process: a survey's Dask workers and
``python -m model --jsonl serve`` (the QGIS client's warm worker) score image after image
without loading TensorFlow and the network again."""

import contextlib
import os
from typing import Dict, Tuple

from . import modelfile

# One model per process, keyed by (path, mtime): the next image reuses it, and a model file
# rewritten in place (a retrained model) is loaded again.
_warm_model: Dict[Tuple[str, int], Tuple[object, Dict]] = {}


def warm_model(model_path: str, tensorflow_threads: int = 0) -> Tuple[object, Dict]:
    """(network, metadata) of model_path ("" for the bundled model), loaded once per process.
    tensorflow_threads > 0 bounds TensorFlow's thread pool (LocalCluster: the cores shared among
    the workers), set before it starts."""
    path = modelfile.resolve_model_path(model_path)
    if not os.path.isfile(path):
        modelfile.read_metadata(model_path)  # raises the message that says what to do
    key = (path, os.stat(path).st_mtime_ns)
    if key not in _warm_model:
        if tensorflow_threads > 0 and not _warm_model:
            import tensorflow as tf

            with contextlib.suppress(RuntimeError):  # TensorFlow already started in this process
                tf.config.threading.set_intra_op_parallelism_threads(tensorflow_threads)
                tf.config.threading.set_inter_op_parallelism_threads(min(2, tensorflow_threads))
        _warm_model.clear()
        _warm_model[key] = modelfile.load(path)
    return _warm_model[key]
