"""model/download.py against a local HTTP server on 127.0.0.1 (started here, in a thread) serving
generated files: complete downloads, a connection dropped mid-file (resumed with Range), a server
without Range support (restarted from zero), size mismatches, retries with back-off, cancel, and
the free-space check. Nothing here talks to any other address."""

import collections
import itertools
import os
import struct
import urllib.request

import pytest

from helpers import LocalWebServer
from model import download, files
from model.errors import CancelledError


def payload(n, seed):
    """n bytes of a JP2 in outline: its signature, file type and codestream boxes, the codestream's first markers and its end."""
    head = download.JP2_SIGNATURE + struct.pack(">I4s4sI4s", 20, b"ftyp", b"jp2 ", 0, b"jp2 ") + struct.pack(">I4s", 0, b"jp2c") + download.CODESTREAM_START
    body = bytes((i * 31 + seed * 7 + (i >> 8)) % 251 for i in range(n - len(head) - 2))
    return head + body + download.CODESTREAM_END


def label(n):
    """n bytes of a PDS label: PDS_VERSION_ID first, END last."""
    first, last = b"PDS_VERSION_ID = PDS3\r\n", b"END\r\n"
    lines = b"".join(b"OBJECT_%06d = 1\r\n" % i for i in range(n // 18 + 1))
    return first + lines[: n - len(first) - len(last) - 2] + b"\r\n" + last


class FileServer(LocalWebServer):
    """Serves self.files (path -> bytes). Switches: ranges, drop_after (path -> bytes sent before the
    first N connections close), fail_status (path -> [codes], answered once those drops are used),
    etags (path -> its ETag, which an If-Range must name for a range to be sent)."""

    def __init__(self):
        self.files = {}
        self.ranges = True
        self.drop_after = {}
        self.drops_left = collections.Counter()
        self.fail_status = collections.defaultdict(list)
        self.etags = {}
        self.undeclared = set()  # paths sent without Content-Length, the end of the body being the connection's
        self.requests = []
        super().__init__(self.answer, protocol_version="HTTP/1.1")
        self.base = f"http://127.0.0.1:{self.port}"

    def answer(self, request):
        self.requests.append((request.path, request.headers.get("Range")))
        if self.fail_status[request.path] and not self.drops_left[request.path]:
            request.send_response(self.fail_status[request.path].pop(0))
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        data = self.files.get(request.path)
        if data is None:
            request.send_error(404)
            return
        start = 0
        header = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if header and self.ranges and (if_range is None or if_range == self.etags.get(request.path)):
            start = int(header.split("=")[1].split("-")[0])
            if start >= len(data):
                request.send_response(416)
                request.send_header("Content-Range", f"bytes */{len(data)}")
                request.send_header("Content-Length", "0")
                request.end_headers()
                return
            request.send_response(206)
            request.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            request.send_response(200)
        body = data[start:]
        if request.path in self.etags:
            request.send_header("ETag", self.etags[request.path])
        if request.path in self.undeclared:
            request.close_connection = True
        else:
            request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        if self.drops_left[request.path] > 0:
            self.drops_left[request.path] -= 1
            request.wfile.write(body[: self.drop_after[request.path]])
            request.wfile.flush()
            request.close_connection = True
            return
        request.wfile.write(body)
        if request.path in self.undeclared:
            request.wfile.flush()

    def url(self, path):
        return self.base + path


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.stop()


def local_downloader(folder, **options):
    """A Downloader that never uses a proxy (127.0.0.1 only), never sleeps, and records what it said."""
    said = []
    sleeps = []
    options.setdefault("retries", 3)
    d = download.Downloader(
        folder, opener=urllib.request.build_opener(urllib.request.ProxyHandler({})), timeout_s=10,
        log=said.append, sleep=sleeps.append, block_bytes=4096, reserve_bytes=0, **options
    )
    d.said, d.sleeps = said, sleeps
    return d


def item(server, path, expected=True, **kw):
    data = server.files[path]
    return download.DownloadItem(server.url(path), expected_bytes=len(data) if expected else None, **kw)


def test_jp2_and_lbl_downloaded_with_progress_in_bytes_and_files(server, tmp_path):
    server.files["/a/ESP_011605_1170_RED.JP2"] = payload(100_000, 1)
    server.files["/a/ESP_011605_1170_RED.LBL"] = b"PDS_VERSION_ID = PDS3\r\nEND\r\n"
    progress = []
    d = local_downloader(tmp_path, progress=progress.append)
    results = d.run([item(server, "/a/ESP_011605_1170_RED.JP2"), item(server, "/a/ESP_011605_1170_RED.LBL")])
    assert [r.status for r in results] == ["downloaded", "downloaded"]
    assert (tmp_path / "ESP_011605_1170_RED.JP2").read_bytes() == server.files["/a/ESP_011605_1170_RED.JP2"]
    assert (tmp_path / "ESP_011605_1170_RED.LBL").read_bytes() == server.files["/a/ESP_011605_1170_RED.LBL"]
    total = 100_000 + len(server.files["/a/ESP_011605_1170_RED.LBL"])
    assert progress[-1].bytes_done == progress[-1].bytes_total == total
    assert (progress[-1].files_done, progress[-1].files_total) == (2, 2)
    assert [p.bytes_done for p in progress] == sorted(p.bytes_done for p in progress)
    assert not files_partial(tmp_path)

    # A second run finds both complete and transfers nothing.
    before = len(server.requests)
    results = local_downloader(tmp_path).run([item(server, "/a/ESP_011605_1170_RED.JP2"), item(server, "/a/ESP_011605_1170_RED.LBL")])
    assert [r.status for r in results] == ["present", "present"] and len(server.requests) == before


def files_partial(folder):
    return [n for n in os.listdir(folder) if ".partial" in n]


def test_connection_dropped_mid_file_is_resumed_with_range(server, tmp_path):
    data = payload(200_000, 2)
    server.files["/x.JP2"] = data
    server.drop_after["/x.JP2"] = 70_000
    server.drops_left["/x.JP2"] = 2  # two connections die, at 70,000 bytes into each body
    d = local_downloader(tmp_path)
    [result] = d.run([item(server, "/x.JP2")])
    assert result.status == "downloaded", result.error
    assert (tmp_path / "x.JP2").read_bytes() == data
    ranges = [r for p, r in server.requests if p == "/x.JP2"]
    assert ranges == [None, "bytes=70000-", "bytes=140000-"]
    assert result.bytes == len(data)  # nothing fetched twice
    assert not result.restarted


@pytest.mark.parametrize("etag", [None, '"v1"'], ids=["its size changed", "its ETag changed, not its size"])
def test_a_file_changed_on_the_server_between_runs_is_downloaded_again_whole(server, tmp_path, etag):
    """The first run is cut off; before the second the product is reprocessed. Resumed, the file had been
    the old version's first bytes and the new one's rest, and was kept as downloaded."""
    old = payload(100_000, 6)
    server.files["/v.JP2"] = old
    if etag:
        server.etags["/v.JP2"] = etag
    server.drop_after["/v.JP2"] = 40_000
    server.drops_left["/v.JP2"] = 1
    server.fail_status["/v.JP2"] = [503]  # and then the server is down
    [first] = local_downloader(tmp_path, retries=0).run([item(server, "/v.JP2", expected=False)])
    assert first.status == "failed" and os.path.getsize(files.partial_path(str(tmp_path / "v.JP2"))) == 40_000
    new = payload(120_000 if etag is None else 100_000, 7)
    server.files["/v.JP2"] = new
    if etag:
        server.etags["/v.JP2"] = '"v2"'
    d = local_downloader(tmp_path)
    [second] = d.run([item(server, "/v.JP2", expected=False)])
    assert second.status in ("resumed", "downloaded") and (tmp_path / "v.JP2").read_bytes() == new
    assert any("starting again from zero" in s or "changed on the server" in s for s in d.said), d.said
    assert not files_partial(tmp_path)


def test_server_without_range_support_restarts_from_zero(server, tmp_path):
    data = payload(50_000, 3)
    server.files["/y.JP2"] = data
    server.ranges = False
    server.drop_after["/y.JP2"] = 20_000
    server.drops_left["/y.JP2"] = 1
    d = local_downloader(tmp_path)
    [result] = d.run([item(server, "/y.JP2")])
    assert result.status == "downloaded", result.error
    assert result.restarted
    assert (tmp_path / "y.JP2").read_bytes() == data
    assert [r for p, r in server.requests] == [None, "bytes=20000-"]
    assert any("ignored the Range request" in s for s in d.said)


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    data = label(30_000)
    server.files["/z.LBL"] = data
    partial = files.partial_path(str(tmp_path / "z.LBL"))
    with open(partial, "wb") as handle:
        handle.write(data[:12_345])
    [result] = local_downloader(tmp_path).run([item(server, "/z.LBL")])
    assert result.status == "resumed" and result.bytes == 30_000 - 12_345
    assert (tmp_path / "z.LBL").read_bytes() == data
    assert server.requests == [("/z.LBL", "bytes=12345-")]


def test_complete_partial_file_answered_416_is_committed(server, tmp_path):
    data = payload(5_000, 5)
    server.files["/done.JP2"] = data
    with open(files.partial_path(str(tmp_path / "done.JP2")), "wb") as handle:
        handle.write(data)
    [result] = local_downloader(tmp_path).run([item(server, "/done.JP2")])
    assert result.status == "resumed" and (tmp_path / "done.JP2").read_bytes() == data


def test_size_declared_by_the_server_disagrees_with_the_index(server, tmp_path):
    server.files["/m.JP2"] = payload(10_000, 6)
    bad = download.DownloadItem(server.url("/m.JP2"), expected_bytes=12_000)
    good_lbl = label(300)
    server.files["/m.LBL"] = good_lbl
    results = local_downloader(tmp_path).run([bad, item(server, "/m.LBL")])
    assert results[0].status == "failed"
    assert "server declares 10000 bytes but the index says 12000" in results[0].error
    assert not (tmp_path / "m.JP2").exists() and not files_partial(tmp_path)
    assert results[1].status == "downloaded"  # one failed file does not stop the others


def test_size_within_the_index_tolerance_is_accepted(server, tmp_path):
    server.files["/k.JP2"] = payload(10_000, 8)
    kbytes = download.DownloadItem(server.url("/k.JP2"), expected_bytes=round(10_000 / 1024) * 1024, tolerance_bytes=1024)
    [result] = local_downloader(tmp_path).run([kbytes])
    assert result.status == "downloaded"


def test_existing_file_of_the_wrong_size_is_fetched_again(server, tmp_path):
    data = payload(8_000, 9)
    server.files["/w.JP2"] = data
    (tmp_path / "w.JP2").write_bytes(b"truncated")
    [result] = local_downloader(tmp_path).run([item(server, "/w.JP2")])
    assert result.status == "downloaded" and (tmp_path / "w.JP2").read_bytes() == data


def test_retries_with_backoff_then_success(server, tmp_path):
    server.files["/r.JP2"] = payload(4_000, 10)
    server.fail_status["/r.JP2"] = [503, 503, 500]
    d = local_downloader(tmp_path, retries=4)
    [result] = d.run([item(server, "/r.JP2")])
    assert result.status == "downloaded" and result.attempts == 4
    assert d.sleeps == [2.0, 4.0, 8.0]


def test_a_host_that_cannot_be_found_stops_the_run_after_its_first_file(server, tmp_path):
    """With the network down every file waited out its retries (2 + 4 + 8 + 16 s): Find's 470 files, four hours."""
    server.files["/ok.JP2"] = payload(4_000, 12)
    d = local_downloader(tmp_path, retries=3)
    unknown = [download.DownloadItem(f"http://hirise-pds.invalid/PDS/{name}.JP2") for name in ("ESP_1", "ESP_2")]
    with pytest.raises(download.HostNotFoundError, match=r"ESP_1.JP2: cannot connect \(.*\) after 4 attempts: the network is down, or the host hirise-pds.invalid is wrong"):
        d.run([item(server, "/ok.JP2")] + unknown)
    assert d.sleeps == [2.0, 4.0, 8.0]  # the first unknown host's retries, and no second file's
    assert (tmp_path / "ok.JP2").exists() and not any(name.startswith(("ESP_2", ".ESP_2")) for name in os.listdir(tmp_path))


def test_a_cancel_cuts_a_retry_back_off_short(tmp_path):
    """Cancel waited out the back-off it came in (up to a minute)."""
    import time

    pressed = []
    d = download.Downloader(str(tmp_path), is_cancelled=lambda: bool(pressed))
    started = time.monotonic()
    pressed.append(True)
    d.sleep(30.0)
    assert time.monotonic() - started < 1.0


def test_gives_up_after_the_retries_and_keeps_nothing_half_written(server, tmp_path):
    server.files["/g.JP2"] = payload(4_000, 11)
    server.fail_status["/g.JP2"] = [503] * 10
    d = local_downloader(tmp_path, retries=2)
    [result] = d.run([item(server, "/g.JP2")])
    assert result.status == "failed" and "HTTP 503" in result.error and result.attempts == 3
    assert not (tmp_path / "g.JP2").exists()
    assert len(server.requests) == 3


def test_giving_up_counts_the_attempts_in_a_row_that_brought_nothing(server, tmp_path):
    """Attempts that bring more of the file do not count against the retries, and the message says so."""
    server.files["/p.JP2"] = payload(200_000, 12)
    server.drop_after["/p.JP2"] = 30_000
    server.drops_left["/p.JP2"] = 2  # two attempts each bring 30,000 bytes, then the server fails
    server.fail_status["/p.JP2"] = [503] * 10
    [result] = local_downloader(tmp_path, retries=2).run([item(server, "/p.JP2")])
    assert result.status == "failed" and result.attempts == 5 and result.size == 60_000
    assert "gave up after 3 attempts in a row that brought nothing, 5 in all" in result.error and "the partial file is kept" in result.error, result.error


def test_not_found_is_not_retried(server, tmp_path):
    d = local_downloader(tmp_path)
    [result] = d.run([download.DownloadItem(server.url("/missing.JP2"))])
    assert result.status == "failed" and "HTTP 404" in result.error and len(server.requests) == 1


def test_unreachable_server_fails_after_bounded_retries(tmp_path):
    # A port on 127.0.0.1 that nobody listens on (bound, then closed).
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    d = local_downloader(tmp_path, retries=2)
    [result] = d.run([download.DownloadItem(f"http://127.0.0.1:{port}/a.JP2", expected_bytes=10)])
    assert result.status == "failed" and "cannot connect" in result.error and result.attempts == 3
    assert "gave up after 3 attempts; nothing arrived, run again when it is reachable" in result.error  # no partial file to speak of


def test_cancel_keeps_the_partial_file_for_the_next_run(server, tmp_path):
    data = payload(100_000, 12)
    server.files["/c.JP2"] = data
    progress = []
    asked = itertools.count()
    d = local_downloader(tmp_path, progress=progress.append, is_cancelled=lambda: next(asked) >= 10)  # after about 8 blocks of 4,096 bytes
    with pytest.raises(CancelledError, match="resumes them"):
        d.run([item(server, "/c.JP2")])
    assert not (tmp_path / "c.JP2").exists()
    kept = os.path.getsize(files.partial_path(str(tmp_path / "c.JP2")))
    assert 20_000 <= kept < len(data)
    [result] = local_downloader(tmp_path).run([item(server, "/c.JP2")])
    assert result.status == "resumed" and result.bytes == len(data) - kept
    assert (tmp_path / "c.JP2").read_bytes() == data


def test_free_space_checked_before_anything_is_fetched(server, tmp_path, small_disk):
    """200 kB onto a real disk of 64 kB (a mock of the free space had ignored which disk was asked)."""
    server.files["/big.JP2"] = payload(200_000, 13)
    with pytest.raises(download.DiskSpaceError, match="Not enough free space"):
        local_downloader(small_disk(64)).run([item(server, "/big.JP2")])
    assert server.requests == []
    # What is already on disk does not count again.
    (tmp_path / "big.JP2").write_bytes(server.files["/big.JP2"])
    assert download.check_free_space(str(tmp_path), [item(server, "/big.JP2")], reserve_bytes=0) == 0


def test_item_names_and_duplicates(tmp_path):
    assert download.DownloadItem("http://127.0.0.1:1/PDS/RDR/ESP_1_RED.JP2?x=1").name == "ESP_1_RED.JP2"
    with pytest.raises(download.DownloadError):
        download.DownloadItem("http://127.0.0.1:1/")
    with pytest.raises(download.DownloadError, match="Several URLs"):
        local_downloader(tmp_path).run([download.DownloadItem("http://127.0.0.1:1/a/X.JP2"), download.DownloadItem("http://127.0.0.1:1/b/X.JP2")])


def test_footprints_give_each_url_once_with_the_size_the_index_gives():
    """Find's footprints as rows: an observation's products share no URL, but two footprints of one product (a layer
    merged from two finds) fetch it once; ODE's sizes in whole KBytes are allowed their rounding."""
    names = ["product_id", "jp2_url", "lbl_url", "jp2_bytes", "lbl_bytes", "size_unit_bytes"]
    row = {"product_id": "ESP_1_RED", "jp2_url": "http://h/ESP_1_RED.JP2", "lbl_url": "http://h/ESP_1_RED.LBL",
           "jp2_bytes": 2048.0, "lbl_bytes": None, "size_unit_bytes": 1024}
    items = download.footprint_items(names, [row, dict(row), {**row, "jp2_url": "", "lbl_url": "http://h/ESP_2_RED.LBL"}])
    assert [(i.name, i.expected_bytes, i.tolerance_bytes) for i in items] == [
        ("ESP_1_RED.JP2", 2048, 1023), ("ESP_1_RED.LBL", None, 0), ("ESP_2_RED.LBL", None, 0)]
    assert [i.name for i in download.footprint_items(names, [row], images=False)] == ["ESP_1_RED.LBL"]
    # the CSV index gives no sizes and no precision: nothing to check against
    (item,) = download.footprint_items(["jp2_url"], [{"jp2_url": "http://h/ESP_3_RED.JP2"}], labels=False)
    assert (item.expected_bytes, item.tolerance_bytes) == (None, 0)
    with pytest.raises(download.DownloadError, match="no jp2_url or lbl_url field"):
        download.footprint_items(["name"], [{"name": "x"}])


def test_a_web_page_sent_in_a_products_place_is_not_kept_and_a_rerun_fetches_the_product(server, tmp_path):
    """A maintenance or login page answered 200 was renamed to the JP2's name where the index gave no size, and every
    later run found it 'present': Detect then said the file is no raster, and downloading again did nothing."""
    page = b"<!DOCTYPE html>\n<html><body>The archive is down for maintenance.</body></html>\n"
    server.files["/h.JP2"] = page
    server.files["/h.LBL"] = page
    server.files["/after.JP2"] = payload(5_000, 14)
    results = local_downloader(tmp_path).run([item(server, "/h.JP2", expected=False), item(server, "/h.LBL", expected=False),
                                              item(server, "/after.JP2", expected=False)])
    assert [r.status for r in results] == ["failed", "failed", "downloaded"]
    assert results[0].error.startswith("the file is a web page (HTML), not the product (it begins '<!DOCTYPE html>.<html><body>The archive '); it was not kept."), results[0].error
    assert "open the URL in a browser" in results[0].error and results[1].error.startswith("the file is a web page (HTML), not the product")
    assert not (tmp_path / "h.JP2").exists() and not (tmp_path / "h.LBL").exists() and not files_partial(tmp_path)
    # One kept by an older run is fetched again, not reported present.
    (tmp_path / "h.JP2").write_bytes(page)
    server.files["/h.JP2"] = payload(6_000, 15)
    d = local_downloader(tmp_path)
    [again] = d.run([item(server, "/h.JP2", expected=False)])
    assert again.status == "downloaded" and (tmp_path / "h.JP2").read_bytes() == server.files["/h.JP2"]
    assert any(said.startswith("h.JP2 on disk is a web page (HTML)") and said.endswith("downloading it again") for said in d.said), d.said


@pytest.mark.parametrize("path, data", [("/u.JP2", payload(60_000, 16)), ("/u.LBL", label(60_000))])
def test_a_body_of_undeclared_size_cut_off_is_resumed_not_kept_as_whole(server, tmp_path, path, data):
    """Without Content-Length (nor an index size) a connection that closed early ended the body as if whole."""
    server.files[path] = data
    server.undeclared.add(path)
    server.drop_after[path] = 25_000
    server.drops_left[path] = 1
    d = local_downloader(tmp_path)
    [result] = d.run([item(server, path, expected=False)])
    assert result.status == "downloaded" and (tmp_path / path[1:]).read_bytes() == data, (result, d.said)
    assert [r for _, r in server.requests] == [None, "bytes=25000-"]
    assert any("it was cut off; resuming" in said for said in d.said), d.said


def test_a_cut_off_file_on_disk_is_resumed_from_its_bytes(server, tmp_path):
    data = payload(40_000, 17)
    server.files["/c2.JP2"] = data
    (tmp_path / "c2.JP2").write_bytes(data[:15_000])
    [result] = local_downloader(tmp_path).run([item(server, "/c2.JP2", expected=False)])
    assert result.status == "resumed" and result.bytes == 25_000 and (tmp_path / "c2.JP2").read_bytes() == data
    assert server.requests == [("/c2.JP2", "bytes=15000-")]


def test_a_url_without_its_scheme_fails_that_file_alone(server, tmp_path):
    server.files["/ok.JP2"] = payload(3_000, 18)
    results = local_downloader(tmp_path).run([download.DownloadItem("PDS/RDR/ESP/x_RED.JP2"), item(server, "/ok.JP2")])
    assert [r.status for r in results] == ["failed", "downloaded"]
    assert results[0].error.startswith("'PDS/RDR/ESP/x_RED.JP2' is not a web address: it needs http:// or https://"), results[0].error


def test_a_file_too_large_for_the_disk_stops_the_run_with_what_to_do_and_keeps_the_partial_file(server, tmp_path):
    """A write that fails (here EFBIG, from a file-size limit, as on FAT32 at 4 GB; a full disk is ENOSPC) ended in a
    Python traceback and left the next products untried without a word of why."""
    import resource
    import signal

    server.files["/f.JP2"] = payload(100_000, 19)
    server.files["/next.JP2"] = payload(1_000, 20)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing the process
    previous_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, previous_limit[1]))
    try:
        with pytest.raises(download.DiskSpaceError) as raised:
            local_downloader(tmp_path).run([item(server, "/f.JP2"), item(server, "/next.JP2")])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous_limit)
        signal.signal(signal.SIGXFSZ, previous_handler)
    message = str(raised.value)
    assert "holds no file this large (File too large; FAT32 stops at 4 GB" in message and "f.JP2 stopped at byte 60000" in message, message
    assert "its partial file is kept for the next run to resume. Choose a folder on another disk" in message
    assert os.path.getsize(files.partial_path(str(tmp_path / "f.JP2"))) == 60_000 and [p for p, _ in server.requests] == ["/f.JP2"]
    [resumed] = local_downloader(tmp_path).run([item(server, "/f.JP2")])
    assert resumed.status == "resumed" and (tmp_path / "f.JP2").read_bytes() == server.files["/f.JP2"]


def test_progress_is_reported_per_file_and_at_most_every_second_within_one(server, tmp_path):
    """A progress report for every block was a line per 64 KiB in qgis_process: thousands for one RED JP2."""
    server.files["/s.JP2"] = payload(2_000_000, 21)
    server.files["/t.LBL"] = label(2_000)
    progress = []
    local_downloader(tmp_path, progress=progress.append).run([item(server, "/s.JP2"), item(server, "/t.LBL")])
    assert len(progress) <= 6, len(progress)  # 489 blocks of 4,096 bytes, in well under 4 s
    assert [p.files_done for p in progress][-2:] == [1, 2] and progress[-1].bytes_done == 2_002_000


def test_many_products_are_checked_for_repeated_names_at_once(tmp_path):
    items = [download.DownloadItem(f"https://example.org/PDS/ESP_{i:06d}_1000_RED.JP2", expected_bytes=1) for i in range(40_000)]
    items.append(download.DownloadItem("https://example.org/other/ESP_000007_1000_RED.JP2", expected_bytes=1))
    with pytest.raises(download.DownloadError, match="Several URLs would be saved as ESP_000007_1000_RED.JP2"):
        download.Downloader(str(tmp_path)).run(items)


def test_a_jp2_with_a_few_bytes_of_padding_after_its_last_box_is_kept(server, tmp_path):
    """GDAL reads such a file; the box walk called it cut off and deleted it."""
    server.files["/pad.JP2"] = payload(5_000, 22) + b"\n"
    [result] = local_downloader(tmp_path).run([item(server, "/pad.JP2", expected=False)])
    assert result.status == "downloaded" and (tmp_path / "pad.JP2").read_bytes() == server.files["/pad.JP2"]
