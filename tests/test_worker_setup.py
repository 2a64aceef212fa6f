"""Installing the worker from inside QGIS (plugin/worker_setup.py, plugin/worker_dialogs.py).

The Qt-free parts are tested directly: Windows and macOS install trees are laid out in a temporary
folder as OSGeo4W, QGIS's standalone installer, QGIS.app, Homebrew and python.org lay them out (this
machine is Debian). The dialogs run in a fresh GUI QGIS (tests/gui_scripts/worker_setup.py) with real
QProcesses: a venv from Debian's Python with a small requirements file (never TensorFlow again),
and the Test button on the real worker.
"""

import os
import socket
import subprocess
import sys

import pytest

import gui_session
import qgis_support as qs

from plugin import worker_setup  # Qt-free: imported without QGIS


def touch(path) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()
    return str(path)


# --- where a base Python is found ------------------------------------------------------------------


def test_debian_offers_qgis_python_first(tmp_path):
    found = worker_setup.base_python_candidates("linux", base_prefix="/usr", executable="/usr/bin/qgis", environ={"PATH": ""})
    assert found[0] == worker_setup.BasePython("/usr/bin/python3", "this QGIS's Python")
    assert len({os.path.realpath(b.path) for b in found}) == len(found)  # /usr/bin/python3 once


def test_windows_osgeo4w_standalone_and_python_org(tmp_path):
    drive = tmp_path / "C"
    osgeo = touch(drive / "OSGeo4W" / "apps" / "Python312" / "python.exe")
    old_osgeo = touch(drive / "OSGeo4W" / "apps" / "Python39" / "python.exe")
    standalone = touch(drive / "Program Files" / "QGIS 3.40.1" / "apps" / "Python312" / "python.exe")
    per_user = touch(tmp_path / "Users" / "ana" / "AppData" / "Local" / "Programs" / "Python" / "Python311" / "python.exe")
    environ = {"ProgramFiles": str(drive / "Program Files"), "LOCALAPPDATA": str(tmp_path / "Users" / "ana" / "AppData" / "Local")}
    # Inside OSGeo4W's QGIS, sys.base_prefix is its Python's folder.
    found = worker_setup.base_python_candidates("win32", base_prefix=os.path.dirname(osgeo), executable=str(drive / "OSGeo4W" / "bin" / "qgis-bin.exe"), environ=environ, root=str(drive))
    assert [(b.path, b.origin) for b in found] == [
        (osgeo, "this QGIS's Python"), (old_osgeo, "OSGeo4W"), (standalone, "QGIS standalone installer"), (per_user, "python.org"),
    ]
    # OSGEO4W_ROOT names a custom OSGeo4W folder.
    custom = touch(tmp_path / "GIS" / "apps" / "Python312" / "python.exe")
    found = worker_setup.base_python_candidates("win32", base_prefix=str(tmp_path / "nowhere"), executable="", environ={"OSGEO4W_ROOT": str(tmp_path / "GIS")}, root=str(drive))
    assert found[0] == worker_setup.BasePython(custom, "OSGeo4W")


def test_macos_qgis_app_homebrew_and_python_org(tmp_path):
    bundle = tmp_path / "Applications" / "QGIS-LTR.app" / "Contents" / "MacOS"
    qgis_python = touch(bundle / "bin" / "python3")
    homebrew = touch(tmp_path / "opt" / "homebrew" / "bin" / "python3.12")
    python_org = touch(tmp_path / "Library" / "Frameworks" / "Python.framework" / "Versions" / "3.11" / "bin" / "python3")
    found = worker_setup.base_python_candidates("darwin", base_prefix=str(tmp_path / "nowhere"), executable=str(bundle / "QGIS"), environ={"HOME": str(tmp_path / "home")}, root=str(tmp_path))
    assert [(b.path, b.origin) for b in found] == [(qgis_python, "this QGIS's Python"), (homebrew, "Homebrew"), (python_org, "python.org")]
    # Another QGIS.app found in /Applications when QGIS runs from elsewhere.
    found = worker_setup.base_python_candidates("darwin", base_prefix=str(tmp_path / "nowhere"), executable="/usr/local/bin/qgis", environ={}, root=str(tmp_path))
    assert found[0] == worker_setup.BasePython(qgis_python, "QGIS.app")


def test_venv_python_per_os():
    assert worker_setup.venv_python("w", "win32") == os.path.join("w", "Scripts", "python.exe")
    assert worker_setup.venv_python("w", "linux") == os.path.join("w", "bin", "python")


# --- what pip gets and how far it is ----------------------------------------------------------------


def test_requirements_for_machine_swaps_tensorflow_where_there_is_no_cpu_wheel(repo_root):
    text = (repo_root / "requirements-worker.txt").read_text(encoding="utf-8")
    assert worker_setup.requirements_for_machine(text, "linux", "x86_64") == text
    assert worker_setup.requirements_for_machine(text, "win32", "AMD64") == text
    for platform_name, machine in (("darwin", "arm64"), ("linux", "aarch64")):
        swapped = worker_setup.requirements_for_machine(text, platform_name, machine)
        assert "tensorflow==2.21.0" in swapped.splitlines() and "tensorflow-cpu==2.21.0" not in swapped.splitlines()
        assert swapped.replace("tensorflow==", "tensorflow-cpu==") == text
    names = worker_setup.requirement_names(text)
    assert names[:3] == ["tensorflow-cpu", "numpy", "ml-dtypes"] and "keras" in names and len(names) == len(set(names))


def test_macs_before_macos_14_go_without_onnx_runtime(repo_root):
    """onnxruntime 1.32 and onnx 1.23 have macOS wheels from macOS 14 only: pip failed on older Macs, where
    detect runs on TensorFlow without them."""
    text = (repo_root / "requirements-worker.txt").read_text(encoding="utf-8")
    onnx = {"onnxruntime==1.32.0", "onnx==1.23.2", "tf2onnx==1.17.0"}
    for macos, kept in (("12.7.1", False), ("13.6", False), ("14.2", True), ("15.0", True)):
        lines = set(worker_setup.requirements_for_machine(text, "darwin", "arm64", macos).splitlines())
        assert (onnx <= lines) == kept and bool(onnx & lines) == kept, macos
        assert "tensorflow==2.21.0" in lines and "requests==2.32.3" in lines
    assert worker_setup.requirements_for_machine(text, "linux", "x86_64", "") == text


@pytest.mark.parametrize("target", [("win32", "win_amd64", "3.11", ""), ("win32", "win_amd64", "3.12", ""),
                                    ("linux", "manylinux_2_28_x86_64", "3.12", ""), ("darwin", "macosx_14_0_arm64", "3.12", "14.5"),
                                    ("darwin", "macosx_12_0_arm64", "3.12", "12.7"), ("linux", "manylinux_2_28_x86_64", "3.13", ""),
                                    ("win32", "win_amd64", "3.13", ""), ("darwin", "macosx_14_0_arm64", "3.13", "15.1")],
                         ids=lambda target: f"{target[1]}-py{target[2]}")
def test_the_pins_resolve_for_every_machine_the_installer_serves(repo_root, tmp_path, worker_python, target):
    """What pip gets on each OS, resolved by pip against PyPI for that machine: requests 2.28.1 beside
    charset-normalizer 3.0.1 had no solution anywhere but Debian 12, whose own requests says no bound."""
    from packaging.requirements import Requirement

    platform_name, tag, python, macos = target
    try:
        socket.create_connection(("pypi.org", 443), timeout=10).close()
    except OSError:
        pytest.skip("PyPI cannot be reached from here")
    machine = "arm64" if platform_name == "darwin" else "x86_64"
    text = worker_setup.requirements_for_machine((repo_root / "requirements-worker.txt").read_text(encoding="utf-8"), platform_name, machine, macos)
    environment = {"python_version": python, "python_full_version": python + ".0", "sys_platform": platform_name,
                   "platform_system": {"win32": "Windows", "linux": "Linux", "darwin": "Darwin"}[platform_name], "platform_machine": machine}
    pins = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(environment):  # pip would read the markers on this Python
                requirement.marker = None
                pins.append(str(requirement))
    (tmp_path / "pins.txt").write_text("\n".join(pins) + "\n", encoding="utf-8")
    platforms = [tag] + (["manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"] if platform_name == "linux" else [])
    platforms += [f"macosx_{minor}_0_arm64" for minor in range(11, int(macos.split(".")[0]))] if macos else []
    done = subprocess.run([worker_python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:", "--no-input",
                           "--disable-pip-version-check", "--python-version", python, "--target", str(tmp_path / "target"), "-r", str(tmp_path / "pins.txt")]
                          + [argument for platform in platforms for argument in ("--platform", platform)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0 and "Would install" in done.stdout, (done.stdout + done.stderr)[-3000:]


def test_windows_paths_too_long_for_tensorflow_are_refused_before_pip():
    """pip unpacks TensorFlow's deepest header 163 characters below site-packages: in the QGIS profile of a user
    named 'Jane Smith' that passes Windows' 259, and pip failed after minutes with a long-path error."""
    profile = r"C:\Users\Jane Smith\AppData\Roaming\QGIS\QGIS3\profiles\default\hiriseice-worker"
    problem = worker_setup.windows_path_problem(profile, long_paths_enabled=False)
    assert "262 characters deep" in problem and "at most 77 characters" in problem and "LongPathsEnabled" in problem
    assert worker_setup.windows_path_problem(profile, long_paths_enabled=True) is None
    assert worker_setup.windows_path_problem(r"C:\Users\Jane Smith\AppData\Local\hiriseice-worker", long_paths_enabled=False) is None


def test_pip_progress_follows_pips_lines():
    progress = worker_setup.PipProgress(["iniconfig", "six", "typing-extensions", "ml-dtypes"])
    fractions = [progress.feed(line) for line in (
        "Looking in indexes: https://pypi.org/simple",
        "Collecting iniconfig==2.0.0",
        "  Downloading iniconfig-2.0.0-py3-none-any.whl (5.9 kB)",
        "Requirement already satisfied: six==1.16.0 in /usr/lib/python3/dist-packages (1.16.0)",
        "Collecting typing_extensions==4.16.0",
        "Collecting ML_Dtypes==0.5.4",
        "Collecting absl-py>=1.0",  # a dependency outside the list moves nothing
        "Installing collected packages: iniconfig, typing-extensions, ml-dtypes",
        "Successfully installed iniconfig-2.0.0",
    )]
    assert fractions == pytest.approx([0.0, 0.2, 0.2, 0.4, 0.6, 0.8, 0.8, 0.85, 1.0])


def test_probe_problems_name_the_fix():
    good = {"version": [3, 11, 2], "executable": "/usr/bin/python3", "venv": True, "gdal": "3.6.2"}
    assert worker_setup.probe_problem(good) is None
    assert "Python 3.10; the worker's pinned TensorFlow 2.21 stack needs Python 3.11 to 3.13" in worker_setup.probe_problem(dict(good, version=[3, 10, 12]))
    assert "needs Python 3.11 to 3.13" in worker_setup.probe_problem(dict(good, version=[3, 14, 0]))
    assert worker_setup.probe_problem(dict(good, version=[3, 13, 5])) is None
    assert "apt install python3-venv" in worker_setup.probe_problem(dict(good, venv=False))
    assert "no GDAL (osgeo)" in worker_setup.probe_problem(dict(good, gdal=None))
    # QGIS.app on Intel, or an Intel build under Rosetta: TensorFlow 2.21 has no wheel for it
    assert "Apple-silicon build of QGIS" in worker_setup.probe_problem(dict(good, platform="darwin", machine="x86_64"))
    assert worker_setup.probe_problem(dict(good, platform="darwin", machine="arm64")) is None


def test_probe_runs_in_a_real_python():
    done = subprocess.run(["/usr/bin/python3", "-c", worker_setup.PROBE], capture_output=True, text=True, timeout=60)
    answer = worker_setup.parse_probe(done.stdout)
    assert answer["version"][:2] == list(sys.version_info[:2]) and answer["venv"] is True and answer["gdal"]
    assert worker_setup.parse_probe("not json\n") is None


def test_worker_answer():
    assert worker_setup.worker_answer('noise\n{"type": "log", "message": "x"}\n{"type": "result", "tensorflow": "2.21.0"}\n') == ({"tensorflow": "2.21.0"}, None)
    assert worker_setup.worker_answer('{"type": "error", "code": "engine_error", "message": "lacks a package"}') == (None, "lacks a package")
    assert worker_setup.worker_answer("Segmentation fault") == (None, None)


# --- the dialogs, with real processes ------------------------------------------------------------------


@pytest.fixture(scope="module")
def dialogs(tmp_path_factory, worker_python):
    folder = tmp_path_factory.mktemp("worker_setup")
    plugins = qs.plugin_without_worker(folder)
    env = qs.environment_without_worker(plugins, folder / "config")
    requirements = folder / "small-requirements.txt"
    # One package from PyPI, one Debian already has: pip's two kinds of line.
    requirements.write_text("# small\niniconfig==2.0.0\nsix==1.16.0\n", encoding="utf-8")
    shots = folder / "screenshots"
    shots.mkdir()
    out = gui_session.run_script("worker_setup.py", [plugins, folder, requirements, worker_python, shots], env, folder, timeout=900)
    return {"out": out, "folder": folder, "shots": shots}


def test_first_use_offers_the_installer(dialogs):
    out = dialogs["out"]
    assert out["offer_buttons"] == 1 and "not set up" in out["offer_text"]
    assert out["installer_opened"]
    assert out["installer_bases"][0] == "/usr/bin/python3"
    assert out["installer_folder"] == str(dialogs["folder"] / "config" / "profiles" / "default" / "hiriseice-worker")  # in the profile


def test_install_makes_the_venv_installs_and_checks(dialogs):
    install = dialogs["out"]["install"]
    assert install["finished"] and install["busy"] == {"stop_enabled": True, "install_enabled": False} and install["idle_install_enabled"]
    log = install["log"]
    assert "Python 3.11" in log and "GDAL 3." in log
    assert "-m venv --system-site-packages" in log and "--clear" not in log
    assert "Successfully installed iniconfig-2.0.0" in log and "Requirement already satisfied: six==1.16.0" in log
    # The check found the engine but no TensorFlow, and said so; nothing was saved as the worker.
    assert install["succeeded"] is False and "No module named 'tensorflow'" in install["message"]
    assert dialogs["out"]["setting_after_failed_check"] is None
    assert (dialogs["folder"] / "worker-venv" / "hiriseice-installing").is_file()  # so not taken for a worker (test_plugin.py)
    # The bar moved forward through the steps: past the pip step's share, never backwards.
    assert install["progress"] == sorted(install["progress"]) and install["progress"][-1] >= 900
    python = dialogs["folder"] / "worker-venv" / "bin" / "python"
    done = subprocess.run([str(python), "-c", "import iniconfig, osgeo.gdal, sys; print(sys.prefix)"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == str(dialogs["folder"] / "worker-venv"), done.stderr
    assert "include-system-site-packages = true" in (dialogs["folder"] / "worker-venv" / "pyvenv.cfg").read_text()


def test_reinstall_starts_afresh_and_bad_choices_are_refused(dialogs):
    out = dialogs["out"]
    assert "-m venv --system-site-packages --clear" in out["reinstall"]["log"] and "Successfully installed iniconfig" in out["reinstall"]["log"]
    assert out["crowded"]["succeeded"] is False and "holds other files" in out["crowded"]["message"] and out["crowded_files"] == ["notes.txt"]
    assert out["not_python"]["succeeded"] is False and "/bin/true does not run as a Python" in out["not_python"]["message"]
    assert not out["never_made"]


def test_worker_settings_test_reset_reinstall(dialogs, worker_python):
    out = dialogs["out"]
    assert out["settings_visible"] and out["test_button_busy"] and out["test_finished"]
    assert out["test_real"].startswith("Works.") and "TensorFlow 2.21" in out["test_real"] and "GDAL" in out["test_real"]
    assert "does not exist" in out["test_missing"]
    assert out["enter_saves"]
    assert out["saved_setting"] == worker_python and out["located_after_save"] == worker_python and worker_python in out["in_use_after_save"]
    assert out["setting_after_reset"] is None and out["field_after_reset"] == ""
    # the path at fault named, as locate_worker finds it (the environment variable's may not be the setting's)
    assert out["in_use_after_reset"].startswith("In use now: none. HiRISE Ice Patches needs a separate Python with TensorFlow (the 'worker') and found none: ")
    assert "Reinstall" in out["in_use_after_reset"]
    assert out["reinstall_opens_installer"]


def test_screenshots_show_the_dialogs(dialogs):
    from osgeo import gdal

    for name in ("installer.png", "worker_settings.png"):
        image = gdal.Open(str(dialogs["shots"] / name))
        assert image is not None and image.RasterXSize > 400 and image.GetRasterBand(1).ReadAsArray().std() > 10, name


def test_the_missing_worker_advice_offers_no_install_into_a_plugin_folder_one_cannot_write(qgis_app, tmp_path, monkeypatch):
    """Installed by IT, read-only to its users, the plugin's folder was still offered `bash scripts/install`, which cannot
    write its .venv there."""
    worker = qs.plugin_module("processing_provider.worker")
    installed = tmp_path / "hirise_ice_patches"
    installed.mkdir()
    monkeypatch.setattr(worker, "PLUGIN_FOLDER", str(installed))
    assert "bash scripts/install" in worker.how_to_install()
    with qs.read_only_folder(installed):
        advice = worker.how_to_install()
    assert "bash scripts/install" not in advice and "Worker settings… > Reinstall…" in advice and worker.ENV_VAR in advice


IS_TEMPORARY = r"""
import sys
from qgis.core import QgsApplication, QgsProcessingUtils, QgsVectorLayer
app = QgsApplication([], False)
app.initQgis()
sys.path.insert(0, sys.argv[1])
from hirise_ice_patches.plugin.labelling import is_temporary
layer = QgsVectorLayer("saved.gpkg", "saved", "ogr")
print("RESULT", repr(QgsProcessingUtils.tempFolder()), layer.isValid(), is_temporary(layer))
"""


def test_a_saved_layer_is_not_temporary_where_qgis_has_no_temporary_folder(tmp_path):
    """QGIS's temporary folder is "" where TMPDIR cannot take one, and every layer under the current folder was taken for
    a temporary one: the review dock told the geologist to Make Permanent a GeoPackage already saved."""
    from osgeo import ogr

    ogr.GetDriverByName("GPKG").CreateDataSource(str(tmp_path / "saved.gpkg")).CreateLayer("chunks")
    (tmp_path / "not_a_folder").write_text("")
    plugins = qs.plugin_without_worker(tmp_path / "plugins")
    env = dict(qs.environment_without_worker(plugins, tmp_path / "config"), TMPDIR=str(tmp_path / "not_a_folder"), QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([sys.executable, "-c", IS_TEMPORARY, str(plugins)], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert "RESULT '' True False" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
