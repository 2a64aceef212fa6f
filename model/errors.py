"""Errors the engine reports to its users.

Every message names the problem and the fix, because it reaches a geologist unchanged as a
QgsProcessingException or as the command line's last words.
"""


# How memory running out shows where it is not a MemoryError: a library that cannot be mapped, a thread
# without room for its stack, an allocation refused in C++, ONNX Runtime's arena or TensorFlow failing to allocate.
MEMORY_SIGNS = ("memoryerror", "failed to map segment", "cannot allocate memory", "can't start new thread", "out of memory", "bad_alloc",
                "failed to allocate memory", "oom when allocating")


def out_of_memory(exc_or_text) -> bool:
    """Whether an exception (or a worker's error output) says memory ran out."""
    return isinstance(exc_or_text, MemoryError) or any(sign in str(exc_or_text).lower() for sign in MEMORY_SIGNS)


class EngineError(Exception):
    """A problem with the user's input or set-up, not a bug."""

    code = "engine_error"


class RasterError(EngineError):
    code = "raster"


class DamagedRasterError(RasterError):
    """GDAL opened the file but cannot decode its pixels: a truncated download or copy."""

    code = "raster_damaged"


class NoValidChunksError(EngineError):
    code = "no_valid_chunks"


class ModelFileError(EngineError):
    code = "model_file"


class LabelError(EngineError):
    code = "labels"


class CancelledError(EngineError):
    code = "cancelled"

    def __init__(self, message="Cancelled by the user; no output was written."):
        super().__init__(message)
