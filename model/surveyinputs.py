"""The images of a survey: raster files, folders of rasters, and hiriseice:find's footprints (each footprint's JP2,
by the file name of its jp2_url, in the images folder: where hiriseice:download put it)."""

import os
from typing import Callable, Dict, Iterator, List, Sequence

from osgeo import gdal

from . import files
from .download import DownloadItem, downloaded_jp2s
from .gdalstate import gdal_exceptions
from .pdslabel import pixels_label
from .raster import RASTER_SUFFIXES, image_id_of
from .surveystore import SurveyError, SurveyImage

# hiriseice:find's layers, and the CSV of `python -m model.catalog --csv` (the same products and their jp2_url, without QGIS)
FOOTPRINT_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".sqlite", ".csv")


def survey_images(sources: Sequence[str], images_folder: str = "", warn: Callable[[str], None] = lambda message: None) -> List[SurveyImage]:
    """The images of the survey, in the order given, each once.

    A source is a raster file, a folder (its raster files, not its subfolders; hidden files such
    as download's partial files are left out) or a footprint layer from hiriseice:find, whose
    JP2s are looked for in images_folder (default: the layer's own folder); those not downloaded
    are left out with a ``warn``ing (download.downloaded_jp2s).
    """
    images: Dict[str, SurveyImage] = {}
    files_seen: Dict[str, str] = {}  # the file itself (links followed) -> the path it was first given by
    for source in sources:
        for path in _paths_of(source, images_folder, warn):
            if not files.is_utf8(path):  # the GeoPackage's text cannot hold its name: writing its rows ended every run of the survey
                warn(f"{files.shown(path)} is left out: its name is not UTF-8 text, which the survey's "
                     "GeoPackage must record. Rename it (e.g. with only letters, digits, '_' and '-') and run the survey again.")
                continue
            image = SurveyImage(image_id_of(path), os.path.abspath(path))
            real = files.path_key(os.path.realpath(path))
            if real in files_seen and files_seen[real] != image.path:
                warn(f"{image.path} is the same file as {files_seen[real]} (a link, or another path to it): it is surveyed once.")
                continue
            files_seen[real] = image.path
            earlier = images.get(image.image_id)
            if earlier and earlier.path != image.path:
                raise SurveyError(
                    f"Two rasters have the image ID {image.image_id} ({earlier.path} and {image.path}); a survey keys its rows by it. "
                    "Survey one of them, or rename the other."
                )
            images[image.image_id] = image
    if not images:
        raise SurveyError(f"No raster to survey in {', '.join(sources) or 'the input'}. Give raster files, folders of rasters, or footprints from hiriseice:find.")
    return list(images.values())


def _paths_of(source: str, images_folder: str, warn: Callable[[str], None]) -> Iterator[str]:
    if os.path.isdir(source):
        names = sorted(n for n in os.listdir(source) if n.lower().endswith(RASTER_SUFFIXES) and not n.lower().endswith(".lbl") and not n.startswith("."))
        yield from (_through_label(os.path.join(source, n)) for n in names)
    elif source.lower().endswith(FOOTPRINT_SUFFIXES) and os.path.isfile(source):
        folder = images_folder or os.path.dirname(os.path.abspath(source))
        yield from downloaded_jp2s(footprint_jp2_paths(source, folder), folder, warn)
    elif os.path.exists(source):
        yield _through_label(source)
    else:
        raise SurveyError(f"'{source}' does not exist. Give raster files, folders of rasters, or footprints from hiriseice:find.")


def _through_label(path: str) -> str:
    """A PDS3 image's raw pixels (.IMG) by the label beside it (a folder of PDS products had failed every image); any other raster as it is."""
    return pixels_label(path) or path


def footprint_jp2_paths(path: str, images_folder: str) -> List[str]:
    """The local JP2 of every footprint of a hiriseice:find layer: where hiriseice:download put it in images_folder."""
    with gdal_exceptions():
        try:
            ds = gdal.OpenEx(path, gdal.OF_VECTOR)
        except RuntimeError as exc:
            raise SurveyError(f"'{path}' is not a vector file GDAL can read ({exc}). Give the footprints written by hiriseice:find "
                              "(or python -m model.catalog --csv).") from None
    for index in range(ds.GetLayerCount()):
        layer = ds.GetLayer(index)
        if layer.GetLayerDefn().GetFieldIndex("jp2_url") >= 0:
            urls = [feature.GetField("jp2_url") for feature in layer]
            return [os.path.join(images_folder, DownloadItem(url).name) for url in urls if url]
    raise SurveyError(f"'{path}' has no layer with a jp2_url field. Give the footprints written by hiriseice:find, or the downloaded rasters themselves.")
