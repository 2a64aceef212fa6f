"""Errors the engine reports to its users.

Every message names the problem and the fix, because it reaches a geologist unchanged as a
QgsProcessingException or as the command line's last words.
"""


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
