"""Helpers shared by the algorithms: rasters as files the worker can read, model files checked
before the worker starts, and the output layers' fields and features (their destinations on disk:
destinations.py).

Paths handed to the worker are absolute: it runs in the plugin folder, while a relative path
a user gives means the folder QGIS (or qgis_process) was started in.
"""

import os
import re
import shutil
import uuid
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from osgeo import gdal, osr
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProcessingException,
    QgsProviderRegistry,
    QgsRasterDataProvider,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
)

from .algorithm import gdal_errors_unprinted, styling
from .destinations import check_written, not_written, processing_temp_folder, replacing_outputs
from .engine import errors, gdal_exceptions, georeference, modelfile
from .sources import source_path

QVARIANT_TYPES = styling.QVARIANT_TYPES

def make_fields(spec: Sequence[Tuple[str, str]]) -> QgsFields:
    """QGIS fields from one of model/schema.py's tables."""
    fields = QgsFields()
    for name, kind in spec:
        fields.append(QgsField(name, QVARIANT_TYPES[kind]))
    return fields


def _json_value(value):
    """NaN and None both become NULL."""
    if isinstance(value, float) and value != value:
        return None
    return value


def features_from_dicts(rows: Iterable[Dict], fields: QgsFields, geometry_key: Optional[str] = None, multi: bool = False) -> List[QgsFeature]:
    features = []
    names = fields.names()
    for row in rows:
        feature = QgsFeature(fields)
        feature.setAttributes([_json_value(row.get(name)) for name in names])
        wkt = row.get(geometry_key) if geometry_key else None
        if wkt:
            geometry = QgsGeometry.fromWkt(wkt)
            if multi and not geometry.isNull():
                geometry.convertToMultiType()
            feature.setGeometry(geometry)
        features.append(feature)
    return features


# Room a layer's style takes where postProcessAlgorithm stores it: the QML and SLD in the GeoPackage's layer_styles, and SQLite's
# journal while it writes them, in this many times the QML file's size, and more.
STYLE_ROOM_FACTOR, STYLE_ROOM_BYTES = 4, 256 * 1024


def write_sink(algorithm, parameters, name: str, context, fields, geometry, crs, features: List[QgsFeature], what: str, on_disk, style: str = "") -> str:
    """Create the layer output `name`, add the features and read the closed file back (QGIS reports neither a full disk
    nor a table never created); its destination id, '' where the output is not wanted. on_disk: its FileDestination, None
    for a memory or database output. A failure on disk is said once, with the fix (destinations.not_written). ``style``: the
    QML the run will store with it, for which room must be left."""
    replacing_outputs()
    try:
        with gdal_errors_unprinted():
            sink, destination = algorithm.parameterAsSink(parameters, name, context, fields, geometry, crs)
    except QgsProcessingException as exc:
        if on_disk is None:
            raise
        raise not_written(on_disk, what, f"the layer could not be created ({str(exc).strip() or 'QGIS gave no reason'})") from None
    if sink is None:
        return ""
    with gdal_errors_unprinted():  # a full disk makes GDAL print SQLite's failures; check_written says it once, with the fix
        added = sink.addFeatures(features, QgsFeatureSink.Flag.FastInsert)
        error = "" if added else (sink.lastError() if hasattr(sink, "lastError") else "") or "QGIS gave no reason"
        del sink  # closed before it is read back, and before postProcessAlgorithm stores a style in it
    if not added and on_disk is None:
        raise QgsProcessingException(f"Could not write the {what} layer: {error}")
    if not added:  # a disk that filled meanwhile: said with the room left and the fix, the file removed
        raise not_written(on_disk, what, f"the features could not be added ({error})")
    if on_disk is not None:
        check_written(on_disk, len(features), what)
        if style:
            check_room_for_style(on_disk, style, what)
    return destination


def check_room_for_style(on_disk, style: str, what: str) -> None:
    """The style is stored after the run (postProcessAlgorithm), where a full disk can no longer fail it (QGIS 3.22 exits 0 then):
    a disk that filled up just then had left the rows in the GeoPackage's -wal and the file unreadable alone. So the room is
    asked for now, while the run can still fail whole."""
    folder = os.path.dirname(on_disk.path)
    free = shutil.disk_usage(folder).free
    needed = STYLE_ROOM_FACTOR * os.path.getsize(style) + STYLE_ROOM_BYTES
    if free < needed:
        raise not_written(on_disk, what, f"too little room is left to store the layer's style ({needed / 1e3:.0f} kB) and finish the file")


# --- rasters -----------------------------------------------------------------------------

def check_band(layer: QgsRasterLayer, band: int) -> None:
    """BAND (0: automatic) must be one of the layer's, checked before the worker's seconds-long start."""
    if band > layer.bandCount():
        raise QgsProcessingException(
            f"Band {band} does not exist in '{layer.name()}', which has {layer.bandCount()} band(s). Choose 1..{layer.bandCount()}, or 0 for automatic."
        )


def require_crs(layer: QgsRasterLayer) -> None:
    """Refuse a raster layer without a CRS. Where QGIS gives the layer none but GDAL reads one, the layer
    takes GDAL's: a CRS GDAL keeps in the file's .aux.xml sidecar (a PNG or JPEG saved by gdal_translate
    or QGIS, a read-only GeoTIFF given one; the algorithms load layers without GDAL's PAM, so as never to
    write such a sidecar, and the layer came without it), and a CRS QGIS 3.22 cannot look up (a file
    given an IAU code, gdal_translate -a_srs IAU_2015:49910: 'crs not found', and the raster had been
    refused as having no CRS)."""
    if not layer.crs().isValid():
        crs = _gdal_crs(layer.source())
        if crs is not None:
            layer.setCrs(crs)
            return
        if not _has_geotransform(layer.source()):
            raise QgsProcessingException(georeference.not_map_projected_message(source_path(layer.source()), layer.name()))
        raise QgsProcessingException(
            f"The raster '{layer.name()}' has no coordinate reference system, so its chunks could not be placed on Mars. "
            "Assign the product's Mars CRS first (Raster > Projections > Assign Projection, or gdal_edit.py -a_srs), then run again."
        )


def _gdal_crs(source: str) -> Optional[QgsCoordinateReferenceSystem]:
    """The CRS GDAL reads for the file (with its PAM sidecar, if there is one) as QGIS takes it: from its
    WKT, or, where QGIS cannot look that up, from its PROJ definition; None without one."""
    wkt = _gdal_crs_wkt(source)
    if not wkt:
        return None
    crs = QgsCoordinateReferenceSystem.fromWkt(wkt)
    if not crs.isValid():
        proj = osr.SpatialReference(wkt=wkt).ExportToProj4()
        crs = QgsCoordinateReferenceSystem.fromProj(proj) if proj else crs
    return crs if crs.isValid() else None


def georeferenced_by_sidecar(layer: QgsRasterLayer) -> QgsRasterLayer:
    """The layer as it is, or, where it came without a CRS and its file's .aux.xml sidecar places it (a PNG or JPEG
    saved by QGIS keeps its georeferencing there), the layer loaded again with that sidecar: training reprojects
    the labels onto its extent, which the layer loaded without the sidecar has in pixels. The sidecar exists
    already; no new one is made."""
    if layer.crs().isValid() or not os.path.isfile(layer.source() + ".aux.xml") or not _gdal_crs_wkt(layer.source()):
        return layer
    placed = QgsRasterLayer(layer.source(), layer.name(), "gdal")
    return placed if placed.isValid() else layer


def _gdal_crs_wkt(source: str) -> str:
    """The CRS GDAL reads for the file (with its PAM sidecar, if there is one), or ''. Opened read-only and
    left unchanged, so nothing is written beside it."""
    if not os.path.isfile(source):
        return ""
    try:
        with gdal_exceptions():
            dataset = gdal.OpenEx(source, gdal.OF_RASTER | gdal.OF_READONLY)
            return dataset.GetProjection() or ""
    except RuntimeError:
        return ""


def _has_geotransform(source: str) -> bool:
    """Whether GDAL finds a geotransform in the layer's file; True where it cannot tell (not a GDAL file)."""
    try:
        with gdal_exceptions():
            dataset = gdal.Open(source)
            return dataset.GetGeoTransform(can_return_null=True) is not None
    except RuntimeError:
        return True


def output_crs(crs: QgsCoordinateReferenceSystem, raster_wkt: str = "") -> QgsCoordinateReferenceSystem:
    """The CRS to give output layers of a raster in `crs`.

    QGIS 3.22 recognises many Mars CRSs as IAU_2015:xxxxx, and a GeoPackage written with such a
    CRS stores it as AUTHORITY["IAU", ...], which QGIS 3.22 then cannot read back (the layer
    reopens without a CRS). So an IAU CRS is replaced by an equivalent custom CRS: the raster
    file's own WKT when QGIS does not map it to an IAU code (it keeps the product's name), else
    the CRS's PROJ definition. Other CRSs are used as they are.
    """
    if not crs.authid().upper().startswith("IAU"):
        return crs
    candidates = [lambda: QgsCoordinateReferenceSystem.fromWkt(raster_wkt) if raster_wkt else None, lambda: QgsCoordinateReferenceSystem.fromProj(crs.toProj())]
    for make in candidates:
        candidate = make()
        if candidate is not None and candidate.isValid() and not candidate.authid().upper().startswith("IAU"):
            return candidate
    return crs


_WKT_IDS = re.compile(r',\s*(?:ID|AUTHORITY)\[(?:[^\[\]]|\[[^\[\]]*\])*\]')


def layer_crs(layer) -> QgsCoordinateReferenceSystem:
    """The layer's CRS; for a file layer that QGIS opened without one, the CRS GDAL reads in the
    file, without authority codes (how a GeoPackage with an IAU CRS, written by QGIS 3.22 itself,
    becomes readable). Invalid if neither works."""
    crs = layer.crs()
    if crs.isValid() or layer.providerType() != "ogr":
        return crs
    try:
        from osgeo import ogr

        name = QgsProviderRegistry.instance().decodeUri("ogr", layer.source()).get("layerName")
        with gdal_exceptions():
            dataset = ogr.Open(source_path(layer.source()))
            ogr_layer = dataset.GetLayerByName(name) if name else dataset.GetLayer(0)
            srs = ogr_layer.GetSpatialRef() if ogr_layer is not None else None
            wkt = srs.ExportToWkt(["FORMAT=WKT2_2019"]) if srs is not None else ""
    except (RuntimeError, AttributeError, IndexError):
        return crs
    recovered = QgsCoordinateReferenceSystem.fromWkt(_WKT_IDS.sub("", wkt)) if wkt else QgsCoordinateReferenceSystem()
    return recovered if recovered.isValid() else crs


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "raster"


def _temporary_folder() -> str:
    folder = os.path.join(processing_temp_folder(), f"hiriseice_{uuid.uuid4().hex[:12]}")
    os.makedirs(folder, exist_ok=True)
    return folder


def _gdal_readable(source: str, layer: QgsRasterLayer):
    """The GDAL dataset behind a gdal-provider layer when GDAL opens it as QGIS shows it (a rotated
    one in its own pixel grid), else None."""
    if layer.providerType() != "gdal" or not source:
        return None
    if not (os.path.isfile(source) or source.startswith("/vsi") or ":" in source):
        return None
    try:
        with gdal_exceptions():
            dataset = gdal.Open(source, gdal.GA_ReadOnly)
    except RuntimeError:
        return None
    if dataset is None:
        return None
    # QGIS shows a rotated raster warped north-up, at another size; the file itself is what to chunk
    rotated = any(dataset.GetGeoTransform()[i] != 0.0 for i in (2, 4))
    if not rotated and (dataset.RasterXSize != layer.width() or dataset.RasterYSize != layer.height()):
        return None
    return dataset


def raster_path_for_worker(layer: QgsRasterLayer, context, feedback) -> str:
    """A path GDAL (in the worker or in model/) reads: the layer's own file when it is one,
    otherwise a temporary GeoTIFF. The file name keeps the image ID (the layer's file stem).

    A file without a CRS that QGIS knows one for (set in the layer's properties) is wrapped in a
    temporary VRT that carries the layer's CRS.
    """
    require_crs(layer)
    source = layer.source()
    if os.path.isfile(source):
        source = os.path.abspath(source)
    dataset = _gdal_readable(source, layer)
    if dataset is not None:
        if dataset.GetProjection() or dataset.GetGCPProjection():  # GCPs alone: the engine places it by their fit
            return source
        stem = os.path.splitext(os.path.basename(dataset.GetDescription() or layer.name()))[0]
        vrt = os.path.join(_temporary_folder(), _safe_name(stem) + ".vrt")
        feedback.pushInfo(f"'{layer.name()}': the file has no CRS of its own; using the layer's CRS {layer.crs().authid() or layer.crs().description()} through {vrt}")
        with gdal_exceptions():
            gdal.Translate(vrt, dataset, format="VRT", outputSRS=layer.crs().toWkt(QgsCoordinateReferenceSystem.WktVariant.WKT_PREFERRED_GDAL))
        return vrt
    return write_temporary_geotiff(layer, context, feedback)


def write_temporary_geotiff(layer: QgsRasterLayer, context, feedback) -> str:
    provider = layer.dataProvider()
    if provider is None or not (provider.capabilities() & QgsRasterDataProvider.Capability.Size) or layer.width() <= 0 or layer.height() <= 0:
        raise QgsProcessingException(
            f"'{layer.name()}' is not a raster with pixels of its own (a web map service?). Give a HiRISE image file (GeoTIFF, JP2, ISIS3 cube, PDS image)."
        )
    stem = os.path.splitext(os.path.basename(source_file_name(layer)))[0]
    path = os.path.join(_temporary_folder(), _safe_name(stem) + ".tif")
    feedback.pushInfo(f"'{layer.name()}' is not a file GDAL can read directly; writing it to {path} for the worker")
    writer = QgsRasterFileWriter(path)
    writer.setOutputFormat("GTiff")
    writer.setCreateOptions(["COMPRESS=DEFLATE", "TILED=YES", "BIGTIFF=IF_SAFER"])
    pipe = QgsRasterPipe()
    if not pipe.set(provider.clone()):
        raise QgsProcessingException(f"Could not read '{layer.name()}' for the worker (the raster pipe refused its provider).")
    error = writer.writeRaster(pipe, provider.xSize(), provider.ySize(), provider.extent(), layer.crs(), context.transformContext())
    if error != QgsRasterFileWriter.WriterError.NoError:
        raise QgsProcessingException(f"Could not write '{layer.name()}' to the temporary GeoTIFF {path} for the worker (error {error}).")
    return path


def source_file_name(layer: QgsRasterLayer) -> str:
    """The layer's file name when it has one (for the image ID), else its name."""
    path = source_path(layer.source())
    return path if os.path.isfile(path) else layer.name()


# --- model files --------------------------------------------------------------------------

def checked_model(path: str) -> Tuple[str, Dict]:
    """(path, metadata) of the model file, validated in-process so a wrong file fails before the worker starts.
    An empty path is the bundled default model."""
    resolved = modelfile.resolve_model_path(os.path.abspath(path) if path else "")
    if not path and not os.path.isfile(resolved):
        raise QgsProcessingException(
            f"The bundled default model {resolved} is missing from the plugin. Reinstall the plugin, or choose a model file in MODEL "
            "(train one with 'Train ice-patch model')."
        )
    try:
        return resolved, modelfile.read_metadata(resolved)
    except errors.EngineError as exc:
        raise QgsProcessingException(str(exc)) from None
