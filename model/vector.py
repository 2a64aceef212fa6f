"""GeoPackage layers written with OGR, by model/schema.py's fields: the worker's command line and the
survey (inside QGIS the algorithms write their own sinks)."""

from typing import Callable, Dict, Iterable, List, Optional

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


def create_layer(ds, name: str, crs_wkt: str, geometry_type, fields):
    """A layer of ``fields`` (model/schema.py's (name, kind) pairs); a table without geometry has no CRS."""
    srs = osr.SpatialReference(wkt=crs_wkt) if crs_wkt and geometry_type != ogr.wkbNone else None
    layer = ds.CreateLayer(name, srs, geometry_type)
    for field_name, kind in fields:
        layer.CreateField(ogr.FieldDefn(field_name, OGR_TYPES[kind]))
    return layer


def add_rows(layer, fields, rows: Iterable[Dict], geometry_key: Optional[str]) -> None:
    """Each row (by field name) as a feature: a field it lacks or holds as None stays NULL, and its WKT
    under ``geometry_key`` becomes a multipolygon where the layer holds those."""
    multi = layer.GetGeomType() == ogr.wkbMultiPolygon
    for row in rows:
        feature = ogr.Feature(layer.GetLayerDefn())
        for field_name, _ in fields:
            if row.get(field_name) is not None:
                feature.SetField(field_name, row[field_name])
        if geometry_key and row.get(geometry_key):
            geometry = ogr.CreateGeometryFromWkt(row[geometry_key])
            feature.SetGeometry(ogr.ForceToMultiPolygon(geometry) if multi else geometry)
        layer.CreateFeature(feature)


def write_geopackage(path: str, crs_wkt: str, chunks: List[Dict], summaries: List[Dict], chunk_fields=DETECTION_FIELDS,
                     before_commit: Optional[Callable[[], None]] = None) -> None:
    """Chunk polygons and image summaries, written to a temporary file and renamed on success (files.writing)."""
    with files.writing(path, "The chunk layer", before_commit) as partial:
        ds = new_geopackage(partial)
        try:
            layer = create_layer(ds, "chunks", crs_wkt, ogr.wkbPolygon, chunk_fields)
            layer.StartTransaction()
            add_rows(layer, chunk_fields, chunks, "wkt")
            layer.CommitTransaction()
            if summaries:
                add_rows(create_layer(ds, "summary", crs_wkt, ogr.wkbMultiPolygon, SUMMARY_FIELDS), SUMMARY_FIELDS, summaries, "footprint_wkt")
        finally:
            ds = None  # closed now, also on a failure, while files.writing keeps GDAL quiet
