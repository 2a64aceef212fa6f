"""The bundled default model, its model card, and the README's main command (scripts/demo)."""

import glob
import json
import os
import re
import shutil
import sqlite3
import subprocess
import zipfile

import numpy as np
import pytest

import helpers
from model import finetune, modelfile, rules

DEFAULT_MODEL = modelfile.default_model_path()
MODEL_CARD = os.path.join(os.path.dirname(DEFAULT_MODEL), "MODEL_CARD.md")


@pytest.fixture(scope="module")
def default_metadata():
    return modelfile.read_metadata("")


def test_default_model_is_shipped_small_with_its_card_and_replay_set(default_metadata):
    assert os.path.getsize(DEFAULT_MODEL) <= 22 * 1024 * 1024  # the network, its replay sample (13 MB) and 128 reference crops (6 MB)
    assert default_metadata["chunk_size"] == 1024 and default_metadata["input_size"] == 256
    assert default_metadata["architecture"]["scales"] == [2, 1]  # the chunk read at 128 and at 256 px
    assert default_metadata["thresholds"] == {"icy": rules.ICY_THRESHOLD, "hard_low": rules.HARD_LOW}
    assert default_metadata["training"]["families"] == ["natural shade", "stone field", "crater wall", "rendered caster"]
    with zipfile.ZipFile(DEFAULT_MODEL) as archive:
        assert archive.testzip() is None
    replay = modelfile.load_replay(DEFAULT_MODEL)
    assert replay is not None and set(replay["labels"].tolist()) == {0, 1}
    assert replay["images"].shape[1:] == (256, 256)
    reference = replay["kinds"] == finetune.REFERENCE_KIND  # real ice-free crops no round trains on
    assert reference.sum() == 128 and not replay["labels"][reference].any() and (~reference).sum() >= 200


def test_model_card_leads_with_the_transfer_table_and_reports_the_models_numbers(default_metadata):
    card = open(MODEL_CARD, encoding="utf-8").read()
    assert card.index("How well it transfers") < card.index("The shipped model on the held-out observations")
    test = default_metadata["metrics"]["test"]
    for family, row in test["families"].items():
        assert f"| {family} | {row['roc_auc']:.3f} (" in card
    transfer = card.split("## The shipped model")[0]
    held_out = set()  # issue 7: every family left out of one run of the recipe, with its row in the card
    for path in glob.glob(os.path.join(os.path.dirname(DEFAULT_MODEL), "transfer", "*.json")):
        with open(path, encoding="utf-8") as handle:
            held_out.add(json.load(handle)["held_out_family"])
    for family in test["families"]:
        assert family in held_out and f"\n| {family} | widths 32-256, " in transfer, family
    measured = {}
    for path in glob.glob(os.path.join(os.path.dirname(DEFAULT_MODEL), "unseen", "*.json")):
        with open(path, encoding="utf-8") as handle:
            unseen = json.load(handle)
        measured[unseen["family"]] = [row for row in unseen["rows"] if row["model"] == modelfile.describe(default_metadata)]
    assert {"lee frost", "frost lobes"} <= measured.keys()
    for family, rows in measured.items():  # the shipped weights on families never trained on
        assert rows and f"| {family} | as it is | {rows[0]['as it is']['roc_auc']:.3f} (" in transfer
    assert "10.5281/zenodo.2538136" in card and "No real ice labels" in card and "hiriseice:train" in card
    training = default_metadata["training"]
    held_out = set(training["test_observations"])
    assert held_out and not held_out & set(training["split"]["train_groups"] + training["split"]["validation_groups"])


def test_card_describes_a_two_scale_model_the_recipe_continued(worker_python, repo_root, default_metadata):
    """A two-scale model continued by the recipe (--base) has no joined members: its card says both
    networks were trained together, from which model."""
    code = ("import sys; sys.path.insert(0, 'scripts'); import model_card; from model import modelfile; "
            "meta = modelfile.read_metadata(''); training = {k: v for k, v in meta['training'].items() if k != 'members'}; "
            "print(model_card._network_paragraph(dict(meta, training=training, base_model={'name': meta['name'], 'version': meta['version']})))")
    done = subprocess.run([worker_python, "-c", code], cwd=str(repo_root), env=helpers.worker_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    paragraph = " ".join(done.stdout.split())
    assert "reading each 1024-px chunk at two scales, 128 and 256 px" in paragraph
    assert "Both trained together by `scripts/train_default_model` in" in paragraph
    assert f"starting from the weights of {default_metadata['name']} {default_metadata['version']}" in paragraph


def test_card_heads_its_transfer_section_with_its_own_rows_of_the_unseen_families(worker_python, repo_root, tmp_path):
    """benchmarks/unseen_family.py's measurements of this very model (not of another one in the same
    file) open the transfer section, the blind family first, with each contrast bin's ROC AUC where
    measured, and count toward its worst held-out family."""
    by_size = {"0-10 px": {"count": 3, "recall": 0.0}, "10-40 px": {"count": 5, "recall": 0.2}, "80-400 px": {"count": 0, "recall": None}}
    scored = {"roc_auc": 0.6123, "interval": {"low": 0.55, "high": 0.66}, "recall": 0.1, "fpr_real_terrain": 0.02, "by_size": by_size}
    lobes = {"icy": 8, "ice_free": 9, "rows": [{"model": "another 1 (1024 px chunks read at 128 px)", "as it is": dict(scored, roc_auc=0.4)},
                                                {"model": "DESCRIBED", "as it is": scored, "with the mirror (detect's default)": dict(scored, roc_auc=0.6234)}]}
    by_contrast = {"0.0-0.1": {"count": 2, "recall": 0.0, "roc_auc": 0.5312}, "0.1-0.2": {"count": 0, "recall": None, "roc_auc": None},
                   "0.4-1.0": {"count": 5, "recall": 0.4, "roc_auc": 0.8871}}
    by_rise = {"0.0-0.1": {"count": 0, "recall": None, "roc_auc": None}, "0.2-0.4": {"count": 3, "recall": 0.3, "roc_auc": 0.6411},
               "0.4-1.0": {"count": 4, "recall": 0.5, "roc_auc": 0.7022}}
    lee = {"family": "lee frost", "icy": 7, "ice_free": 9,
           "rows": [{"model": "DESCRIBED", "as it is": dict(scored, roc_auc=0.7771, by_contrast=by_contrast, by_rise=by_rise),
                     "with the mirror (detect's default)": dict(scored, roc_auc=0.7882)}]}
    path = tmp_path / "unseen.json"
    code = ("import json, sys; sys.path.insert(0, 'scripts'); import model_card; from model import modelfile; "
            "meta = modelfile.read_metadata(''); unseen = json.load(open(sys.argv[1]))\n"
            "for measured in unseen: measured['rows'][-1].update(model=modelfile.describe(meta), weights_sha256=meta['weights_sha256'])\n"
            "print(model_card.model_card(meta, meta['metrics']['test'], [], ['bright dune'], 'credit', None, unseen))")
    path.write_text(json.dumps([lobes, lee]))  # a measurement without "family" is of frost lobes, made before --family
    done = subprocess.run([worker_python, "-c", code, str(path)], cwd=str(repo_root), env=helpers.worker_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    transfer = done.stdout.split("## How well it transfers")[1].split("## The shipped model")[0]
    assert "**frost lobes** (8 crops of the held-out observations with it drawn, against 9 as they are)" in transfer
    assert transfer.index("| lee frost | as it is | 0.777 (") < transfer.index("| frost lobes | as it is | 0.612 (0.550-0.660) | 0.10 | 0.00 / 0.20 (0-10 px / 10-40 px) | - | - | 0.020 |")
    # Each contrast bin's and rise bin's AUC where the measurement has them, empty bins left out.
    assert "| 0.00 / 0.20 (0-10 px / 10-40 px) | 0.53 / 0.89 (0.0-0.1 / 0.4-1.0) | 0.64 / 0.70 (0.2-0.4 / 0.4-1.0) | 0.020 |" in transfer
    assert "| frost lobes | with the mirror (detect's default) | 0.623 (" in transfer and "0.400" not in transfer
    assert "Worst held-out family, those above included: ROC AUC 0.612" in transfer


def test_unseen_family_measures_each_scoring_apart_and_writes_json(worker_python, repo_root):
    """benchmarks/unseen_family.py's measurement of one model: both scorings side by side, each with its own
    contrast bins and their recall, and the whole written as JSON (a bin's loop once wrote the mirror's row
    inside the first scoring's last bin, a circular record no JSON holds)."""
    code = (
        "import json, math, sys; import numpy as np; sys.path[:0] = ['benchmarks', 'scripts']; import unseen_family as u\n"
        "rng = np.random.default_rng(0); n = 60; labels = np.arange(n) % 2\n"
        "contrasts = np.where(labels == 1, rng.uniform(0.02, 0.9, n), math.nan); sizes = np.where(labels == 1, rng.uniform(2, 120, n), math.nan)\n"
        "groups = np.array([f'obs{i % 6}' for i in range(n)]); landforms = np.array(['other'] * n)\n"
        "p = {False: np.clip(0.3 * labels + rng.uniform(0, 0.7, n), 0, 1), True: np.clip(0.2 * labels + rng.uniform(0, 0.8, n), 0, 1)}\n"
        "own = np.where(labels == 1, np.arange(n) - 1, np.arange(n))\n"
        "rises = np.where(labels == 1, rng.uniform(0.0, 0.99, n), math.nan)\n"
        "row = u._measured('m', lambda mirror: p[mirror], ([None] * n, labels, groups, landforms, sizes, contrasts, own, rises), 1)\n"
        "plain = np.tile(np.linspace(0.2, 0.6, 50, dtype=np.float32), (50, 1)); icy = plain.copy(); icy[20:30, 20:30] += 0.1\n"
        "row['rise'] = u.ice_rise(plain, icy)\n"
        "print(json.dumps(row))"
    )
    done = subprocess.run([worker_python, "-c", code], cwd=str(repo_root), env=helpers.worker_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    # 100 pixels brightened by 0.1 on a crop stretched over 0.394 (its 1st to 99.5th percentile): a rise of 0.254
    assert abs(row.pop("rise") - 0.1 / 0.394) < 0.01
    assert sorted(row) == ["as it is", "model", "with the mirror (detect's default)"]
    plain, mirrored = row["as it is"], row["with the mirror (detect's default)"]
    assert plain["roc_auc"] != mirrored["roc_auc"]
    for scoring in (plain, mirrored):
        for bins in ("by_contrast", "by_rise"):
            assert sorted(scoring[bins]) == ["0.0-0.1", "0.1-0.2", "0.2-0.4", "0.4-1.0"]
            assert all(sorted(band) == ["count", "recall", "roc_auc"] for band in scoring[bins].values())
            assert sum(band["count"] for band in scoring[bins].values()) == 30  # every icy crop in a bin
    # each icy crop against its own crop as it is: the plain scoring adds more to the icy ones (0.3 against 0.2)
    assert plain["own_crop"]["raised"] > mirrored["own_crop"]["raised"] and 0 < plain["own_crop"]["median_lift"]


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
    """The README's first command: sample scene, default model, qgis_process, styled GeoPackage and report; into a
    folder whose name holds an apostrophe, which the demo's ogr: address cut short there."""
    tmp_path = tmp_path / "O'Neil demo"
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
    assert report.count("data:image/png;base64,") == 2 and "<svg" not in report
    if (repo_root.parent / "shared" / "data" / "hirise-terrain-v1").is_dir():  # the scene is real terrain: what was drawn, beside the answers
        assert "real_terrain_scene.tif" in done.stderr
        table = done.stdout[done.stdout.index("what the sample scene holds"):]
        assert table.count("ice: ") == 12 and table.count("no ice: ") == 6  # 6 with drawn ice, 6 without
        found, false_alarms = (int(n) for n in re.search(r"found (\d+) of the 6 chunks with drawn ice.*called (\d+) of the 6", table).groups())
        assert found > false_alarms


def start_recipe(worker_python, *args):
    command = [worker_python, str(helpers.REPO_ROOT / "scripts" / "default_model.py")] + [str(a) for a in args]
    return subprocess.run(command, cwd=str(helpers.REPO_ROOT), env=helpers.worker_env(), capture_output=True, text=True, timeout=600)


def run_recipe(worker_python, *args):
    done = start_recipe(worker_python, *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_default_model_recipe_holds_a_family_out_and_writes_the_card_from_what_it_measured(worker_python, shared_data, tmp_path):
    """scripts/train_default_model on a few real crops with a tiny network: a leave-one-family-out
    run, then the all-families run whose card, written beside it and not over the shipped card,
    carries that run's row and the model's own numbers."""
    data = ["--terrain", shared_data / "hirise-terrain", "--terrain", shared_data / "hirise-terrain-v1", "--limit", 90, "--epochs", 1, "--replay", 40, "--reference", 6]
    common = data + ["--input-size", 32, "--widths", "8,16,16,16,16"]
    fold, fold_json = tmp_path / "without.hiriseice", tmp_path / "lofo" / "stone-field.json"
    run_recipe(worker_python, *common, "--hold-out", "stone field", "--faint-share", 0.6, "--twins", 0.5, "--out", fold, "--json", fold_json)
    measured = json.loads(fold_json.read_text())
    assert measured["held_out_family"] == "stone field"
    fold_training = modelfile.read_metadata(str(fold))["training"]
    assert fold_training["families"] == ["natural shade", "crater wall", "rendered caster"]
    assert fold_training["examples"]["faint_share"] == 0.6 and "--faint-share 0.6" in fold_training["commands"][-1]
    assert fold_training["examples"]["twins"] == 0.5

    shipped_card = helpers.REPO_ROOT / "resources" / "models" / "MODEL_CARD.md"
    shipped = shipped_card.read_bytes()
    model, card = tmp_path / "all.hiriseice", tmp_path / "all.md"  # a trial's card goes beside its model
    run_recipe(worker_python, *common, "--out", model, "--transfer", str(tmp_path / "lofo" / "*.json"))
    assert shipped_card.read_bytes() == shipped
    text = card.read_text(encoding="utf-8")
    held = measured["families"]["stone field"]
    epochs = measured["epochs"]
    row = f"| stone field | widths 8-16, {epochs} epoch{'' if epochs == 1 else 's'} | {held['roc_auc']:.3f} ({held['roc_auc_interval']['low']:.3f}-"
    assert row in text.split("## The shipped model")[0]  # each row names the recipe that made it
    meta = modelfile.read_metadata(str(model))
    test = meta["metrics"]["test"]
    survey = meta["calibration"]["prior"]  # the survey's share, lowered where validation calls too much real terrain icy
    assert survey["requested"] == 0.2 and 0 < survey["prior"] <= 0.2 and survey["max_false_alarms"] == 0.05 and survey["validation_crops"] > 0
    assert f"| natural shade | {test['families']['natural shade']['roc_auc']:.3f} (" in text.split("## The shipped model")[1]
    replay = modelfile.load_replay(str(model))
    reference = replay["kinds"] == finetune.REFERENCE_KIND
    assert (~reference).sum() <= 40 and set(replay["labels"][~reference].tolist()) == {0, 1}
    assert 0 < reference.sum() <= 6 and not replay["labels"][reference].any()

    # reference crops replaced in a model file, its network and rehearsal untouched
    kept = tmp_path / "kept.hiriseice"
    shutil.copy(model, kept)
    run_recipe(worker_python, *data[:-1], "3", "--add-reference", kept)
    replaced = modelfile.load_replay(str(kept))
    assert (replaced["kinds"] == finetune.REFERENCE_KIND).sum() == min(3, reference.sum())
    assert np.array_equal(replaced["images"][replaced["kinds"] != finetune.REFERENCE_KIND], replay["images"][~reference])
    with zipfile.ZipFile(model) as before, zipfile.ZipFile(kept) as after:
        assert before.read(modelfile.KERAS_MEMBER) == after.read(modelfile.KERAS_MEMBER)
    assert modelfile.read_metadata(str(kept))["training"]["commands"][-1].endswith(f"--add-reference {kept}")

    again = json.loads(run_recipe(worker_python, *data, "--evaluate", model, "--card", ""))  # at the model's own input size
    assert again["families"]["natural shade"]["roc_auc"] == pytest.approx(test["families"]["natural shade"]["roc_auc"], abs=1e-6)

    # a warm start at a finer input carries the base's weights and history into a network of that size
    finer = tmp_path / "finer.hiriseice"
    run_recipe(worker_python, *data, "--base", model, "--input-size", 64, "--out", finer, "--card", tmp_path / "finer.md")
    finer_meta = modelfile.read_metadata(str(finer))
    assert finer_meta["input_size"] == 64 and finer_meta["architecture"]["input_size"] == 64
    assert finer_meta["training"]["total_epochs"] == meta["training"]["total_epochs"] + 1
    assert finer_meta["training"]["anchor"] == 0.0  # the recipe learns the data as a whole; the pull back is for a user's few labels
    assert modelfile.load_replay(str(finer))["images"].shape[1:] == (64, 64)
    split = meta["training"]["split"]
    assert set(finer_meta["training"]["seen_observations"]) >= set(split["train_groups"] + split["validation_groups"])

    # a model that trained on (or chose its epochs on) a test observation of this run's split is refused before anything
    # trains: a warm start would carry those observations in, and a measurement on them would not be held out
    for given in (["--base", finer], ["--evaluate", model]):
        refused = start_recipe(worker_python, *data, "--seed", 8, *given, "--out", tmp_path / "leaky.hiriseice", "--card", tmp_path / "leaky.md")
        assert refused.returncode == 1 and "test observations of --seed 8" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr[-3000:]
        assert not (tmp_path / "leaky.hiriseice").exists() and not (tmp_path / "leaky.md").exists()
        assert "warning:" not in refused.stderr
    # a continued model written before models recorded their lineage: its ancestors' observations cannot be checked, and it says so
    older = tmp_path / "older.hiriseice"
    shutil.copy(finer, older)
    older_meta = modelfile.read_metadata(str(older))
    del older_meta["training"]["seen_observations"]
    modelfile.store_metadata(str(older), older_meta)
    measured = start_recipe(worker_python, *data, "--evaluate", older, "--card", "")
    assert measured.returncode == 0 and "was written before models recorded their lineage's observations" in measured.stderr, measured.stderr[-3000:]

    # the two joined: one model reading the chunk at both scales, calibrated, measured and carded like a trained one
    both, both_card = tmp_path / "both.hiriseice", tmp_path / "both.md"
    run_recipe(worker_python, *data, "--combine", model, finer, "--out", both, "--transfer", str(tmp_path / "lofo" / "*.json"))
    both_meta = modelfile.read_metadata(str(both))
    assert both_meta["input_size"] == 64 and both_meta["architecture"]["scales"] == [2, 1]
    assert [m["input_size"] for m in both_meta["training"]["members"]] == [32, 64]
    assert both_meta["calibration"]["prior"]["validation_crops"] > 0
    assert modelfile.load_replay(str(both))["images"].shape[1:] == (64, 64)
    assert set(both_meta["training"]["seen_observations"]) == set(finer_meta["training"]["seen_observations"])
    text = both_card.read_text(encoding="utf-8")
    assert "at two scales, 32 and 64 px" in text and row in text.split("## The shipped model")[0]
    both_test = both_meta["metrics"]["test"]
    assert f"| crater wall | {both_test['families']['crater wall']['roc_auc']:.3f} (" in text
    again = json.loads(run_recipe(worker_python, *data, "--evaluate", both, "--card", ""))
    assert again["families"]["crater wall"]["roc_auc"] == pytest.approx(both_test["families"]["crater wall"]["roc_auc"], abs=1e-6)


CORNER_TILE = "hirise-terrain/tiles/ESP_011289_1950_RED-0039.jpg"


def test_a_patch_on_a_chunk_corner_is_found_by_the_dense_grid(shared_data, worker_python, tmp_path):
    """The paper's "patch cut by the chunk edge": the same real terrain and ice patch, once at the
    centre of a chunk and once on the corner where four chunks meet. At STRIDE = CHUNK the four
    chunks each see a quarter of it; at STRIDE = CHUNK / 2 one chunk is centred on it again."""
    import numpy as np
    from PIL import Image

    from model.trainingdata.ice.rendered_caster import implant_ice_patches

    crop = np.asarray(Image.open(shared_data / CORNER_TILE).convert("L").resize((256, 256)), np.float32) / 255.0
    terrain = np.pad(crop, 256, mode="reflect")  # seamless room to move the patch within
    patched, _, info = implant_ice_patches(terrain[256:512, 256:512].copy(), np.random.default_rng(2), count=1, min_size_px=14,
                                           contrast_range=(0.3, 0.5), return_info=True)
    terrain[256:512, 256:512] = patched
    row, col = (int(round(v)) + 256 for v in info[0]["centre"])
    # 8 m -> 1 m, smoothly (blocks of 8 x 8 equal pixels would be a texture no image has), once:
    # both scenes are cut from the same pixels
    around = terrain[row - 128: row + 192, col - 128: col + 192]
    fine = np.asarray(Image.fromarray(around, "F").resize((320 * 8, 320 * 8), Image.BILINEAR))

    def scene(name, patch_at):
        """The 256-px window with the patch at (patch_at, patch_at), at 1 m: 2 x 2 chunks of 1024 px."""
        top = (128 - patch_at) * 8
        dn = (fine[top: top + 2048, top: top + 2048] * 900 + 50).astype(np.uint16)
        return helpers.write_geotiff(tmp_path / f"{name}.tif", dn, "UInt16", helpers.default_geotransform(2048, 2048), helpers.mars_equirectangular_wkt())

    def probabilities(path, stride):
        chunks = helpers.run_worker(worker_python, "detect", path, "--chunk-size", 1024, "--stride", stride).check().result["chunks"]
        return {(c["x_off"], c["y_off"]): c["probability"] for c in chunks}

    centred = probabilities(scene("centred", 64), 1024)[(0, 0)]
    on_corner = scene("corner", 128)
    cut = probabilities(on_corner, 1024)
    dense = probabilities(on_corner, 512)
    assert centred >= rules.ICY_THRESHOLD, centred
    assert max(cut.values()) < rules.ICY_THRESHOLD - 0.1, cut  # blind: every chunk holds a quarter of it
    assert dense[(512, 512)] == pytest.approx(centred, abs=1e-4)  # the same pixels, centred again
    assert max(dense, key=dense.get) == (512, 512)
