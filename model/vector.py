"""GeoPackage output for command-line use (inside QGIS the algorithms write their own sinks)."""

from typing import Callable, Dict, List, Optional

from osgeo import ogr, osr

from . import files
from .schema import DETECTION_FIELDS, SUMMARY_FIELDS

OGR_TYPES = {"int": ogr.OFTInteger, "real": ogr.OFTReal, "text": ogr.OFTString}


def new_geopackage(path: str):
    """An empty GeoPackage made at ``path``; OSError with GDAL's reason where it cannot be made (GDAL
    3.6's OGR returns None there, its exceptions being apart from GDAL's), which files.writing and the
    survey turn into their messages."""
    from osgeo import gdal

    created = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    if created is None:
        raise OSError(f"GDAL could not create the GeoPackage {path}: {gdal.GetLastErrorMsg() or 'it gave no reason'}")
    return created


def _layer(ds, name: str, crs_wkt: str, schema):
    srs = osr.SpatialReference(wkt=crs_wkt) if crs_wkt else None
    layer = ds.CreateLayer(name, srs, ogr.wkbPolygon if name != "summary" else ogr.wkbMultiPolygon)
    for field_name, kind in schema:
        layer.CreateField(ogr.FieldDefn(field_name, OGR_TYPES[kind]))
    return layer


def write_geopackage(path: str, crs_wkt: str, chunks: List[Dict], summaries: List[Dict], chunk_fields=DETECTION_FIELDS,
                     before_commit: Optional[Callable[[], None]] = None) -> None:
    """Chunk polygons and image summaries, written to a temporary file and renamed on success (files.writing)."""
    with files.writing(path, "The chunk layer", before_commit) as partial:
        ds = new_geopackage(partial)
        try:
            layer = _layer(ds, "chunks", crs_wkt, chunk_fields)
            layer.StartTransaction()
            for chunk in chunks:
                feature = ogr.Feature(layer.GetLayerDefn())
                for field_name, _ in chunk_fields:
                    if chunk.get(field_name) is not None:
                        feature.SetField(field_name, chunk[field_name])
                feature.SetGeometry(ogr.CreateGeometryFromWkt(chunk["wkt"]))
                layer.CreateFeature(feature)
            layer.CommitTransaction()
            summary_layer = _layer(ds, "summary", crs_wkt, SUMMARY_FIELDS) if summaries else None
            for summary in summaries:
                feature = ogr.Feature(summary_layer.GetLayerDefn())
                for field_name, _ in SUMMARY_FIELDS:
                    feature.SetField(field_name, summary[field_name])
                if summary.get("footprint_wkt"):
                    feature.SetGeometry(ogr.ForceToMultiPolygon(ogr.CreateGeometryFromWkt(summary["footprint_wkt"])))
                summary_layer.CreateFeature(feature)
        finally:
            ds = None  # closed now, also on a failure, while files.writing keeps GDAL quiet
