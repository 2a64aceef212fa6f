"""hiriseice:detect - score a HiRISE image's chunks for ice with a model file, in the worker."""

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsWkbTypes,
)

from .algorithm import HiriseIceAlgorithm, styling
from .common import (
    add_features,
    checked_model,
    features_from_dicts,
    make_fields,
    output_crs,
    raster_path_for_worker,
    require_crs,
)
from .engine import chunking, errors, modelfile, rules, schema
from .worker import partial_path, run_worker

MODEL_FILTER = "HiRISE Ice Patches model (*.hiriseice);;All files (*.*)"
HTML_FILTER = "HTML files (*.html)"


class DetectAlgorithm(HiriseIceAlgorithm):
    NAME = "detect"
    DISPLAY_NAME = "Detect ice patches"
    GROUP = "Detection"
    GROUP_ID = "detection"

    INPUT = "INPUT"
    MODEL = "MODEL"
    CHUNK_SIZE = "CHUNK_SIZE"
    STRIDE = "STRIDE"
    MIN_VALID = "MIN_VALID"
    BATCH_SIZE = "BATCH_SIZE"
    ICY_THRESHOLD = "ICY_THRESHOLD"
    HARD_LOW = "HARD_LOW"
    BAND = "BAND"
    OUTPUT = "OUTPUT"
    SUMMARY = "SUMMARY"
    REPORT = "REPORT"
    CATEGORY = "CATEGORY"
    CHUNKS = "CHUNKS"
    ICY_CHUNKS = "ICY_CHUNKS"
    MEAN_PROBABILITY = "MEAN_PROBABILITY"

    def shortHelpString(self):
        return self.tr(
            "<p>Finds small residual water-ice patches in a HiRISE image with the convolutional network of Gergács &amp; Kereszturi "
            "(a small Xception). The image is cut into square chunks, each chunk is decimated to the network's input size and "
            "scored with the probability that it shows ice.</p>"
            "<p><b>Model</b>: a <i>*.hiriseice</i> file written by <i>Train ice-patch model</i>; empty = the model bundled with the plugin. "
            "<b>Chunk size</b>: 0 = the size the model was trained for (1024 px for the paper's model). "
            "<b>Stride</b>: 0 = the chunk size. <b>Minimum valid share</b>: chunks whose central region holds less image data "
            "are dropped (no-data borders of rotated products). <b>Batch size</b>: chunks per network call (memory vs speed).</p>"
            "<p><b>Thresholds</b> (the paper's): a chunk is <i>icy</i> at p ≥ 0.6 (ICY_THRESHOLD), <i>hard to identify</i> at "
            "0.4 ≤ p &lt; 0.6 (HARD_LOW) and <i>not icy</i> below. The image is graded <i>good</i> (ice clearly present: at least 10 % "
            "icy chunks or mean p ≥ 0.5), <i>bad</i> (under 2 % icy chunks and mean p &lt; 0.3) or <i>hard to identify</i> "
            "(in between, or at least half of the chunks hard to identify).</p>"
            "<p><b>Band</b> (advanced): 0 = automatic (a single band, or the mean of all bands for colour products).</p>"
            "<p><b>Outputs</b>: the chunk layer (probability, class, and an empty <i>label</i> field for your own judgement, "
            "to be filled with the HiRISE Ice Patches labelling tools and used for retraining), styled from transparent blue (not icy) to red (icy). "
            "Its <i>review_rank</i> says which chunks to label first (1 = first): those whose probability lies nearest the icy threshold, "
            "where the model is least sure, spread over the image. Also written: the image summary (footprint, counts, mean and max "
            "probability, category) and an HTML report with histogram and quicklook.</p>"
            "<p>The network runs in a separate Python with TensorFlow (the <i>worker</i>), never inside QGIS. If it is missing, "
            "run <i>scripts/install</i> in the plugin folder, or set the worker's Python in HiRISE Ice Patches › Worker settings.</p>"
        )

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("HiRISE raster")))
        self.addParameter(
            QgsProcessingParameterFile(self.MODEL, self.tr("Model file (empty = bundled default model)"), QgsProcessingParameterFile.File, optional=True, fileFilter=MODEL_FILTER)
        )
        self.addParameter(QgsProcessingParameterNumber(self.CHUNK_SIZE, self.tr("Chunk size (pixels; 0 = the model's)"), QgsProcessingParameterNumber.Integer, 0, minValue=0))
        self.addParameter(QgsProcessingParameterNumber(self.STRIDE, self.tr("Stride (pixels; 0 = chunk size)"), QgsProcessingParameterNumber.Integer, 0, minValue=0))
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MIN_VALID, self.tr("Minimum valid share of the chunk centre"), QgsProcessingParameterNumber.Double, chunking.DEFAULT_MIN_VALID, minValue=0.0, maxValue=1.0
            )
        )
        self.addParameter(QgsProcessingParameterNumber(self.BATCH_SIZE, self.tr("Batch size (chunks per network call)"), QgsProcessingParameterNumber.Integer, 16, minValue=1))
        self.addParameter(
            QgsProcessingParameterNumber(self.ICY_THRESHOLD, self.tr("Icy at probability ≥"), QgsProcessingParameterNumber.Double, rules.ICY_THRESHOLD, minValue=0.0, maxValue=1.0)
        )
        self.addParameter(
            QgsProcessingParameterNumber(self.HARD_LOW, self.tr("Hard to identify at probability ≥"), QgsProcessingParameterNumber.Double, rules.HARD_LOW, minValue=0.0, maxValue=1.0)
        )
        band = QgsProcessingParameterNumber(self.BAND, self.tr("Band (0 = automatic)"), QgsProcessingParameterNumber.Integer, 0, minValue=0)
        band.setFlags(band.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(band)
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, self.tr("Ice probability of chunks"), QgsProcessing.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterFeatureSink(self.SUMMARY, self.tr("Image summary"), QgsProcessing.TypeVectorPolygon, optional=True, createByDefault=True))
        self.addParameter(QgsProcessingParameterFileDestination(self.REPORT, self.tr("Detection report"), HTML_FILTER))
        self.addOutput(QgsProcessingOutputString(self.CATEGORY, self.tr("Image category")))
        self.addOutput(QgsProcessingOutputNumber(self.CHUNKS, self.tr("Chunks scored")))
        self.addOutput(QgsProcessingOutputNumber(self.ICY_CHUNKS, self.tr("Icy chunks")))
        self.addOutput(QgsProcessingOutputNumber(self.MEAN_PROBABILITY, self.tr("Mean chunk probability")))

    def processAlgorithm(self, parameters, context, feedback):
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, self.INPUT))
        require_crs(layer)
        model_path, metadata = checked_model(self.parameterAsFile(parameters, self.MODEL, context))
        feedback.pushInfo(f"Model: {modelfile.describe(metadata)} from {model_path}")

        chunk_size = self.parameterAsInt(parameters, self.CHUNK_SIZE, context) or int(metadata["chunk_size"])
        stride = self.parameterAsInt(parameters, self.STRIDE, context) or chunk_size
        icy = self.parameterAsDouble(parameters, self.ICY_THRESHOLD, context)
        hard_low = self.parameterAsDouble(parameters, self.HARD_LOW, context)
        band = self.parameterAsInt(parameters, self.BAND, context)
        if band > layer.bandCount():
            raise QgsProcessingException(f"Band {band} does not exist in '{layer.name()}', which has {layer.bandCount()} band(s). Choose 1..{layer.bandCount()}, or 0 for automatic.")
        min_valid = self.parameterAsDouble(parameters, self.MIN_VALID, context)
        try:  # before the worker's seconds-long start
            rules.check_thresholds(icy, hard_low)
            chunking.check_grid_parameters(chunk_size, stride, min_valid)
        except errors.EngineError as exc:
            raise QgsProcessingException(str(exc)) from None
        report = self.parameterAsFileOutput(parameters, self.REPORT, context)
        raster_path = raster_path_for_worker(layer, context, feedback)

        arguments = [
            "detect", raster_path, "--model", model_path, "--report", report,
            "--chunk-size", chunk_size, "--stride", stride,
            "--min-valid", min_valid,
            "--batch-size", self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            "--icy-threshold", icy, "--hard-low", hard_low, "--band", band,
        ]
        result = run_worker(arguments, feedback, partial_outputs=[partial_path(report)])
        chunks, summary = result.get("chunks") or [], result.get("summary") or {}

        # Only now, with the worker done, are the output layers created.
        crs = output_crs(layer.crs(), (result.get("raster") or {}).get("crs_wkt", ""))
        fields = make_fields(schema.DETECTION_FIELDS)
        sink, destination = self.parameterAsSink(parameters, self.OUTPUT, context, fields, QgsWkbTypes.Polygon, crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        add_features(sink, features_from_dicts(chunks, fields, "wkt"), "chunk")
        del sink  # closes the file before postProcessAlgorithm stores the style in it
        self.style_output(context, destination, styling.CHUNKS_QML)
        results = {
            self.OUTPUT: destination,
            self.REPORT: report,
            self.CATEGORY: summary.get("category"),
            self.CHUNKS: summary.get("chunks"),
            self.ICY_CHUNKS: summary.get("icy_chunks"),
            self.MEAN_PROBABILITY: summary.get("mean_probability"),
        }

        summary_fields = make_fields(schema.SUMMARY_FIELDS)
        summary_sink, summary_destination = self.parameterAsSink(parameters, self.SUMMARY, context, summary_fields, QgsWkbTypes.MultiPolygon, crs)
        if summary_sink is not None:
            add_features(summary_sink, features_from_dicts([summary], summary_fields, "footprint_wkt", multi=True), "summary")
            del summary_sink
            self.style_output(context, summary_destination, styling.SUMMARY_QML)
            results[self.SUMMARY] = summary_destination
        feedback.pushInfo(
            f"{summary.get('image_id')}: {summary.get('category')} - {summary.get('icy_chunks')} icy and {summary.get('hard_chunks')} hard to identify "
            f"of {summary.get('chunks')} chunks, mean probability {summary.get('mean_probability')}"
        )
        return results
