"""Train/validation splits that do not leak: whole images, or whole spatial blocks of one image.

Neighbouring chunks share terrain, illumination and often the same ice patch; a random split
would put near-copies on both sides and inflate the validation score.
"""

import math
from typing import Callable, Collection, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .products import observation_of

# Side, in chunks, of the spatial blocks used when all labels come from one image.
BLOCK_CHUNKS = 3


def block_groups(image_ids: Sequence[str], rows: Sequence[int], cols: Sequence[int], block: int = BLOCK_CHUNKS,
                 labels: Optional[Sequence[int]] = None, log: Callable[[str], None] = lambda message: None,
                 places: Optional[Sequence[Tuple[float, float]]] = None, ground_block: float = 0.0) -> List[str]:
    """Group key per sample: the observation when labels come from several (two products or tiles
    of one observation show the same ground), else a block of block x block chunks of each image.
    With ``labels``, observations only where each class lies in two of them at least: else holding
    out whole observations leaves one side with one class (an image labelled all not icy beside one
    with ice), and blocks of each image are held out instead, which ``log`` hears. Products of one
    observation alone are blocked on the ground they share where ``places`` (each chunk's centre in
    map units) and ``ground_block`` (a block's side there) are given: blocks of each product's own
    pixel grid put the same ground on both sides."""
    observations = [observation_of(i) or i for i in image_ids]
    if len(set(observations)) > 1:
        if labels is None or observations_split_both_ways(observations, labels):
            return observations
        log("validation is held out in blocks of each image, not by whole observation: icy and not-icy chunks do not each lie in two "
            "observations, so holding out one would leave a side with one kind only")
    products = {o: {i for i, other in zip(image_ids, observations) if other == o} for o in set(observations)}
    if len(products) == 1 and len(next(iter(products.values()))) > 1 and places is not None and ground_block > 0:
        return [f"{o}/m{math.floor(x / ground_block)}_{math.floor(y / ground_block)}" for o, (x, y) in zip(observations, places)]
    # blocks of one product only: two products of one observation (RED, COLOR) show the same ground on other pixel grids
    return [o if len(products[o]) > 1 and len(products) > 1 else f"{i}/b{r // block}_{c // block}"
            for i, o, r, c in zip(image_ids, observations, rows, cols)]


def groups_seen_before(groups: Sequence[str], image_ids: Sequence[str], rows: Sequence[int], cols: Sequence[int], earlier: Collection[str],
                       block: int = BLOCK_CHUNKS) -> List[str]:
    """The groups that hold a sample an earlier split grouped into one of ``earlier`` (a base model's training groups): by
    its group, its observation or its block, since that split may have grouped by the other (one image then, two now)."""
    earlier = set(earlier)
    seen = set()
    for group, image_id, row, col in zip(groups, image_ids, rows, cols):
        if {group, observation_of(image_id) or image_id, f"{image_id}/b{row // block}_{col // block}"} & earlier:
            seen.add(group)
    return sorted(seen)


def lineage_groups(metadata: Dict) -> List[str]:
    """The groups a model trained on, with those of the label-trained models it continues (its
    ``seen_groups``): a model records only its direct base, and a round continued from a round
    continued from the first had validated on the first round's training chunks, unsaid."""
    split = metadata.get("training", {}).get("split", {})
    return list(split.get("seen_groups") or split.get("train_groups") or [])


def trained_on_labels(metadata: Dict) -> bool:
    """Whether a model was trained on a geologist's labels (an earlier round; its training records their data),
    not on generated examples (the bundled model's terrain observations are no user's validation chunks)."""
    return isinstance(metadata.get("training", {}).get("data"), dict)


def with_lineage(split: Dict, base_metadata: Optional[Dict]) -> Dict:
    """``split`` with ``seen_groups``: its training groups and, where the base was trained on labels (an
    earlier round), the groups that base's lineage trained on."""
    inherited = lineage_groups(base_metadata) if base_metadata and trained_on_labels(base_metadata) else []
    return dict(split, seen_groups=sorted(set(split.get("train_groups", [])) | set(inherited)))


def observations_split_both_ways(observations: Sequence[str], labels: Sequence[int]) -> bool:
    """Whether icy and not-icy chunks each lie in two observations or more."""
    return all(len({o for o, label in zip(observations, labels) if label == kind}) >= 2 for kind in (0, 1))


def without_overlaps(train: np.ndarray, validation: np.ndarray, boxes: Sequence[Tuple[str, int, int, int, int]]) -> np.ndarray:
    """The training mask less every chunk that shares pixels with a validation chunk of the same
    image. boxes: (image_id, x_off, y_off, width, height) per sample. Blocks are counted in chunk
    sides, so labels of an overlapping grid (detect's STRIDE below the chunk size) put the two
    halves of one chunk's pixels on both sides of a block border."""
    kept = np.asarray(train, bool).copy()
    ids = np.array([box[0] for box in boxes])
    x0, y0, w, h = (np.array([box[k] for box in boxes], np.int64) for k in range(1, 5))
    for image_id in set(ids[validation].tolist()):
        held = np.flatnonzero(validation & (ids == image_id))
        trained = np.flatnonzero(kept & (ids == image_id))
        if not len(trained):
            continue
        overlap = ((x0[trained, None] < x0[held] + w[held]) & (x0[held] < x0[trained, None] + w[trained, None]) &
                   (y0[trained, None] < y0[held] + h[held]) & (y0[held] < y0[trained, None] + h[trained, None]))
        kept[trained[overlap.any(axis=1)]] = False
    return kept


def split_groups(groups: Sequence[str], labels: Sequence[int], validation_fraction: float, seed: int,
                 ineligible: Collection[str] = ()) -> Tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, validation); every group lands wholly on one side, and no ineligible group
    in validation.

    Groups are shuffled with the seed and taken into validation until it holds the wanted
    share of samples; if one side lacks a class, the split is retried with other shuffles
    before giving up and keeping the closest.
    """
    groups = np.asarray(groups)
    labels = np.asarray(labels)
    unique = sorted(set(groups.tolist()))
    if len(unique) < 2:
        raise ValueError("at least two groups (images or spatial blocks) are needed to split train and validation")
    candidates = [group for group in unique if group not in ineligible]
    if not candidates:
        raise ValueError("every group is ineligible for validation")
    target = validation_fraction * len(groups)
    best = None
    for attempt in range(50):
        rng = np.random.default_rng(seed + attempt)
        order = rng.permutation(len(candidates))
        chosen: List[str] = []
        count = 0
        for index in order:
            if count >= target and chosen:
                break
            if len(chosen) == len(unique) - 1:
                break
            chosen.append(candidates[index])
            count += int((groups == candidates[index]).sum())
        validation = np.isin(groups, chosen)
        train = ~validation
        balanced = len(set(labels[validation].tolist())) == 2 and len(set(labels[train].tolist())) == 2
        if balanced:
            return train, validation
        if best is None:
            best = (train, validation)
    return best


def fixed_split(groups: Sequence[str], validation_groups: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, validation) for a given set of validation groups, e.g. a base model's,
    so that continued training never validates on what the base model trained on."""
    validation = np.isin(np.asarray(groups), list(validation_groups))
    if validation.all() or not validation.any():
        raise ValueError("the validation groups must leave samples on both sides")
    return ~validation, validation


def describe_split(groups: Sequence[str], train: np.ndarray, validation: np.ndarray) -> Dict:
    groups = np.asarray(groups)
    return {
        "train_groups": sorted(set(groups[train].tolist())),
        "validation_groups": sorted(set(groups[validation].tolist())),
    }
