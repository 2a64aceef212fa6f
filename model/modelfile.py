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

REQUIRED_KEYS = ("format", "format_version", "name", "version", "input_size", "chunk_size", "normalisation", "thresholds", "architecture")

# The most a member may unpack to. The default model's are 18 KB, 1.8 MB and 27 MB; a file
# declaring more is damaged or made to exhaust memory (a zip bomb), and is refused unread.
MEMBER_LIMITS = {METADATA_MEMBER: 16 << 20, KERAS_MEMBER: 256 << 20, REPLAY_MEMBER: 1 << 30}


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
    if not os.access(path, os.R_OK):
        raise ModelFileError(f"The model file '{path}' ({parameter}) is one you may not read (its owner's permissions). Ask its owner to let you "
                             f"read it, or copy it where you can, or {_leave_empty(parameter)}.")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if METADATA_MEMBER not in names or KERAS_MEMBER not in names:
                raise ModelFileError(
                    f"'{path}' ({parameter}) is not a HiRISE Ice Patches model file (it lacks {METADATA_MEMBER} or {KERAS_MEMBER}). "
                    f"Use a *.hiriseice file written by hiriseice:train, or {_leave_empty(parameter)}."
                )
            metadata = json.loads(_read_member(archive, METADATA_MEMBER, path, parameter).decode("utf-8"))
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


def _read_member(archive: zipfile.ZipFile, name: str, path: str, parameter: str) -> bytes:
    """A member's bytes; ModelFileError, before anything is unpacked, where it declares more than MEMBER_LIMITS
    allows (zipfile unpacks no more than a member declares)."""
    declared = archive.getinfo(name).file_size
    if declared > MEMBER_LIMITS[name]:
        raise ModelFileError(f"'{path}' ({parameter}) declares its {name} {declared / 2**20:,.0f} MB unpacked, more than any model file "
                             f"holds ({MEMBER_LIMITS[name] >> 20} MB at most): it is damaged or not a model file, and was not unpacked. "
                             f"Use a *.hiriseice file written by hiriseice:train, or {_leave_empty(parameter)}.")
    return archive.read(name)


def _within_limit(data: bytes, limit: int) -> bool:
    """Whether an archive inside a member (the Keras file, the replay's npz) declares no more than ``limit`` unpacked."""
    with zipfile.ZipFile(io.BytesIO(data)) as inner:
        return sum(member.file_size for member in inner.infolist()) <= limit


def _wrong_values(metadata: Dict) -> List[str]:
    """What in the metadata has the wrong type or an impossible value, each said once."""
    def whole(value) -> bool:
        return type(value) is int and value > 0

    wrong = [f"{key} {metadata[key]!r}, not a positive whole number of pixels" for key in ("input_size", "chunk_size") if not whole(metadata[key])]
    wrong += [f"{key} {metadata[key]!r}, not a table" for key in ("normalisation", "thresholds") if not isinstance(metadata[key], dict)]
    # calibration is null where none was fitted; the others, where written, are tables
    wrong += [f"{key} {metadata[key]!r}, not a table" for key in ("architecture", "base_model", "training", "metrics")
              if key in metadata and not isinstance(metadata[key], dict)]
    if metadata.get("calibration") is not None and not isinstance(metadata["calibration"], dict):
        wrong.append(f"calibration {metadata['calibration']!r}, not a table")
    training = metadata.get("training") if isinstance(metadata.get("training"), dict) else {}
    if "split" in training and not isinstance(training["split"], dict):
        wrong.append(f"training split {training['split']!r}, not a table")
    architecture = metadata["architecture"] if isinstance(metadata["architecture"], dict) else {}
    scales = architecture.get("scales", [1])
    if not (isinstance(scales, list) and scales and all(whole(scale) for scale in scales)):
        wrong.append(f"architecture scales {scales!r}, not a list of whole numbers")
    elif whole(metadata["input_size"]) and any(metadata["input_size"] % scale for scale in scales):
        wrong.append(f"architecture scales {scales!r}, which do not divide the {metadata['input_size']} px input")
    widths = architecture.get("widths")
    if widths is not None and not (isinstance(widths, list) and all(whole(width) for width in widths)):
        wrong.append(f"architecture widths {widths!r}, not a list of whole numbers")
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
    if number(thresholds.get("icy")) and number(thresholds.get("hard_low")) and thresholds["hard_low"] > thresholds["icy"]:
        wrong.append(f"thresholds hard_low {thresholds['hard_low']} above icy {thresholds['icy']}")
    return wrong


def number(value) -> bool:
    """A finite real number, not a boolean or a string of one."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def describe(metadata: Dict) -> str:
    return f"{metadata['name']} {metadata['version']} ({metadata['chunk_size']} px chunks read at {reading_sizes(metadata)} px)"


def _without_save_time(keras_path: str) -> None:
    """Rewrite a .keras file without the time Keras stamps in it (metadata.json's date_saved, each member's
    zip date), so that the same weights give the same file and weights_sha256: two rounds with one SEED wrote
    byte-identical weights that the report, the benchmark rows and the ONNX cache took for two models."""
    with zipfile.ZipFile(keras_path) as saved:
        members = [(info, saved.read(info)) for info in saved.infolist()]
    with zipfile.ZipFile(keras_path, "w") as rewritten:
        for info, data in members:
            if info.filename == "metadata.json":
                data = json.dumps(dict(json.loads(data), date_saved="unrecorded (the model file's version dates it)")).encode("utf-8")
            rewritten.writestr(zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0)), data, compress_type=info.compress_type)


def rows_measuring(metadata: Dict, measurements: List[Dict]) -> List[Tuple[Dict, Dict]]:
    """(measurement, its row of this very model) for each benchmark measurement (a JSON whose
    "rows" name the model each scored, as describe() does, with its weights_sha256) that scored
    these very weights: a file renamed, or edited to another name and version, is not taken for another."""
    described = describe(metadata)
    found = []
    for measured in measurements:
        row = next((row for row in measured.get("rows", [])
                    if row.get("model") == described and row.get("weights_sha256") == metadata.get("weights_sha256")), None)
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
        _without_save_time(keras_path)
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
            data = _read_member(archive, REPLAY_MEMBER, path, parameter)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise ModelFileError(f"The replay examples inside '{path}' ({parameter}) cannot be unpacked ({exc}); the file is damaged. {_damaged(parameter)}") from None
    if hashlib.sha256(data).hexdigest() != metadata.get("replay_sha256"):
        raise ModelFileError(f"The replay examples inside '{path}' ({parameter}) do not match the checksum in its metadata: the file was damaged or edited. {_damaged(parameter)}")
    try:
        if not _within_limit(data, MEMBER_LIMITS[REPLAY_MEMBER]):
            raise ValueError(f"its arrays declare more than {MEMBER_LIMITS[REPLAY_MEMBER] >> 20} MB unpacked")
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            return _check_replay({key: stored[key] for key in ("images", "labels", "kinds")}, metadata["input_size"])
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # pickled objects are refused as ValueError
        raise ModelFileError(f"The replay examples inside '{path}' ({parameter}) are damaged ({exc}). {_damaged(parameter)}") from None


def checked_network_bytes(path: str, parameter: str = "MODEL", metadata: Optional[Dict] = None) -> bytes:
    """The network member of a model file, unpacked and checked against its metadata's
    weights_sha256 (no TensorFlow: detect checks the file even where it scores a cached export)."""
    path = resolve_model_path(path)
    metadata = metadata or read_metadata(path, parameter)
    try:
        with zipfile.ZipFile(path) as archive:
            data = _read_member(archive, KERAS_MEMBER, path, parameter)
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

    _check_keras_archive(data, path, parameter)
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, KERAS_MEMBER), "wb") as handle:
            handle.write(data)
        try:
            network = keras.models.load_model(os.path.join(tmp, KERAS_MEMBER), compile=False)
        except Exception as exc:  # Keras raises many kinds for damaged archives.
            if "safe_mode" in str(exc):
                raise ModelFileError(
                    f"The network inside '{path}' ({parameter}) carries Python code (a Lambda layer or the like), which is not loaded, for safety: a "
                    f"file from hiriseice:train has none. Ask whoever sent it for one written by hiriseice:train, or {_leave_empty(parameter)}."
                ) from None
            raise ModelFileError(
                f"The network inside '{path}' ({parameter}) cannot be loaded ({type(exc).__name__}: {exc}). The file is damaged or was written by an "
                f"incompatible Keras; retrain it with hiriseice:train, or {_leave_empty(parameter)}."
            ) from None
    shape = network.input_shape
    if len(shape) != 4 or shape[1] != metadata["input_size"] or shape[3] != 1:
        raise ModelFileError(
            f"The network in '{path}' ({parameter}) expects input {shape}, but its metadata says {metadata['input_size']} px grayscale. Retrain it with hiriseice:train."
        )
    if not all(np.isfinite(weights).all() for weights in network.get_weights()):
        raise ModelFileError(f"The network in '{path}' ({parameter}) holds weights that are not numbers (NaN or infinite): it was saved from a training run "
                             f"that diverged, or damaged, and would score every chunk as nothing. Use another model file, or {_leave_empty(parameter)}.")
    return network, metadata


def _check_keras_archive(data: bytes, path: str, parameter: str) -> None:
    """ModelFileError, before Keras reads anything, where the network member is not a Keras 3 archive
    or declares more than a network holds: in its members, or in the weight arrays its HDF5 file
    declares (Keras allocates those before it compares their shapes with the network's)."""
    too_large = f"declares more than {MEMBER_LIMITS[KERAS_MEMBER] >> 20} MB unpacked, more than any network of this plugin holds: it is damaged or made to exhaust memory, and was not loaded"
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ModelFileError(f"The network inside '{path}' ({parameter}) is not a Keras 3 archive: the file is damaged or of another kind. {_damaged(parameter)}")
    import h5py

    declared = 0

    def count(_, item) -> None:
        nonlocal declared
        if isinstance(item, h5py.Dataset):
            declared += int(np.prod(item.shape, dtype=np.int64)) * item.dtype.itemsize

    with zipfile.ZipFile(io.BytesIO(data)) as inner:
        if sum(member.file_size for member in inner.infolist()) > MEMBER_LIMITS[KERAS_MEMBER]:
            raise ModelFileError(f"The network inside '{path}' ({parameter}) {too_large}. {_damaged(parameter)}")
        for name in [name for name in inner.namelist() if name.endswith(".h5")]:
            try:
                with h5py.File(io.BytesIO(inner.read(name)), "r") as weights:
                    weights.visititems(count)
            except OSError:
                continue  # not HDF5 after all: Keras says what is wrong with it
    if declared > MEMBER_LIMITS[KERAS_MEMBER]:
        raise ModelFileError(f"The network inside '{path}' ({parameter}) {too_large}. {_damaged(parameter)}")
