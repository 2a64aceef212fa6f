"""Atomic output: every file the engine writes goes to a hidden partial name first, then is renamed.

A cancelled or failed run therefore never leaves a half-written output under the real name,
and whoever kills the worker can delete the partial files by this same naming rule.
"""

import os
from typing import Iterable


def partial_path(path: str) -> str:
    """``dir/.name.partial.ext``: hidden, and with the extension GDAL's drivers recognise."""
    folder, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    return os.path.join(folder, f".{stem}.partial{ext}")


def prepare(path: str) -> str:
    """Create the folder, clear a stale partial file and return the partial path to write."""
    partial = partial_path(path)
    os.makedirs(os.path.dirname(partial), exist_ok=True)
    if os.path.exists(partial):
        os.remove(partial)
    return partial


def commit(partial: str, path: str) -> None:
    os.replace(partial, path)


def remove_quietly(paths: Iterable[str]) -> None:
    """Removes the files that are there (a failed run's partial outputs); never raises."""
    for path in paths:
        try:
            if path and os.path.isfile(path):
                os.remove(path)
        except OSError:
            pass
