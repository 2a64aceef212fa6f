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
from .engine import chunking, errors, files, gdal_exceptions, schema


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

        # The exports are staged and renamed into place once the grid layer is written: a run that fails leaves an earlier
        # export as it was.
        with chunking.ChunkExport(export_folder) as export:
            try:
                with gdal_exceptions():
                    cut = chunking.image_grid(path, 0, chunk_size, stride, min_valid, feedback.pushInfo, export if export_folder else None,
                                              lambda share: feedback.setProgress(100.0 * share), feedback.isCanceled)
            except errors.EngineError as exc:
                raise QgsProcessingException(str(exc)) from None
            info, rows = cut.info, cut.rows

            fields = make_fields(schema.CHUNK_GRID_FIELDS)
            crs = output_crs(QgsCoordinateReferenceSystem.fromWkt(info.crs_wkt) if cut.viewed else layer.crs(), info.crs_wkt)
            on_disk = file_destination(self.OUTPUT, self.sink_destination(parameters, self.OUTPUT, context), vector=True)
            destination = write_sink(self, parameters, self.OUTPUT, context, fields, QgsWkbTypes.Type.Polygon, crs,
                                     features_from_dicts(rows, fields, "wkt"), "chunk grid", on_disk, styling.GRID_QML)
            if not destination:
                raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
            try:
                exported = export.commit()
            except errors.EngineError as exc:
                raise QgsProcessingException(str(exc)) from None
        if exported:
            feedback.pushInfo(f"{len(exported)} chunk GeoTIFFs written to {export_folder}")
        self.style_output(context, destination, styling.GRID_QML)
        results = {self.OUTPUT: destination, self.CHUNKS: len(rows)}
        if export_folder:
            results[self.EXPORT_FOLDER] = export_folder
        return results

