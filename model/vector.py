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
        raise OSError(f"GDAL could not create a GeoPackage there: {gdal.GetLastErrorMsg() or 'it gave no reason'}")
    return created


def _done(result, what: str) -> None:
    """RuntimeError with GDAL's reason where an OGR call failed: GDAL 3.6's OGR returns its errors (None, a
    non-zero code) whatever gdal.UseExceptions says, and on a full disk the GeoPackage had been written on, broken,
    and called written."""
    from osgeo import gdal

    if result is None or (isinstance(result, int) and result != ogr.OGRERR_NONE):
        raise RuntimeError(f"GDAL could not {what}: {gdal.GetLastErrorMsg() or 'it gave no reason'}")


def create_layer(ds, name: str, crs_wkt: str, geometry_type, fields):
    """A layer of ``fields`` (model/schema.py's (name, kind) pairs); a table without geometry has no CRS.
    RuntimeError where it cannot be made (_done)."""
    srs = osr.SpatialReference(wkt=crs_wkt) if crs_wkt and geometry_type != ogr.wkbNone else None
    layer = ds.CreateLayer(name, srs, geometry_type)
    _done(layer, f"create the layer {name}")
    add_missing_fields(layer, fields)
    return layer


def add_missing_fields(layer, fields) -> None:
    """The ``fields`` the layer lacks added (all of them to a new layer; to a survey of an earlier version, those added
    since); RuntimeError where they cannot be (a read-only file)."""
    definition = layer.GetLayerDefn()
    have = {definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())}
    for field_name, kind in fields:
        if field_name not in have:
            _done(layer.CreateField(ogr.FieldDefn(field_name, OGR_TYPES[kind])), f"add the field {field_name} to {layer.GetName()}")


# A row's key holding the feature id a rewritten row keeps (add_rows).
KEPT_FID = "_fid"


def add_rows(layer, fields, rows: Iterable[Dict], geometry_key: Optional[str]) -> None:
    """Each row (by field name) as a feature: a field it lacks or holds as None stays NULL, and its WKT
    under ``geometry_key`` becomes a multipolygon where the layer holds those; under KEPT_FID, the feature id it takes."""
    multi = layer.GetGeomType() == ogr.wkbMultiPolygon
    for row in rows:
        feature = ogr.Feature(layer.GetLayerDefn())
        if row.get(KEPT_FID) is not None:
            feature.SetFID(row[KEPT_FID])
        for field_name, _ in fields:
            if row.get(field_name) is not None:
                feature.SetField(field_name, row[field_name])
        if geometry_key and row.get(geometry_key):
            geometry = ogr.CreateGeometryFromWkt(row[geometry_key])
            feature.SetGeometry(ogr.ForceToMultiPolygon(geometry) if multi else geometry)
        _done(layer.CreateFeature(feature), f"write a row of {layer.GetName()}")


def write_geopackage(path: str, crs_wkt: str, chunks: List[Dict], summaries: List[Dict], chunk_fields=DETECTION_FIELDS,
                     before_commit: Optional[Callable[[], None]] = None) -> None:
    """Chunk polygons and image summaries, written to a temporary file, read back and renamed when whole (files.writing)."""
    with files.writing(path, "The chunk layer", before_commit) as partial:
        ds = new_geopackage(partial)
        tables = [("chunks", ogr.wkbPolygon, chunk_fields, chunks, "wkt")]
        tables += [("summary", ogr.wkbMultiPolygon, SUMMARY_FIELDS, summaries, "footprint_wkt")] if summaries else []
        try:
            for name, geometry_type, fields, rows, geometry_key in tables:
                layer = create_layer(ds, name, crs_wkt, geometry_type, fields)
                _done(layer.StartTransaction(), f"write {name}")
                add_rows(layer, fields, rows, geometry_key)
                _done(layer.CommitTransaction(), f"write {name}")
        finally:
            ds = None  # closed now, also on a failure, while files.writing keeps GDAL quiet
        check_rows(partial, {name: len(rows) for name, _, _, rows, _ in tables})


def check_rows(path: str, expected: Dict[str, int]) -> None:
    """RuntimeError unless the GeoPackage at ``path`` opens and holds ``expected`` rows in each named layer: a disk
    that fills as SQLite closes the file fails no call before."""
    ds = ogr.Open(path)
    found = {name: (ds.GetLayerByName(name).GetFeatureCount() if ds is not None and ds.GetLayerByName(name) is not None else None) for name in expected}
    ds = None
    if found != expected:
        raise RuntimeError(f"the GeoPackage read back holds {found} rows where {expected} were written")
