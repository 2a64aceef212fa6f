"""hiriseice:chunk - the chunk grid of a raster, in-process (no TensorFlow, no worker)."""

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsWkbTypes,
)

from .algorithm import HiriseIceAlgorithm, RasterLayerParameter, styling
from .common import features_from_dicts, make_fields, output_crs, raster_path_for_worker, write_sink
from .destinations import file_destination
from .engine import chunking, errors, files, gdal_exceptions, grid, imagechecks, raster, schema


class ChunkAlgorithm(HiriseIceAlgorithm):
    NAME = "chunk"
    DISPLAY_NAME = "Chunk grid of a HiRISE image"
    GROUP = "Data preparation"
    GROUP_ID = "preparation"

    INPUT = "INPUT"
    CHUNK_SIZE = "CHUNK_SIZE"
    STRIDE = "STRIDE"
    MIN_VALID = "MIN_VALID"
    EXPORT_FOLDER = "EXPORT_FOLDER"
    OUTPUT = "OUTPUT"
    CHUNKS = "CHUNKS"
    OUTPUT_FIELDS = {OUTPUT: schema.CHUNK_GRID_FIELDS}

    def shortHelpString(self):
        return self.tr(
            "<p>Cuts a HiRISE image into the square chunks the ice-patch network scores, without running the network: "
            "the same grid <i>Detect ice patches</i> uses, for labelling, for checking the grid, or for exporting chunks.</p>"
            "<p><b>Chunk size</b>: chunk side in raster pixels (the paper uses 1024). "
            "<b>Stride</b>: grid step in pixels; 0 means the chunk size (no overlap); a stride over the chunk size leaves strips no chunk covers (said in the log). "
            "Edge chunks are smaller; they keep their true size; a partial chunk narrower than an eighth of one is not a chunk (the log says "
            "how many pixels of the edge lie in none).</p>"
            "<p><b>Minimum valid share</b>: chunks are kept when at least this share of their central region "
            "(the middle half in each direction) holds image data. No-data is the band's declared no-data value and DN 0, "
            "which fills the area outside the rotated footprint of HiRISE RDRs.</p>"
            "<p><b>Export folder</b> (optional): also write each kept chunk as a full-resolution georeferenced GeoTIFF.</p>"
            "<p>Output: one polygon per kept chunk in the raster's CRS with image_id, chunk_id (row * columns + col, stable "
            "across runs), row, col, pixel offsets and size, and the valid shares.</p>"
            "<p>Runs inside QGIS; it needs neither TensorFlow nor the worker.</p>"
        )

    def initAlgorithm(self, config=None):
        self.addParameter(RasterLayerParameter(self.INPUT, self.tr("HiRISE raster")))
        self.addParameter(QgsProcessingParameterNumber(self.CHUNK_SIZE, self.tr("Chunk size (pixels)"), QgsProcessingParameterNumber.Type.Integer, 1024, minValue=8))
        self.addParameter(QgsProcessingParameterNumber(self.STRIDE, self.tr("Stride (pixels; 0 = chunk size)"), QgsProcessingParameterNumber.Type.Integer, 0, minValue=0))
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MIN_VALID, self.tr("Minimum valid share of the chunk centre"), QgsProcessingParameterNumber.Type.Double, chunking.DEFAULT_MIN_VALID, minValue=0.0, maxValue=1.0
            )
        )
        self.addParameter(QgsProcessingParameterFolderDestination(self.EXPORT_FOLDER, self.tr("Export chunks as GeoTIFFs to"), optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, self.tr("Chunk grid"), QgsProcessing.SourceType.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber(self.CHUNKS, self.tr("Number of chunks")))

    def processAlgorithm(self, parameters, context, feedback):
        layer = self.raster_layer(parameters, self.INPUT, context)
        self.warn_of_what_formats_drop(parameters, feedback)
        chunk_size = self.parameterAsInt(parameters, self.CHUNK_SIZE, context)
        stride = self.parameterAsInt(parameters, self.STRIDE, context) or chunk_size
        if gaps := chunking.gap_warning(chunk_size, stride):
            feedback.pushWarning(gaps)
        min_valid = self.parameterAsDouble(parameters, self.MIN_VALID, context)
        export_folder = self.parameterAsFileOutput(parameters, self.EXPORT_FOLDER, context) if parameters.get(self.EXPORT_FOLDER) else ""
        if export_folder:
            try:
                files.check_folder(export_folder, self.EXPORT_FOLDER)
            except errors.EngineError as exc:
                raise QgsProcessingException(str(exc)) from None
        path = raster_path_for_worker(layer, context, feedback)

        rows = []
        # The exports are staged and renamed into place once the grid layer is written: a run that fails leaves an earlier
        # export as it was.
        with chunking.ChunkExport(export_folder) as export:
            try:
                # the grid Detect scores: a map turned far from north-up is cut through its north-up view
                with gdal_exceptions(), raster.north_up_view(path, 0, feedback.pushInfo) as read, raster.RasterSource(read) as source:
                    info = source.info
                    viewed = read != path
                    total = chunking.chunk_count(source, chunk_size, stride)
                    feedback.pushInfo(f"{info.image_id}: {info.width} x {info.height} px; {total} grid chunks of {chunk_size} px"
                                      f"{imagechecks.ground_size(info.crs_wkt, info.pixel_size, chunk_size)}, stride {stride}")
                    if unscored := grid.edge_note(info.width, info.height, chunk_size, stride):
                        feedback.pushInfo(unscored)
                    for sample in chunking.iter_chunks(source, chunk_size, stride, min_valid):
                        if feedback.isCanceled():
                            raise QgsProcessingException("Cancelled by the user; no chunk layer was written, and no chunk was exported (those staged were removed; an earlier export is as it was).")
                        w = sample.window
                        rows.append(
                            dict(
                                image_id=info.image_id, chunk_id=w.chunk_id, row=w.row, col=w.col, x_off=w.x_off, y_off=w.y_off, width=w.width, height=w.height,
                                valid_fraction=round(sample.valid_fraction, 4), centre_valid_fraction=round(sample.centre_valid_fraction, 4),
                                wkt=grid.chunk_wkt(info.geotransform, w),
                            )
                        )
                        if export_folder:
                            export.add(read, w, info.image_id)
                        feedback.setProgress(100.0 * (w.chunk_id + 1) / total)
            except errors.EngineError as exc:
                raise QgsProcessingException(str(exc)) from None
            feedback.pushInfo(f"{len(rows)} of {total} chunks hold data around their centre (minimum valid share {min_valid})")

            fields = make_fields(schema.CHUNK_GRID_FIELDS)
            crs = output_crs(QgsCoordinateReferenceSystem.fromWkt(info.crs_wkt) if viewed else layer.crs(), info.crs_wkt)
            on_disk = file_destination(self.OUTPUT, self.sink_destination(parameters, self.OUTPUT, context), vector=True)
            destination = write_sink(self, parameters, self.OUTPUT, context, fields, QgsWkbTypes.Type.Polygon, crs,
                                     features_from_dicts(rows, fields, "wkt"), "chunk grid", on_disk)
            if not destination:
                raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
            exported = export.commit()
        if exported:
            feedback.pushInfo(f"{len(exported)} chunk GeoTIFFs written to {export_folder}")
        self.style_output(context, destination, styling.GRID_QML)
        results = {self.OUTPUT: destination, self.CHUNKS: len(rows)}
        if export_folder:
            results[self.EXPORT_FOLDER] = export_folder
        return results

