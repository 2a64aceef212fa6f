"""The bundled default model, its model card, and the README's main command (scripts/demo)."""

import json
import os
import sqlite3
import subprocess
import zipfile

import pytest

import helpers
from model import modelfile, network, rules

DEFAULT_MODEL = modelfile.default_model_path()
MODEL_CARD = os.path.join(os.path.dirname(DEFAULT_MODEL), "MODEL_CARD.md")


@pytest.fixture(scope="module")
def default_metadata():
    return modelfile.read_metadata("")


def test_default_model_is_shipped_small_and_the_papers_network(default_metadata):
    assert os.path.getsize(DEFAULT_MODEL) <= 12 * 1024 * 1024
    assert default_metadata["architecture"]["widths"] == list(network.PAPER_WIDTHS)
    assert default_metadata["chunk_size"] == 1024
    assert default_metadata["thresholds"] == {"icy": rules.ICY_THRESHOLD, "hard_low": rules.HARD_LOW}
    assert default_metadata["calibration"]["method"] == "platt"
    with zipfile.ZipFile(DEFAULT_MODEL) as archive:
        assert archive.testzip() is None


def test_model_card_reports_the_metrics_recorded_in_the_model(default_metadata):
    card = open(MODEL_CARD, encoding="utf-8").read()
    test = default_metadata["metrics"]["test"]
    assert f"{test['roc_auc']:.4f}" in card
    assert "10.5281/zenodo.2538136" in card  # the terrain's attribution
    assert "No real ice labels" in card
    assert "hiriseice:train" in card
    # Validation is split by observation: no observation is both trained on and tested.
    training = default_metadata["training"]
    held_out = set(training["test_observations"])
    assert held_out and not held_out & set(training["split"]["train_groups"] + training["split"]["validation_groups"])
    assert not set(training["split"]["train_groups"]) & set(training["split"]["validation_groups"])


def test_default_model_scores_implanted_ice_above_bare_terrain(worker_python, tmp_path):
    """On a scene it never saw (synthetic terrain, 0.25 m pixels), chunks holding ice score higher on average."""
    scene = tmp_path / "scene.tif"
    made = helpers.run_worker(worker_python, "sample-scene", scene, "--width", 4096, "--height", 3072, "--seed", 5).check().result
    run = helpers.run_worker(worker_python, "detect", scene).check()
    icy_ids = set(made["ice_chunks"])
    chunks = run.result["chunks"]
    icy = [c["probability"] for c in chunks if c["chunk_id"] in icy_ids]
    bare = [c["probability"] for c in chunks if c["chunk_id"] not in icy_ids]
    assert icy and bare
    assert sum(icy) / len(icy) > sum(bare) / len(bare)


def test_readme_demo_runs_end_to_end(repo_root, tmp_path):
    """The README's first command: sample scene, default model, qgis_process, styled GeoPackage and report."""
    env = dict(os.environ, HIRISEICE_DEMO_OUT=str(tmp_path))
    done = subprocess.run(["bash", str(repo_root / "scripts" / "demo")], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    gpkg = tmp_path / "ice_patches.gpkg"
    assert str(gpkg) in done.stdout and str(tmp_path / "report.html") in done.stdout
    with sqlite3.connect(str(gpkg)) as db:
        tables = {row[0] for row in db.execute("SELECT table_name FROM gpkg_contents")}
        assert {"chunks", "summary"} <= tables
        assert db.execute("SELECT count(*) FROM chunks").fetchone()[0] > 0
        category = db.execute("SELECT category FROM summary").fetchone()[0]
        assert category in ("good", "hard to identify", "bad")
        styled = {row[0] for row in db.execute("SELECT f_table_name FROM layer_styles WHERE useAsDefault")}
        assert "chunks" in styled
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<svg" in report and "data:image/png;base64," in report


def start_recipe(worker_python, *args):
    command = [worker_python, str(helpers.REPO_ROOT / "scripts" / "default_model.py")] + [str(a) for a in args]
    return subprocess.run(command, cwd=str(helpers.REPO_ROOT), env=helpers.worker_env(), capture_output=True, text=True, timeout=600)


def run_recipe(worker_python, *args):
    done = start_recipe(worker_python, *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_default_model_recipe_trains_continues_and_measures_what_its_card_says(worker_python, shared_data, tmp_path):
    """scripts/train_default_model on a few real tiles with a tiny network: the card's AUC is the
    model's own, --evaluate measures it again, and continuing keeps the split, the commands and the notes."""
    terrain = shared_data / "hirise-terrain"
    common = ["--terrain", terrain, "--limit", 60, "--epochs", 1, "--input-size", 32, "--test-variants", 2]
    first, card, report = tmp_path / "first.hiriseice", tmp_path / "card.md", tmp_path / "report.html"
    run_recipe(worker_python, *common, "--widths", "8,16,16,16,16", "--hard-variants", 4, "--note", "A note, kept.",
               "--out", first, "--card", card, "--report", report)
    meta = modelfile.read_metadata(str(first))
    test = meta["metrics"]["test"]
    text = card.read_text(encoding="utf-8")
    assert f"| chunk ROC AUC | {test['roc_auc']:.4f} |" in text
    interval = test["roc_auc_interval"]
    assert f"{interval['low']:.3f}-{interval['high']:.3f}" in text and interval["resamples"] > 0
    assert set(test["by_patch"]) and all(0.0 <= row["recall"] <= 1.0 for row in test["by_patch"].values())
    assert sum(row["count"] for name, row in test["by_patch"].items() if name.startswith("size")) == test["test_icy"]
    assert "| planted patch | icy examples | recall | ROC AUC |" in text and "A note, kept." in text
    assert meta["training"]["examples"]["hard_variants"] == 4 and report.is_file()

    rewritten = tmp_path / "rewritten.md"
    measured = json.loads(run_recipe(worker_python, *common, "--evaluate", first, "--rewrite-card", "--card", rewritten))
    assert measured["roc_auc"] == pytest.approx(test["roc_auc"], abs=1e-6)
    assert rewritten.read_text(encoding="utf-8") == text  # the card follows from the model file and the data alone
    other_set = common[:-1] + [4]  # --test-variants 4: not the held-out set the model was measured on
    done = start_recipe(worker_python, *other_set, "--evaluate", first, "--rewrite-card", "--card", rewritten)
    assert done.returncode != 0 and "--test-variants" in done.stderr
    assert rewritten.read_text(encoding="utf-8") == text  # left as it was

    second = tmp_path / "second.hiriseice"
    run_recipe(worker_python, *common, "--base", first, "--data-seed", 9, "--out", second, "--card", card, "--report", report)
    continued = modelfile.read_metadata(str(second))["training"]
    assert continued["split"]["validation_groups"] == meta["training"]["split"]["validation_groups"]
    assert continued["total_epochs"] == 2 and continued["notes"] == ["A note, kept."]
    assert len(continued["commands"]) == 2 and "'A note, kept.'" in continued["commands"][0]
