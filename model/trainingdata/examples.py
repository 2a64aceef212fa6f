"""Training examples: a real terrain crop, with ice of one family or one kind of look-alike,
degraded and read as the network reads a chunk.

A positive gets ice of one family (and, as often as negatives, unrelated look-alikes, so that no
look-alike is a cue for the label); a negative gets one kind of look-alike or none.
"""

from typing import Dict, Optional, Sequence

import numpy as np

from ..preprocess import DEFAULT_NORMALISATION, normalise, resize, to_uint8
from .degrade import degrade
from .ice.crater_wall import implant_crater_wall_ice
from .ice.natural_shade import implant_natural_shade_ice
from .ice.rendered_caster import implant_ice_patches
from .ice.stone_field import implant_stone_field_ice
from .lookalikes.bare_casters import implant_shadowing_features
from .lookalikes.bright_lines import implant_bright_lines
from .lookalikes.hot_pixels import implant_hot_pixels
from .lookalikes.scene_conditions import apply_co2_frost, apply_low_contrast
from .lookalikes.sunlit_bright import implant_sunlit_bright_patches
from .lookalikes.sunlit_rocks import implant_sunlit_bright_rocks

# Patch sizes in crop pixels (227-px crops): below 8 px a patch is a few input pixels.
MIN_PATCH_PX = 8
FAMILIES = {
    "natural shade": lambda image, rng, valid: implant_natural_shade_ice(image, rng, valid=valid, min_size_px=MIN_PATCH_PX, return_info=True),
    "stone field": lambda image, rng, valid: implant_stone_field_ice(image, rng, valid=valid, return_info=True),
    "crater wall": lambda image, rng, valid: implant_crater_wall_ice(image, rng, valid=valid, return_info=True),
    "rendered caster": lambda image, rng, valid: implant_ice_patches(image, rng, valid=valid, min_size_px=MIN_PATCH_PX,
                                                                    contrast_range=(0.05, 0.6), return_info=True),
}
LOOKALIKES = {
    "plain": None,
    "hot pixels": lambda image, rng, valid: implant_hot_pixels(image, rng, valid=valid)[0],
    "bright lines": lambda image, rng, valid: implant_bright_lines(image, rng, valid=valid)[0],
    "sunlit rocks": lambda image, rng, valid: implant_sunlit_bright_rocks(image, rng, valid=valid)[0],
    "sunlit bright patches": lambda image, rng, valid: implant_sunlit_bright_patches(image, rng, valid=valid)[0],
    "bare casters": lambda image, rng, valid: implant_shadowing_features(image, rng, valid=valid)[0],
    "low contrast": lambda image, rng, valid: apply_low_contrast(image, rng),
    "co2 frost": lambda image, rng, valid: apply_co2_frost(image, rng),
}
LOOKALIKE_SHARES = {"plain": 0.3, "hot pixels": 0.08, "bright lines": 0.05, "sunlit rocks": 0.12, "sunlit bright patches": 0.15,
                    "bare casters": 0.15, "low contrast": 0.075, "co2 frost": 0.075}
TWIN_KIND = "ice removed"  # an icy example's own crop without its ice (make_example's twin)
DISTRACTORS = ("hot pixels", "sunlit rocks", "sunlit bright patches", "bright lines")


def to_input(image, valid, input_size):
    """A crop as the network sees a chunk: shrunk to its input size and stretched (uint8)."""
    small_valid = resize(valid.astype(np.float32), input_size) > 0.5
    return to_uint8(normalise(resize(image, input_size), small_valid, DEFAULT_NORMALISATION))


def _zoom(image, rng):
    """A random square part of the crop (65-100 % of its side): other ground scales."""
    side = min(image.shape)
    size = int(side * rng.uniform(0.65, 1.0))
    r, c = int(rng.integers(0, image.shape[0] - size + 1)), int(rng.integers(0, image.shape[1] - size + 1))
    return image[r:r + size, c:c + size]


def _distract(image, rng, valid):
    for name in DISTRACTORS:
        if rng.random() < 0.08:
            try:
                image = LOOKALIKES[name](image, rng, valid)
            except ValueError:
                pass
    return image


def ice_cells(mask, input_size: int, cells: int) -> np.ndarray:
    """The share of each of cells x cells score-map cells that the ice ``mask`` (crop pixels) covers
    once the crop is read at input_size px."""
    share = resize(mask.astype(np.float32), input_size)
    side = input_size // cells
    return share[: side * cells, : side * cells].reshape(cells, side, cells, side).mean(axis=(1, 3))


def make_example(image, rng, input_size, family: Optional[str] = None, lookalike: Optional[str] = None,
                 families: Sequence[str] = tuple(FAMILIES), degraded: bool = True, cells: int = 0, twin: bool = False) -> Optional[Dict]:
    """One example from a crop (float32 in [0, 1], 0 = no-data): ice of ``family`` when given,
    else the look-alike ``lookalike`` (drawn by LOOKALIKE_SHARES when both are None, with a
    random family of ``families`` for half of the calls). Returns {"image" (uint8), "label",
    "kind", "size_px", "contrast"}, with "cells" (ice_cells, zeros without ice) when ``cells``
    is given, or None when that family has no room on this crop. With ``twin`` and ice, it also
    holds "twin": the same example without the ice (the same part of the crop, distractors and
    degradation), so that the ice is the only difference between a pair of labels.
    """
    if family is None and lookalike is None:
        if rng.random() < 0.5:
            family = str(rng.choice(list(families)))
        else:
            lookalike = str(rng.choice(list(LOOKALIKE_SHARES), p=list(LOOKALIKE_SHARES.values())))
    if rng.random() < 0.5:
        image = _zoom(image, rng)
    valid = image > 0
    size_px = contrast = float("nan")
    ice = plain = None
    if family is not None:
        image = _distract(image, rng, valid)
        plain = image.copy() if twin else None
        try:
            image, ice, infos = FAMILIES[family](image, rng, valid)
        except ValueError:
            return None
        size_px = max(info["size_px"] for info in infos)
        contrast = max(info["contrast"] for info in infos)
    elif LOOKALIKES[lookalike] is not None:
        try:
            image = LOOKALIKES[lookalike](image, rng, valid)
        except ValueError:
            pass
    if degraded and plain is not None:  # one degradation for both
        seed = int(rng.integers(2 ** 63))
        image, plain = (degrade(picture, valid, np.random.default_rng(seed)) for picture in (image, plain))
    elif degraded:
        image = degrade(image, valid, rng)

    def example_of(picture, label, kind, ice_mask, size, strength) -> Dict:
        made = {"image": to_input(picture, valid, input_size), "label": label, "kind": kind, "size_px": size, "contrast": strength}
        if cells:
            made["cells"] = ice_cells(ice_mask, input_size, cells) if ice_mask is not None else np.zeros((cells, cells), np.float32)
        return made

    example = example_of(image, int(family is not None), family or lookalike, ice, size_px, contrast)
    if plain is not None:
        example["twin"] = example_of(plain, 0, TWIN_KIND, None, float("nan"), float("nan"))
    return example
