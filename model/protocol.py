"""How the worker talks to whoever started it.

With ``--jsonl`` every line on stdout is one JSON object:
  {"type": "progress", "fraction": 0.42}
  {"type": "log", "message": "..."}
  {"type": "warning", "message": "..."}   something the user should check; the run goes on
  {"type": "written", "path": "..."}   an output about to be put in place: the client removes it if the run then fails
  {"type": "result", ...}            the last line of a successful run
  {"type": "error", "code": "...", "message": "..."}   then exit status 2
Without it, progress and logs go to stderr as text for people.

``python -m model --jsonl serve`` runs one job per stdin line ({"id": ..., "command": "detect",
"arguments": [...]}) and tags every line of a job with its "id"; a job's lines open with
{"type": "started"} and close with {"type": "done", "status": ...}, the exit status the one-shot
command would have had.
"""

import json
import os
import sys
import time


# Unicode's bidirectional controls: a file named with one (U+202E) turned the rest of every line naming it right to left in the
# Processing log and the terminal. Shown escaped in messages; names stay as they are in results and outputs.
BIDI_CONTROLS = {ord(c): f"\\u{ord(c):04x}" for c in "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"}
# The other control characters but the tab, and Unicode's line and paragraph separators: a file named with a newline broke
# its message into two log lines, the second without its "warning:"; a carriage return or an escape sequence rewrote a
# terminal's line. No message is meant to span lines.
LINE_CONTROLS = {**{code: ("\\n" if code == 10 else "\\r" if code == 13 else f"\\x{code:02x}")
                    for code in [*range(0x20), *range(0x7f, 0xa0)] if code != 9},
                 0x2028: "\\u2028", 0x2029: "\\u2029"}
SHOWN = {**BIDI_CONTROLS, **LINE_CONTROLS}


def shown(message: str) -> str:
    """``message`` as one line for people: its bidirectional and other control characters escaped (SHOWN)."""
    return str(message).translate(SHOWN)


class Reporter:
    def __init__(self, jsonl: bool = False, stream=None, job_id=None):
        self.jsonl = jsonl
        self.stream = stream or (sys.stdout if jsonl else sys.stderr)
        self.job_id = job_id
        self._last_progress = -1.0
        self._last_time = 0.0
        self._progress_line = False  # a terminal's progress line waits for its end

    def _send(self, message: dict) -> None:
        if self.job_id is not None:
            message = dict(message, id=self.job_id)
        self.stream.write(json.dumps(message) + "\n")
        self.stream.flush()

    def progress(self, fraction: float) -> None:
        fraction = min(1.0, max(0.0, fraction))
        now = time.monotonic()
        # Throttled: QGIS needs a moving bar, not ten thousand messages.
        if fraction < 1.0 and fraction - self._last_progress < 0.005 and now - self._last_time < 0.5:
            return
        self._last_progress, self._last_time = fraction, now
        if self.jsonl:
            self._send({"type": "progress", "fraction": round(fraction, 4)})
        else:
            self.stream.write(f"\r{100 * fraction:5.1f}%")
            self._progress_line = fraction < 1.0
            if not self._progress_line:
                self.stream.write("\n")
            self.stream.flush()

    def _line(self, text: str) -> None:
        """A line of its own, below a progress line still running."""
        self.stream.write(("\n" if self._progress_line else "") + text + "\n")
        self._progress_line = False
        self.stream.flush()

    def log(self, message: str) -> None:
        message = shown(message)
        if self.jsonl:
            self._send({"type": "log", "message": message})
        else:
            self._line(message)

    def warning(self, message: str) -> None:
        message = shown(message)
        if self.jsonl:
            self._send({"type": "warning", "message": message})
        else:
            self._line(f"warning: {message}")

    def result(self, payload: dict) -> None:
        if self.jsonl:
            self._send(dict(payload, type="result"))

    def error(self, code: str, message: str) -> None:
        message = shown(message)
        if self.jsonl:
            self._send({"type": "error", "code": code, "message": message})
        else:
            self._line(f"error: {message}")

    def written(self, path: str, message: str) -> None:
        """``message`` logged, and a file about to be put in place at ``path`` named to the client: a run that then fails
        or is stopped (on Windows, killed at once) is removed whole by the client too (processing_provider/worker.py)."""
        self.log(message)
        if self.jsonl:
            self._send({"type": "written", "path": os.path.abspath(path)})

    def started(self) -> None:
        self._send({"type": "started"})

    def done(self, status: int) -> None:
        self._send({"type": "done", "status": status})


class SilentReporter(Reporter):
    """For library use: no output."""

    def _send(self, message: dict) -> None:
        pass

    def progress(self, fraction: float) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        pass
