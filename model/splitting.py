"""Train/validation splits that do not leak: whole images, or whole spatial blocks of one image.

Neighbouring chunks share terrain, illumination and often the same ice patch; a random split
would put near-copies on both sides and inflate the validation score.
"""

import math
from typing import Callable, Collection, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .products import observation_of

# Side, in chunks, of the spatial blocks used when all labels come from one image.
BLOCK_CHUNKS = 3
# Only to compare places on the ground: the radius of any Mars CRS would do as well.
MARS_RADIUS_M = 3_396_190.0
# Chunks side by side share an edge, not ground: their centres a side apart, give or take the sphere's rounding.
TOUCHING = 0.999


class Ground(NamedTuple):
    """Where each labelled chunk lies on Mars, whatever its image's CRS: its centre as a point in space (metres from the
    planet's centre, on a sphere) and its side in metres. Repeat images of a site share ground across observations."""

    points: np.ndarray  # (n, 3)
    sides: np.ndarray  # (n,)

    @classmethod
    def from_degrees(cls, longitudes: Sequence[float], latitudes: Sequence[float], sides: Sequence[float]) -> "Ground":
        lon, lat = np.radians(np.asarray(longitudes, float)), np.radians(np.asarray(latitudes, float))
        points = MARS_RADIUS_M * np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
        return cls(points, np.asarray(sides, float))

    def overlapping_any(self, these: np.ndarray, those: np.ndarray, rows: int = 256) -> np.ndarray:
        """Whether each of ``these`` chunks shares ground with any of ``those``: centres closer than their mean side (an
        approximation of two squares' overlap that holds for any turn of either). In blocks of rows: a season's labels
        against every validation chunk at once would take gigabytes."""
        found = np.zeros(len(these), bool)
        for start in range(0, len(these), rows):
            part = these[start:start + rows]
            distance = np.linalg.norm(self.points[part][:, None, :] - self.points[those][None, :, :], axis=2)
            found[start:start + rows] = (distance < TOUCHING * (self.sides[part][:, None] + self.sides[those][None, :]) / 2).any(axis=1)
        return found

    def sinusoidal(self) -> np.ndarray:
        """(n, 2) the centres in metres on the sinusoidal map of the sphere (x = R lon cos lat, y = R lat): one frame for
        blocks of ground across images in any CRS, fixed on the planet, so that a later round's blocks are the earlier
        round's whatever labels it adds (blocks laid from the labels' own mean had moved with every label)."""
        x, y, z = self.points.T
        longitude, latitude = np.arctan2(y, x), np.arcsin(np.clip(z / MARS_RADIUS_M, -1.0, 1.0))
        return np.stack([MARS_RADIUS_M * longitude * np.cos(latitude), MARS_RADIUS_M * latitude], axis=1)

    def block_side(self, block: int) -> float:
        """The side in metres of blocks of ``block`` chunks, rounded up to a power of two so that it, and the blocks, stay
        the same in a later round whose chunks measure a little otherwise (another image's pixels)."""
        return float(2.0 ** math.ceil(math.log2(block * float(self.sides.max()))))


def observations_on_shared_ground(observations: Sequence[str], ground: Ground) -> Dict[str, str]:
    """Observation -> the key of all the observations whose labelled chunks share ground with it, directly or through
    another ('A+B', sorted): repeat images of a site in other seasons, whose chunks had been split between training
    and validation, and validation was then scored on ground the model had trained on."""
    observations = np.asarray(observations)
    names = sorted(set(observations.tolist()))
    joined = {name: name for name in names}

    def root(name):
        while joined[name] != name:
            name = joined[name]
        return name

    members = {name: np.flatnonzero(observations == name) for name in names}
    # each observation's chunks within a sphere about their mean: observations of other sites are told apart without
    # comparing their chunks one by one
    centres = {name: ground.points[members[name]].mean(axis=0) for name in names}
    reach = {name: float(np.linalg.norm(ground.points[members[name]] - centres[name], axis=1).max() + ground.sides[members[name]].max())
             for name in names}
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if root(first) == root(second) or np.linalg.norm(centres[first] - centres[second]) > reach[first] + reach[second]:
                continue
            if ground.overlapping_any(members[first], members[second]).any():
                joined[root(second)] = root(first)
    components: Dict[str, List[str]] = {}
    for name in names:
        components.setdefault(root(name), []).append(name)
    return {name: "+".join(components[root(name)]) for name in names}


def block_groups(image_ids: Sequence[str], rows: Sequence[int], cols: Sequence[int], block: int = BLOCK_CHUNKS,
                 labels: Optional[Sequence[int]] = None, log: Callable[[str], None] = lambda message: None,
                 places: Optional[Sequence[Tuple[float, float]]] = None, ground_block: float = 0.0, ground: Optional[Ground] = None) -> List[str]:
    """Group key per sample: the observation when labels come from several (two products or tiles
    of one observation show the same ground), else a block of block x block chunks of each image.
    With ``labels``, observations only where each class lies in two of them at least: else holding
    out whole observations leaves one side with one class (an image labelled all not icy beside one
    with ice), and blocks of each image are held out instead, which ``log`` hears. Products of one
    observation alone are blocked on the ground they share where ``places`` (each chunk's centre in
    map units) and ``ground_block`` (a block's side there) are given: blocks of each product's own
    pixel grid put the same ground on both sides. With ``ground``, observations that share ground are one (repeat
    images of a site), blocked on their shared ground too, and its sinusoidal map gives ``places`` and ``ground_block``
    (metres) across CRSs."""
    observations = [observation_of(i) or i for i in image_ids]
    if ground is not None:
        shared = observations_on_shared_ground(observations, ground)
        for key in sorted(set(shared.values())):
            if "+" in key:
                log(f"{', '.join(key.split('+'))} image the same ground (repeat images of a site): their chunks are split as one observation's")
        observations = [shared[o] for o in observations]
        places, ground_block = [tuple(p) for p in ground.sinusoidal()], ground.block_side(block)
    if len(set(observations)) > 1:
        if labels is None or observations_split_both_ways(observations, labels):
            return observations
        log("validation is held out in blocks of each image, not by whole observation: icy and not-icy chunks do not each lie in two "
            "observations, so holding out one would leave a side with one kind only")
    products = {o: {i for i, other in zip(image_ids, observations) if other == o} for o in set(observations)}
    def ground_block_of(observation, place):
        return f"{observation}/m{math.floor(place[0] / ground_block)}_{math.floor(place[1] / ground_block)}"

    if len(products) == 1 and len(next(iter(products.values()))) > 1 and places is not None and ground_block > 0:
        return [ground_block_of(o, p) for o, p in zip(observations, places)]
    # blocks of one product only: two products of one observation (RED, COLOR), or repeat images of a site, show the same
    # ground on other pixel grids: blocks of that ground where it is known, else the observation whole
    if ground is not None:
        return [ground_block_of(o, p) if len(products[o]) > 1 and len(products) > 1 else f"{i}/b{r // block}_{c // block}"
                for i, o, r, c, p in zip(image_ids, observations, rows, cols, places)]
    return [o if len(products[o]) > 1 and len(products) > 1 else f"{i}/b{r // block}_{c // block}"
            for i, o, r, c in zip(image_ids, observations, rows, cols)]


def groups_seen_before(groups: Sequence[str], image_ids: Sequence[str], rows: Sequence[int], cols: Sequence[int], earlier: Collection[str],
                       block: int = BLOCK_CHUNKS) -> List[str]:
    """The groups that hold a sample an earlier split grouped into one of ``earlier`` (a base model's training groups): by
    its group, its observation or its block, since that split may have grouped by the other (one image then, two now)."""
    earlier = set(earlier)
    # repeat images of a site are keyed by all the site's observations ("A+B", "A+B/m3_-40"): a later round that adds a
    # date keys them "A+B+C"; each observation of an earlier key counts, with the block of ground it names
    members = {(member, key.partition("/")[2]) for key in earlier for member in key.partition("/")[0].split("+")}
    seen = set()
    for group, image_id, row, col in zip(groups, image_ids, rows, cols):
        observation = observation_of(image_id) or image_id
        if {group, observation, f"{image_id}/b{row // block}_{col // block}"} & earlier or (observation, "") in members \
                or (group.partition("/")[2].startswith("m") and (observation, group.partition("/")[2]) in members):
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


def without_overlaps(train: np.ndarray, validation: np.ndarray, boxes: Sequence[Tuple[str, int, int, int, int]],
                     ground: Optional[Ground] = None) -> np.ndarray:
    """The training mask less every chunk that shares pixels with a validation chunk of the same
    image, or, with ``ground``, ground with a validation chunk of another image (a repeat image of the site).
    boxes: (image_id, x_off, y_off, width, height) per sample. Blocks are counted in chunk
    sides, so labels of an overlapping grid (detect's STRIDE below the chunk size) put the two
    halves of one chunk's pixels on both sides of a block border."""
    kept = np.asarray(train, bool).copy()
    if ground is not None and validation.any() and kept.any():
        trained, held = np.flatnonzero(kept), np.flatnonzero(validation)
        kept[trained[ground.overlapping_any(trained, held)]] = False
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
        "train_chunks": int(np.count_nonzero(train)),
        "validation_chunks": int(np.count_nonzero(validation)),
    }
