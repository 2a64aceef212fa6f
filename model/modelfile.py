"""Model files: one shareable file holding the Keras network and what is needed to use it.

A model file (``*.hiriseice``) is a zip archive with two members, and an optional third:
  ``hiriseice.json``  metadata: format version, name, version, input size, chunk size,
                      normalisation, thresholds, calibration, architecture, training provenance
                      and validation metrics;
  ``model.keras``     the Keras 3 model, saved without optimizer state;
  ``replay.npz``      (optional) examples of what the model knew: uint8 ``images`` (n, input,
                      input), int ``labels`` and string ``kinds``, replayed when it is fine-tuned
                      so it does not forget them; those of kind "reference terrain" are real
                      ice-free crops it never trained on, which hold a fine-tuned model's false
                      alarms (finetune.REFERENCE_KIND). Readers that do not know it ignore it, so
                      the format version stays 1.
Metadata is readable without TensorFlow, so QGIS can check a file before starting the worker.
"""

import datetime
import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
import zlib
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import files, finetune
from .errors import ModelFileError

FORMAT = "hiriseice-model"
FORMAT_VERSION = 1
METADATA_MEMBER = "hiriseice.json"
KERAS_MEMBER = "model.keras"
REPLAY_MEMBER = "replay.npz"
EXTENSION = ".hiriseice"

REQUIRED_KEYS = ("format", "format_version", "name", "version", "input_size", "chunk_size", "normalisation", "thresholds")


def default_model_path() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resources", "models", "default" + EXTENSION)


def resolve_model_path(path: str) -> str:
    """Empty means the bundled default model."""
    return path or default_model_path()


# What leaving each model parameter empty does, for the advice in messages.
EMPTY_MEANS = {"MODEL": "for the bundled default model", "BASE_MODEL": "to train from scratch"}


def _leave_empty(parameter: str) -> str:
    return f"leave {parameter} empty {EMPTY_MEANS.get(parameter, EMPTY_MEANS['MODEL'])}"


def read_metadata(path: str, parameter: str = "MODEL") -> Dict:
    """Validated metadata of a model file; a clear ModelFileError for anything else.
    parameter: the algorithm parameter that named the file, for the advice in messages."""
    if not path and not os.path.isfile(default_model_path()):
        raise ModelFileError(
            f"The bundled default model '{default_model_path()}' is missing, so {parameter} cannot be left empty. Reinstall the plugin, "
            "or choose a model file (*.hiriseice) trained with hiriseice:train."
        )
    path = resolve_model_path(path)
    if not os.path.isfile(path):
        raise ModelFileError(files.special_file_message(path, "model") or
                             f"The model file '{path}' ({parameter}) does not exist. Choose another, {_leave_empty(parameter)}, or train one with hiriseice:train.")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if METADATA_MEMBER not in names or KERAS_MEMBER not in names:
                raise ModelFileError(
                    f"'{path}' ({parameter}) is not a HiRISE Ice Patches model file (it lacks {METADATA_MEMBER} or {KERAS_MEMBER}). "
                    f"Use a *.hiriseice file written by hiriseice:train, or {_leave_empty(parameter)}."
                )
            metadata = json.loads(archive.read(METADATA_MEMBER).decode("utf-8"))
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(
            f"'{path}' ({parameter}) is not a readable HiRISE Ice Patches model file ({exc}); it may be corrupt or of another kind. "
            f"Copy it again, or {_leave_empty(parameter)}."
        ) from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ModelFileError(f"'{path}' ({parameter}) is a zip archive but not a HiRISE Ice Patches model file. Use a *.hiriseice file written by hiriseice:train.")
    version = metadata.get("format_version")
    if type(version) is not int or version < 1:
        raise ModelFileError(f"'{path}' ({parameter}) says it is of model format version {version!r}, which no HiRISE Ice Patches plugin writes: "
                             "it is damaged or was edited by hand. Copy it again, or retrain it with hiriseice:train.")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"'{path}' ({parameter}) uses model format version {version}, newer than this plugin reads ({FORMAT_VERSION}). Update the HiRISE Ice Patches plugin."
        )
    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise ModelFileError(f"The model file '{path}' ({parameter}) lacks metadata {', '.join(missing)}; it is damaged. Retrain it with hiriseice:train.")
    wrong = _wrong_values(metadata)
    if wrong:  # each would end, somewhere later, in a traceback
        raise ModelFileError(f"The model file '{path}' ({parameter}) has metadata of the wrong kind ({'; '.join(wrong)}); it is damaged or was "
                             "edited by hand. Copy it again, or retrain it with hiriseice:train.")
    return metadata


def _wrong_values(metadata: Dict) -> List[str]:
    """What in the metadata has the wrong type or an impossible value, each said once."""
    def whole(value) -> bool:
        return type(value) is int and value > 0

    wrong = [f"{key} {metadata[key]!r}, not a positive whole number of pixels" for key in ("input_size", "chunk_size") if not whole(metadata[key])]
    wrong += [f"{key} {metadata[key]!r}, not a table" for key in ("normalisation", "thresholds") if not isinstance(metadata[key], dict)]
    for key in ("architecture", "calibration"):
        if metadata.get(key) is not None and not isinstance(metadata[key], dict):
            wrong.append(f"{key} {metadata[key]!r}, not a table")
    architecture = metadata.get("architecture") if isinstance(metadata.get("architecture"), dict) else {}
    scales = architecture.get("scales", [1])
    if not (isinstance(scales, list) and scales and all(whole(scale) for scale in scales)):
        wrong.append(f"architecture scales {scales!r}, not a list of whole numbers")
    normalisation = metadata["normalisation"] if isinstance(metadata["normalisation"], dict) else None
    if normalisation is not None:
        low, high = normalisation.get("low_percentile"), normalisation.get("high_percentile")
        if normalisation.get("method") != "percentile_stretch":
            wrong.append(f"normalisation method {normalisation.get('method')!r}, not percentile_stretch")
        elif not (number(low) and number(high) and 0 <= low < high <= 100):
            wrong.append(f"normalisation percentiles {low!r} to {high!r}, not two numbers rising within 0-100")
    calibration = metadata.get("calibration")
    if isinstance(calibration, dict) and calibration and not (calibration.get("method") == "platt" and number(calibration.get("a")) and number(calibration.get("b"))):
        wrong.append(f"calibration {calibration.get('method')!r} with a {calibration.get('a')!r} and b {calibration.get('b')!r}, not Platt scaling's two numbers")
    thresholds = metadata["thresholds"] if isinstance(metadata["thresholds"], dict) else {}
    wrong += [f"threshold {key} {value!r}, not a probability" for key, value in thresholds.items() if not (number(value) and 0 <= value <= 1)]
    return wrong


def number(value) -> bool:
    """A finite real number, not a boolean or a string of one."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def describe(metadata: Dict) -> str:
    return f"{metadata['name']} {metadata['version']} ({metadata['chunk_size']} px chunks read at {reading_sizes(metadata)} px)"


def rows_measuring(metadata: Dict, measurements: List[Dict]) -> List[Tuple[Dict, Dict]]:
    """(measurement, its row of this very model) for each benchmark measurement (a JSON whose
    "rows" name the model each scored, as describe() does) that scored this model."""
    described = describe(metadata)
    found = []
    for measured in measurements:
        row = next((row for row in measured.get("rows", []) if row.get("model") == described), None)
        if row is not None:
            found.append((measured, row))
    return found


def reading_sizes(metadata: Dict) -> str:
    """The sizes the network reads a chunk at: '256', or '128 and 256' for a two-scale network."""
    scales = (metadata.get("architecture") or {}).get("scales") or [1]
    return " and ".join(str(metadata["input_size"] // scale) for scale in sorted(scales, reverse=True))


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


def _damaged(parameter: str) -> str:
    return f"Copy it again, retrain it with hiriseice:train, or {_leave_empty(parameter)}."


def _check_replay(replay: Dict, input_size: int) -> Dict:
    images = np.asarray(replay["images"])
    labels = np.asarray(replay["labels"])
    kinds = np.asarray(replay["kinds"]).astype(str)
    n = len(images)
    if images.dtype != np.uint8 or images.shape[1:] != (input_size, input_size) or labels.shape != (n,) or kinds.shape != (n,):
        raise ValueError(f"a replay set needs uint8 images (n, {input_size}, {input_size}) with n labels and n kinds; got {images.dtype} {images.shape}, {labels.shape}, {kinds.shape}")
    if not set(labels.tolist()) <= {0, 1}:
        raise ValueError("replay labels must be 0 or 1")
    return {"images": images, "labels": labels.astype(np.int8), "kinds": kinds}


def save(keras_model, metadata: Dict, path: str, replay: Optional[Dict] = None) -> None:
    """Write atomically: a reader never sees a half-written model file.

    replay: None, or {"images": uint8 (n, input_size, input_size), "labels": 0/1 (n,), "kinds": str (n,)},
    stored as replay.npz with its checksum and a summary in the metadata."""
    metadata, replay_bytes = _with_replay(metadata, replay)
    with tempfile.TemporaryDirectory() as tmp:
        keras_path = os.path.join(tmp, KERAS_MEMBER)
        # An uncompiled copy: the optimizer's state would triple the file and is not needed to
        # continue training (Adam restarts with the new labels). Rebuilt from the architecture
        # alone, as clone_model would also copy the compile settings (a training-only schedule).
        import keras

        shareable = keras.Model.from_config(keras_model.get_config())
        shareable.set_weights(keras_model.get_weights())
        finetune.thaw(shareable)
        shareable.save(keras_path)
        with open(keras_path, "rb") as handle:
            metadata = dict(metadata, weights_sha256=hashlib.sha256(handle.read()).hexdigest())
        with files.writing(path, "The model file") as partial, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(METADATA_MEMBER, json.dumps(metadata, indent=2, sort_keys=True))
            archive.write(keras_path, KERAS_MEMBER)
            if replay_bytes is not None:
                archive.writestr(REPLAY_MEMBER, replay_bytes, zipfile.ZIP_STORED)  # already compressed


def _with_replay(metadata: Dict, replay: Optional[Dict]) -> Tuple[Dict, Optional[bytes]]:
    """(metadata with the replay set's summary and checksum, or without any; the replay.npz bytes or None)."""
    metadata = {k: v for k, v in metadata.items() if k not in ("replay", "replay_sha256")}
    if replay is None:
        return metadata, None
    replay = _check_replay(replay, metadata["input_size"])
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **replay)
    replay_bytes = buffer.getvalue()
    kinds, counts = np.unique(replay["kinds"], return_counts=True)
    metadata["replay"] = {"examples": int(len(replay["labels"])), "icy": int(replay["labels"].sum()), "kinds": {str(k): int(c) for k, c in zip(kinds, counts)}}
    metadata["replay_sha256"] = hashlib.sha256(replay_bytes).hexdigest()
    return metadata, replay_bytes


def _rewrite(path: str, metadata: Dict, replay_bytes: Optional[bytes] = None) -> None:
    """The model file with new metadata (and, given, a new replay set), its network copied byte for byte; atomically."""
    with files.writing(path, "The model file") as partial, zipfile.ZipFile(path) as source, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(METADATA_MEMBER, json.dumps(metadata, indent=2, sort_keys=True))
        for member in source.infolist():
            if member.filename == REPLAY_MEMBER and replay_bytes is not None:
                continue
            if member.filename != METADATA_MEMBER:
                archive.writestr(member, source.read(member.filename))
        if replay_bytes is not None:
            archive.writestr(REPLAY_MEMBER, replay_bytes, zipfile.ZIP_STORED)  # already compressed


def store_metadata(path: str, metadata: Dict) -> None:
    """Write ``metadata`` into the model file ``path`` (e.g. a new measurement of its weights),
    its network and replay set copied byte for byte; atomically, like save. The weights' and
    replay's checksums must stay those of the file."""
    _require_same_checksums(path, metadata, ("weights_sha256", "replay_sha256"))
    _rewrite(path, metadata)


def store_replay(path: str, replay: Dict, metadata: Optional[Dict] = None) -> None:
    """Replace the model file's replay set (e.g. to add reference crops), its network kept, in
    one rewrite with ``metadata`` (default: the file's; its replay summary and checksum are
    replaced); atomically, like save."""
    if metadata is not None:
        _require_same_checksums(path, metadata, ("weights_sha256",))
    metadata, replay_bytes = _with_replay(metadata or read_metadata(path), replay)
    _rewrite(path, metadata, replay_bytes)


def _require_same_checksums(path: str, metadata: Dict, checksums) -> None:
    """ValueError unless ``metadata`` carries the model file's own ``checksums`` (it describes these weights)."""
    stored = read_metadata(path)
    for key in checksums:
        if metadata.get(key) != stored.get(key):
            raise ValueError(f"the metadata's {key} is not the model file's: it describes other weights")


def load_replay(path: str, parameter: str = "MODEL") -> Optional[Dict]:
    """The model file's replay set ({"images", "labels", "kinds"} as in save), or None when it has none. No TensorFlow."""
    path = resolve_model_path(path)
    metadata = read_metadata(path, parameter)
    try:
        with zipfile.ZipFile(path) as archive:
            if REPLAY_MEMBER not in archive.namelist():
                return None
            data = archive.read(REPLAY_MEMBER)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise ModelFileError(f"The replay examples inside '{path}' ({parameter}) cannot be unpacked ({exc}); the file is damaged. {_damaged(parameter)}") from None
    if hashlib.sha256(data).hexdigest() != metadata.get("replay_sha256"):
        raise ModelFileError(f"The replay examples inside '{path}' ({parameter}) do not match the checksum in its metadata: the file was damaged or edited. {_damaged(parameter)}")
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        return _check_replay({key: stored[key] for key in ("images", "labels", "kinds")}, metadata["input_size"])


def checked_network_bytes(path: str, parameter: str = "MODEL", metadata: Optional[Dict] = None) -> bytes:
    """The network member of a model file, unpacked and checked against its metadata's
    weights_sha256 (no TensorFlow: detect checks the file even where it scores a cached export)."""
    path = resolve_model_path(path)
    metadata = metadata or read_metadata(path, parameter)
    try:
        with zipfile.ZipFile(path) as archive:
            data = archive.read(KERAS_MEMBER)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # damaged compressed data
        raise ModelFileError(f"The network inside '{path}' ({parameter}) cannot be unpacked ({exc}); the file is damaged. {_damaged(parameter)}") from None
    expected = metadata.get("weights_sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise ModelFileError(
            f"The network inside '{path}' ({parameter}) does not match the checksum in its metadata: the file was damaged or edited. {_damaged(parameter)}"
        )
    return data


def load(path: str, parameter: str = "MODEL") -> Tuple[object, Dict]:
    """(keras model, metadata). Imports TensorFlow: worker side only."""
    path = resolve_model_path(path)
    metadata = read_metadata(path, parameter)
    data = checked_network_bytes(path, parameter, metadata)
    import keras

    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, KERAS_MEMBER), "wb") as handle:
            handle.write(data)
        try:
            network = keras.models.load_model(os.path.join(tmp, KERAS_MEMBER), compile=False)
        except Exception as exc:  # Keras raises many kinds for damaged archives.
            raise ModelFileError(
                f"The network inside '{path}' ({parameter}) cannot be loaded ({type(exc).__name__}: {exc}). The file is damaged or was written by an "
                f"incompatible Keras; retrain it with hiriseice:train, or {_leave_empty(parameter)}."
            ) from None
    shape = network.input_shape
    if len(shape) != 4 or shape[1] != metadata["input_size"] or shape[3] != 1:
        raise ModelFileError(
            f"The network in '{path}' ({parameter}) expects input {shape}, but its metadata says {metadata['input_size']} px grayscale. Retrain it with hiriseice:train."
        )
    return network, metadata
