"""The worker's command line: ``python -m model <command> ...`` from the plugin folder.

  detect RASTER --out chunks.gpkg --report report.html   score a raster with a model file
  chunk RASTER --out chunks.gpkg [--export-folder DIR]    the chunk grid only (no TensorFlow)
  survey --rasters A B DIR find.gpkg --out survey.gpkg   detect over many rasters on Dask, resumable
  train JOB.json                                          train from a job file (see model/trainingjob.py)
  info [--model FILE]                                     versions, device and a model file's metadata
  sample-scene OUT.tif [--terrain DIR]                   write a HiRISE-like test scene (synthetic, or of real crops)
  serve                                                   with --jsonl: one job per stdin line, the model kept loaded

With --jsonl, stdout carries one JSON object per line for the QGIS algorithms (model/protocol.py).
Exit status: 0 success, 2 a problem with the input or memory running out (message says what to do), 1 a bug.
"""

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
import threading
import time

from . import __version__, files, interrupts, rules
from .chunking import DEFAULT_BATCH_SIZE, DEFAULT_MIN_VALID
from .errors import EngineError, out_of_memory
from .protocol import Reporter


def _detect(args, reporter: Reporter) -> None:
    from .inference import detect
    from .raster import north_up_view
    from .report import detection_report
    from .vector import write_geopackage

    read = {"RASTER": [args.raster], "--model": [args.model or ""]}
    for destination, option in ((args.out, "--out"), (args.report, "--report"), (args.probability_raster, "--probability-raster")):
        if destination:  # checked before the seconds of scoring they would otherwise follow
            files.check_destination(destination, option, read)
    options = dataclasses.replace(_detect_options(args), scoring=args.scoring, probability_raster=args.probability_raster or "")
    loaded = None
    if args.keep_models:
        from .warm import warm_model

        loaded = warm_model(args.model)
    with north_up_view(args.raster, args.band, reporter.log) as raster:
        detection = detect(raster, args.model, options, reporter, loaded=loaded)
        written = [args.probability_raster] if args.probability_raster else []  # detect has put it in place
        try:
            if args.report:  # its quicklook reads the view's pixels, under the chunks' windows
                detection_report(detection, args.report, args.band, metadata=detection.model,
                                 before_commit=lambda: reporter.written(args.report, f"report: {os.path.abspath(args.report)}"))
                written.append(args.report)
            detection.raster.update(path=args.raster, north_up_view=raster != args.raster)
            if args.out:
                write_geopackage(args.out, detection.raster["crs_wkt"], detection.chunks, [detection.summary],
                                 before_commit=lambda: reporter.log(f"chunks and summary: {os.path.abspath(args.out)}"))
        except BaseException:  # a run is kept whole or not at all: a full disk or a stop had left the raster and report
            files.remove_quietly(written)
            raise
    message = detection.as_message()
    if args.probability_raster:
        message["probability_raster"] = os.path.abspath(args.probability_raster)
    reporter.result(message)
    if not reporter.jsonl:
        s = detection.summary
        print(f"{s['image_id']}: {s['category']} - {s['icy_chunks']} icy and {s['hard_chunks']} hard of {s['chunks']} chunks, mean p {s['mean_probability']:g}")


def _detect_options(args):
    from .inference import DetectOptions

    return DetectOptions(chunk_size=args.chunk_size, stride=args.stride, min_valid=args.min_valid, batch_size=args.batch_size, icy_threshold=args.icy_threshold,
                         hard_low=args.hard_low, band=args.band, category_rule=args.category_rule, tta=args.tta)


def _survey(args, reporter: Reporter) -> None:
    from .survey import IMAGE_MINUTES, survey

    result = survey(args.rasters, args.out, args.model, _detect_options(args), scheduler=args.scheduler or "", workers=args.workers,
                    images_folder=args.images_folder or "", reporter=reporter,
                    image_minutes=IMAGE_MINUTES if args.image_minutes is None else args.image_minutes)
    if result["failed"] and not result["done"]:
        # a batch that surveyed nothing must not read as a success, a resumed one no more than a new one (the
        # images done before are not this run's work); the runs table keeps the errors for the retry
        before = f" ({result['skipped']} done before were skipped)" if result["skipped"] else ""
        raise EngineError(f"None of the {result['failed']} images could be surveyed{before}: each failed (the warnings above and the 'runs' table of "
                          f"{os.path.abspath(result['out'])} say why). Fix them or download them again, then run the survey again: failed images are retried.")
    reporter.result(result)
    if not reporter.jsonl:
        print(f"{result['done']} done, {result['failed']} failed, {result['skipped']} skipped of {result['images']} images: {result['out']}")


def _chunk(args, reporter: Reporter) -> None:
    from .chunking import ChunkExport, gap_warning, image_grid
    from .schema import CHUNK_GRID_FIELDS
    from .vector import write_geopackage

    if args.out:
        files.check_destination(args.out, "--out", {"RASTER": [args.raster]})
    if args.export_folder:
        files.check_folder(args.export_folder, "--export-folder")
    stride = args.stride or args.chunk_size
    if gaps := gap_warning(args.chunk_size, stride):
        reporter.warning(gaps)
    with ChunkExport(args.export_folder) as export:  # staged, renamed into place once the grid is written
        grid = image_grid(args.raster, args.band, args.chunk_size, stride, args.min_valid, reporter.log, export if args.export_folder else None, reporter.progress)
        reporter.progress(1.0)  # the last grid chunks may have been dropped for no-data
        if args.out:
            write_geopackage(args.out, grid.info.crs_wkt, grid.rows, [], CHUNK_GRID_FIELDS)
        export.commit()
    reporter.result({"chunks": grid.rows})


def _train(args, reporter: Reporter) -> None:
    try:
        with open(args.job, encoding="utf-8") as handle:
            job = json.load(handle)
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        raise EngineError(f"The job file {args.job} cannot be read ({exc}). Give the JSON job the train algorithm writes (model/trainingjob.py).") from None
    from .trainingjob import run_job

    result = run_job(job, reporter)
    reporter.result(result)
    if not reporter.jsonl:
        print(f"model: {result['model_path']}")


def _info(args, reporter: Reporter) -> None:
    from . import modelfile

    info = {"engine": __version__, "python": sys.version.split()[0], "executable": sys.executable}
    try:
        import numpy
        import tensorflow as tf
        from osgeo import gdal, gdal_array  # noqa: F401  gdal_array breaks first when numpy is wrong

        info.update(numpy=numpy.__version__, tensorflow=tf.__version__, gdal=gdal.__version__)
        import keras

        info["keras"] = keras.__version__
        # what scores the chunks where its export matches Keras (runtime.py): a bug report must say which
        for name in ("onnxruntime", "tf2onnx"):
            try:
                info[name] = __import__(name).__version__
            except ImportError:
                info[name] = None
        from .runtime import compute_device

        info["device"] = compute_device()
    except ImportError as exc:
        raise EngineError(f"The worker's Python lacks a package ({exc}). Reinstall the worker (HiRISE Ice Patches > Worker settings… > "
                          "Reinstall…; in a checkout of the plugin's source, `bash scripts/install`).") from None
    info["model_path"] = modelfile.resolve_model_path(args.model)
    try:
        info["model"] = modelfile.read_metadata(args.model)
    except EngineError as exc:  # the environment is still worth reporting
        info["model_error"] = str(exc)
    reporter.result(info)
    if not reporter.jsonl:
        print(json.dumps(info, indent=2))


def _sample_scene(args, reporter: Reporter) -> None:
    files.check_destination(args.out, "sample-scene's OUT")
    if args.terrain:
        scene = _real_terrain_scene(args)
        reporter.log(f"sample scene: {os.path.abspath(args.out)}, real HiRISE crops of {len({c['observation'] for c in scene['chunks']})} "
                     f"observations the model never trained on, ice drawn in {len(scene['ice_chunks'])} of {len(scene['chunks'])} chunks")
    else:
        from .trainingdata.scene import write_sample_scene

        scene = write_sample_scene(args.out, width=args.width, height=args.height, rng_seed=args.seed)
        reporter.log(f"sample scene: {os.path.abspath(args.out)} ({args.width} x {args.height} px) of procedural terrain, for trying formats, "
                     "speed and the loop: the default model, trained on real terrain, calls most of it icy. --terrain DIR makes one of real crops.")
    description = {"path": os.path.abspath(args.out), "ice_chunks": scene["ice_chunks"],
                   **({"chunks": scene["chunks"]} if "chunks" in scene else {"ice_patches": scene["ice_patches"]})}
    if args.describe:
        with open(args.describe, "w") as handle:
            json.dump(description, handle, indent=1)
    reporter.result(description)


def _real_terrain_scene(args) -> dict:
    """The scene of real crops: from the observations the model's card holds out, so it never trained on them."""
    from . import modelfile
    from .trainingdata.crops import load_tiles
    from .trainingdata.real_scene import write_real_terrain_scene

    held_out = modelfile.read_metadata(args.model).get("training", {}).get("test_observations") or []
    if not held_out:
        raise EngineError(f"{modelfile.resolve_model_path(args.model)} names no held-out observations; "
                          "give --model a model trained by scripts/train_default_model, or leave out --terrain.")
    for folder in args.terrain:
        if not os.path.isfile(os.path.join(folder, "labels.txt")):
            raise EngineError(f"{folder} is not a terrain folder (labels.txt, classmap.csv, tiles/): "
                              "give ../shared/data/hirise-terrain or hirise-terrain-v1.")
    columns, rows = max(1, args.width // 1024), max(1, args.height // 1024)
    try:
        return write_real_terrain_scene(args.out, load_tiles(args.terrain), held_out, columns=columns, rows=rows, rng_seed=args.seed)
    except ValueError as exc:
        raise EngineError(f"{exc}: give both terrain folders, or a smaller --width and --height.") from None


# Jobs serve runs: those that leave no process-wide state behind (train sets TensorFlow's
# options before it loads; survey starts its own cluster).
SERVED_COMMANDS = ("detect", "chunk", "info")


def _serve(args, reporter: Reporter) -> None:
    """Job after job, one JSON object a line: {"id": ..., "command": "detect", "arguments": [...],
    "partial_outputs": [...]}, the arguments those of the one-shot command. Each runs as ``python -m
    model --jsonl COMMAND ARGUMENTS`` would, with the model kept loaded for the next; an input problem
    fails that job only, and a job that fails removes its partial outputs. From stdin until EOF, or
    with --listen from a local socket's connections until --idle-minutes pass without one
    (model/session.py)."""
    if not args.jsonl:
        raise EngineError("serve reads JSON jobs and answers JSON lines: run python -m model --jsonl serve.")
    parser = build_parser()
    if args.listen:
        from .session import serve_socket

        serve_socket(args.listen, 60.0 * args.idle_minutes, lambda line, stream: _serve_job(parser, line, stream))
        return
    for line in sys.stdin:
        if line.strip() and _serve_job(parser, line, sys.stdout) == 130:
            raise SystemExit(130)  # interrupted: the client is stopping this worker


def _serve_job(parser: argparse.ArgumentParser, line: str, stream) -> int:
    try:
        job = json.loads(line)
        job_id, command, arguments = job["id"], job["command"], [str(a) for a in job.get("arguments", [])]
        partial_outputs = [str(path) for path in job.get("partial_outputs", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        Reporter(jsonl=True, stream=stream).error("job", f"Not a job: {line.strip()[:200]!r}. Send one JSON object a line with id, command and arguments.")
        return 2
    reporter = Reporter(jsonl=True, stream=stream, job_id=job_id)
    status = 1
    try:
        reporter.started()
        status = _serve_command(parser, reporter, command, arguments)
        reporter.done(status)
    finally:
        if status != 0:  # also when the client left mid-job and its next line broke
            files.remove_quietly(partial_outputs)
    return status


def _serve_command(parser: argparse.ArgumentParser, reporter: Reporter, command: str, arguments) -> int:
    if command not in SERVED_COMMANDS:
        reporter.error("job", f"serve runs {', '.join(SERVED_COMMANDS)} jobs, not {command!r}; run python -m model {command} on its own.")
        return 2
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage), contextlib.redirect_stdout(usage):
            job_args = parser.parse_args(["--jsonl", command] + arguments)
    except SystemExit:
        said = usage.getvalue().strip().splitlines()  # argparse's last line says what was wrong
        reporter.error("arguments", said[-1] if said else f"{command}: arguments not understood: {arguments!r}")
        return 2
    job_args.keep_models = True
    return _run(job_args, reporter)


def _scoring_arguments(parser):
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--icy-threshold", type=float, default=rules.ICY_THRESHOLD)
    parser.add_argument("--hard-low", type=float, default=rules.HARD_LOW)
    parser.add_argument("--category-rule", choices=sorted(rules.CATEGORY_RULES), default=rules.DEFAULT_CATEGORY_RULE, help="image category rule (default: %(default)s, the paper's)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                        help="test-time augmentation (default: on): average the logits of each chunk and its east-west mirror; twice the network time, "
                        "a few per cent more on a whole observation, a quarter more on a dense grid; --no-tta scores the image as it is")


def _grid_arguments(parser, chunk_size_default):
    parser.add_argument("--chunk-size", type=int, default=chunk_size_default, help="chunk side in raster pixels (default: %(default)s)")
    parser.add_argument("--stride", type=int, default=None, help="grid step in pixels (default: the chunk size)")
    parser.add_argument("--min-valid", type=float, default=DEFAULT_MIN_VALID, help="share of valid pixels needed in the chunk's central region (default: %(default)s)")
    parser.add_argument("--band", type=int, default=0, help="band to use; 0 = automatic (single band, or the mean of all bands)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model", description="HiRISE Ice Patches engine", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--jsonl", action="store_true", help="machine-readable JSON lines on stdout (for the QGIS plugin)")
    parser.add_argument("--version", action="version", version=f"HiRISE Ice Patches engine {__version__} (Python {sys.version.split()[0]}); "
                        "`python -m model info` gives the packages and the model, for a bug report")
    parser.set_defaults(keep_models=False)  # serve's jobs keep the model loaded for the next (model/warm.py)
    commands = parser.add_subparsers(dest="command", required=True)

    detect = commands.add_parser("detect", help="score a raster's chunks for ice")
    detect.add_argument("raster")
    detect.add_argument("--model", default="", help="model file (*.hiriseice); default: the bundled model")
    detect.add_argument("--out", help="GeoPackage to write (layers 'chunks' and 'summary')")
    detect.add_argument("--report", help="HTML report to write")
    _grid_arguments(detect, None)
    _scoring_arguments(detect)
    detect.add_argument("--scoring", choices=("auto", "map", "chunk"), default="auto",
                        help="auto (default): map when the stride is shorter than the chunk and falls on the map's cells, else chunk; chunk: each chunk "
                        "scored alone; map: chunks read off the network's score map, made of the STRIDE = CHUNK grid's chunks, and those between them "
                        "that may hide a cut patch scored alone again (on a whole observation 2.3-2.8x the time of STRIDE = CHUNK, against 3.3-3.9x for chunk)")
    detect.add_argument("--probability-raster", metavar="PATH", help="also write the ice probability of every score-map cell as a GeoTIFF in the raster's CRS")
    detect.set_defaults(run=_detect)

    survey = commands.add_parser("survey", help="detect over many rasters on a Dask cluster into one resumable GeoPackage")
    survey.add_argument("--rasters", nargs="+", required=True, metavar="PATH",
                        help="raster files, folders of rasters, or footprint layers from hiriseice:find (their JP2s are looked for in --images-folder; "
                        "those not downloaded are left out with a warning)")
    survey.add_argument("--out", required=True, help="the survey's GeoPackage (layers chunks, summary, footprints, runs); an existing one is resumed")
    survey.add_argument("--model", default="", help="model file (*.hiriseice); default: the bundled model")
    survey.add_argument("--images-folder", help="where the JP2s of find's footprints are (default: the footprint file's folder)")
    survey.add_argument("--scheduler", help="address of a running Dask scheduler (e.g. tcp://10.0.0.5:8786); default: a local cluster")
    survey.add_argument("--workers", type=int, default=0, help="local cluster's worker processes (default: 0 = one per core)")
    survey.add_argument("--image-minutes", type=float, default=None,
                        help="give up an image still running after this many minutes, and restart its worker (0: no limit; default: 30)")
    _grid_arguments(survey, None)
    _scoring_arguments(survey)
    survey.set_defaults(run=_survey, left_behind="the images it had finished stay in its GeoPackage, and a rerun resumes after them")

    chunk = commands.add_parser("chunk", help="the chunk grid of a raster, without the network")
    chunk.add_argument("raster")
    chunk.add_argument("--out", help="GeoPackage to write")
    chunk.add_argument("--export-folder", help="also write each chunk as a georeferenced GeoTIFF here")
    _grid_arguments(chunk, 1024)
    chunk.set_defaults(run=_chunk)

    train = commands.add_parser("train", help="train or continue training a model from a job file")
    train.add_argument("job", help="JSON job file (see model/trainingjob.py)")
    train.set_defaults(run=_train)

    info = commands.add_parser("info", help="engine versions, compute device and model metadata")
    info.add_argument("--model", default="")
    info.set_defaults(run=_info)

    scene = commands.add_parser("sample-scene", help="write a synthetic HiRISE-like scene with ice patches")
    scene.add_argument("out")
    scene.add_argument("--width", type=int, default=4096)
    scene.add_argument("--height", type=int, default=3072)
    scene.add_argument("--seed", type=int, default=0)
    scene.add_argument("--terrain", action="append", default=[], metavar="DIR",
                       help="real HiRISE terrain folder (repeatable, e.g. ../shared/data/hirise-terrain-v1): one real crop per "
                            "1024-px chunk from the observations --model never trained on, ice of every family in half of them")
    scene.add_argument("--model", default="", help="with --terrain: the model whose held-out observations to use (default: the bundled one)")
    scene.add_argument("--describe", default="", metavar="FILE.json", help="also write what is in the scene (which chunks hold ice) as JSON")
    scene.set_defaults(run=_sample_scene)

    serve = commands.add_parser("serve", help="with --jsonl: run detect, chunk and info jobs read from stdin, the model kept loaded between them")
    serve.add_argument("--listen", default="", metavar="SOCKET", help="read the jobs from connections to this local socket instead (the session worker)")
    serve.add_argument("--idle-minutes", type=float, default=10.0, help="with --listen: exit after this long without a connection (default: %(default)s)")
    serve.set_defaults(run=_serve)
    return parser


# How often a worker run by a client (--jsonl) looks whether that client is still there.
ORPHAN_POLL_S = 1.0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    reporter = Reporter(jsonl=args.jsonl)
    if args.jsonl and args.run is not _serve and os.name != "nt":  # a session worker outlives the runs that use it
        try:
            _stop_when_orphaned()
        except RuntimeError as exc:  # its thread
            if not out_of_memory(exc):
                raise
            return _said_out_of_memory(args, reporter, exc)
    return _run(args, reporter)


def _stop_when_orphaned() -> None:
    """A worker whose client (QGIS, qgis_process) has died stops as if cancelled, cleaning up as a
    cancel does: a survey's client waits on Dask for minutes between lines and had written on after
    the user's rerun had started a second survey of the same GeoPackage."""
    import signal

    # a client's cancel is SIGINT too, and a child inherits SIGINT ignored from a shell's background job
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parent = os.getppid()
    # the client names itself: one that died before this watch started had left the worker to init, taken for
    # its client; and a wrapper that runs the worker's Python without exec is the parent, not the client
    named = os.environ.get("HIRISEICE_CLIENT_PID", "")
    client = int(named) if named.isdigit() else parent

    def client_alive() -> bool:
        try:
            os.kill(client, 0)
        except ProcessLookupError:
            return False
        except OSError:  # there, but another user's
            pass
        return True

    def watch():
        time.sleep(ORPHAN_POLL_S)  # first into the command, where a cancel is handled
        while os.getppid() == parent and client_alive():
            time.sleep(ORPHAN_POLL_S)
        interrupts.interrupt_main()

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _run(args, reporter: Reporter) -> int:
    """One command, its exit status; for main and for each of serve's jobs."""
    from .gdalstate import gdal_exceptions

    try:
        with gdal_exceptions():
            args.run(args, reporter)
    except EngineError as exc:
        reporter.error(exc.code, str(exc))
        return 2
    except KeyboardInterrupt:
        reporter.error("cancelled", f"Cancelled; {getattr(args, 'left_behind', 'no output was written')}.")
        return 130
    except Exception as exc:  # noqa: BLE001 - memory runs out as many kinds (onnxruntime's Fail, ImportError, RuntimeError)
        if not out_of_memory(exc):
            raise
        return _said_out_of_memory(args, reporter, exc)
    return 0


def _said_out_of_memory(args, reporter: Reporter, exc: BaseException) -> int:
    reporter.error("memory", f"The worker ran out of memory ({type(exc).__name__}: {exc}). Close other programs, lower BATCH_SIZE "
                             f"(or give a survey fewer WORKERS), and run again; {getattr(args, 'left_behind', 'no output was written')}.")
    return 2


if __name__ == "__main__":
    sys.exit(main())
