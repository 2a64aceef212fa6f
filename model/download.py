"""Downloading HiRISE products (JP2 and LBL) over HTTP: resumable, size-checked, retried, cancellable.

Pure Python (urllib, shutil). Each file goes to ``model.files.partial_path(target)`` and is renamed
when complete and its size checked. Unlike the other engine outputs, a partial download is KEPT
when a run is cancelled or fails, so the next run resumes it with an HTTP Range request; a
server that ignores Range (answers 200) restarts the file from zero.

Sizes are checked twice: against what the server declares (Content-Length, or Content-Range's
total) and against the index's size where the index gives one (``expected_bytes``, within
``tolerance_bytes``: ODE gives KBytes). A file whose size disagrees with the index is not kept.
Its content is checked too, before it is kept and when it is found on disk: a JP2's boxes and
codestream end, a label's PDS_VERSION_ID and END line (a web page sent in a product's place, or a
body of undeclared size that ended early, is never taken for the product).
"""

import collections
import contextlib
import errno
import json
import os
import re
import shutil
import socket
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from . import files
from .errors import CancelledError, EngineError

USER_AGENT = "hirise-ice-patches (QGIS plugin; HiRISE RDR download)"
DEFAULT_RESERVE_BYTES = 100 * 1024 * 1024  # left free beyond the expected downloads
REPORT_SECONDS = 1.0


def _gave_up(failures: int, attempts: int) -> str:
    """How a transfer ended, counted as the retries count: the attempts in a row that brought
    nothing, since an attempt that brings more of the file starts the count again."""
    if failures == attempts:
        return f"gave up after {attempts} attempt{'s' if attempts > 1 else ''}"
    if failures == 0:
        return f"gave up after {attempts} attempts, each breaking off after a little more of the file"
    return (f"gave up after {failures} attempt{'s' if failures > 1 else ''} in a row that brought nothing, {attempts} in all: "
            "an attempt that brings more of the file starts the count of retries again")


class DownloadError(EngineError):
    code = "download"


class DiskSpaceError(DownloadError):
    code = "disk_space"


class SizeMismatchError(DownloadError):
    code = "size_mismatch"


class HostNotFoundError(DownloadError):
    """The server's name cannot be resolved even after the retries: no later file of the run would arrive either."""

    code = "host_not_found"


class _Transient(Exception):
    """A failure worth retrying (dropped connection, timeout, 5xx, short body); ``host_unknown``: the server's name
    could not be resolved (the network is down, or the URL's host is wrong)."""

    def __init__(self, message: str, host_unknown: str = ""):
        super().__init__(message)
        self.host_unknown = host_unknown


@dataclass
class DownloadItem:
    url: str
    name: str = ""  # file name in the folder; the URL's last part by default
    expected_bytes: Optional[int] = None
    tolerance_bytes: int = 0

    def __post_init__(self):
        if not self.name:
            self.name = os.path.basename(self.url.split("?", 1)[0])
        if not self.name or os.path.basename(self.name) != self.name or self.name in (".", ".."):
            raise DownloadError(f"Cannot name a file after the URL {self.url!r}: give a URL that ends with the file name.")


def footprint_items(field_names: Sequence[str], footprints: Iterable, images: bool = True, labels: bool = True) -> List[DownloadItem]:
    """The files of Find's footprints to fetch, each URL once, with the size the index gives.

    ``footprints`` are rows indexable by field name (a QgsFeature, an OGR feature's dict) with the
    fields ``field_names``; a shapefile's names cut to 10 characters are read too.
    """
    if "jp2_url" not in field_names and "lbl_url" not in field_names:
        raise DownloadError("The input has no jp2_url or lbl_url field: give the footprints made by 'Find HiRISE observations'.")
    unit_field = next((name for name in ("size_unit_bytes", "size_unit_") if name in field_names), None)
    items, seen = [], set()
    for footprint in footprints:
        unit = _whole_bytes(footprint[unit_field]) if unit_field else None
        tolerance = (unit - 1) if unit and unit > 1 else 0  # ODE's sizes are whole KBytes
        for wanted, url_field, size_field in ((images, "jp2_url", "jp2_bytes"), (labels, "lbl_url", "lbl_bytes")):
            url = footprint[url_field] if wanted and url_field in field_names else None
            if not url or not isinstance(url, str) or url in seen:
                continue
            seen.add(url)
            expected = _whole_bytes(footprint[size_field]) if size_field in field_names else None
            items.append(DownloadItem(url, expected_bytes=expected, tolerance_bytes=tolerance if expected is not None else 0))
    return items


def _whole_bytes(value) -> Optional[int]:
    try:
        return int(round(float(value))) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


@dataclass
class DownloadResult:
    item: DownloadItem
    path: str
    status: str  # downloaded, resumed, present, failed
    bytes: int = 0  # bytes transferred in this run
    size: Optional[int] = None  # the file's size on disk when done
    error: str = ""
    attempts: int = 0
    restarted: bool = False  # the server ignored Range and the file started again from zero


@dataclass
class Progress:
    bytes_done: int
    bytes_total: Optional[int]  # None while a file's size is unknown
    files_done: int
    files_total: int
    current: str = ""


JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
CODESTREAM_START = b"\xff\x4f\xff\x51"  # SOC and SIZ markers
CODESTREAM_END = b"\xff\xd9"  # EOC: a JPEG 2000 codestream's last two bytes
LABEL_BYTES = 1 << 20  # a HiRISE label is about 10 kB


class _CutOff(Exception):
    """A file that ends before its own structure does: the connection closed early on a body of undeclared size."""


def content_problem(name: str, path: str) -> str:
    """Why the file at path is not the whole product its name says ('' when it is): an archive's maintenance
    or login page is sent as 200 and HTML, and a body of undeclared size cut off early looks complete.
    Raises _CutOff for a file whose end is missing."""
    suffix = os.path.splitext(name)[1].lower()
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(1024)
        if suffix in (".jp2", ".j2k", ".j2c"):
            return _jpeg2000_problem(handle, head, size)
        if suffix == ".lbl":
            return _label_problem(head + handle.read(LABEL_BYTES))
    return _web_page(head)


def _web_page(head: bytes) -> str:
    return "is a web page (HTML), not the product" if head.lstrip().lower().startswith((b"<!doctype html", b"<html")) else ""


def _begins(head: bytes) -> str:
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in head[:40])
    return f"it begins {text!r}"


def _jpeg2000_problem(handle, head: bytes, size: int) -> str:
    if head.startswith(CODESTREAM_START):
        _check_codestream_end(handle, size)
        return ""
    if not head.startswith(JP2_SIGNATURE):
        return (_web_page(head) or "is not a JPEG 2000 file") + f" ({_begins(head)})"
    position, codestream = 0, False
    while position < size:  # the boxes, each with its length (ISO 15444-1, annex I)
        handle.seek(position)
        header = handle.read(16)
        if len(header) < 8 and codestream:  # a few bytes of padding after the image, which GDAL reads past
            break
        if len(header) < 8:
            raise _CutOff(f"ends inside a box header at byte {position}")
        length, kind = struct.unpack(">I4s", header[:8])
        if length == 1:
            if len(header) < 16:
                raise _CutOff(f"ends inside a box header at byte {position}")
            length = struct.unpack(">Q", header[8:16])[0]
        elif length == 0:  # the last box runs to the end of the file
            length = size - position
        if length < 8:
            return f"is a damaged JPEG 2000 file (a box of {length} bytes at byte {position})"
        if position + length > size:
            raise _CutOff(f"ends at byte {size}, inside a box that runs to byte {position + length}")
        if kind == b"jp2c":
            codestream = True
            _check_codestream_end(handle, position + length)
        position += length
    return "" if codestream else "is a JPEG 2000 file without an image codestream"


def _check_codestream_end(handle, end: int) -> None:
    handle.seek(max(0, end - 16))
    if not handle.read(16).rstrip(b"\0\r\n\t ").endswith(CODESTREAM_END):  # padding after it, which GDAL reads past
        raise _CutOff(f"its image codestream does not end with the end-of-codestream marker at byte {end}")


def _label_problem(text: bytes) -> str:
    if not text.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"PDS_VERSION_ID"):
        return (_web_page(text) or "is not a PDS label") + f" ({_begins(text)})"
    if not re.search(rb"(?m)^[ \t]*END[ \t]*\r?$", text):
        raise _CutOff("has no END line")
    return ""


def _size_ok(size: int, expected: Optional[int], tolerance: int) -> bool:
    return expected is None or abs(size - expected) <= tolerance


def check_free_space(folder: str, items: Sequence[DownloadItem], reserve_bytes: int = DEFAULT_RESERVE_BYTES) -> int:
    """Bytes still to fetch (sizes the index gives, less what is already on disk); DiskSpaceError if they do not fit."""
    os.makedirs(folder, exist_ok=True)
    needed = 0
    for item in items:
        if item.expected_bytes is None:
            continue
        target = os.path.join(folder, item.name)
        if os.path.isfile(target) and _size_ok(os.path.getsize(target), item.expected_bytes, item.tolerance_bytes):
            continue
        partial = files.partial_path(target)
        have = os.path.getsize(partial) if os.path.isfile(partial) else 0
        needed += max(0, item.expected_bytes - have)
    free = shutil.disk_usage(folder).free
    if needed + reserve_bytes > free:
        raise DiskSpaceError(
            f"Not enough free space in {folder}: the downloads need {needed / 1e9:.2f} GB (plus {reserve_bytes / 1e6:.0f} MB kept free) "
            f"and {free / 1e9:.2f} GB are free. Free some space, choose another folder, or select fewer footprints."
        )
    return needed


class Downloader:
    def __init__(self, folder: str, retries: int = 4, backoff_s: float = 2.0, max_backoff_s: float = 60.0, timeout_s: float = 60.0,
                 block_bytes: int = 1 << 16, opener=None, progress: Callable[[Progress], None] = lambda p: None,
                 is_cancelled: Callable[[], bool] = lambda: False, log: Callable[[str], None] = lambda s: None,
                 sleep: Optional[Callable[[float], None]] = None, reserve_bytes: int = DEFAULT_RESERVE_BYTES, log_failures: bool = True):
        """log_failures: False where the caller says each failure itself (QGIS, as an error), so the log does not repeat it."""
        self.folder = os.path.abspath(folder)
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.block_bytes = block_bytes
        self.opener = opener or urllib.request.build_opener()
        self.progress = progress
        self.is_cancelled = is_cancelled
        self.log = log
        self.sleep = sleep or self._sleep_unless_cancelled
        self.reserve_bytes = reserve_bytes
        self.log_failures = log_failures
        self._bytes_done = 0
        self._bytes_total: Optional[int] = None
        self._files_done = 0
        self._files_total = 0
        self._reported_at = float("-inf")

    # --- the run -----------------------------------------------------------------------------

    def run(self, items: Sequence[DownloadItem]) -> List[DownloadResult]:
        """Fetch every item; a failed file is recorded and the others go on. CancelledError stops the run."""
        items = list(items)
        duplicates = {name for name, count in collections.Counter(item.name for item in items).items() if count > 1}
        if duplicates:
            raise DownloadError(f"Several URLs would be saved as {', '.join(sorted(duplicates))}: give each product once.")
        check_free_space(self.folder, items, self.reserve_bytes)
        self._files_total = len(items)
        known = [i.expected_bytes for i in items]
        self._bytes_total = sum(known) if all(k is not None for k in known) else None
        self._bytes_done = 0
        self._files_done = 0
        results = []
        for item in items:
            self._check_cancelled()
            result = self._fetch(item)
            results.append(result)
            self._files_done += 1
            if result.status == "failed":
                if self.log_failures:
                    self.log(f"{item.name}: FAILED: {result.error}")
            else:
                self.log(f"{item.name}: {result.status} ({result.size} bytes)")
            self._report(item.name)
        return results

    def _report(self, current: str, throttled: bool = False) -> None:
        """Progress after each file, and during one at most every REPORT_SECONDS (each report is a line in qgis_process)."""
        now = time.monotonic()
        if throttled and now - self._reported_at < REPORT_SECONDS:
            return
        self._reported_at = now
        self.progress(Progress(self._bytes_done, self._bytes_total, self._files_done, self._files_total, current))

    def _sleep_unless_cancelled(self, seconds: float) -> None:
        """A retry's back-off, cut short by a cancel (which had waited out up to a minute of it)."""
        end = time.monotonic() + seconds
        while not self.is_cancelled() and time.monotonic() < end:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    def _check_cancelled(self) -> None:
        if self.is_cancelled():
            raise CancelledError("Download cancelled by the user; the partial files are kept and the next run resumes them.")

    def _fetch(self, item: DownloadItem) -> DownloadResult:
        target = os.path.join(self.folder, item.name)
        partial = files.partial_path(target)
        result = DownloadResult(item, target, "downloaded")
        if os.path.isfile(target):
            size = os.path.getsize(target)
            problem, cut_off = _problem(item.name, target)
            if _size_ok(size, item.expected_bytes, item.tolerance_bytes) and not problem:
                result.status, result.size = "present", size
                if item.expected_bytes is not None:
                    self._bytes_done += item.expected_bytes
                return result
            self.log(f"{item.name} on disk {problem or f'is {size} bytes, and the index says {item.expected_bytes}'}: downloading it again")
            os.replace(target, partial)
            if not cut_off:  # a cut-off file's bytes are the product's first ones: resumed
                os.truncate(partial, 0)
        start_size = os.path.getsize(partial) if os.path.isfile(partial) else 0
        if start_size:
            result.status = "resumed"
            self._bytes_done += start_size
        failures = 0
        while True:
            self._check_cancelled()
            result.attempts += 1
            before = os.path.getsize(partial) if os.path.isfile(partial) else 0
            try:
                total = self._transfer(item, partial, result)
            except _Transient as exc:
                after = os.path.getsize(partial) if os.path.isfile(partial) else 0
                failures = 0 if after > before else failures + 1
                if failures > self.retries or result.attempts > 10 * (self.retries + 1):
                    if exc.host_unknown:  # every later file would wait out its retries too: four hours for Find's 470
                        raise HostNotFoundError(
                            f"{item.name}: {exc} after {result.attempts} attempts: the network is down, or the host {exc.host_unknown} is "
                            f"wrong. The files not yet fetched were not tried; the ones finished are kept and a partial one resumes when "
                            "you run again, once connected.") from None
                    kept = "the partial file is kept, run again to resume" if after else "nothing arrived, run again when it is reachable"
                    result.status, result.error = "failed", f"{exc} ({_gave_up(failures, result.attempts)}; {kept})"
                    result.size = after
                    return result
                delay = min(self.max_backoff_s, self.backoff_s * (2 ** max(0, failures - 1)))
                self.log(f"{item.name}: {exc}; retrying in {delay:g} s from byte {after}")
                self.sleep(delay)
                continue
            except (DiskSpaceError, HostNotFoundError):
                raise  # the next file would not fit, or not arrive, either
            except DownloadError as exc:
                if isinstance(exc, SizeMismatchError):
                    _drop_partial(partial)
                result.status, result.error = "failed", str(exc)
                result.size = os.path.getsize(partial) if os.path.isfile(partial) else None
                return result
            size = os.path.getsize(partial)
            ended_early = None  # (what the log says, what a failure says) of a body that ended before the file: resumed
            if total is not None and size < total:
                ended_early = (f"connection ended at byte {size} of {total}", f"only {size} of {total} bytes arrived")
            else:
                problem, cut_off = _problem(item.name, partial)
                if cut_off and total is None:  # a body of undeclared size cut short
                    ended_early = (problem, f"the file {problem}")
            if ended_early:
                failures += 0 if size > before else 1
                if failures > self.retries:
                    result.status, result.error = "failed", f"{ended_early[1]} ({_gave_up(failures, result.attempts)}); run again to resume"
                    result.size = size
                    return result
                self.log(f"{item.name}: {ended_early[0]}; resuming")
                continue
            if problem and not (total is not None and size != total):
                _drop_partial(partial)
                result.status, result.size = "failed", size
                result.error = f"the file {problem}; it was not kept. " + (
                    "The server's own copy ends there: run again later, or tell the archive." if cut_off else
                    "An archive down for maintenance, or a URL that leads to a login page, sends a web page in its place: open the URL "
                    "in a browser, and run again when it gives the file.")
                return result
            if (total is not None and size != total) or not _size_ok(size, item.expected_bytes, item.tolerance_bytes):
                _drop_partial(partial)
                result.status = "failed"
                result.size = size
                result.error = str(SizeMismatchError(
                    f"the file is {size} bytes but {'the server declared ' + str(total) if total is not None and size != total else 'the index says ' + str(item.expected_bytes)}: "
                    "the file was not kept. The product may have been reprocessed since the index was made: refresh the index (find again) and download again."
                ))
                return result
            files.commit(partial, target)
            _drop_partial(partial)  # its validator
            result.size = size
            return result

    def _transfer(self, item: DownloadItem, partial: str, result: DownloadResult) -> Optional[int]:
        """One request, appending to the partial file; returns the file's full size when known."""
        have = os.path.getsize(partial) if os.path.isfile(partial) else 0
        try:
            request = urllib.request.Request(item.url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        except ValueError:
            raise DownloadError(f"{item.url!r} is not a web address: it needs http:// or https:// and the server's name. Correct the URL "
                                "in the layer (or find the footprints again).") from None
        validator = _read_validator(partial) if have else {}
        if_range = validator.get("etag") or validator.get("last_modified")
        if have:
            request.add_header("Range", f"bytes={have}-")
            if if_range:  # a file changed since its first bytes came is sent whole (200), not its rest
                request.add_header("If-Range", if_range)
        try:
            response = self.opener.open(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:
                match = re.search(r"/(\d+)", exc.headers.get("Content-Range", "") or "")
                exc.close()
                if match and int(match.group(1)) == have:
                    return have  # already complete
                os.truncate(partial, 0)
                self._bytes_done -= have
                raise _Transient("the partial file is longer than the server's file; starting again from zero") from None
            exc.close()
            if exc.code in (408, 425, 429) or exc.code >= 500:
                raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
            raise DownloadError(f"{item.url} answered HTTP {exc.code} {exc.reason}: check the URL (the product may have moved).") from None
        except (urllib.error.URLError, socket.timeout, ConnectionError, HTTPException, OSError) as exc:
            unknown = urllib.parse.urlsplit(item.url).hostname or "" if isinstance(getattr(exc, "reason", None), socket.gaierror) else ""
            raise _Transient(f"cannot connect ({getattr(exc, 'reason', exc)})", host_unknown=unknown) from None
        with response:
            status = response.status
            length = response.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            if have and status == 206:
                match = re.match(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", "") or "")
                if not match or int(match.group(1)) != have:
                    raise DownloadError(f"{item.url} answered a range that does not start at byte {have}: the server's Range support is broken; delete {partial} and run again.")
                total = int(match.group(3)) if match.group(3) != "*" else None
                if total is not None and validator.get("total") not in (None, total):
                    os.truncate(partial, 0)
                    self._bytes_done -= have
                    raise _Transient(f"the file on the server is now {total} bytes, not the {validator['total']} its first "
                                     f"{have} bytes came from; starting again from zero")
                mode = "ab"
            else:
                if have:
                    why = "the file changed on the server since its first bytes came" if if_range else "the server ignored the Range request"
                    self.log(f"{item.name}: {why} (HTTP {status}); restarting from zero")
                    self._bytes_done -= have
                    result.restarted = True
                total = length
                mode = "wb"
                with _writing(partial, item.name):
                    _write_validator(partial, response, total)
            if total is not None and not _size_ok(total, item.expected_bytes, item.tolerance_bytes):
                raise SizeMismatchError(
                    f"the server declares {total} bytes but the index says {item.expected_bytes}; the file was not downloaded. "
                    "The product may have been reprocessed since the index was made: refresh the index (find again) or check the URL."
                )
            if self._bytes_total is None and total is not None and self._files_total == 1:
                self._bytes_total = total
            with _writing(partial, item.name), open(partial, mode) as handle:
                while True:
                    self._check_cancelled()
                    try:
                        block = response.read(self.block_bytes)
                    except (socket.timeout, ConnectionError, HTTPException, OSError) as exc:
                        handle.flush()
                        raise _Transient(f"connection lost ({type(exc).__name__}: {exc})") from None
                    if not block:
                        break
                    handle.write(block)
                    result.bytes += len(block)
                    self._bytes_done += len(block)
                    self._report(item.name, throttled=True)
        return total


def _problem(name: str, path: str) -> Tuple[str, bool]:
    """content_problem as (what is wrong, whether it is only the end missing)."""
    try:
        return content_problem(name, path), False
    except _CutOff as exc:
        return f"{exc}: it was cut off", True


@contextlib.contextmanager
def _writing(partial: str, name: str):
    """A full disk stops the run with what to do (the partial file is kept, and resumed); other write errors fail the file."""
    try:
        yield
    except OSError as exc:
        have = os.path.getsize(partial) if os.path.isfile(partial) else 0
        kept = f"{name} stopped at byte {have}, and its partial file is kept for the next run to resume"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskSpaceError(f"The disk holding {os.path.dirname(partial)} is full ({exc.strerror}): {kept}. Free some space or choose "
                                 "another folder, and run again.") from None
        if exc.errno == errno.EFBIG:
            raise DiskSpaceError(f"The file system of {os.path.dirname(partial)} holds no file this large ({exc.strerror}; FAT32 stops at "
                                 f"4 GB, and a RED JP2 can be larger): {kept}. Choose a folder on another disk, and run again.") from None
        raise DownloadError(f"Cannot write {partial} ({exc.strerror}): check the folder, and run again.") from None


def _validator_path(partial: str) -> str:
    """Beside a partial file: what the server said of the file when its first bytes came (its ETag,
    Last-Modified and size), so that a resumed download appends only to the same version."""
    return partial + ".validator"


def _read_validator(partial: str) -> dict:
    try:
        with open(_validator_path(partial), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _write_validator(partial: str, response, total: Optional[int]) -> None:
    etag = response.headers.get("ETag") or ""
    validator = {"etag": etag if etag and not etag.startswith("W/") else "",  # a weak ETag may not be used in If-Range
                 "last_modified": response.headers.get("Last-Modified") or "", "total": total}
    with open(_validator_path(partial), "w", encoding="utf-8") as handle:
        json.dump(validator, handle)


def _drop_partial(partial: str) -> None:
    for path in (partial, _validator_path(partial)):
        if os.path.isfile(path):
            os.remove(path)


def download(folder: str, items: Sequence[DownloadItem], **options) -> List[DownloadResult]:
    return Downloader(folder, **options).run(items)


def downloaded_jp2s(paths: Sequence[str], folder: str, warn: Callable[[str], None], folder_parameter: str = "") -> List[str]:
    """The footprints' JP2s that are in ``folder``. A download that failed for some is normal: the
    others are surveyed and ``warn`` names those left out; none there at all is an error, which
    names the folder by ``folder_parameter`` where the caller has one (IMAGES_FOLDER)."""
    present, missing = [], []
    for path in paths:
        (present if os.path.isfile(path) else missing).append(path)
    if missing and not present:
        where = f"{folder_parameter} '{folder}'" if folder_parameter else f"'{folder}'"
        raise EngineError(
            f"None of the {len(paths)} footprints' JP2s is in {where} (the first: {os.path.basename(missing[0])}). "
            "Run 'Download HiRISE products' (hiriseice:download) on the footprints into that folder first, or give the folder it downloaded to."
        )
    if missing:
        warn(f"{len(missing)} of the {len(paths)} footprints' JP2s are not in '{folder}' (not downloaded yet?), so they are left out: "
             f"{', '.join(os.path.basename(p) for p in missing[:5])}{' ...' if len(missing) > 5 else ''}. Download them and run the survey "
             "again: images done are skipped.")
    return present
