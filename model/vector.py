"""GeoPackage output for command-line use (inside QGIS the algorithms write their own sinks)."""

from typing import Dict, List

from osgeo import ogr, osr

from . import files

CHUNK_SCHEMA = [
    ("image_id", ogr.OFTString),
    ("chunk_id", ogr.OFTInteger),
    ("row", ogr.OFTInteger),
    ("col", ogr.OFTInteger),
    ("x_off", ogr.OFTInteger),
    ("y_off", ogr.OFTInteger),
    ("width", ogr.OFTInteger),
    ("height", ogr.OFTInteger),
    ("valid_fraction", ogr.OFTReal),
    ("centre_valid_fraction", ogr.OFTReal),
    ("probability", ogr.OFTReal),
    ("class", ogr.OFTString),
    ("label", ogr.OFTInteger),
]

SUMMARY_SCHEMA = [
    ("image_id", ogr.OFTString),
    ("chunks", ogr.OFTInteger),
    ("icy_chunks", ogr.OFTInteger),
    ("hard_chunks", ogr.OFTInteger),
    ("mean_probability", ogr.OFTReal),
    ("max_probability", ogr.OFTReal),
    ("category", ogr.OFTString),
    ("model_name", ogr.OFTString),
    ("model_version", ogr.OFTString),
    ("runtime_s", ogr.OFTReal),
]


def _layer(ds, name: str, crs_wkt: str, schema):
    srs = osr.SpatialReference(wkt=crs_wkt) if crs_wkt else None
    layer = ds.CreateLayer(name, srs, ogr.wkbPolygon if name != "summary" else ogr.wkbMultiPolygon)
    for field_name, kind in schema:
        layer.CreateField(ogr.FieldDefn(field_name, kind))
    return layer


def write_geopackage(path: str, crs_wkt: str, chunks: List[Dict], summaries: List[Dict], chunk_layer: str = "chunks") -> None:
    """Chunk polygons and image summaries, written to a temporary file and renamed on success."""
    partial = files.prepare(path)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(partial)
    layer = _layer(ds, chunk_layer, crs_wkt, CHUNK_SCHEMA)
    layer.StartTransaction()
    for chunk in chunks:
        feature = ogr.Feature(layer.GetLayerDefn())
        for field_name, _ in CHUNK_SCHEMA:
            if chunk.get(field_name) is not None:
                feature.SetField(field_name, chunk[field_name])
        feature.SetGeometry(ogr.CreateGeometryFromWkt(chunk["wkt"]))
        layer.CreateFeature(feature)
    layer.CommitTransaction()
    summary_layer = _layer(ds, "summary", crs_wkt, SUMMARY_SCHEMA)
    for summary in summaries:
        feature = ogr.Feature(summary_layer.GetLayerDefn())
        for field_name, _ in SUMMARY_SCHEMA:
            feature.SetField(field_name, summary[field_name])
        if summary.get("footprint_wkt"):
            feature.SetGeometry(ogr.ForceToMultiPolygon(ogr.CreateGeometryFromWkt(summary["footprint_wkt"])))
        summary_layer.CreateFeature(feature)
    ds = None
    files.commit(partial, path)
