"""Setting up the worker's Python from inside QGIS: the parts without Qt, so they are tested anywhere.

Which Python the worker venv is made from on each OS, the requirements for this machine, pip's
progress read from its output, and the worker check's answer. plugin/worker_dialogs.py runs the
steps with QProcess. Like scripts/install, the venv is made with --system-site-packages, so it
sees the GDAL (osgeo) of the Python it is made from: Debian's python3-gdal, QGIS's own on Windows
(OSGeo4W, standalone installer) and macOS (QGIS.app).
"""

import glob
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

try:
    from ..model import WORKER_PYTHONS
except ImportError:  # plugin imported as a top-level package (tests, scripts)
    from model import WORKER_PYTHONS

OLDEST_PYTHON, NEWEST_PYTHON = WORKER_PYTHONS

# Printed by the base Python before anything is made: its version, whether it can make a venv, its GDAL.
PROBE = (
    "import json, platform, sys\n"
    "answer = {'version': list(sys.version_info[:3]), 'executable': sys.executable, 'venv': True, 'gdal': None,\n"
    "          'platform': sys.platform, 'machine': platform.machine(), 'macos': platform.mac_ver()[0]}\n"
    "try:\n"
    "    import venv, ensurepip\n"
    "except ImportError:\n"
    "    answer['venv'] = False\n"
    "try:\n"
    "    from osgeo import gdal\n"
    "    answer['gdal'] = gdal.__version__\n"
    "except ImportError:\n"
    "    pass\n"
    "print(json.dumps(answer))\n"
)


@dataclass(frozen=True)
class BasePython:
    path: str
    origin: str  # where it was found, said to the user


def _version_key(path: str) -> Tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path))


def _search_list(platform_name: str, base_prefix: str, executable: str, environ: Mapping[str, str], root: str) -> List[Tuple[str, str]]:
    """(origin, glob pattern) in order of preference for one OS."""
    join = os.path.join
    if platform_name.startswith("win"):
        drive = root or environ.get("SystemDrive", "C:") + "\\"
        program_files = environ.get("ProgramFiles") or join(drive, "Program Files")
        searches = [("this QGIS's Python", join(glob.escape(base_prefix), "python.exe"))]
        if environ.get("OSGEO4W_ROOT"):
            searches.append(("OSGeo4W", join(glob.escape(environ["OSGEO4W_ROOT"]), "apps", "Python3*", "python.exe")))
        searches += [
            ("OSGeo4W", join(glob.escape(drive), "OSGeo4W", "apps", "Python3*", "python.exe")),
            ("OSGeo4W", join(glob.escape(drive), "OSGeo4W64", "apps", "Python3*", "python.exe")),
            ("QGIS standalone installer", join(glob.escape(program_files), "QGIS *", "apps", "Python3*", "python.exe")),
        ]
        if environ.get("LOCALAPPDATA"):
            searches.append(("python.org", join(glob.escape(environ["LOCALAPPDATA"]), "Programs", "Python", "Python3*", "python.exe")))
        searches.append(("python.org", join(glob.escape(program_files), "Python3*", "python.exe")))
        return searches
    if platform_name == "darwin":
        searches = []
        if "/Contents/MacOS/" in executable:  # QGIS.app's binary: its Python sits beside it
            searches.append(("this QGIS's Python", join(glob.escape(os.path.dirname(executable)), "bin", "python3")))
        searches += [
            ("this QGIS's Python", join(glob.escape(base_prefix), "bin", "python3")),
            ("QGIS.app", join(root, "Applications", "QGIS*.app", "Contents", "MacOS", "bin", "python3")),
            ("QGIS.app", join(glob.escape(environ.get("HOME", "~")), "Applications", "QGIS*.app", "Contents", "MacOS", "bin", "python3")),
            ("Homebrew", join(root, "opt", "homebrew", "bin", "python3.1[0-9]")),
            ("Homebrew", join(root, "usr", "local", "bin", "python3.1[0-9]")),
            ("python.org", join(root, "Library", "Frameworks", "Python.framework", "Versions", "3.*", "bin", "python3")),
        ]
        return searches
    return [
        ("this QGIS's Python", join(glob.escape(base_prefix), "bin", "python3")),
        ("the system's Python", join(root, "usr", "bin", "python3")),
    ]


def base_python_candidates(platform_name: str = sys.platform, base_prefix: str = sys.base_prefix, executable: str = sys.executable,
                           environ: Optional[Mapping[str, str]] = None, root: Optional[str] = None) -> List[BasePython]:
    """Pythons on this machine a worker venv can be made from, best first, each once.

    Inside QGIS sys.executable is QGIS itself, not a Python; its interpreter is found from sys.base_prefix.
    `root` is the file system's root (tests give a folder); by default / or the system drive.
    """
    environ = os.environ if environ is None else environ
    if root is None:
        root = "" if platform_name.startswith("win") else os.sep
    found: List[BasePython] = []
    seen = set()
    for origin, pattern in _search_list(platform_name, base_prefix, executable, environ, root):
        for path in sorted(glob.glob(pattern), key=_version_key, reverse=True):  # newest version first
            key = os.path.normcase(os.path.realpath(path))
            if os.path.isfile(path) and key not in seen:
                seen.add(key)
                found.append(BasePython(path, origin))
    if not platform_name.startswith("win") and root == os.sep:
        on_path = shutil.which("python3", path=environ.get("PATH"))
        if on_path and os.path.normcase(os.path.realpath(on_path)) not in seen:
            found.append(BasePython(on_path, "python3 on PATH"))
    return found


def venv_python(folder: str, platform_name: str = sys.platform) -> str:
    if platform_name.startswith("win"):
        return os.path.join(folder, "Scripts", "python.exe")
    return os.path.join(folder, "bin", "python")


# Detect's faster runtime (model/runtime.py), optional: these have macOS wheels from macOS 14 only.
ONNX_PACKAGES = ("onnxruntime", "onnx", "tf2onnx")
ONNX_OLDEST_MACOS = 14


def requirements_for_machine(text: str, platform_name: str = sys.platform, machine: str = "", macos: str = "") -> str:
    """The pinned requirements as pip must get them here: tensorflow-cpu has wheels only for x86-64
    Linux and Windows; macOS (Apple silicon) and ARM Linux get the same version of `tensorflow`; a Mac
    older than macOS 14 goes without ONNX Runtime (no wheels), and detect runs on TensorFlow there."""
    machine = machine.lower()
    major = macos.split(".")[0]
    if platform_name == "darwin" and major.isdigit() and int(major) < ONNX_OLDEST_MACOS:
        text = "".join(line for line in text.splitlines(True) if re.split(r"[=<>;\s]", line, 1)[0] not in ONNX_PACKAGES)
    if platform_name.startswith(("linux", "win")) and machine in ("x86_64", "amd64", ""):
        return text
    return re.sub(r"(?m)^tensorflow-cpu==", "tensorflow==", text)


# The longest file path inside tensorflow-cpu 2.21's Windows wheel (a header under tensorflow/include/external/
# envoy_api/...), and where pip puts it in a venv: Windows refuses paths over 259 characters unless long paths are on.
TENSORFLOW_LONGEST_PATH = 163
WINDOWS_MAX_PATH = 259


def windows_path_problem(folder: str, long_paths_enabled: bool) -> Optional[str]:
    """Why pip could not unpack TensorFlow into a venv in this folder on Windows (paths too long), or None."""
    longest = len(folder.rstrip("\\/")) + len("\\Lib\\site-packages\\") + TENSORFLOW_LONGEST_PATH
    if long_paths_enabled or longest <= WINDOWS_MAX_PATH:
        return None
    room = WINDOWS_MAX_PATH - len("\\Lib\\site-packages\\") - TENSORFLOW_LONGEST_PATH
    return (f"The folder {folder} is {len(folder)} characters long; TensorFlow's files would lie {longest} characters deep in it, "
            f"past Windows' limit of {WINDOWS_MAX_PATH}, and pip would fail after minutes. Choose a folder of at most {room} "
            "characters (e.g. C:\\hiriseice-worker), or ask an administrator to enable long paths (LongPathsEnabled).")


def requirement_names(text: str) -> List[str]:
    """The packages the requirements name, each once (a package pinned per Python version has two lines)."""
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"[A-Za-z0-9._-]+", line)
        if match and not line.startswith("-") and normalised_name(match.group(0)) not in names:
            names.append(normalised_name(match.group(0)))
    return names


def normalised_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def probe_problem(answer: Dict) -> Optional[str]:
    """Why a base Python (its PROBE answer) cannot hold the worker, or None."""
    version = tuple(answer.get("version") or ())[:2]
    path = answer.get("executable", "this Python")
    if not OLDEST_PYTHON <= version <= NEWEST_PYTHON:
        shown = ".".join(str(v) for v in version) or "unknown"
        return (f"{path} is Python {shown}; the worker's pinned TensorFlow 2.21 stack needs Python "
                f"{OLDEST_PYTHON[0]}.{OLDEST_PYTHON[1]} to {NEWEST_PYTHON[0]}.{NEWEST_PYTHON[1]}. Choose another Python.")
    if answer.get("platform") == "darwin" and (answer.get("machine") or "").lower() == "x86_64":
        return (f"{path} runs on Intel (x86_64), for which TensorFlow 2.21 has no macOS wheel: pip would fail after minutes. "
                "On an Apple-silicon Mac, use the Apple-silicon build of QGIS (not one under Rosetta) and its Python; "
                "an Intel Mac cannot run the worker.")
    if not answer.get("venv"):
        return f"{path} cannot make a virtual environment (no venv/ensurepip). On Debian or Ubuntu: sudo apt install python3-venv."
    if not answer.get("gdal"):
        return (f"{path} has no GDAL (osgeo), which the worker reads rasters with. Choose QGIS's own Python, or a Python "
                f"with GDAL (Debian: python3-gdal).")
    return None


def parse_probe(output: str) -> Optional[Dict]:
    for line in reversed(output.splitlines()):
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict) and "version" in answer:
            return answer
    return None


class PipProgress:
    """How far `pip install -r` is, from its output: resolving each requirement fills RESOLVED, then
    installing, then done. pip prints no byte counts without a terminal, so this counts packages."""

    RESOLVED = 0.8
    INSTALLING = 0.85

    def __init__(self, names: Sequence[str]):
        self.expected = set(names)
        self.seen = set()
        self.fraction = 0.0

    def feed(self, line: str) -> float:
        match = re.match(r"\s*(?:Collecting|Requirement already satisfied:)\s+([A-Za-z0-9._-]+)", line)
        if match:
            self.seen.add(normalised_name(match.group(1)))
            done = len(self.seen & self.expected) / max(1, len(self.expected))
            self.fraction = max(self.fraction, self.RESOLVED * done)
        elif line.startswith("Installing collected packages"):
            self.fraction = max(self.fraction, self.INSTALLING)
        elif line.startswith("Successfully installed"):
            self.fraction = 1.0
        return self.fraction


def worker_answer(output: str) -> Tuple[Optional[Dict], Optional[str]]:
    """(the `info` result, None) or (None, the error) from `python -m model --jsonl info`'s stdout."""
    for line in output.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if not isinstance(message, dict):
            continue
        if message.get("type") == "result":
            return {k: v for k, v in message.items() if k != "type"}, None
        if message.get("type") == "error":
            return None, str(message.get("message") or message.get("code"))
    return None, None
