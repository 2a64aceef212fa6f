"""Model files: one shareable file holding the Keras network and what is needed to use it.

A model file (``*.hiriseice``) is a zip archive with two members:
  ``hiriseice.json``  metadata: format version, name, version, input size, chunk size,
                      normalisation, thresholds, calibration, architecture, training provenance
                      and validation metrics;
  ``model.keras``     the Keras 3 model, saved without optimizer state.
Metadata is readable without TensorFlow, so QGIS can check a file before starting the worker.
"""

import datetime
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
import zlib
from typing import Dict, Tuple

from . import files
from .errors import ModelFileError

FORMAT = "hiriseice-model"
FORMAT_VERSION = 1
METADATA_MEMBER = "hiriseice.json"
KERAS_MEMBER = "model.keras"
EXTENSION = ".hiriseice"

REQUIRED_KEYS = ("format", "format_version", "name", "version", "input_size", "chunk_size", "normalisation", "thresholds")


def default_model_path() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resources", "models", "default" + EXTENSION)


def resolve_model_path(path: str) -> str:
    """Empty means the bundled default model."""
    return path or default_model_path()


def read_metadata(path: str) -> Dict:
    """Validated metadata of a model file; a clear ModelFileError for anything else."""
    if not path and not os.path.isfile(default_model_path()):
        raise ModelFileError(
            f"The bundled default model '{default_model_path()}' is missing, so MODEL cannot be left empty. Reinstall the plugin, "
            "or choose a model file (*.hiriseice) trained with hiriseice:train."
        )
    path = resolve_model_path(path)
    if not os.path.isfile(path):
        raise ModelFileError(
            f"The model file '{path}' does not exist. Leave MODEL empty for the bundled default model, or train one with hiriseice:train."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if METADATA_MEMBER not in names or KERAS_MEMBER not in names:
                raise ModelFileError(
                    f"'{path}' is not a HiRISE Ice Patches model file (it lacks {METADATA_MEMBER} or {KERAS_MEMBER}). "
                    "Use a *.hiriseice file written by hiriseice:train, or leave MODEL empty for the default model."
                )
            metadata = json.loads(archive.read(METADATA_MEMBER).decode("utf-8"))
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(
            f"'{path}' is not a readable HiRISE Ice Patches model file ({exc}); it may be corrupt or of another kind. "
            "Copy it again, or leave MODEL empty for the bundled default model."
        ) from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ModelFileError(f"'{path}' is a zip archive but not a HiRISE Ice Patches model file. Use a *.hiriseice file written by hiriseice:train.")
    version = metadata.get("format_version")
    if type(version) is not int or version > FORMAT_VERSION:
        raise ModelFileError(
            f"'{path}' uses model format version {version}, newer than this plugin reads ({FORMAT_VERSION}). Update the HiRISE Ice Patches plugin."
        )
    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise ModelFileError(f"The model file '{path}' lacks metadata {', '.join(missing)}; it is damaged. Retrain it with hiriseice:train.")
    return metadata


def describe(metadata: Dict) -> str:
    return f"{metadata['name']} {metadata['version']} (input {metadata['input_size']} px for {metadata['chunk_size']} px chunks)"


def new_metadata(name: str, input_size: int, chunk_size: int, normalisation: Dict, architecture: Dict, thresholds: Dict, **extra) -> Dict:
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
        "input_size": int(input_size),
        "chunk_size": int(chunk_size),
        "normalisation": normalisation,
        "architecture": architecture,
        "thresholds": thresholds,
        "calibration": None,
    }
    metadata.update(extra)
    return metadata


def save(keras_model, metadata: Dict, path: str) -> None:
    """Write atomically: a reader never sees a half-written model file."""
    partial = files.prepare(path)
    with tempfile.TemporaryDirectory() as tmp:
        keras_path = os.path.join(tmp, KERAS_MEMBER)
        # An uncompiled copy: the optimizer's state would triple the file and is not needed to
        # continue training (Adam restarts with the new labels).
        import keras

        shareable = keras.models.clone_model(keras_model)
        shareable.set_weights(keras_model.get_weights())
        shareable.save(keras_path)
        with open(keras_path, "rb") as handle:
            metadata = dict(metadata, weights_sha256=hashlib.sha256(handle.read()).hexdigest())
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(METADATA_MEMBER, json.dumps(metadata, indent=2, sort_keys=True))
            archive.write(keras_path, KERAS_MEMBER)
        files.commit(partial, path)


def load(path: str) -> Tuple[object, Dict]:
    """(keras model, metadata). Imports TensorFlow: worker side only."""
    path = resolve_model_path(path)
    metadata = read_metadata(path)
    import keras

    with tempfile.TemporaryDirectory() as tmp:
        try:
            with zipfile.ZipFile(path) as archive:
                with archive.open(KERAS_MEMBER) as src, open(os.path.join(tmp, KERAS_MEMBER), "wb") as dst:
                    shutil.copyfileobj(src, dst)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # damaged compressed data
            raise ModelFileError(
                f"The network inside '{path}' cannot be unpacked ({exc}); the file is damaged. Copy it again, retrain it with "
                "hiriseice:train or use the bundled default model."
            ) from None
        expected = metadata.get("weights_sha256")
        if expected:
            with open(os.path.join(tmp, KERAS_MEMBER), "rb") as handle:
                if hashlib.sha256(handle.read()).hexdigest() != expected:
                    raise ModelFileError(
                        f"The network inside '{path}' does not match the checksum in its metadata: the file was damaged or edited. "
                        "Copy it again, retrain it with hiriseice:train or use the bundled default model."
                    )
        try:
            network = keras.models.load_model(os.path.join(tmp, KERAS_MEMBER), compile=False)
        except Exception as exc:  # Keras raises many kinds for damaged archives.
            raise ModelFileError(
                f"The network inside '{path}' cannot be loaded ({type(exc).__name__}: {exc}). The file is damaged or was written by an "
                "incompatible Keras; retrain it with hiriseice:train or use the bundled default model."
            ) from None
    shape = network.input_shape
    if len(shape) != 4 or shape[1] != metadata["input_size"] or shape[3] != 1:
        raise ModelFileError(
            f"The network in '{path}' expects input {shape}, but its metadata says {metadata['input_size']} px grayscale. Retrain it with hiriseice:train."
        )
    return network, metadata
