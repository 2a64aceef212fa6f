"""Scale on paper (issue 12, item 4): the survey's chunks/s per core, and what the paper's images and
the whole RED archive would cost.

1. Runs `python -m model survey --workers 1` (one Dask worker; its TensorFlow gets all cores'
   threads, so run it where all but one core are busy, or on a one-core slot, to read the rate of
   one core) on generated sample scenes with the bundled model and reads each image's runtime
   from the survey's run table. The first image carries the model's load, so the rate is taken over the
   others: chunks of 1024 px scored per second on one core (GeoTIFF reads; a real JP2 adds its
   decoding, from its reduced-resolution levels).
2. From the real index (../shared/data/hirise-index/hirise_rdr_index.csv.gz, model/catalog.py):
   how many RED observations lie in the paper's window and in the archive, and their along-track
   length (latitude extent x 59.27 km per degree). Chunks per image = swath x length at the map
   scale / 1024^2, with the full-resolution RED swath (SWATH_PX at 0.25 m; binned images have 4x
   fewer pixels, so this is the upper end). The index holds no JP2 sizes (REQUIRED_STORAGE_BYTES is
   the uncompressed COLOR product): the JP2 size per RED observation is JP2_GB, the 0.3-0.5 GB
   range of ../shared/data/README.md.

    .venv/bin/python benchmarks/survey_scale.py [--scenes 3] [--size 4096x8192] [--mbit 100] [--paper-images 1400]
"""

import argparse
import math
import os
import sqlite3
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from model import productindex, products  # noqa: E402

INDEX = os.path.join(os.path.dirname(REPO), "shared", "data", "hirise-index", "hirise_rdr_index.csv.gz")
KM_PER_DEGREE = 2 * math.pi * products.MARS_RADIUS_M / 1000 / 360
SWATH_PX = 20000  # RED swath, 10 CCDs of 2048 px less their overlaps
SCALE_M = 0.25
CHUNK_PX = 1024
JP2_GB = 0.4  # per RED observation, the middle of the 0.3-0.5 GB of the data notes
SECONDS_PER_DAY = 86400


def measure_chunks_per_core_second(scenes: int, size: str) -> float:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    width, height = size.split("x")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(scenes):
            subprocess.run([sys.executable, "-m", "model", "sample-scene", os.path.join(tmp, f"scene{i}.tif"), "--width", width, "--height", height, "--seed", str(i)],
                           cwd=REPO, env=env, check=True, capture_output=True)
        out = os.path.join(tmp, "survey.gpkg")
        subprocess.run([sys.executable, "-m", "model", "survey", "--rasters", tmp, "--out", out, "--workers", "1"], cwd=REPO, env=env, check=True, capture_output=True)
        with sqlite3.connect(out) as db:
            runs = db.execute("SELECT image_id, chunks, runtime_s FROM runs WHERE status = 'done' ORDER BY finished").fetchall()
    for image_id, chunks, runtime in runs:
        print(f"  {image_id}: {chunks} chunks in {runtime:.1f} s")
    warm = runs[1:]
    return sum(r[1] for r in warm) / sum(r[2] for r in warm)


def red_observations(query: products.Query):
    """Along-track lengths (km) of the index's RED observations the query matches."""
    return [(p.maximum_latitude - p.minimum_latitude) * KM_PER_DEGREE for p in productindex.read_csv_index(INDEX, "RED") if query.matches(p)]


def plan(name: str, images: int, median_km: float, rate: float, mbit: float) -> None:
    chunks = SWATH_PX * (median_km * 1000 / SCALE_M) / CHUNK_PX**2
    core_hours = images * chunks / rate / 3600
    terabytes = images * JP2_GB / 1000
    download_days = images * JP2_GB * 8e3 / mbit / SECONDS_PER_DAY
    print(f"{name}: {images:,} images x ~{chunks:,.0f} chunks (median {median_km:.1f} km long) = {images * chunks / 1e6:.2f} M chunks")
    print(f"  compute: {core_hours:,.0f} core-hours -> {math.ceil(core_hours / 24):,} cores finish in a day")
    print(f"  data: {terabytes:,.2f} TB of JP2 -> {download_days:,.1f} days at {mbit:g} Mbit/s; "
          f"a day needs {images * JP2_GB * 8e3 / SECONDS_PER_DAY:,.0f} Mbit/s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=3, help="sample scenes to survey (the first one loads the model)")
    parser.add_argument("--size", default="4096x8192", help="sample scene size, WIDTHxHEIGHT")
    parser.add_argument("--mbit", type=float, default=100.0, help="download bandwidth in Mbit/s")
    parser.add_argument("--paper-images", type=int, default=1400, help="the paper's candidate images")
    parser.add_argument("--rate", type=float, help="chunks/s per core already measured (skips the measurement)")
    args = parser.parse_args()
    if args.rate is None and args.scenes < 2:
        parser.error("--scenes must be 2 or more: the first scene's time is the model's load, and the rate is measured on the others")
    rate = args.rate
    if rate is None:
        print(f"survey with 1 Dask worker, {args.scenes} sample scenes of {args.size}, bundled model:")
        rate = measure_chunks_per_core_second(args.scenes, args.size)
    print(f"measured: {rate:.2f} chunks/s per core ({rate * 3600:,.0f} chunks per core-hour)\n")

    paper = red_observations(products.Query())  # the paper's window is the query's default
    archive = red_observations(products.Query(latitude_min=None, latitude_max=None, ls_start=None, ls_end=None))
    median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
    print(f"index: {len(archive):,} RED observations; {len(paper):,} in the paper's window (latitude -60 to -40, Ls 140-200)\n")
    plan(f"the paper's {args.paper_images:,} images", args.paper_images, median(paper), rate, args.mbit)
    plan("the whole RED archive", len(archive), median(archive), rate, args.mbit)


if __name__ == "__main__":
    main()
