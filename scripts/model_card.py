"""The default model's card, written from its metadata, its test measurement and the
leave-one-family-out measurements (scripts/default_model.py)."""

import json
from typing import Dict, List, Tuple

from model import efficientnet, modelfile
from model.finetune import REFERENCE_KIND
from model.network import PAPER_WIDTHS

TARGET_AUC = 0.95


def _auc(row: Dict) -> str:
    interval = row["roc_auc_interval"]
    return f"{row['roc_auc']:.3f} ({interval['low']:.3f}-{interval['high']:.3f})"


def _vs_real(row: Dict) -> str:
    return f"{row['roc_auc_vs_real_terrain']:.3f}" if "roc_auc_vs_real_terrain" in row else "n/a"


def _rate(value: Dict) -> str:
    return "n/a" if value["rate"] is None else f"{value['rate']:.3f} ({value['count']})"


def _recipe(fold: Dict) -> str:
    widths = tuple(fold.get("widths", PAPER_WIDTHS))
    network = "paper widths" if widths == PAPER_WIDTHS else f"widths {widths[0]}-{widths[-1]}"
    epochs = fold.get("epochs", "?")
    return f"{network}, {epochs} epoch{'' if epochs == 1 else 's'}"


def transfer_table(transfer: List[Dict], hard: List[str]) -> str:
    rows = []
    for fold in transfer:
        family = fold["held_out_family"]
        held = fold["families"][family]
        fpr = fold["false_positive_rate_at_0.5"]
        others = [f"{name} {row['roc_auc']:.3f}" for name, row in fold["families"].items() if name != family]
        rows.append(
            f"| {family} | {_recipe(fold)} | {_auc(held)} | {_vs_real(held)} | {held['recall_at_0.5']:.2f} | {_rate(fpr['real ice-free terrain (not the hard landforms)'])} | "
            + " | ".join(_rate(fpr[name]) for name in hard) + f" | {', '.join(others)} |"
        )
    if not rows:
        return "No leave-one-family-out run was found for this card (scripts/train_default_model --hold-out FAMILY).\n"
    header = "| held-out family | network, epochs | ROC AUC (95 % interval) | ROC AUC against real crops only | recall at p >= 0.5 | FPR real ice-free terrain (n) | " + " | ".join(
        f"FPR {name} (n)" for name in hard) + " | the families it trained on, AUC |"
    return "\n".join([header, "|" + " --- |" * (7 + len(hard))] + rows) + "\n"


def _previous_section(test, previous, hard) -> str:
    if not previous:
        return ""
    name = f" ({previous['model']})" if previous.get("model") else ""
    return f"The previous default model{name} on the same held-out examples:\n\n" + comparison_table(test, previous, hard)


def comparison_table(test: Dict, previous: Dict, hard: List[str]) -> str:
    """The shipped model against the previous default on the same held-out examples."""
    rows = [f"| {name} ROC AUC | {previous['families'][name]['roc_auc']:.3f} | {row['roc_auc']:.3f} |" for name, row in test["families"].items()]
    for name in ["real ice-free terrain (not the hard landforms)"] + hard:
        before, after = previous["false_positive_rate_at_0.5"][name], test["false_positive_rate_at_0.5"][name]
        rows.append(f"| FPR {name} | {_rate(before)} | {_rate(after)} |")
    rows.append(f"| expected calibration error | {previous['ece']:.3f} | {test['ece']:.3f} |")
    return "\n".join(["| on the same held-out examples | previous default | this model |", "| --- | --- | --- |"] + rows) + "\n"


def _describe_survey_share(prior: Dict) -> str:
    requested = prior.get("requested", prior["prior"])
    said = f"{prior['prior']:.2f}"
    if prior["prior"] < requested:
        return (f"{said}: the paper's training set had {requested:.2f}, lowered so that at most {prior['max_false_alarms']:.1%} of the"
                f" {prior['validation_crops']} real ice-free crops of the validation observations are called icy")
    return f"{said}, the share in the paper's training set"


def _at_survey_share(test: Dict) -> str:
    at = test.get("ece_at_survey_share")
    if not at:
        return ""
    return (f"; with the held-out examples weighted to the survey's share of icy chunks ({at['share']:.0%}), as a survey meets"
            f" the calibration, {at['ece']:.3f}")


def _network_paragraph(meta: Dict) -> str:
    t, architecture = meta["training"], meta["architecture"]
    place = f"on a 2-core {t.get('device', 'CPU')}"
    base = meta.get("base_model")
    start = f"starting from the weights of {base['name']} {base['version']}" if base else "from random weights"
    if architecture.get("name") == efficientnet.NAME:
        return (f"The default model of HiRISE Ice Patches: an EfficientNet-Lite0 trunk, one {meta['input_size']}-px input for a {meta['chunk_size']}-px\n"
                f"chunk, pooled to one logit, then calibrated; trained by `scripts/train_default_model --trunk {efficientnet.NAME}` in"
                f" {t.get('run_minutes', 0):.0f} min {place}, {start if base else 'starting from ImageNet weights'}.")
    widths = tuple(architecture["widths"])
    layers = f"{'the paper' if widths == PAPER_WIDTHS else 'narrower'} widths ({', '.join(str(w) for w in widths)} channels)"
    if architecture.get("scales"):
        scale = max(architecture["scales"])
        opening = (f"The default model of HiRISE Ice Patches: two small Xceptions of Gergács & Kereszturi, {layers}, reading each\n"
                   f"{meta['chunk_size']}-px chunk at two scales, {modelfile.reading_sizes(meta)} px (one {meta['input_size']}-px input, the coarse network on its\n"
                   f"{scale} x {scale} averages), their logits weighed by one dense unit, then calibrated.")
        if "members" in t:
            return opening + f" Each was trained by `scripts/train_default_model`\n({t.get('run_minutes', 0):.0f} min in all {place}) and the two joined by its `--combine`."
        return opening + f" Both trained together by `scripts/train_default_model`\nin {t.get('run_minutes', 0):.0f} min {place}, {start}."
    return (f"The default model of HiRISE Ice Patches: the small Xception of Gergács & Kereszturi with {layers},\n"
            f"a {meta['input_size']}-px input for a {meta['chunk_size']}-px chunk, trained by `scripts/train_default_model` in"
            f" {t.get('run_minutes', 0):.0f} min {place}, {start}.")


def _epochs(meta: Dict) -> str:
    def run(t, loss):
        return (f"learning rate {t['learning_rate']}, {t['epochs_run']} epochs, the weights of epoch {t['best_epoch']} kept"
                f" (lowest validation loss, {loss:.4f})")

    members = meta["training"].get("members")
    if members:
        return "; ".join(f"the {member['input_size']}-px network: {run(member, member['best_val_loss'])}" for member in members)
    return run(meta["training"], meta["metrics"]["best_val_loss"])


# What the card says of each family of benchmarks/unseen/ (its JSON's "family"), the blindest first.
UNSEEN_FAMILIES = {
    "cap remnants": "written blind to the training generators and to the families below, and kept in reserve (never used to choose "
                    "between models): relief estimated from the crop's own brightness, ice where the shade would last longest on "
                    "its poleward side, its outline what survives of the cap, its brightness ice albedo times the light there",
    "lee frost": "written blind to the training generators, by an engineer who read only the paper, the data's README and the "
                 "benchmark's harness: shade from a black top-hat behind a lit sunward band; ice filling it, on its poleward rim, "
                 "at the foot of the relief or as grains, its brightness added with streaks. Since 2026-12-04 it has also been "
                 "among what chose between candidate models, so it is no longer quite blind",
    "frost lobes": "frost lobes on slopes turned from the sun, blended toward a brightness above their surroundings; written apart "
                   "from the training families, sharing none of their code. What it first showed, that the model wanted ice to "
                   "outshine everything around it, changed the training families on 2026-12-04 (\"faint\" ice): models trained "
                   "since then have met its lesson, never its code or its drawings",
}


def _unseen_rows(meta: Dict, unseen: List[Dict]) -> List[Tuple[Dict, Dict]]:
    """(family measurement, this model's row of it) for each benchmarks/unseen_family.py JSON that
    measured this very model, in UNSEEN_FAMILIES' order."""
    order = list(UNSEEN_FAMILIES)
    found = modelfile.rows_measuring(meta, unseen or [])
    return sorted(found, key=lambda pair: order.index(_family(pair[0])) if _family(pair[0]) in order else len(order))


def _family(measured: Dict) -> str:
    return measured.get("family", "frost lobes")  # measurements made before --family drew frost lobes


def unseen_section(meta: Dict, unseen: List[Dict] = None) -> str:
    rows = _unseen_rows(meta, unseen)
    if not rows:
        return ""
    lines, described = [], []
    for measured, row in rows:
        family = _family(measured)
        described.append(f"- **{family}** ({measured['icy']} crops of the held-out observations with it drawn, against "
                         f"{measured['ice_free']} as they are): {UNSEEN_FAMILIES.get(family, 'see benchmarks/unseen/')}.")
        for name in ("as it is", "with the mirror (detect's default)"):
            r = row[name]
            sizes = " / ".join(f"{b['recall']:.2f}" for b in r["by_size"].values() if b["count"])
            bins = " / ".join(k for k, b in r["by_size"].items() if b["count"])
            lines.append(f"| {family} | {name} | {r['roc_auc']:.3f} ({r['interval']['low']:.3f}-{r['interval']['high']:.3f}) | {r['recall']:.2f} | "
                         f"{sizes} ({bins}) | {_by_contrast(r)} | {_by_contrast(r, 'by_rise')} | {r['fpr_real_terrain']:.3f} |")
    return f"""The shipped weights on ice drawn ways no model here trained on (`.venv/bin/python benchmarks/unseen_family.py --family NAME`):
{chr(10).join(described)}

| family | scored | ROC AUC (95 % interval) | recall at p >= 0.5 | recall by patch size | ROC AUC by the patch's contrast | ROC AUC by the ice's rise in the crop's stretch | FPR real ice-free terrain |
| --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(lines)}

{CONTRAST_NOTE}

"""


# How to read the contrast column (benchmarks/unseen_family.py's CONTRAST_BINS).
CONTRAST_NOTE = ("The contrast is the largest patch's brightness above its surroundings as the family drew it, on the 0-1 stretch "
                 "(frost lobes: the brightness their blend aims at, which their soft, partial blend reaches only in part); each bin's "
                 "icy crops are ranked against every crop as it is. Below 0.1 a patch is faint even to the eye. The rise is what the "
                 "drawing delivered: how much the ice brightened its brightest pixels (the 99.9th percentile of the change) as a share "
                 "of the crop's own stretch, in the same bins; ice that rises 0.4 or more is plain to the eye.")


# How to read the in-family contrast column (scripts/default_model.py's by_contrast).
IN_FAMILY_CONTRAST_NOTE = ("The contrast here is the largest patch's brightness above the brighter part of its surroundings, as the "
                           "training families paint it (patches.paint_ice), on the same 0-1 stretch; each bin's icy examples are ranked "
                           "against every ice-free one. Faint ice is hard for this network in the families it trained on too, so "
                           "faintness and the look of ice drawn another way are two separate gaps in the table above.")


def _by_contrast(row: Dict, key: str = "by_contrast") -> str:
    """ROC AUC per bin of ``key`` (the contrast, or the ice's rise), as 'auc / auc (bins)'; measurements made
    before those bins: a dash."""
    bins = {k: b for k, b in (row.get(key) or {}).items() if b["count"]}
    if not bins:
        return "-"
    return " / ".join(f"{b['roc_auc']:.2f}" for b in bins.values()) + " (" + " / ".join(bins) + ")"


def _carried(meta: Dict) -> str:
    """What of the terrain the model file redistributes, besides the weights (modelfile's replay set)."""
    kinds = (meta.get("replay") or {}).get("kinds", {})
    if not kinds:
        return "Derived weights only; no image is redistributed."
    reference = kinds.get(REFERENCE_KIND, 0)
    rehearsal = sum(kinds.values()) - reference
    return (f"Besides the weights, the model file carries {rehearsal} examples made from these crops (with drawn ice or look-alikes) for "
            f"fine-tuning to rehearse, and {reference} of the crops themselves (resampled to the input size, stretched to 8 bits) on which a "
            "fine-tuning round holds its false alarms, each credited as above.")


def model_card(meta: Dict, test: Dict, transfer: List[Dict], hard: List[str], attribution: str, previous: Dict = None, unseen: List[Dict] = None) -> str:
    t = meta["training"]
    m = meta["metrics"]
    families = "\n".join(
        f"| {name} | {_auc(row)} | {_vs_real(row)} | {row['recall_at_0.5']:.2f} | {row['count']} | {_by_contrast({'by_contrast': test.get('by_contrast', {}).get(name)})} |"
        for name, row in test["families"].items()
    )
    fpr = "\n".join(f"| {name} | {_rate(value)} |" for name, value in test["false_positive_rate_at_0.5"].items())
    sizes = "\n".join(f"| {name} | {row['count']} | {row['recall']:.2f} |" for name, row in test["by_size"].items())
    reliability = "\n".join(
        f"| {r['low']:.1f}-{r['high']:.1f} | {r['count']} | {r['mean_predicted']:.3f} | {r['observed']:.3f} |" for r in test["reliability"] if r["count"]
    )
    calibration = meta.get("calibration")
    fitted = (f"Platt scaling of the logit fitted on the validation observations, then moved from their share of icy chunks"
              f" ({calibration['prior']['fitted_share']:.2f}) to a survey's ({_describe_survey_share(calibration['prior'])}),"
              f" so that a real image, where few chunks hold ice, is not called icy all over (a = {calibration['a']:.3f}, b = {calibration['b']:.3f})."
              f" The held-out set is {test['icy'] / test['examples']:.0%} icy, so its probabilities run below the observed share"
              if calibration and "prior" in calibration else "no calibration (the raw sigmoid)")
    commands = "\n".join(f"    {c}" for c in t.get("commands", []))
    worst = min([fold["families"][fold["held_out_family"]]["roc_auc"] for fold in transfer] +
                [row["as it is"]["roc_auc"] for _, row in _unseen_rows(meta, unseen)], default=float("nan"))
    return f"""# Model card: {meta['name']} {meta['version']}

{_network_paragraph(meta)}

## How well it transfers: ice drawn a way it never saw
{unseen_section(meta, unseen)}Each row below is a model trained by the same recipe without one family of ice patches, scored on that family
on held-out observations. It measures transfer between the families of one generator: the held-out family's
ice is still placed and painted by the helpers the others train on (model/trainingdata/patches.py and
shade.py), so only the blind families above, written apart from that code, measure ice drawn another way.
Worst held-out family, those above included: ROC AUC {worst:.3f} (target >= {TARGET_AUC}).
False-positive rates (FPR) are at p >= 0.5, on real held-out crops as they are. Each row names the
network and the epochs of its run. On a 2-core CPU no row could be run with the shipped recipe (two
scales at 256 px, continued over several runs): the narrow rows (widths 32-256, one 128-px input, one
per family) were each trained from random weights without their family, for 8 epochs at most. All are
short of the shipped model's training: they measure a recipe's transfer, not the shipped weights'. (Three
rows of paper-width networks stood here until 2026-12-07: they continued a model that had trained on 13
of these held-out observations, so they were not held out; docs/default-model.md.)

{transfer_table(transfer, hard)}
## The shipped model on the held-out observations
{test['observations']} observations, {test['examples']} examples ({test['icy']} with ice), never trained on and never used to
choose an epoch; but their numbers were among what chose the shipped model from a few candidates
(docs/default-model.md), which may flatter it a little. Every family below was also in training, so these numbers are in-family: read the table
above first. Each family's AUC is its icy examples against every ice-free example, planted look-alikes
included (intervals resample whole observations), and against the real crops alone.

| family | ROC AUC (95 % interval) | ROC AUC against real crops only | recall at p >= 0.5 | icy examples | ROC AUC by the patch's contrast |
| --- | --- | --- | --- | --- | --- |
{families}

{IN_FAMILY_CONTRAST_NOTE}

| ice-free examples | FPR at p >= 0.5 (n) |
| --- | --- |
{fpr}

{_previous_section(test, previous, hard)}
Calibration: {fitted}. Expected calibration error on the held-out set {test['ece']:.3f}
({test['ece_uncalibrated']:.3f} uncalibrated){_at_survey_share(test)}; on the validation observations {m['ece_calibrated']:.3f}.

Recall at p >= 0.5 by the size of the largest patch (pixels of a 227-px crop; x {meta['input_size'] / 227:.2f} for input pixels):

| patch size | icy examples | recall |
| --- | --- | --- |
{sizes}

## What it has seen, and what it has not
- **No real ice labels.** The terrain is real HiRISE imagery (browse-resolution crops, several metres per pixel),
  but every ice patch is planted by `model/trainingdata/ice`, one module per family:
  - *natural shade*: a patch in the shade the terrain already has, found from the image, nothing drawn;
  - *stone field*: clusters of small spots in the lee of small boulders (real dark specks, or drawn ones);
  - *crater wall*: thin curved, often broken bands along pole-facing walls;
  - *rendered caster*: a patch against a drawn boulder or rim with its shadow (the earlier default model's only family).
  Each is randomised in size (a few input pixels to a third of the chunk), count, shape, edge softness,
  texture and contrast (0.05-0.8 above the local background; since 2026-12-04 a third of patches only faintly
  above the middle of their surroundings, not outshining sunlit faces, and some ragged or in pieces), and every chunk in blur, noise, JPEG and
  JPEG2000 artefacts, stretch and gamma, and 0.25 or 0.5 m product scale.
- **Negatives that look like ice**: bright soft patches in full sun and bright dust, sunlit rocks with their
  own shadows, drawn casters and natural shade without ice, hot pixels, bright transmission lines,
  low-contrast and CO2-frost scenes, and the real spiders, swiss cheese and bright dunes.
- **Not seen**: real residual ice, full-resolution RDR chunks (0.25 m texture), COLOR products, clouds and
  haze beyond low contrast, seasonal CO2 ice sublimating in place (the paper's main false "good" images).
  Judge its calls on real images, label them, and retrain with `hiriseice:train` (BASE_MODEL = this file).
- Data: {t.get('data', '')}. Split by observation: {len(t['split']['train_groups'])} training, {len(t['split']['validation_groups'])} validation
  and {len(t['test_observations'])} held-out observations, each hard landform in the held-out ones.
- {attribution} {_carried(meta)}

## Training
Adam, binary cross-entropy, batch {t['batch_size']}, class weights
{json.dumps({k: round(v, 3) for k, v in t['class_weight'].items()})}, east-west mirrors and brightness/contrast only (north-south
flips would move the shade off the poleward side); {_epochs(meta)}.

Reliability on the held-out set:

| bin | count | mean predicted | observed icy share |
| --- | --- | --- | --- |
{reliability}

## Reproduce
Needs ../shared/data/hirise-terrain and hirise-terrain-v1:
{commands}
These are the commands as they were run, each continuing the model before it. The last one's model was then copied
(`cp build/exp/diverse.hiriseice resources/models/default.hiriseice`), measured into its file
(`scripts/train_default_model --evaluate resources/models/default.hiriseice --store`), and this card written from what
the file stores (`scripts/train_default_model --out resources/models/default.hiriseice --card resources/models/MODEL_CARD.md
--card-only`; the previous default's table needs that model's `--evaluate MODEL --json FILE` given as `--compare FILE`).
The card's other tables read files made beforehand. The transfer table reads `resources/models/transfer/*.json` (the
default of `--transfer`; the runs above named `build/lofo/*.json`, where those files were then), made once per family
by `scripts/train_default_model --epochs 8 --patience 3 --hold-out FAMILY --out build/lofo/FAMILY.hiriseice --json
resources/models/transfer/FAMILY.json`. The families drawn apart read `resources/models/unseen/*.json`, made by
`.venv/bin/python benchmarks/unseen_family.py --family "lee frost" --model MODEL --json resources/models/unseen/lee_frost.json`
(and the same for "frost lobes" and "cap remnants").
"""
