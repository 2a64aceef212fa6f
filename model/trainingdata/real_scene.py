"""A georeferenced sample scene of real HiRISE terrain: one real crop per chunk, ice of every family
drawn in half of them, look-alikes in the others.

The crops come from observations a model never trained on (its card's held-out ones), so the demo
shows the model on terrain it has not seen. Each crop (227 px of a browse image) is enlarged to a
1024-px chunk with a little grain, which the network reads back at its own input size.
"""

import time
from typing import Dict, List, Sequence

import numpy as np

from ..preprocess import resize
from .examples import FAMILIES, LOOKALIKES
from .scene import HIRISE_MAX_DN, NODATA_DN, footprint_mask, mars_scene_raster

# Look-alikes for the chunks without ice, in turn: what a survey mostly meets.
SCENE_LOOKALIKES = ("plain", "sunlit rocks", "sunlit bright patches", "bare casters", "hot pixels", "plain")
FOOTPRINT_ANGLE_DEG = 2.5
GRAIN = 0.004  # of the DN range: the sensor noise a browse crop lost when it was shrunk


def scene_crops(tiles: Sequence[Dict], observations: Sequence[str], count: int, rng: np.random.Generator, spare: int = 0) -> List[Dict]:
    """``count`` crops of the given observations (and up to ``spare`` more), from as many observations
    as possible, without no-data (edge crops) and without hard landforms (the demo shows ice and its
    common look-alikes)."""
    wanted = set(observations)
    usable = [t for t in tiles if t["observation"] in wanted and t["landform"] not in ("edge", "spider", "swiss cheese", "bright dune")
              and (t["image"] > 0).all()]
    by_observation: Dict[str, List[Dict]] = {}
    for tile in usable:
        by_observation.setdefault(tile["observation"], []).append(tile)
    if len(usable) < count:
        raise ValueError(f"only {len(usable)} usable crops of the held-out observations; {count} needed")
    count = min(len(usable), count + spare)
    chosen: List[Dict] = []
    names = sorted(by_observation)
    rng.shuffle(names)
    taken = set()
    while len(chosen) < count:  # one crop per observation in turn
        for name in names:
            # each crop by identity: comparing the crops' dicts compared their pixel arrays, which raised where the two terrain
            # folders hold crops of one name (48, with other pixels)
            left = [t for t in by_observation[name] if id(t) not in taken]
            if left and len(chosen) < count:
                chosen.append(left[int(rng.integers(len(left)))])
                taken.add(id(chosen[-1]))
    return chosen


def _drawn(crop: np.ndarray, rng: np.random.Generator, family: str, lookalike: str):
    """The crop with ice of ``family`` (or the look-alike when family is empty): (image, patch infos)."""
    valid = crop > 0
    if family:
        image, _mask, infos = FAMILIES[family](crop, rng, valid)
        return image, infos
    if LOOKALIKES[lookalike] is None:
        return crop, []
    try:
        return LOOKALIKES[lookalike](crop, rng, valid), []
    except ValueError:  # no room for it on this crop
        return crop, []


def write_real_terrain_scene(path, tiles: Sequence[Dict], observations: Sequence[str], columns: int = 4, rows: int = 3,
                             chunk_size: int = 1024, rng_seed: int = 0, pixel_size_m: float = 0.25,
                             latitude_deg: float = -55.0) -> Dict:
    """Write a UInt16 GeoTIFF of ``columns`` x ``rows`` chunks, each a real crop of ``observations``,
    in the Mars CRS and rotated footprint of the synthetic sample scene, and describe it: ``path``,
    ``chunk_size``, ``ice_chunks`` (chunk ids, row * columns + col), ``chunks`` (one dict per chunk:
    ``chunk_id``, ``crop``, ``observation``, ``family`` or ``lookalike``, ``patches``), ``seconds``.
    A family with no room on a crop (no shade, no wall) takes the next crop."""
    t_start = time.time()
    rng = np.random.default_rng(rng_seed)
    count = columns * rows
    crops = scene_crops(tiles, observations, count, rng, spare=20)  # spares: for a family with no room on a crop
    ice_ids = set(int(i) for i in rng.permutation(count)[:count // 2])
    families, lookalikes = list(FAMILIES), list(SCENE_LOOKALIKES)
    width, height = columns * chunk_size, rows * chunk_size
    chunks = []
    dn = np.zeros((height, width), np.uint16)
    for chunk_id in range(count):
        family = families.pop(0) if chunk_id in ice_ids else ""
        lookalike = "" if family else lookalikes.pop(0)
        families += [family] if family else []  # cycle, so every family appears
        lookalikes += [lookalike] if lookalike else []
        while True:
            tile = crops.pop(0)
            try:
                image, infos = _drawn(tile["image"], rng, family, lookalike)
                break
            except ValueError:  # no room for this family on this crop: the next crop
                if not crops:
                    raise ValueError(f"no crop of the held-out observations has room for {family} ice") from None
        scale = chunk_size / image.shape[0]
        big = resize(image, chunk_size) + rng.normal(0.0, GRAIN, (chunk_size, chunk_size)).astype(np.float32)
        r0, c0 = (chunk_id // columns) * chunk_size, (chunk_id % columns) * chunk_size
        dn[r0:r0 + chunk_size, c0:c0 + chunk_size] = np.clip(np.rint(80 + 700 * big), 1, HIRISE_MAX_DN)
        chunks.append({"chunk_id": chunk_id, "crop": tile["name"], "observation": tile["observation"], "landform": tile["landform"],
                       "family": family, "lookalike": lookalike,
                       "patches": [{"size_px": round(info["size_px"] * scale, 1), "contrast": round(float(info["contrast"]), 3)}
                                   for info in infos]})
    dn[~footprint_mask(0, height, width, height, FOOTPRINT_ANGLE_DEG)] = NODATA_DN
    metadata = {"SYNTHETIC": "PARTLY", "INSTRUMENT": "real HiRISE RED browse crops, enlarged, with drawn ice",
                "LATITUDE_DEG": "%.3f" % latitude_deg, "RNG_SEED": str(rng_seed)}
    with mars_scene_raster(path, width, height, pixel_size_m=pixel_size_m, latitude_deg=latitude_deg, metadata=metadata) as ds:
        ds.GetRasterBand(1).WriteArray(dn)
    return {"path": str(path), "chunk_size": chunk_size, "ice_chunks": sorted(ice_ids), "chunks": chunks,
            "seconds": time.time() - t_start}
