"""Real HiRISE terrain crops: the folders of ../shared/data/hirise-terrain and hirise-terrain-v1
(``classmap.csv``, ``labels.txt`` of file and landform id, ``tiles/``)."""

import csv
import os
from typing import Dict, List, Sequence

import numpy as np

from ..products import observation_of


def load_tiles(folders: Sequence[str]) -> List[Dict]:
    """Every crop of the terrain folders: {name, observation, landform (name), image (float32 in [0, 1])}."""
    tiles = []
    for folder in folders:
        with open(os.path.join(folder, "classmap.csv")) as handle:
            classes = {int(row[0]): row[1].strip() for row in csv.reader(handle)}
        with open(os.path.join(folder, "labels.txt")) as handle:
            for line in handle:
                name, landform = line.split()
                image = _grey(os.path.join(folder, "tiles", name))
                tiles.append({"name": name, "observation": observation_of(name), "landform": classes[int(landform)], "image": image})
    return tiles


def _grey(path: str) -> np.ndarray:
    """A crop's mean over its bands, in [0, 1]: through GDAL, or Pillow where GDAL is absent (a
    GPU machine training the default model); both decode JPEG with libjpeg."""
    try:
        from osgeo import gdal
    except ImportError:
        from PIL import Image

        with Image.open(path) as picture:
            image = np.asarray(picture)
        image = np.moveaxis(image, -1, 0) if image.ndim == 3 else image  # bands first, as GDAL gives them
    else:
        image = gdal.Open(path).ReadAsArray()
    image = image.astype(np.float32) / 255.0
    return image.mean(axis=0) if image.ndim == 3 else image
