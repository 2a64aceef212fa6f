"""Atomic output: every file the engine writes goes to a hidden partial name first, then is renamed.

A cancelled or failed run therefore never leaves a half-written output under the real name,
and whoever kills the worker can delete the partial files by this same naming rule. Each
destination is checked before any work (check_destination): writable, and not a file the run reads.
What fails while writing all the same (a disk that fills meanwhile) ends in one message (writing).
"""

import contextlib
import errno
import os
import re
import shutil
import stat
import sys
import tempfile
import traceback
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from .errors import EngineError


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


@contextlib.contextmanager
def writing(path: str, what: str, before_commit: Optional[Callable[[], None]] = None):
    """The partial path to write ``path`` through, renamed over ``path`` when the block ends. A write
    that fails (OSError, or GDAL's RuntimeError: a full disk, a folder gone read-only) leaves nothing
    behind and becomes one EngineError that names ``what`` ("The report") and the fix.
    ``before_commit`` runs just before the rename: a worker's line to its client there fails if the
    client has gone (cancelled), and then nothing replaces the file the user had."""
    from osgeo import gdal

    partial, failure = None, ""
    gdal.PushErrorHandler("CPLQuietErrorHandler")  # a failed GDAL write also prints each failed block
    try:
        partial = prepare(path)
        yield partial
        if before_commit is not None:
            before_commit()
        commit(partial, path)
    except (OSError, RuntimeError) as exc:
        failure = write_failure(what, path, exc)
        _close_quietly(exc)
    finally:
        gdal.PopErrorHandler()
        if partial and os.path.exists(partial):  # failed or cancelled before its rename
            remove_quietly([partial, f"{partial}.aux.xml"])
    if failure:
        raise EngineError(failure)


def _close_quietly(exc: BaseException) -> None:
    """Close what the failed write's frames still hold (a GDAL dataset, a file) now, without a
    second exception from its destructor, rather than whenever the exception is collected."""
    from osgeo import gdal

    previous = gdal.GetUseExceptions()
    gdal.DontUseExceptions()
    try:
        traceback.clear_frames(exc.__traceback__)
    finally:
        if previous:
            gdal.UseExceptions()


# GDAL's SQLite errors quote the whole statement that failed (a GeoPackage's triggers: thousands of characters) before the reason
_SQLITE_STATEMENT = re.compile(r"sqlite3_\w+\(.*\) failed: ", re.S)


def write_failure(what: str, path: str, exc: Exception) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        free_mb = shutil.disk_usage(folder).free / 1e6
    except OSError:
        free_mb = None
    if getattr(exc, "errno", None) == errno.ENOSPC or (free_mb is not None and free_mb < 1.0):
        return f"{what} could not be written to {path}: its disk is full ({free_mb or 0.0:.1f} MB free). Free some space or choose another destination, and run again."
    reason = _SQLITE_STATEMENT.sub("", getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0])
    if isinstance(exc, PermissionError) and os.path.isfile(path) and not write_refused_in(folder):
        return (f"{what} could not replace {path} ({reason}), in a folder that takes files: another program holds the file open (on Windows, "
                "a layer of it in QGIS), or it is protected. Remove its layer from QGIS or close that program, or choose another destination, and run again.")
    if _out_of_file_handles(exc, reason, folder):
        return (f"{what} could not be written to {path}: {reason}, in a folder that takes files: the process most likely ran out of "
                f"open files{_open_files_limit()}. Raise that limit (ulimit -n 4096) or close other programs, and run again.")
    return f"{what} could not be written to {path}: {reason}. Check that its folder is writable, or choose another destination, and run again."


def _out_of_file_handles(exc: Exception, reason: str, folder: str) -> bool:
    if getattr(exc, "errno", None) in (errno.EMFILE, errno.ENFILE) or "Too many open files" in reason:
        return True
    # SQLite's "unable to open database file" (SQLITE_CANTOPEN) where the folder is writable: no handle left for the file or its journal
    return "unable to open database file" in reason and os.access(folder, os.W_OK | os.X_OK)


def _open_files_limit() -> str:
    try:
        import resource  # not on Windows
    except ImportError:
        return ""
    return f" (its limit is {resource.getrlimit(resource.RLIMIT_NOFILE)[0]})"


class Claim:
    """An exclusive claim on a lock file, held while this stays open; the system lets it go when the
    process ends, however it ends (a killed survey leaves no stale claim). The file is removed on
    closing; one removed or replaced between opening and locking it is opened again, so that two
    claimants never hold two files of one name."""

    def __init__(self, path: str, busy_message: str, error=EngineError):
        self.path = path
        while True:
            try:
                self._handle = open(path, "a+")
            except OSError as exc:
                raise error(f"The lock file {path} cannot be made ({exc.strerror}): choose another folder or a shorter file name.") from None
            try:
                _lock(self._handle)
            except OSError:
                self._handle.close()
                raise error(busy_message) from None
            try:
                if os.name == "nt" or os.stat(path).st_ino == os.fstat(self._handle.fileno()).st_ino:
                    return
            except FileNotFoundError:
                pass
            self._handle.close()  # locked a file its last holder had just removed: claim the new one

    def close(self) -> None:
        if self._handle.closed:
            return
        if os.name == "nt":  # Windows removes no open file
            self._handle.close()
            remove_quietly([self.path])
        else:
            remove_quietly([self.path])
            self._handle.close()


def _lock(handle) -> None:
    """Locks the open file without waiting; OSError where another process holds it."""
    if os.name == "nt":
        import msvcrt

        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def remove_quietly(paths: Iterable[str]) -> List[str]:
    """Removes the files that are there (a failed run's partial outputs); never raises. Returns those removed."""
    removed = []
    for path in paths:
        try:
            if path and os.path.isfile(path):
                os.remove(path)
                removed.append(path)
        except OSError:
            pass
    return removed


# SQLite databases, which keep a journal beside the file they write (the GeoPackage's partial copy's).
WITH_A_JOURNAL = (".gpkg", ".sqlite", ".db")


def name_too_long(path: str, survey: bool = False) -> str:
    """Why the files written beside ``path`` while it is made cannot have their names here, or "":
    its hidden partial copy, that copy's SQLite journal (a GeoPackage) and a survey's lock
    (``survey``) must each fit the file system's limit on a name (255 bytes on most), which the
    output's own may fit and they not, so that the run would fail only after its work."""
    folder, name = os.path.split(os.path.abspath(path))
    pathconf = getattr(os, "pathconf", None)  # Unix only: every check of an output had failed on Windows
    try:
        limit = pathconf(folder, "PC_NAME_MAX") if pathconf and os.path.isdir(folder) else 255
    except (OSError, ValueError):
        limit = 255
    partial = os.path.basename(partial_path(path))
    journal = survey or name.lower().endswith(WITH_A_JOURNAL)  # a survey's output is a GeoPackage whatever its name
    beside = [partial] + ([partial + "-journal"] if journal else []) + ([name + ".survey-lock"] if survey else [])
    longest = max(len(os.fsencode(other)) for other in beside)
    if longest <= limit:
        return ""
    return (f"its name is {len(os.fsencode(name))} bytes long, and the files written beside it while it is made take up to {longest - len(os.fsencode(name))} "
            f"more, beyond this file system's {limit} bytes for a name")


# A URL's scheme: an output given one was written below the current folder ('./http:/example.com/...').
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def not_a_place_to_write(path: str, parameter: str, what: str = "file") -> str:
    """Why an output ``what`` ("file" or "folder") cannot go to ``path``, or "": a URL, or a device, named pipe
    or socket. Every output is written whole and renamed over its name: given /dev/null as a report, a run as
    root replaced the system's /dev/null with an HTML file."""
    if URL_SCHEME.match(path):
        return f"{parameter} is '{path}', a URL: outputs are written to this computer's disks. Give a {what} on them; nothing was run or written."
    kind = special_kind(path)
    if kind:
        return f"{parameter} is '{path}', {kind}, not a {what}: writing there would replace it. Give a {what} name; nothing was run or written."
    return ""


def check_destination(path: str, parameter: str, inputs: Dict[str, Iterable[str]] = None) -> None:
    """Fail before anything is read when an output cannot be written where it is asked for, or
    would replace a file the run reads (``inputs``: {parameter: paths}): every output is written
    whole and renamed over its name, so an image, a label layer or a model given again as an
    output would be lost."""
    refused = not_a_place_to_write(path, parameter)
    if refused:
        raise EngineError(refused)
    target = os.path.abspath(path)
    replaced = replaced_input(target, ((name, given) for name, paths in (inputs or {}).items() for given in paths))
    if replaced:
        raise EngineError(f"{parameter} is '{target}', which this run reads as {replaced[0]}: writing it would destroy that file. "
                          "Choose another file name; nothing was run or written.")
    if os.path.isdir(target):
        raise EngineError(f"{parameter} is '{target}', which is a folder. Give a file name in it.")
    too_long = name_too_long(target)
    if too_long:
        raise EngineError(f"{parameter} is '{target}': {too_long}. Choose a shorter file name; nothing was run or written.")
    _check_writable_folder(os.path.dirname(target), parameter)
    if os.path.exists(target) and not os.access(target, os.W_OK):
        # Renaming over it would succeed, but only the user may drop a file they protected.
        raise EngineError(f"{parameter} cannot replace '{target}': the file is read-only. Choose another file name, or make it writable.")


def replaced_input(target: str, inputs: Iterable[Tuple[str, str]]) -> Optional[Tuple[str, str]]:
    """The first (parameter, path) of ``inputs`` that is the existing file ``target`` (by any name or link)."""
    if not os.path.exists(target):
        return None
    for parameter, given in inputs:
        if given and os.path.exists(given) and os.path.samefile(target, given):
            return parameter, given
    return None


def check_folder(folder: str, parameter: str) -> None:
    """Fail before any work when a folder destination is a file or cannot be written; a missing one is created."""
    refused = not_a_place_to_write(folder, parameter, "folder")
    if refused:
        raise EngineError(refused)
    folder = os.path.abspath(folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise EngineError(f"{parameter} is '{folder}', which is a file, not a folder. Give a folder (a missing one is created).")
    _check_writable_folder(folder, parameter)


# File systems that ignore case by default: NTFS and APFS (os.path.normcase folds case on Windows only).
CASE_INSENSITIVE = sys.platform.startswith(("win", "darwin"))


def path_key(path: str) -> str:
    """One key for the names of one file on this system's usual file system: Ice.gpkg and ice.gpkg are one file on
    Windows and macOS, where one output had replaced another given in other case."""
    key = os.path.normcase(os.path.abspath(path))
    return key.casefold() if CASE_INSENSITIVE else key


def write_refused_in(folder: str) -> str:
    """Why a file cannot be made in the existing ``folder`` (found by making one), or "": os.access cannot tell on
    Windows, where it takes every folder for writable."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


def _check_writable_folder(folder: str, parameter: str) -> None:
    """Create the folder if missing and write a scratch file in it, or fail naming the parameter and the fix."""
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    try:
        if not os.path.isdir(existing):
            raise NotADirectoryError(0, f"'{existing}' is a file, not a folder")
        os.makedirs(folder, exist_ok=True)
        refused = write_refused_in(folder)
    except OSError as exc:
        refused = exc.strerror or str(exc)
    if refused:
        raise EngineError(f"{parameter} cannot be written to '{folder}' ({refused}). Choose a folder you can write to.")


def special_kind(path: str) -> str:
    """'a named pipe', 'a socket' or 'a device' for a path that names neither a file nor a folder; else ''."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return ""
    kinds = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
    return next((name for test, name in kinds if test(mode)), "")


def is_utf8(path: str) -> bool:
    """Whether a name is UTF-8 text; Python keeps other bytes as lone surrogates, which GDAL's
    bindings cannot pass and a GeoPackage's text cannot record."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(path: str) -> str:
    """A path as a message can print it, bytes that are no UTF-8 as \\x escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def missing_path_message(path: str, kind: str) -> str:
    """Why a path names no file, with the fix; empty where it names one."""
    if os.path.isfile(path):
        return ""
    if os.path.isdir(path):
        survey = ", or survey the whole folder (Survey many images, or the worker's survey command)" if kind == "raster" else ""
        return f"'{path}' is a folder, not a {kind} file. Give one file in it{survey}."
    if os.path.exists(path):
        return special_file_message(path, kind)
    if os.path.islink(path):
        return broken_link_message(path)
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        return f"'{path}' cannot be found: its folder '{folder}' does not exist. Check the path (a typo, or a drive not mounted)."
    return f"'{path}' cannot be found: there is no file '{os.path.basename(path)}' in '{folder}'. Check the name (a typo, or the file moved)."


def broken_link_message(path: str) -> str:
    """A symbolic link that leads to no file: its target is missing (a data drive not mounted), or links lead round in a loop."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"'{path}' is a symbolic link in a loop of links that never reaches a file. Point it at the image file (ln -sf IMAGE '{path}'), or give the image itself."
    target = os.path.join(os.path.dirname(path), os.readlink(path))
    return (f"'{path}' is a symbolic link to '{target}', which cannot be found. Mount or reconnect the drive it lies on, or point the "
            f"link at where the image is now (ln -sf IMAGE '{path}').")


def special_file_message(path: str, what: str = "image") -> str:
    """Why a path that names neither a file nor a folder (a named pipe, a socket, a device) cannot be
    read as one: opening it waits for whatever writes into it, perhaps for ever. Empty for anything else."""
    kind = special_kind(path)
    if not kind:
        return ""
    return f"'{path}' is {kind}, not a file: reading it would wait for whatever writes into it, perhaps for ever. Give the {what} file itself."


def unreadable_file_message(path: str, what: str = "image") -> str:
    """Why a file that exists cannot be read as one at all, with the fix (GDAL says only that it is no
    raster it knows): no permission to read it, or nothing in it. Empty for anything else."""
    if not os.path.isfile(path):
        return ""
    if not os.access(path, os.R_OK):
        return (f"'{path}' cannot be read: you have no permission to read it (mode {stat.filemode(os.stat(path).st_mode)}). "
                f"Ask its owner for read access, or give a copy of the {what} that you can read.")
    if os.path.getsize(path) == 0:
        return f"'{path}' is empty (0 bytes): a download or copy that never wrote anything. Download or copy the {what} again."
    return ""
